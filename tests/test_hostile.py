"""The hostile-input corpus (tests/hostile_inputs.py) through every entry point.

Each case must end in a clear error (type, a message naming the input and the problem) or a
correct result, within a time limit and a memory bound; none may crash or hang a batch.

`harken transcribe` exit codes: 0 when every file was transcribed, 1 when any file failed (each
failure is reported on stderr as ``harken: error: <file>: <reason>`` and the others are still
transcribed), 2 for a command-line usage error.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import tracemalloc
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

import hostile_inputs as hostile
from harken import audio
from harken.audio import audio_duration, load_audio
from harken.cli import main as cli_main
from harken.training.manifests import read_manifest
from harken.model import load_model
from harken.text import read_texts
from harken.training.config import load_config

CASE_SECONDS = 10.0  # per case, in process (decoding a bad file must not take longer)
CASE_BYTES = 64 << 20  # peak Python/numpy allocation per case
CLI_SECONDS = 120.0  # one subprocess over the whole corpus
# A strict stdout, as under an en_US.UTF-8 locale: file names that are not UTF-8 must not crash.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8:strict",
       "PYTHONPATH": str(Path(__file__).parents[1] / "src")}

SURFACES = {
    "audio": load_audio,
    "model": load_model,
    "manifest": read_manifest,
    "config": load_config,
    "text": lambda path: list(read_texts(path)),
}
HEAVY = {"ten-hours-of-silence"}  # measured by its own test
CASES = [c for c in hostile.all_cases() if c.name not in HEAVY]


class CaseTimeout(BaseException):
    """Raised by the alarm; a BaseException so that no `except Exception` swallows it."""


@contextmanager
def limits(seconds: float, max_bytes: int) -> Iterator[None]:
    """Fail when the block runs longer than `seconds` or allocates more than `max_bytes` at once
    (tracemalloc sees Python and numpy allocations)."""
    def expire(signum: int, frame: Any) -> None:
        raise CaseTimeout(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    tracemalloc.start()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak <= max_bytes, f"peak allocation {peak / 1e6:.1f} MB > {max_bytes / 1e6:.0f} MB"


def check_outcome(case: hostile.Case, path: Path, run: Any) -> None:
    if case.error is None:
        result = run()
        if case.check is not None:
            case.check(result, path)
        return
    with pytest.raises(case.error) as caught:
        run()
    message = str(caught.value)
    assert re.search(case.reason, message), f"{message!r} does not say {case.reason!r}"
    if case.names_input:
        assert str(path) in message, f"{message!r} does not name {path}"


def test_the_corpus_is_large_and_covers_every_surface() -> None:
    cases = hostile.all_cases()
    assert len(cases) >= 100
    assert {c.surface for c in cases} == set(SURFACES)
    assert len({c.id for c in cases}) == len(cases)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case: hostile.Case, tmp_path: Path) -> None:
    path = case.build(tmp_path)
    with limits(CASE_SECONDS, CASE_BYTES):
        check_outcome(case, path, lambda: SURFACES[case.surface](path))
    assert not (tmp_path / hostile.PWNED).exists(), "a pickle payload ran"


def test_ten_hours_of_silence_duration_and_bounded_load(tmp_path: Path, monkeypatch) -> None:
    """A real 10-hour file (sparse on disk): its duration comes from the header at once, and
    decoding stops at the duration cap after reading no more than the cap, not the file."""
    case = next(c for c in hostile.audio_cases() if c.name == "ten-hours-of-silence")
    path = case.build(tmp_path)
    assert path.stat().st_size == 10 * 3600 * hostile.RATE * 2 + 44
    started = time.perf_counter()
    assert audio_duration(path) == 36000.0
    assert time.perf_counter() - started < 1.0
    monkeypatch.setattr(audio, "MAX_DURATION_S", 15 * 60)
    cap_bytes = 15 * 60 * hostile.RATE * 4  # float32 samples up to the cap
    with limits(CASE_SECONDS, 2 * cap_bytes):
        with pytest.raises(hostile.AudioError, match=f"{re.escape(str(path))}: longer than 0.25 hours"):
            load_audio(path)


# ---------------------------------------------------------------------------------------------
# Through the command line
# ---------------------------------------------------------------------------------------------

AUDIO = [c for c in hostile.audio_cases() if c.name not in HEAVY | {"directory"}]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every audio case on disk, two good files, and a tiny (untrained, seeded) model."""
    folder = tmp_path_factory.mktemp("hostile")
    paths = {}
    for case in AUDIO:
        where = folder / case.name
        where.mkdir()
        paths[case.name] = case.build(where)
    good = []
    for i, freq in enumerate((300.0, 700.0)):
        t = np.arange(hostile.RATE) / hostile.RATE
        good.append(folder / f"good{i}.wav")
        good[-1].write_bytes(hostile.encode((0.3 * np.sin(2 * np.pi * freq * t) * 32767)
                                            .astype(np.int16)))
    model = hostile.good_model(folder)
    return {"paths": paths, "good": good, "model": model, "folder": folder}


