"""Resumable batch transcription: worker pools, kill -9 and restart, Ray, summaries, inputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from harken.cli.transcribe import output_formats
from harken.serving.batch_jobs import BatchSettings, Progress, collect_inputs, read_summary, run_batch
from harken.training.manifests import read_audio_list
from harken.cli import main as cli_main
from harken.errors import ConfigError, ManifestError
from harken.model import new_model
from harken.transcribe import atomic_write_text, transcribe_files

FORMATS = ("json", "srt", "vtt", "txt")
# Seconds of audio per generated file, cycled: short clips and files long enough for VAD cuts.
DURATIONS = (2.0, 6.0, 33.0)
BAD_FILES = {"bad.wav": "not an audio file", "empty.wav": "empty file"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny model: its (nonsense) output is a deterministic function of the audio."""
    torch.manual_seed(0)
    return new_model("deepspeech2", "tiny").save(tmp_path_factory.mktemp("model") / "tiny")


def make_audio(folder: Path, count: int, bad: bool = True) -> Path:
    """`count` WAV files of tones in noise (every third in a subfolder), plus broken files."""
    rng = np.random.default_rng(0)
    for i in range(count):
        sr = 16000
        t = np.arange(int(sr * DURATIONS[i % len(DURATIONS)])) / sr
        wave = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) * (np.sin(2 * np.pi * 0.7 * t) > 0)
        wave += 0.02 * rng.standard_normal(len(t))
        target = folder / ("sub" if i % 3 == 0 else ".") / f"f{i:02d}.wav"
        target.parent.mkdir(parents=True, exist_ok=True)
        sf.write(target, wave.astype(np.float32), sr)
    if bad:
        (folder / "bad.wav").write_text("this is a text file, not audio\n")
        (folder / "empty.wav").write_bytes(b"")
    return folder


