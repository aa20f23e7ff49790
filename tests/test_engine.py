"""End to end: tiny models of each architecture trained in seconds, model files, resume, CLI."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import harken
from harken.cli import main as cli_main
from harken.errors import ConfigError, ModelError
from harken.model import load_model, new_model, split_long_audio
from harken.training.config import TrainConfig, config_from_dict, load_config
from harken.training.loop import train

from conftest import PHRASES, speak

# Steps that let each tiny architecture memorise the six phrases (measured: loss < 0.05).
TINY_STEPS = {"deepspeech2": 400, "conformer": 500, "citrinet": 500}
TINY_LR = {"deepspeech2": 3e-3, "conformer": 3e-3, "citrinet": 5e-3}


def tiny_config(manifest: Path, out_dir: Path, architecture: str = "deepspeech2",
                steps: int = 20, **sections) -> TrainConfig:
    data = {
        "model": {"architecture": architecture, "size": "tiny"},
        "data": {"train": [{"manifest": str(manifest)}], "max_batch_seconds": 60.0,
                 "num_workers": 0, "sortagrad": False},
        "optim": {"lr": TINY_LR.get(architecture, 3e-3), "warmup_steps": 20, "max_steps": steps,
                  "epochs": 10_000, "schedule": "constant", "weight_decay": 0.0},
        "specaugment": {"enabled": False},
        "features": {"dither": 0.0},
        "run": {"out_dir": str(out_dir), "seed": 1, "device": "cpu", "checkpoint_every": 5,
                "log_every": 5, "progress": False, "epochs_per_eval": 100_000},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return config_from_dict(data)


@pytest.fixture(scope="module")
def trained(tts_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny trained model per architecture (trained once for the module)."""
    models = {}
    for architecture, steps in TINY_STEPS.items():
        out = tmp_path_factory.mktemp(architecture)
        models[architecture] = train(tiny_config(tts_corpus, out, architecture, steps))
    return models


@pytest.mark.slow
@pytest.mark.parametrize("architecture", sorted(TINY_STEPS))
def test_tiny_model_transcribes_its_training_phrases_exactly(trained, tts_corpus, architecture):
    model = load_model(trained[architecture])
    folder = tts_corpus.parent
    results = model.transcribe_batch([folder / f"utt0_{i}.wav" for i in range(len(PHRASES))])
    assert [r.text for r in results] == PHRASES


@pytest.mark.slow
def test_word_times_fall_inside_the_audio_and_in_order(trained, tts_corpus):
    model = load_model(trained["deepspeech2"])
    result = model.transcribe(tts_corpus.parent / "utt0_5.wav")  # "red green blue"
    assert [w.word for w in result.words] == ["red", "green", "blue"]
    starts = [w.start for w in result.words]
    assert starts == sorted(starts)
    assert 0.0 <= result.words[0].start < result.words[-1].end <= result.duration + 0.05
    assert all(0.0 < w.confidence <= 1.0 for w in result.words)


@pytest.mark.slow
def test_evaluate_cli_reports_json(trained, tts_corpus, capsys):
    code = cli_main(["evaluate", str(tts_corpus), "--model", str(trained["deepspeech2"]), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == len(PHRASES)
    assert report["wer"] == 0.0 and report["cer"] == 0.0
    assert report["audio_seconds"] > 1.0 and report["rtf"] > 0.0


@pytest.mark.slow
def test_transcribe_cli_skips_a_bad_file_and_fails_at_the_end(trained, tts_corpus, tmp_path, capsys):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    good = tts_corpus.parent / "utt0_1.wav"
    code = cli_main(["transcribe", str(bad), str(good), "--model", str(trained["deepspeech2"])])
    captured = capsys.readouterr()
    assert code == 1
    assert "broken.wav" in captured.err
    assert "no" in captured.out.split(":")[-1].split()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["srt", "vtt", "json"])
def test_transcribe_cli_writes_subtitles(trained, tts_corpus, tmp_path, fmt):
    out = tmp_path / "out"
    code = cli_main(["transcribe", str(tts_corpus.parent / "utt0_4.wav"), "--model",
                     str(trained["deepspeech2"]), "-f", fmt, "-o", str(out)])
    assert code == 0
    text = (out / f"utt0_4.{fmt}").read_text()
    if fmt == "srt":
        assert text.startswith("1\n00:00:0") and "hello world" in text
    elif fmt == "vtt":
        assert text.startswith("WEBVTT\n\n00:00:0") and "hello world" in text
    else:
        assert json.loads(text)["text"] == "hello world"


@pytest.mark.slow
def test_single_file_model_round_trip(trained, tmp_path):
    model = load_model(trained["conformer"])
    single = model.save(tmp_path / "conformer.harken")
    again = load_model(single)
    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    np.testing.assert_array_equal(model.log_probs([audio])[0], again.log_probs([audio])[0])
    assert again.path == single


@pytest.mark.parametrize("architecture", ["deepspeech2", "conformer", "citrinet"])
def test_save_load_gives_identical_outputs(tmp_path, architecture):
    torch.manual_seed(0)
    model = new_model(architecture, "tiny")
    path = model.save(tmp_path / "m")
    again = load_model(path)
    audio = np.random.default_rng(1).standard_normal(12000).astype(np.float32) * 0.1
    np.testing.assert_array_equal(model.log_probs([audio])[0], again.log_probs([audio])[0])
    assert json.loads((path / "config.json").read_text())["architecture"] == architecture


def test_corrupt_weights_are_refused(tmp_path):
    path = new_model("deepspeech2", "tiny").save(tmp_path / "m")
    weights = path / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="weights.safetensors is corrupt"):
        load_model(path)