def run_cli(*args: str, timeout: float = CLI_SECONDS) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harken.cli", *args], capture_output=True,
                          timeout=timeout, env=ENV)


def expected_text(model_path: Path, path: Path) -> str:
    return load_model(model_path).transcribe(path, vad=None).text


def test_transcribe_cli_reports_bad_files_and_transcribes_the_rest(corpus) -> None:
    """One batch: every hostile file plus good ones. Exit code 1, one error line per bad file
    naming it, the good and valid files transcribed as they are alone, no traceback."""
    paths, good = corpus["paths"], corpus["good"]
    inputs = [str(p) for p in paths.values()] + [str(g) for g in good]
    started = time.perf_counter()
    done = run_cli("transcribe", *inputs, "--model", str(corpus["model"]), "--vad", "none",
                   "--no-progress")
    elapsed = time.perf_counter() - started
    err = os.fsdecode(done.stderr)
    out = os.fsdecode(done.stdout)
    assert "Traceback" not in err, err
    assert done.returncode == 1, err
    bad = [c for c in AUDIO if c.error is not None]
    assert f"harken: {len(bad)} of {len(inputs)} files failed" in err
    for case in bad:
        path = paths[case.name]
        line = next((x for x in err.split("harken: error: ")[1:] if x.startswith(str(path))), None)
        assert line is not None, f"{case.name}: not reported"
        assert re.search(case.reason, line), (case.name, line)
    for path in good + [paths[c.name] for c in AUDIO if c.error is None]:
        text = expected_text(corpus["model"], path)
        assert f"{path}: {text}\n" in out, f"{path}: missing or different in {out!r}"
    assert elapsed < CLI_SECONDS


def test_evaluate_cli_scores_good_utterances_and_lists_bad_ones(corpus, tmp_path) -> None:
    paths, good = corpus["paths"], corpus["good"]
    manifest = tmp_path / "hostile.jsonl"
    entries = [{"audio": os.fsdecode(os.fsencode(p)), "text": "hello", "id": name}
               for name, p in paths.items()]
    entries += [{"audio": str(g), "text": "hello", "id": g.stem} for g in good]
    manifest.write_text("".join(json.dumps(e) + "\n" for e in entries), errors="surrogateescape")
    done = run_cli("evaluate", str(manifest), "--model", str(corpus["model"]), "--json",
                   "--allow-failures")  # failures are listed; without the flag: exit 1
    err = os.fsdecode(done.stderr)
    assert "Traceback" not in err and done.returncode == 0, err
    report = json.loads(done.stdout)
    bad = {c.name for c in AUDIO if c.error is not None}
    assert {f["id"] for f in report["failed"]} == bad
    assert report["n"] == len(entries) - len(bad)
    for failure in report["failed"]:
        case = next(c for c in AUDIO if c.name == failure["id"])
        assert re.search(case.reason, failure["error"]), failure


MANIFEST_ERRORS = [c for c in hostile.manifest_cases() if c.error is not None]
CONFIG_ERRORS = [c for c in hostile.config_cases() if c.error is not None]