def outputs(folder: Path) -> dict[str, bytes]:
    """Every output file under `folder` (not the summary), by relative path."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "summary.jsonl"}


def check_summary(out: Path, audio: Path, count: int) -> list[dict]:
    """One row per file; good files ok with all formats, bad files an error naming them."""
    rows = read_summary(out / "summary.jsonl")
    by_path = {row["path"]: row for row in rows}
    assert len(rows) == len(by_path) == count + len(BAD_FILES)
    for name, reason in BAD_FILES.items():
        row = by_path[str((audio / name).resolve())]
        assert row["status"] == "error" and row["outputs"] == {}
        assert str(audio.resolve() / name) in row["error"] and reason in row["error"]
    good = [row for row in rows if row["status"] == "ok"]
    assert len(good) == count
    for row in good:
        assert row["error"] is None and row["duration"] in DURATIONS and row["seconds"] >= 0
        assert sorted(row["outputs"]) == sorted(FORMATS)
        assert all((out / path).is_file() for path in row["outputs"].values())
    return rows


@pytest.mark.slow
def test_killed_batch_resumes_skipping_finished_files_and_matches_one_run(tiny_model, tmp_path):
    audio = make_audio(tmp_path / "audio", 9)
    common = [str(audio), "--model", str(tiny_model), "-f", ",".join(FORMATS),
              "--files-per-task", "2", "--no-progress"]
    reference = tmp_path / "reference"
    assert cli_main(["transcribe", *common, "-o", str(reference)]) == 1  # two files fail
    expected = outputs(reference)
    assert len(expected) == 9 * len(FORMATS)
    assert "sub/f00.srt" in expected and expected["sub/f00.vtt"].startswith(b"WEBVTT\n\n")
    check_summary(reference, audio, 9)

    out = tmp_path / "out"
    summary = out / "summary.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    job = subprocess.Popen([sys.executable, "-m", "harken.cli", "transcribe", *common,
                            "-o", str(out), "--workers", "2", "--threads", "1"],
                           env=env, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and job.poll() is None:
            if any(row["status"] == "ok" for row in read_summary(summary)):
                break
            time.sleep(0.005)
        os.killpg(job.pid, signal.SIGKILL)  # the job and its worker processes
    finally:
        job.wait()
    finished = read_summary(summary)
    assert "ok" in {row["status"] for row in finished} and len(finished) < 11, \
        "the kill should land in the middle of the job"
    for name, data in outputs(out).items():  # every output written so far is complete
        if not Path(name).name.startswith("."):
            assert data == expected[name], name
    stamps = {path: (out / path).stat().st_mtime_ns
              for row in finished for path in row["outputs"].values()}

    time.sleep(0.05)
    assert cli_main(["transcribe", *common, "-o", str(out)]) == 1
    assert {path: (out / path).stat().st_mtime_ns for path in stamps} == stamps
    assert outputs(out) == expected  # complete, and the killed writes' temporary files are gone
    check_summary(out, audio, 9)


def test_resume_redoes_missing_outputs_new_formats_and_failures_on_request(tiny_model, tmp_path):
    audio = make_audio(tmp_path / "audio", 3)
    inputs = collect_inputs([audio])
    settings = BatchSettings(model=str(tiny_model), formats=("txt",))
    out = tmp_path / "out"
    first = run_batch(inputs, out, settings, progress=False)
    assert (first.total, first.skipped, first.done, first.failed) == (5, 0, 3, 2)
    assert run_batch(inputs, out, settings, progress=False).skipped == 5

    (out / "f01.txt").unlink()
    (out / "sub" / ".f00.txt.999.tmp").write_text("part of a write that a kill cut short")
    again = run_batch(inputs, out, settings, progress=False)
    assert not (out / "sub" / ".f00.txt.999.tmp").exists()
    assert (again.skipped, again.done, again.failed) == (4, 1, 0)
    assert (out / "f01.txt").is_file()

    both = run_batch(inputs, out, BatchSettings(model=str(tiny_model), formats=("txt", "srt")),
                     progress=False)
    assert (both.skipped, both.done) == (2, 3)  # the failures stay recorded, not retried
    retried = run_batch(inputs, out, settings, retry_failed=True, progress=False)
    assert (retried.skipped, retried.done, retried.failed) == (3, 0, 2)
    assert len(read_summary(out / "summary.jsonl")) == 5


def test_ray_cluster_mode_gives_the_same_outputs_and_resumes(tiny_model, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'harken[ray]')")
    audio = make_audio(tmp_path / "audio", 6)
    inputs = collect_inputs([audio])
    settings = BatchSettings(model=str(tiny_model), formats=FORMATS, threads=1)
    reference = tmp_path / "reference"
    run_batch(inputs, reference, settings, files_per_task=2, progress=False)

    out = tmp_path / "out"
    # An earlier run stopped after two tasks (task boundaries as in the full run).
    run_batch(inputs[:4], out, settings, files_per_task=2, progress=False)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.txt")}
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        report = run_batch(inputs, out, settings, ray_address="auto", files_per_task=2,
                           progress=False)
    finally:
        ray.shutdown()
    assert (report.skipped, report.done, report.failed) == (4, 4, 0)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert outputs(out) == outputs(reference)
    check_summary(out, audio, 6)


def test_a_failure_inside_a_batch_costs_only_its_own_file(tmp_path):
    class Model:
        sample_rate = 16000

        def transcribe_batch(self, waves, options, vad):
            if any(len(w) == 3 for w in waves):
                raise RuntimeError("boom")
            from harken.decoding.types import Transcript
            return [Transcript(text=str(len(w))) for w in waves]

    for n in (2, 3, 4):
        sf.write(tmp_path / f"{n}.wav", np.zeros(n, np.float32), 16000)
    paths = [tmp_path / f"{n}.wav" for n in (2, 3, 4)]
    results = list(transcribe_files(Model(), paths))
    assert [r.transcript.text if r.transcript else None for r in results] == ["2", None, "4"]
    assert results[1].error == f"{paths[1]}: RuntimeError: boom"


def test_inputs_mirror_folders_and_read_manifests(tmp_path):
    audio = make_audio(tmp_path / "audio", 4, bad=False)
    names = [(entry.path, entry.name) for entry in collect_inputs([audio])]
    assert names == [(audio.resolve() / f"{n}.wav", n) for n in ("f01", "f02", "sub/f00", "sub/f03")]

    (tmp_path / "list.jsonl").write_text('{"audio": "audio/f01.wav", "text": "x"}\n\n'
                                         '{"audio_filepath": "audio/sub/f00.wav"}\n')
    (tmp_path / "list.csv").write_text("wav_filesize,wav_filename\n1,audio/f02.wav\n")
    (tmp_path / "list.txt").write_text(f"{audio / 'f01.wav'}\naudio/f01.wav\n")
    assert read_audio_list(tmp_path / "list.jsonl") == [audio / "f01.wav", audio / "sub/f00.wav"]
    assert read_audio_list(tmp_path / "list.csv") == [audio / "f02.wav"]
    assert read_audio_list(tmp_path / "list.txt") == [audio / "f01.wav"]
    assert [e.name for e in collect_inputs([tmp_path / "list.jsonl"])] == ["audio/f01", "audio/sub/f00"]

    (tmp_path / "broken.jsonl").write_text('{"audio": "a.wav"}\n{"audio": \n')
    with pytest.raises(ManifestError, match=r"broken.jsonl, line 2: not valid JSON"):
        read_audio_list(tmp_path / "broken.jsonl")
    (tmp_path / "nopath.jsonl").write_text('{"text": "hi"}\n')
    with pytest.raises(ManifestError, match=r"nopath.jsonl, line 1: expected an object with an audio"):
        read_audio_list(tmp_path / "nopath.jsonl")
    sf.write(tmp_path / "f01.wav", np.zeros(10, np.float32), 16000)
    with pytest.raises(ConfigError, match=r"f01.wav and .*f01.wav would both be written as f01\.\*"):
        collect_inputs([audio / "f01.wav", tmp_path / "f01.wav"])


def test_summary_reader_ignores_a_torn_last_line(tmp_path):
    summary = tmp_path / "summary.jsonl"
    summary.write_text('{"path": "/a.wav", "status": "ok"}\n{"path": "/b.wav", "sta')
    assert read_summary(summary) == [{"path": "/a.wav", "status": "ok"}]


def test_atomic_write_keeps_the_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old\n")

    def fail(*args):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk on fire"):
        atomic_write_text(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_format_lists_and_progress_line():
    assert output_formats("json, srt") == "json,srt"
    assert output_formats("all") == "txt,json,srt,vtt"
    with pytest.raises(Exception, match="unknown format doc"):
        output_formats("txt,doc")

    class Stream:
        text = ""

        def isatty(self):
            return False

        def write(self, text):
            self.text += text

        def flush(self):
            pass

    stream = Stream()
    meter = Progress(total=4, total_bytes=400, stream=stream)
    meter.update(2, 100, 1800.0)
    assert stream.text == ""  # a line every PROGRESS_SECONDS without a terminal, and at the end
    meter.update(2, 300, 1800.0)
    assert stream.text.startswith("transcribe: 4/4 files, 1.00 h audio, RTF 0.000, elapsed 0:00:00")
    assert stream.text.endswith("ETA 0:00:00\n")


@pytest.mark.slow
def test_a_worker_that_cannot_load_the_model_stops_the_job_with_the_reason(tmp_path):
    from harken.errors import ModelError

    audio = make_audio(tmp_path / "audio", 2, bad=False)
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelError, match=f"{missing}: no such model file or folder"):
        run_batch(collect_inputs([audio]), tmp_path / "out", BatchSettings(model=str(missing)),
                  workers=2, progress=False)
    assert read_summary(tmp_path / "out" / "summary.jsonl") == []