def test_missing_model_and_bad_archive_members(tmp_path):
    with pytest.raises(ModelError, match="no such model"):
        load_model(tmp_path / "nothing")
    evil = tmp_path / "evil.harken"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../config.json", "{}")
    with pytest.raises(ModelError, match="refusing archive member"):
        load_model(evil)
    (tmp_path / "notzip.harken").write_bytes(b"hello")
    with pytest.raises(ModelError, match="not a harken model"):
        load_model(tmp_path / "notzip.harken")


def test_resume_after_kill_gives_the_same_weights(tts_corpus, tmp_path):
    from safetensors.torch import load_file

    full = train(tiny_config(tts_corpus, tmp_path / "full", steps=14))

    class Killed(Exception):
        pass

    def kill_at(step: int) -> None:
        if step == 8:
            raise Killed

    config = tiny_config(tts_corpus, tmp_path / "killed", steps=14)
    with pytest.raises(Killed):
        train(config, on_step=kill_at)
    resumed = train(config, resume=True)
    a = load_file(str(full / "weights.safetensors"))
    b = load_file(str(resumed / "weights.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def test_a_second_run_in_the_same_folder_needs_resume(tts_corpus, tmp_path):
    train(tiny_config(tts_corpus, tmp_path / "run", steps=5))
    with pytest.raises(ConfigError, match="--resume"):
        train(tiny_config(tts_corpus, tmp_path / "run", steps=5))


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="optim.learning_rate"):
        config_from_dict({"data": {"train": ["x.jsonl"]}, "optim": {"learning_rate": 1}})
    with pytest.raises(ConfigError, match="optim.lr: expected a number"):
        config_from_dict({"data": {"train": ["x.jsonl"]}, "optim": {"lr": "fast"}})
    with pytest.raises(ConfigError, match="data.train"):
        config_from_dict({})
    toml = tmp_path / "c.toml"
    toml.write_text('[data]\ntrain = ["a.jsonl"]\n[optim]\nlr = 1e-3\n')
    config = load_config(toml, ["optim.lr=3e-4", "model.architecture='conformer'"])
    assert config.optim.lr == 3e-4 and config.model.architecture == "conformer"
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(toml, ["optim.lr"])


def test_long_audio_is_cut_at_quiet_points():
    rate = 16000
    rng = np.random.default_rng(0)
    audio = rng.standard_normal(rate * 70).astype(np.float32)
    audio[rate * 28: rate * 28 + rate // 2] = 0.0  # a pause near the first window's end
    pieces = split_long_audio(audio, rate, window_seconds=30.0)
    assert sum(len(p) for _, p in pieces) == len(audio)
    assert 28.0 <= pieces[1][0] <= 28.5
    assert all(len(p) <= 30 * rate for _, p in pieces)


def test_public_api():
    assert {"load_model", "load_audio", "Transcript", "Word", "Segment"} <= set(harken.__all__)


@pytest.mark.skipif(not __import__("shutil").which("espeak-ng"), reason="espeak-ng not installed")
def test_transcribe_accepts_arrays_and_bytes(tmp_path):
    model = new_model("deepspeech2", "tiny")
    wav = speak("hello", tmp_path / "h.wav")
    from_path = model.transcribe(wav)
    from_bytes = model.transcribe(wav.read_bytes())
    from_array = model.transcribe(harken.load_audio(wav))
    assert from_path.text == from_bytes.text == from_array.text
    assert from_path.duration == pytest.approx(from_array.duration)


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tts_corpus, tmp_path):
    """torchrun with 2 CPU processes (gloo) and one process see the same global batches."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    def config_file(name: str) -> Path:
        path = tmp_path / f"{name}.toml"
        path.write_text(f"""
[model]
architecture = "deepspeech2"
size = "tiny"
overrides = {{ conv_batch_norm = false, rnn_batch_norm = false }}
[data]
train = ["{tts_corpus}"]
max_batch_seconds = 60.0
num_workers = 0
[optim]
lr = 3e-3
warmup_steps = 2
max_steps = 6
schedule = "constant"
[specaugment]
enabled = false
[features]
dither = 0.0
[run]
out_dir = "{tmp_path / name}"
seed = 3
device = "cpu"
progress = false
epochs_per_eval = 1000
""")
        return path

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "harken.cli", "train", str(config_file("one"))],
                   check=True, env=env, capture_output=True)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc-per-node", "2", "-m", "harken.cli", "train", str(config_file("two"))],
                   check=True, env=env, capture_output=True)
    one = load_file(str(tmp_path / "one" / "model" / "weights.safetensors"))
    two = load_file(str(tmp_path / "two" / "model" / "weights.safetensors"))
    for key in one:
        torch.testing.assert_close(one[key], two[key], rtol=1e-4, atol=1e-5, msg=key)


def test_greedy_on_request_overrides_stored_lm_defaults(tmp_path):
    import dataclasses

    from harken.cli import build_parser
    from harken.cli.common import decode_options as _options
    from harken.decoding.options import GREEDY

    model = new_model("deepspeech2", "tiny")
    model.config = dataclasses.replace(model.config, decoding={"lm": "missing.bin", "beam_width": 8})
    args = build_parser().parse_args(["transcribe", "x.wav", "--greedy"])
    assert _options(model, args) is GREEDY
    assert model.decode_options(GREEDY) is None  # None: greedy decoding
    args = build_parser().parse_args(["transcribe", "x.wav", "--beam-width", "4", "--no-lm"])
    options = _options(model, args)
    assert options.beam_width == 4 and options.lm is None


def test_fine_tuning_keeps_the_body_and_reinitialises_a_new_output_layer(tts_corpus, tmp_path):
    from harken.training.loop import _init_model

    base = train(tiny_config(tts_corpus, tmp_path / "base", steps=3))
    same = tiny_config(tts_corpus, tmp_path / "ft", steps=3, model={"init_from": str(base)})
    other = tiny_config(tts_corpus, tmp_path / "ft2", steps=3, model={"init_from": str(base)},
                        tokenizer={"alphabet": " abcdefghijklmnopqrstuvwxyz'-"})
    source = load_model(base).network.state_dict()
    from harken.text import CharTokenizer

    copied = _init_model(same, CharTokenizer()).network.state_dict()
    assert all(torch.equal(copied[k], v) for k, v in source.items())
    wider = _init_model(other, CharTokenizer(other.tokenizer.alphabet)).network.state_dict()
    changed = [k for k, v in source.items() if wider[k].shape != v.shape]
    assert changed and all(k.startswith(("output", "fc", "head", "decoder", "out")) for k in changed), changed
    kept = [k for k in source if k not in changed]
    assert all(torch.equal(wider[k], source[k]) for k in kept)


def test_subtitle_cues_have_at_most_two_lines_of_42_characters():
    from harken.decoding.types import Transcript, Word, group_segments
    from harken.transcribe import format_transcript, subtitle_cues

    words = [Word(w, 0.4 * i, 0.4 * i + 0.3, 0.9) for i, w in enumerate(
        ("the quick brown fox jumps over the lazy dog and then keeps running far away "
         "across the wide green meadow until the evening sun finally sets behind hills "
         "supercalifragilisticexpialidociouslyextraordinarily long").split())]
    transcript = Transcript(text=" ".join(w.word for w in words), words=words,
                            segments=group_segments(words), duration=words[-1].end)
    cues = subtitle_cues(transcript)
    assert len(cues) > 1
    assert " ".join(text.replace("\n", " ") for _, _, text in cues) == transcript.text
    for start, end, text in cues:
        lines = text.split("\n")
        assert len(lines) <= 2 and start < end
        assert all(len(line) <= 42 for line in lines if " " in line)  # one long word may overrun
    assert all(a[1] <= b[0] for a, b in zip(cues, cues[1:]))
    srt = format_transcript(transcript, "srt")
    assert srt.startswith("1\n00:00:00,000 --> 00:00:") and srt.count(" --> ") == len(cues)
    # Text without word times is spread over its segment.
    untimed = Transcript(text=transcript.text, words=[], segments=[], duration=30.0)
    spread = subtitle_cues(untimed)
    assert spread[0][0] == 0.0 and spread[-1][1] <= 30.0 and len(spread) == 3
    assert " ".join(text.replace("\n", " ") for _, _, text in spread) == transcript.text


def test_average_checkpoints_is_the_mean_of_the_newest_ones(tmp_path):
    from harken.training.checkpoints import average_checkpoints, save_checkpoint

    torch.manual_seed(0)
    network = new_model("deepspeech2", "tiny").network
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    weights = []
    for step in (1, 2, 3):
        with torch.no_grad():
            for parameter in network.parameters():
                parameter.add_(float(step))
        weights.append({k: v.clone() for k, v in network.state_dict().items()})
        save_checkpoint(tmp_path, step, network, optimizer, scheduler, {"epoch": 0}, keep=5)
    state, used = average_checkpoints(tmp_path, last=2)
    assert [p.name for p in used] == ["step-00000002", "step-00000003"]
    for name, value in state.items():
        if value.is_floating_point():
            expected = (weights[1][name].double() + weights[2][name].double()) / 2
            torch.testing.assert_close(value, expected.float())
        else:
            assert torch.equal(value, weights[2][name])
    with pytest.raises(ConfigError, match="no usable checkpoints"):
        average_checkpoints(tmp_path / "empty", last=2)


def test_global_normalisation_statistics_are_measured_from_the_training_audio(tts_corpus, tmp_path):
    from harken.training.manifests import load_utterance, read_manifest
    from harken.features import FeatureConfig, LogMel, compute_global_stats

    config = tiny_config(tts_corpus, tmp_path / "run", steps=2,
                         features={"dither": 0.0, "normalize": "global"},
                         model={"overrides": {"bidirectional": False}})
    model = load_model(train(config))
    featurizer = LogMel(FeatureConfig(dither=0.0, normalize="none")).eval()
    features = [featurizer(torch.from_numpy(load_utterance(u))[None], None)[0][0]
                for u in read_manifest(tts_corpus)]
    lengths = torch.tensor([len(f) for f in features])
    padded = torch.nn.utils.rnn.pad_sequence(features, batch_first=True)
    mean, std = compute_global_stats(padded, lengths)
    stored = model.featurizer.config
    assert stored.normalize == "global"
    np.testing.assert_allclose(stored.global_mean, mean.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(stored.global_std, std.numpy(), rtol=1e-4, atol=1e-4)
    # A resume reuses the statistics kept beside the checkpoints instead of measuring again.
    stats_file = tmp_path / "run" / "global_stats.json"
    kept = json.loads(stats_file.read_text())
    kept["global_mean"] = [0.5] * 80
    stats_file.write_text(json.dumps(kept))
    resumed = tiny_config(tts_corpus, tmp_path / "run", steps=4,
                          features={"dither": 0.0, "normalize": "global"},
                          model={"overrides": {"bidirectional": False}})
    tuned = train(resumed, resume=True)
    assert load_model(tuned).featurizer.config.global_mean == (0.5,) * 80
    # Fine-tuning keeps the statistics its initial network learned with (no new measurement).
    finetune = tiny_config(tts_corpus, tmp_path / "ft", steps=1,
                           features={"dither": 0.0, "normalize": "global"},
                           model={"overrides": {"bidirectional": False}, "init_from": str(tuned)})
    assert load_model(train(finetune)).featurizer.config.global_mean == (0.5,) * 80
    stats_file.write_text('{"global_mean": [0.5]')
    with pytest.raises(ConfigError, match="global_stats.json: unreadable .* delete the file"):
        train(resumed, resume=True)


def test_global_normalisation_with_half_the_statistics_is_refused(tts_corpus, tmp_path):
    with pytest.raises(ConfigError, match="global_std"):
        tiny_config(tts_corpus, tmp_path, features={"normalize": "global", "global_mean": [0.0] * 80})
