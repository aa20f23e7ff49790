"""The reference recipes' stages run end to end on tiny fake corpora in the real layouts, so the
recipes cannot rot: prepare -> tokenizer -> train a few steps -> LM -> tune -> evaluate."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_datasets import commonvoice, librispeech

ROOT = Path(__file__).resolve().parent.parent
# Overrides that make any recipe config a seconds-long CPU smoke run.
SMOKE = ["--set", "model.size=\"tiny\"", "--set", "optim.max_steps=3", "--set",
         "optim.warmup_steps=1", "--set", "data.num_workers=0", "--set", "run.device=\"cpu\"",
         "--set", "run.precision=\"fp32\"", "--set", "run.progress=false", "--set",
         "data.max_batch_seconds=30.0", "--set", "run.checkpoint_every=2"]
SENTENCES = ["the cat sat on the mat", "a dog ran in the park", "we like green apples",
             "she reads a book at night", "they quickly jumped over the fox"]


def run(recipe: str, stage: str, env: dict[str, str], *extra: str) -> str:
    result = subprocess.run(["bash", f"recipes/{recipe}/run.sh", stage, *extra], cwd=ROOT,
                            env={**os.environ, "HARKEN": f"{sys.executable} -m harken.cli",
                                 "NGPU": "0", "OMP_NUM_THREADS": "1", **env},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{stage} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def results(path: Path) -> dict[str, dict]:
    """'<name>: {json}' lines of a recipe's results.txt."""
    return {line.split(": ", 1)[0]: json.loads(line.split(": ", 1)[1])
            for line in path.read_text().splitlines()}


@pytest.mark.slow
def test_librispeech_recipe_end_to_end_on_a_fake_corpus(tmp_path):
    lm_text = tmp_path / "librispeech-lm-norm.txt.gz"
    with gzip.open(lm_text, "wt") as handle:
        handle.write("\n".join(s.upper() for s in SENTENCES * 3) + "\n")
    exp = tmp_path / "exp"
    layout = {split: {(speaker, "100"): [s.upper() for s in SENTENCES]}
              for split, speaker in (("train-clean-100", "19"), ("dev-clean", "84"),
                                     ("test-clean", "61"))}
    env = {"LIBRISPEECH": str(librispeech(tmp_path, layout)), "LM_TEXT": str(lm_text),
           "EXP": str(exp), "VOCAB": "36"}
    run("librispeech", "prepare", env)
    assert sorted(p.name for p in (exp / "data").iterdir()) == [
        "dev-clean.jsonl", "test-clean.jsonl", "train-clean-100.jsonl"]
    run("librispeech", "tokenizer", env)
    run("librispeech", "train", env, *SMOKE)
    config = json.loads((exp / "conformer-ctc/model/config.json").read_text())
    assert config["architecture"] == "conformer" and config["tokenizer"]["vocab_size"] == 37
    assert config["training"]["config"]["data"]["dev"] == [str(exp / "data/dev-clean.jsonl")]
    run("librispeech", "lm", env)
    run("librispeech", "tune", env)
    run("librispeech", "evaluate", env)
    scores = results(exp / "conformer-ctc/results.txt")
    assert sorted(scores) == ["test-clean greedy", "test-clean with LM"]
    assert all(s["n"] == len(SENTENCES) and 0.0 <= s["cer"] for s in scores.values())


@pytest.mark.slow
def test_commonvoice_recipe_end_to_end_for_spanish(tmp_path):
    lang = commonvoice(tmp_path)
    exp = tmp_path / "exp"
    env = {"CV": str(lang.parent), "CV_LANG": "es", "EXP": str(exp)}
    run("commonvoice", "prepare", env)
    run("commonvoice", "train", env, *SMOKE, "--set", "tokenizer.min_char_count=1")
    config = json.loads((exp / "conformer-ctc/model/config.json").read_text())
    assert config["tokenizer"]["normalizer"]["language"] == "es"
    assert "ñ" in config["tokenizer"]["alphabet"] and "é" in config["tokenizer"]["alphabet"]
    run("commonvoice", "lm", env)
    run("commonvoice", "evaluate", env)
    scores = results(exp / "conformer-ctc/results.txt")
    assert sorted(scores) == ["test greedy", "test with LM"]
    assert all(s["n"] == 1 for s in scores.values())


def test_en_small_prepare_keeps_every_test_speaker_out_of_training(tmp_path):
    """FSDD's official split has the same speakers on both sides: the recipe holds 2 out."""
    corpora = tmp_path / "corpora"
    splits = {"fsdd": {"train": ["ann", "bob", "cid", "dee"], "test": ["ann", "bob", "cid", "dee"]},
              "an4": {"train": ["x1", "x2", "x3"], "test": ["x4"]}}  # an4: disjoint already
    for corpus, by_split in splits.items():
        folder = corpora / corpus
        folder.mkdir(parents=True)
        for split, names in by_split.items():
            rows = [{"audio": f"{s}_{split}_{i}.ogg", "text": "one", "duration": 0.5,
                     "speaker": s, "id": f"{s}_{split}_{i}"} for s in names for i in range(3)]
            (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "data"
    subprocess.run([sys.executable, "recipes/en-small/prepare.py", "--corpora", str(corpora),
                    "--out", str(out)], cwd=ROOT, check=True, capture_output=True)

    def speakers(name):
        return {json.loads(line)["speaker"] for line in (out / name).read_text().splitlines()}

    for corpus in ("fsdd", "an4"):
        assert not speakers(f"train_{corpus}.jsonl") & speakers(f"test_{corpus}.jsonl"), corpus
    assert len(speakers("test_fsdd.jsonl")) == 2
    assert len((out / "test_fsdd.jsonl").read_text().splitlines()) == 2 * 6  # both splits


def test_en_small_finetune_config_keeps_the_model_it_starts_from():
    """The fine-tuning stage may change the data mixture and the schedule, never the network,
    tokenizer or features it inherits (the weights would not fit, or would hear another scale)."""
    from harken.training.config import load_config

    base = load_config(ROOT / "recipes/en-small/config.toml")
    tuned = load_config(ROOT / "recipes/en-small/finetune.toml")
    for section in ("tokenizer", "features", "specaugment"):
        assert getattr(tuned, section) == getattr(base, section), section
    assert (tuned.model.architecture, tuned.model.size, tuned.model.overrides) == (
        base.model.architecture, base.model.size, base.model.overrides)
    assert tuned.model.init_from and not base.model.init_from
    assert tuned.run.out_dir != base.run.out_dir
    assert tuned.optim.lr < base.optim.lr
    manifests = {e.manifest for e in base.data.train}
    assert manifests < {e.manifest for e in tuned.data.train}
    assert tuned.data.dev == base.data.dev