@pytest.mark.parametrize("case", MANIFEST_ERRORS, ids=[c.id for c in MANIFEST_ERRORS])
def test_evaluate_cli_bad_manifest(case, corpus, tmp_path, capsys) -> None:
    path = case.build(tmp_path)
    assert cli_main(["evaluate", str(path), "--model", str(corpus["model"])]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"harken: error: {path}") and re.search(case.reason, err), err


@pytest.mark.parametrize("case", CONFIG_ERRORS, ids=[c.id for c in CONFIG_ERRORS])
def test_train_cli_bad_config(case, tmp_path, capsys) -> None:
    path = case.build(tmp_path)
    assert cli_main(["train", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("harken: error: ") and re.search(case.reason, err), err


def test_tokenizer_cli_bad_text(tmp_path, capsys) -> None:
    for case in hostile.text_cases():
        path = case.build(tmp_path)
        code = cli_main(["tokenizer", "train", str(path), "--out", str(tmp_path / "t.model")])
        err = capsys.readouterr().err
        assert code == 1 and err.startswith(f"harken: error: {path}"), (case.name, err)


@pytest.mark.slow
def test_train_cli_skips_bad_audio_and_finishes(corpus, tmp_path) -> None:
    """`harken train` over a manifest of every hostile file and two good ones: each bad file is
    reported once by name, and the run finishes."""
    paths, good = corpus["paths"], corpus["good"]
    manifest = tmp_path / "train.jsonl"
    entries = [{"audio": p.name, "text": "a"} for p in good]
    entries += [{"audio": os.fsdecode(os.fsencode(p)), "text": "a"} for p in paths.values()]
    for e in entries[:2]:
        e["audio"] = str(corpus["folder"] / e["audio"])
    manifest.write_text("".join(json.dumps(e) + "\n" for e in entries), errors="surrogateescape")
    config = tmp_path / "tiny.toml"
    config.write_text(f"""
[model]
architecture = "deepspeech2"
size = "tiny"
[data]
train = ["{manifest}"]
num_workers = 0
max_batch_seconds = 200.0
[optim]
max_steps = 2
epochs = 1
warmup_steps = 1
[specaugment]
enabled = false
[run]
out_dir = "{tmp_path / 'run'}"
device = "cpu"
progress = false
epochs_per_eval = 1000
""")
    done = run_cli("train", str(config))
    err = os.fsdecode(done.stderr)
    assert "Traceback" not in err and done.returncode == 0, err
    assert (tmp_path / "run" / "model" / "weights.safetensors").is_file()
    for case in AUDIO:
        if case.error is not None:
            assert f"{paths[case.name]} (id " in err, f"{case.name} not reported"


def test_transcribe_output_dir_reports_bad_files_and_writes_the_rest(corpus, tmp_path) -> None:
    """The same corpus through `--output-dir` (worker processes, summary.jsonl)."""
    flat = tmp_path / "flat"
    flat.mkdir()
    inputs = {}
    for case in AUDIO:
        if case.name == "wav-named-txt":  # a .txt input names a list of files there
            continue
        source = corpus["paths"][case.name]
        target = flat / f"{case.name}-{source.name}"
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        elif case.name == "fifo":
            os.mkfifo(target)
        else:
            target.write_bytes(source.read_bytes())
        inputs[case.name] = target
    out = tmp_path / "out"
    done = run_cli("transcribe", *map(str, inputs.values()), "--model", str(corpus["model"]),
                   "--vad", "none", "--output-dir", str(out))
    err = os.fsdecode(done.stderr)
    assert "Traceback" not in err and done.returncode == 1, err
    for name, path in inputs.items():
        case = next(c for c in AUDIO if c.name == name)
        written = out / f"{path.stem}.txt"
        if case.error is None:
            expected = expected_text(corpus["model"], path)
            assert written.read_text(encoding="utf-8", errors="surrogateescape") == expected + "\n"
        else:
            assert not written.exists() and re.search(case.reason, err), name
