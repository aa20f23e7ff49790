"""Prepare the en-small recipe's manifests from the shared corpora.

Writes into OUT (default exp/en-small/data):
- train_<corpus>.jsonl: the official train splits (kathleen_arctic whole: it has no split),
  minus the dev speakers;
- dev.jsonl: a speaker-disjoint dev set cut from the train splits (never the test splits);
- dev_native.jsonl: native read speech never trained on: the last NATIVE_DEV["ljspeech"] clips
  of LJ Speech's train split (the end of chapter LJ002) and NATIVE_DEV["kathleen_arctic"] ARCTIC
  prompts read by Kathleen (seeded); it picks checkpoints and LM weights of the fine-tuning;
- test_<corpus>.jsonl: the official test splits, untouched, for the final evaluation only;
  except FSDD, whose official split has the same six speakers on both sides: its test file holds
  every recording of 2 held-out speakers, and training has none of them;
- test_librivox.jsonl: the five LibriVox clips of Debian's pocketsphinx-testdata package
  (`apt-get install pocketsphinx-testdata`), when installed: read English speech neither model
  trained on;
- heldout.txt: every dev and test transcript, one a line (kept out of TTS prompts and LM text).

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
# Utterances of the two native readers held out of training for dev_native.jsonl.
NATIVE_DEV = {"ljspeech": 50, "kathleen_arctic": 100}
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
    for corpus in ("speechocean762", "an4", "fsdd"):
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
    native_dev(args.corpora, args.out)
    if (LIBRIVOX / "transcription").exists():
        write(args.out / "test_librivox.jsonl", librivox_rows(LIBRIVOX))
    else:
        print(f"skipping librivox: {LIBRIVOX} not found (apt-get install pocketsphinx-testdata)")
    held = sorted({r["text"] for f in [*args.out.glob("dev*.jsonl"), *args.out.glob("test_*.jsonl")]
                   for r in read(f)})
    (args.out / "heldout.txt").write_text("".join(t + "\n" for t in held), encoding="utf-8")
    print(f"{args.out / 'heldout.txt'}: {len(held)} dev and test transcripts")


def native_dev(corpora: Path, out: Path) -> None:
    """dev_native.jsonl and the native readers' training manifests without it; LJ's test split
    (chapter LJ003) as test_ljspeech.jsonl."""
    dev: list[dict] = []
    rng = random.Random(SEED + 1)
    for corpus in ("ljspeech", "kathleen_arctic"):
        folder = corpora / corpus
        if not folder.is_dir():
            print(f"skipping {corpus}: {folder} not found")
            continue
        train_file = folder / "train.jsonl"
        rows = read(train_file if train_file.exists() else folder / "manifest.jsonl")
        n = NATIVE_DEV[corpus]
        # LJ: a contiguous end of the book (no neighbouring sentence trained on); ARCTIC: random.
        held = set(range(len(rows) - n, len(rows))) if corpus == "ljspeech" else set(
            rng.sample(range(len(rows)), n))
        dev += [r for i, r in enumerate(rows) if i in held]
        write(out / f"train_{corpus}.jsonl", [r for i, r in enumerate(rows) if i not in held])
        if (folder / "test.jsonl").exists():
            write(out / f"test_{corpus}.jsonl", read(folder / "test.jsonl"))
    write(out / "dev_native.jsonl", dev)


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
