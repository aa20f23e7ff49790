"""Training survives SIGKILL: checkpoints are whole or absent, checksummed, and `--resume` ends
with exactly the weights of an uninterrupted run (CPU, fixed seed)."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import hostile_inputs as hostile
from harken.errors import ConfigError
from harken.training.checkpoints import CHECKPOINT_DIR, checkpoint_problem, latest_checkpoint
from harken.training.config import load_config
from harken.training.loop import train

STEPS = 24
KILLS = 3
ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": str(Path(__file__).parents[1] / "src")}


def write_corpus(folder: Path) -> Path:
    """Six half-second tones with one-letter transcripts (no speech synthesiser needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, letter in enumerate("abcdef"):
        t = np.arange(hostile.RATE // 2) / hostile.RATE
        tone = (0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t) * 32767).astype(np.int16)
        (folder / f"{letter}.wav").write_bytes(hostile.encode(tone))
        lines.append(json.dumps({"audio": f"{letter}.wav", "text": letter, "duration": 0.5}))
    manifest = folder / "train.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def write_config(folder: Path, manifest: Path, out_dir: Path) -> Path:
    """Three batches an epoch, a checkpoint every two steps."""
    path = folder / f"{out_dir.name}.toml"
    path.write_text(f"""
[model]
architecture = "deepspeech2"
size = "tiny"
[data]
train = ["{manifest}"]
num_workers = 0
max_batch_seconds = 1.0
sortagrad = false
[optim]
lr = 3e-3
warmup_steps = 4
max_steps = {STEPS}
epochs = 1000
[features]
dither = 0.1
[run]
out_dir = "{out_dir}"
seed = 7
device = "cpu"
threads = 1
checkpoint_every = 2
epochs_per_eval = 1000
log_every = 1
progress = false
""")
    return path


def final_weights(out_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out_dir / "model" / "weights.safetensors"))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("crash")
    manifest = write_corpus(folder / "data")
    config = write_config(folder, manifest, folder / "reference")
    train(load_config(config))
    return {"folder": folder, "manifest": manifest, "weights": final_weights(folder / "reference")}


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_gives_the_same_weights(reference) -> None:
    folder = reference["folder"]
    out_dir = folder / "killed"
    config = write_config(folder, reference["manifest"], out_dir)
    command = [sys.executable, "-m", "harken.cli", "train", str(config), "--resume"]
    chance = random.Random(2024)
    killed_at = []
    for _ in range(KILLS):
        process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE)
        metrics = out_dir / "metrics.jsonl"
        before = metrics.stat().st_size if metrics.exists() else 0
        deadline = time.monotonic() + 60
        # Wait until this process trains (a new metrics line), then kill it at a random moment.
        while process.poll() is None and time.monotonic() < deadline:
            if metrics.exists() and metrics.stat().st_size > before:
                break
            time.sleep(0.01)
        time.sleep(chance.uniform(0.0, 0.4))
        if process.poll() is not None:  # finished before the kill: the run is complete
            break
        process.send_signal(signal.SIGKILL)
        process.wait()
        checkpoint = latest_checkpoint(out_dir)
        assert checkpoint is None or checkpoint_problem(checkpoint) is None
        killed_at.append(json.loads((checkpoint / "state.json").read_text())["step"]
                         if checkpoint else 0)
    assert len(killed_at) >= 2, f"too few kills landed during training: {killed_at}"
    done = subprocess.run(command, env=ENV, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert_same_weights(final_weights(out_dir), reference["weights"])


@pytest.mark.slow
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(reference, caplog) -> None:
    folder = reference["folder"]
    out_dir = folder / "damaged"
    config = load_config(write_config(folder, reference["manifest"], out_dir))
    stop_at = 11

    class Stop(Exception):
        pass

    def stop(step: int) -> None:
        if step == stop_at:
            raise Stop

    with pytest.raises(Stop):
        train(config, on_step=stop)
    latest = latest_checkpoint(out_dir)
    assert latest is not None and latest.name == "step-00000010"
    weights = latest / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # one flipped bit in the last weight
    weights.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="harken.training.loop"):
        fallback = latest_checkpoint(out_dir)
    assert fallback is not None and fallback.name == "step-00000008"
    assert "model.safetensors is damaged (SHA-256 mismatch)" in caplog.text
    train(config, resume=True)
    assert_same_weights(final_weights(out_dir), reference["weights"])


def test_no_usable_checkpoint_is_an_error_naming_the_run(tmp_path) -> None:
    step = tmp_path / CHECKPOINT_DIR / "step-00000002"
    step.mkdir(parents=True)
    (step / "checksums.json").write_text("{not json")
    with pytest.raises(ConfigError, match=f"{tmp_path}: no usable checkpoint .*unreadable"):
        latest_checkpoint(tmp_path)
