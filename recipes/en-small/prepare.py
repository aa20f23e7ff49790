"""Prepare the en-small recipe's manifests from the shared corpora.

Writes into OUT (default exp/en-small/data):
- train_<corpus>.jsonl: the official train splits (kathleen_arctic whole: it has no split),
  minus the dev speakers;
- dev.jsonl: a speaker-disjoint dev set cut from the train splits (never the test splits);
- test_<corpus>.jsonl: the official test splits, untouched, for the final evaluation only;
  except FSDD, whose official split has the same six speakers on both sides: its test file holds
  every recording of 2 held-out speakers, and training has none of them;
- test_librivox.jsonl: the five LibriVox clips of Debian's pocketsphinx-testdata package
  (`apt-get install pocketsphinx-testdata`), when installed: read English speech neither model
  trained on.

Audio paths are written absolute, so the manifests work from any folder.
Usage: python recipes/en-small/prepare.py [--corpora ../shared/corpora] [--out exp/en-small/data]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

# Speakers held out of training for the dev set, per corpus (chosen at random, seeded).
DEV_SPEAKERS = {"speechocean762": 12, "an4": 6, "fsdd": 0}
# Corpora whose official test split shares its speakers with the train split: this many speakers
# are held out, all their recordings (both splits) become the test set.
TEST_SPEAKERS = {"fsdd": 2}
SEED = 762
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


def read(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            row["audio"] = str((path.parent / row["audio"]).resolve())
            rows.append(row)
    return rows


def write(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)
    hours = sum(r.get("duration", 0.0) for r in rows) / 3600
    print(f"{path}: {len(rows)} utterances, {hours:.2f} h")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", type=Path, default=Path("../shared/corpora"))
    parser.add_argument("--out", type=Path, default=Path("exp/en-small/data"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    dev: list[dict] = []
    for corpus in ("speechocean762", "an4", "fsdd", "kathleen_arctic"):
        folder = args.corpora / corpus
        if not folder.is_dir():
            print(f"skipping {corpus}: {folder} not found")
            continue
        train_file = folder / "train.jsonl"
        rows = read(train_file if train_file.exists() else folder / "manifest.jsonl")
        test = read(folder / "test.jsonl") if (folder / "test.jsonl").exists() else []
        if corpus in TEST_SPEAKERS:
            speakers = sorted({r["speaker"] for r in rows + test})
            unseen = set(rng.sample(speakers, min(TEST_SPEAKERS[corpus], len(speakers) - 1)))
            test = [r for r in rows + test if r["speaker"] in unseen]
            rows = [r for r in rows if r["speaker"] not in unseen]
        speakers = sorted({r["speaker"] for r in rows})
        held = set(rng.sample(speakers, min(DEV_SPEAKERS.get(corpus, 0), len(speakers) - 1)))
        dev += [r for r in rows if r["speaker"] in held]
        write(args.out / f"train_{corpus}.jsonl", [r for r in rows if r["speaker"] not in held])
        if test:
            write(args.out / f"test_{corpus}.jsonl", test)
    write(args.out / "dev.jsonl", dev)
    if (LIBRIVOX / "transcription").exists():
        write(args.out / "test_librivox.jsonl", librivox_rows(LIBRIVOX))
    else:
        print(f"skipping librivox: {LIBRIVOX} not found (apt-get install pocketsphinx-testdata)")


def librivox_rows(folder: Path) -> list[dict]:
    """Manifest rows of the clips listed in `folder`/transcription (`<s> text </s> (id)`)."""
    import soundfile as sf

    rows = []
    for line in (folder / "transcription").read_text().splitlines():
        text, _, utt = line.rpartition("(")
        utt = utt.strip().rstrip(")")
        words = [w for w in text.split() if w not in ("<s>", "</s>")]
        audio = folder / f"{utt}.wav"
        rows.append({"audio": str(audio.resolve()), "text": " ".join(words),
                     "duration": round(sf.info(str(audio)).duration, 3),
                     "speaker": "librivox", "id": utt})
    return rows


if __name__ == "__main__":
    main()
