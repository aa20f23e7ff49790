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


def test_en_small_native_dev_is_never_trained_on_and_held_out_of_the_text(tmp_path):
    """dev_native.jsonl (native read speech that picks the checkpoint) shares no utterance with
    the native training manifests, and every dev and test transcript lands in heldout.txt
    (which clean_text.py keeps out of TTS prompts and LM text)."""
    corpora = tmp_path / "corpora"
    for corpus, split, count in (("ljspeech", "train", 60), ("ljspeech", "test", 4),
                                 ("kathleen_arctic", "manifest", 120)):
        (corpora / corpus).mkdir(parents=True, exist_ok=True)
        rows = [{"audio": f"{corpus}_{split}_{i}.ogg", "text": f"{corpus} {split} sentence {i}",
                 "duration": 1.0, "speaker": corpus, "id": f"{corpus}_{split}_{i}"}
                for i in range(count)]
        (corpora / corpus / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "data"
    subprocess.run([sys.executable, "recipes/en-small/prepare.py", "--corpora", str(corpora),
                    "--out", str(out)], cwd=ROOT, check=True, capture_output=True)

    def ids(name):
        return [json.loads(line)["id"] for line in (out / name).read_text().splitlines()]

    dev = ids("dev_native.jsonl")
    assert len(dev) == 50 + 100 and len(set(dev)) == len(dev)
    assert ids("dev_native.jsonl")[:50] == [f"ljspeech_train_{i}" for i in range(10, 60)]
    trained = set(ids("train_ljspeech.jsonl")) | set(ids("train_kathleen_arctic.jsonl"))
    assert len(trained) == 10 + 20 and not trained & set(dev)
    assert ids("test_ljspeech.jsonl") == [f"ljspeech_test_{i}" for i in range(4)]
    held = set((out / "heldout.txt").read_text().splitlines())
    assert "ljspeech test sentence 3" in held
    dev_texts = {json.loads(line)["text"] for line in (out / "dev_native.jsonl").read_text().splitlines()}
    assert dev_texts <= held and not held & {f"ljspeech train sentence {i}" for i in range(10)}


def test_en_small_native_configs_fine_tune_the_bundled_model_and_differ_only_by_kokoro():
    """The native fine-tunings start from the bundled model with its network, tokenizer and
    features, pick on dev_native, and the ablation is the same run without the Kokoro entry."""
    from harken.training.config import load_config

    base = load_config(ROOT / "recipes/en-small/config.toml")
    native = load_config(ROOT / "recipes/en-small/finetune-native.toml")
    ablation = load_config(ROOT / "recipes/en-small/finetune-native-nokokoro.toml")
    for config in (native, ablation):
        for section in ("tokenizer", "features", "specaugment"):
            assert getattr(config, section) == getattr(base, section), section
        assert config.model.overrides == base.model.overrides
        assert config.model.init_from == "src/harken/assets/en-small.harken"
        assert config.data.dev == ["exp/en-small/data/dev_native.jsonl"]
        assert config.data.dev[0] not in {e.manifest for e in config.data.train}
    kokoro = [e for e in native.data.train if "synth-kokoro" in e.manifest]
    assert [e.manifest for e in kokoro] == ["exp/en-small/synth-kokoro/filtered.jsonl"]
    assert [e for e in native.data.train if e not in kokoro] == ablation.data.train
    assert (native.optim, native.run.seed) == (ablation.optim, ablation.run.seed)
