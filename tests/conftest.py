"""Shared fixtures: speech generated with offline TTS (espeak-ng), so tests need no data files."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

# Short phrases with distinct words: a tiny model can learn them in seconds.
PHRASES = ["yes", "no", "go left", "stop now", "hello world", "red green blue"]


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def speak(text: str, path: Path, voice: str = "en-us", speed: int = 150) -> Path:
    """Render `text` with espeak-ng into a WAV file (22.05 kHz mono)."""
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text],
                   check=True, capture_output=True)
    return path


def make_corpus(folder: Path, phrases: list[str], voices: tuple[str, ...] = ("en-us",)) -> Path:
    """Speak each phrase with each voice; write `manifest.jsonl` with relative paths."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for v, voice in enumerate(voices):
        for i, text in enumerate(phrases):
            name = f"utt{v}_{i}.wav"
            speak(text, folder / name, voice=voice)
            lines.append({"audio": name, "text": text, "id": f"utt{v}_{i}", "speaker": voice})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return manifest


@pytest.fixture(scope="session")
def tts_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A manifest of the PHRASES spoken by espeak-ng (skips when espeak-ng is missing)."""
    if not have_espeak():
        pytest.skip("espeak-ng is not installed (make system-deps installs it)")
    return make_corpus(tmp_path_factory.mktemp("tts"), PHRASES)
