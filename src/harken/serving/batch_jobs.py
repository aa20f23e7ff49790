"""Transcription at scale: resumable jobs over a folder or manifest, on worker processes or Ray.

`run_batch` transcribes many files into an output folder:

- The inputs are cut into fixed tasks of `files_per_task` consecutive files. A worker (a process
  of a local pool, or a Ray actor on a cluster) loads the model once and runs each task through
  `transcribe_files`: voice activity detection cuts long files, and the pieces of a task share
  network batches. Tasks depend only on the input list, so a file is batched with the same
  neighbours however many workers run and however often the job is restarted: outputs are
  identical to an uninterrupted run's.
- Outputs (`<name>.<format>` under the output folder, mirroring the input folder's layout) are
  written atomically (temporary file, fsync, rename): a killed job never leaves a truncated one.
- `summary.jsonl` gets one row per file once its outputs are on disk: path, status ("ok" or
  "error"), error message, audio duration, processing seconds and output paths. The rows of one
  task are appended in one write and fsynced. A restarted job skips files whose row says "ok"
  and whose outputs are present (and files that failed, unless `retry_failed`), and redoes the
  rest; the summary is compacted to one row per file.
- Progress is reported in input order: files done, hours of audio, real-time factor, ETA.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from harken.decoding.options import requested_options
from harken.errors import ConfigError, HarkenError, require
from harken.transcribe import (ALL_FORMATS, atomic_write_text, expand_inputs, format_transcript, is_manifest, transcribe_files)
from harken.model import load_model
from harken.training.manifests import read_audio_list

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.jsonl"
# Consecutive input files that one worker transcribes together (sharing network batches).
FILES_PER_TASK = 8
# Without a terminal, a progress line is printed at most this often.
PROGRESS_SECONDS = 10.0
# Tasks queued per worker ahead of the one being consumed (keeps every worker busy).
_TASKS_AHEAD = 2


@dataclass(frozen=True)
class BatchSettings:
    """What every worker needs to build its transcriber; sent to processes and Ray actors.

    `decode` holds decoding overrides as `harken.cli.common.decode_overrides` makes them ("greedy":
    True, "beam_width", "lm", ...); `threads` is the torch thread count of each worker (None:
    torch's default).
    """

    model: str | None = None
    device: str = "cpu"
    backend: str = "torch"
    decode: dict[str, Any] = field(default_factory=dict)
    vad: str | None = "auto"
    formats: tuple[str, ...] = ("txt",)
    threads: int | None = None
    diarize: Any = None  # harken.diarization.diarize.DiarizeOptions: label speakers
    written: bool | None = None  # None: written text when the model ships a punctuator


@dataclass(frozen=True)
class BatchInput:
    """One audio file and the name of its outputs (relative, without the format suffix)."""

    path: Path
    name: str


@dataclass
class BatchReport:
    """The outcome of `run_batch`: counts, audio seconds and wall time of this run."""

    total: int
    skipped: int
    done: int
    failed: int
    audio_seconds: float
    seconds: float
    summary: Path

    @property
    def rtf(self) -> float:
        """Wall seconds per second of audio transcribed in this run (all workers together)."""
        return self.seconds / self.audio_seconds if self.audio_seconds else 0.0


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------

def collect_inputs(inputs: Iterable[str | os.PathLike[str]]) -> list[BatchInput]:
    """Audio files named by `inputs` (files, folders walked for audio, manifests), with output
    names: a folder's files keep their path under it, a manifest's their path under the
    manifest's folder, other files their name. Two inputs with one output name are refused."""

    items: list[BatchInput] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            items += [BatchInput(p.resolve(), _name_under(p, path)) for p in expand_inputs([path])]
        elif is_manifest(path):
            items += [BatchInput(p, _name_under(p, path.parent.resolve()))
                      for p in read_audio_list(path)]
        else:
            items.append(BatchInput(path.resolve(), path.stem))
    by_name: dict[str, BatchInput] = {}
    for entry in items:
        other = by_name.setdefault(entry.name, entry)
        if other.path != entry.path:
            raise ConfigError(f"{other.path} and {entry.path} would both be written as "
                              f"{entry.name}.*; rename one or transcribe them into different "
                              "output folders")
    return list(by_name.values())


def _name_under(path: Path, root: Path) -> str:
    try:
        relative = path.resolve().relative_to(root.resolve())
    except ValueError:
        return path.stem
    return relative.with_suffix("").as_posix()




# ---------------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------------

class Transcriber:
    """A model loaded once, turning a task (a list of audio paths) into rendered outputs.

    One lives in each worker process or Ray actor. `__call__` returns one dict per path:
    path, status, error, duration, seconds (its share of the task's time, by duration) and
    texts ({format: file content}); failures are caught per file.
    """

    def __init__(self, settings: BatchSettings) -> None:
        import torch

        if settings.threads:
            torch.set_num_threads(settings.threads)
        self.settings = settings
        self.model = load_model(settings.model, device=settings.device, backend=settings.backend)
        self.options = requested_options(self.model, settings.decode)
        # The LM is loaded now (and cached for the files): one that cannot be used stops the
        # job with one error instead of failing every file.
        self.model.decoder(self.options)

    def __call__(self, paths: Sequence[str]) -> list[dict[str, Any]]:
        start = time.perf_counter()
        results = list(transcribe_files(self.model, [Path(p) for p in paths], self.options,
                                        group_size=max(1, len(paths)), vad=self.settings.vad,
                                        diarize=self.settings.diarize,
                                        written=self.settings.written))
        elapsed = time.perf_counter() - start
        audio = sum(r.transcript.duration for r in results if r.transcript is not None)
        rows = []
        for result in results:
            duration = result.transcript.duration if result.transcript is not None else None
            if audio:  # the task's time, shared by audio duration (failed files: none)
                share = (duration or 0.0) / audio
            else:
                share = 1 / len(results)
            rows.append({
                "path": str(result.path),
                "status": "error" if result.error is not None else "ok",
                "error": result.error,
                "duration": round(duration, 3) if duration is not None else None,
                "seconds": round(elapsed * share, 3),
                "texts": {} if result.transcript is None else
                {fmt: format_transcript(result.transcript, fmt, result.path.stem)
                 for fmt in self.settings.formats},
            })
        return rows

    def transcribe(self, paths: Sequence[str]) -> list[dict[str, Any]]:
        """The same as calling the transcriber (Ray actors call methods by name)."""
        return self(paths)


_PROCESS_TRANSCRIBER: Transcriber | None = None
_PROCESS_ERROR: Exception | None = None


def _init_process(settings: BatchSettings, indexes: Any) -> None:
    global _PROCESS_TRANSCRIBER, _PROCESS_ERROR
    try:
        _PROCESS_TRANSCRIBER = Transcriber(_worker_settings(settings, indexes.get()))
    except Exception as exc:  # noqa: BLE001 - raised with the first task, in the parent
        _PROCESS_ERROR = exc


def _run_in_process(paths: Sequence[str]) -> list[dict[str, Any]]:
    if _PROCESS_ERROR is not None:
        raise _PROCESS_ERROR
    assert _PROCESS_TRANSCRIBER is not None, "worker process not initialised"
    return _PROCESS_TRANSCRIBER(paths)


TaskRunner = Callable[[list[list[str]]], Iterator[list[dict[str, Any]]]]


def local_runner(settings: BatchSettings, workers: int) -> TaskRunner:
    """Runs tasks in this process (1 worker) or a pool of `workers` spawned processes, each
    with its own model; results come back in task order."""
    if workers <= 1:
        def run_here(tasks: list[list[str]]) -> Iterator[list[dict[str, Any]]]:
            transcriber = Transcriber(settings)
            for task in tasks:
                yield transcriber(task)
        return run_here

    def run_pool(tasks: list[list[str]]) -> Iterator[list[dict[str, Any]]]:
        yield from _pool_results(settings, workers, tasks)
    return run_pool


def _pool_results(settings: BatchSettings, workers: int,
                  tasks: list[list[str]]) -> Iterator[list[dict[str, Any]]]:
    """Task results in order from a pool of processes.

    A worker that cannot load the model raises its error here. If a process dies (a crash in
    native code, out of memory), every task in flight fails with it: the first is then retried
    one file at a time, so the file that kills a process is reported as failed, and the others
    go to a fresh pool.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    context = multiprocessing.get_context("spawn")

    def new_pool(size: int = workers) -> ProcessPoolExecutor:
        indexes = context.Queue()  # each process takes a worker index (its GPU with "cuda")
        for index in range(size):
            indexes.put(index)
        return ProcessPoolExecutor(size, mp_context=context, initializer=_init_process,
                                   initargs=(settings, indexes))

    pool = new_pool()
    pending: deque[tuple[list[str], Any]] = deque()
    queue = deque(tasks)
    try:
        while queue or pending:
            while queue and len(pending) < workers * _TASKS_AHEAD:
                task = queue.popleft()
                pending.append((task, pool.submit(_run_in_process, task)))
            task, future = pending.popleft()
            try:
                yield future.result()
            except BrokenProcessPool:
                pool.shutdown(wait=False, cancel_futures=True)
                queue.extendleft(reversed([t for t, _ in pending]))
                pending.clear()
                yield _isolated(new_pool, task)
                pool = new_pool()
        pool.shutdown(wait=True)  # all done: let the processes exit
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _isolated(new_pool: Callable[[int], Any], task: list[str]) -> list[dict[str, Any]]:
    """A task's files one by one in a one-process pool; a file that kills it gets an error row."""
    from concurrent.futures.process import BrokenProcessPool

    rows: list[dict[str, Any]] = []
    pool = new_pool(1)
    try:
        for path in task:
            try:
                rows += pool.submit(_run_in_process, [path]).result()
            except BrokenProcessPool:
                rows.append({"path": path, "status": "error", "duration": None, "seconds": 0.0,
                             "texts": {}, "error": f"{path}: the worker process died while "
                                                   "transcribing it (a crash or out of memory)"})
                pool.shutdown(wait=False, cancel_futures=True)
                pool = new_pool(1)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return rows


def _worker_settings(settings: BatchSettings, index: int) -> BatchSettings:
    """Worker `index`'s settings: with device "cuda", workers take the GPUs in turn."""
    if settings.device != "cuda":
        return settings
    import torch

    count = torch.cuda.device_count()
    return replace(settings, device=f"cuda:{index % count}") if count else settings


def ray_runner(settings: BatchSettings, address: str, workers: int | None) -> TaskRunner:
    """Runs tasks on Ray actors that each hold the model (`ray.util.ActorPool`).

    `address` is a cluster address ("ray://host:10001", "host:6379"), "auto" (the cluster this
    machine belongs to) or "local" (start Ray on this machine). If Ray is already initialised in
    this process, that instance is used. Actors take `settings.threads` CPUs (1 by default) and
    one GPU each with a CUDA device; `workers` actors (default: as many as the cluster's CPUs
    allow). Audio and model paths must be readable at the same path on every node.
    """
    ray = require("ray", "ray")

    def run(tasks: list[list[str]]) -> Iterator[list[dict[str, Any]]]:
        from ray.util import ActorPool

        if not ray.is_initialized():
            try:
                ray.init(address=None if address == "local" else address,
                         logging_level=logging.WARNING, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise HarkenError(f"--ray {address}: cannot connect to a Ray cluster ({exc})") from exc
        cpus = settings.threads or 1
        gpus = 1 if settings.device.startswith("cuda") else 0
        count = workers or max(1, int(ray.cluster_resources().get("CPU", 1) // cpus))
        count = max(1, min(count, len(tasks)))
        actor_class = ray.remote(num_cpus=cpus, num_gpus=gpus)(Transcriber)
        actor_settings = replace(settings, device="cuda") if gpus else settings
        actors = [actor_class.remote(actor_settings) for _ in range(count)]
        try:
            pool = ActorPool(actors)
            yield from pool.map(lambda actor, task: actor.transcribe.remote(task), tasks)
        except ray.exceptions.RayError as exc:
            raise HarkenError(f"the Ray job failed ({exc}); run the command again to resume") from exc
        finally:
            for actor in actors:
                ray.kill(actor)

    return run


# ---------------------------------------------------------------------------------------------
# The summary
# ---------------------------------------------------------------------------------------------

def read_summary(path: Path) -> list[dict[str, Any]]:
    """Rows of a summary JSONL; a torn or malformed line (a crash while appending) is ignored."""
    if not path.is_file():
        return []
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("path"), str):
                rows.append(row)
    return rows


def _finished(row: dict[str, Any] | None, output_dir: Path, formats: Sequence[str],
              retry_failed: bool) -> bool:
    if row is None:
        return False
    if row.get("status") == "error":
        return not retry_failed
    outputs = row.get("outputs") or {}
    return row.get("status") == "ok" and all(
        isinstance(outputs.get(fmt), str) and (output_dir / outputs[fmt]).is_file()
        for fmt in formats)


def _append_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows in one write, then fsync: a kill leaves all of them or none (or a torn last
    line, which `read_summary` ignores)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(row) + "\n" for row in rows))
        f.flush()
        os.fsync(f.fileno())


# ---------------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------------

class Progress:
    """Files done of total, hours of audio, real-time factor and ETA (from bytes left)."""

    def __init__(self, total: int, total_bytes: int, stream: Any = None,
                 enabled: bool = True) -> None:
        self.total, self.total_bytes = total, max(total_bytes, 1)
        self.files = self.bytes = 0
        self.audio = 0.0
        self.start = time.monotonic()
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and total > 0
        self.tty = self.enabled and self.stream.isatty()
        self._last = self.start

    def update(self, files: int, size: int, audio_seconds: float) -> None:
        self.files += files
        self.bytes += size
        self.audio += audio_seconds
        now = time.monotonic()
        if self.enabled and (self.tty or now - self._last >= PROGRESS_SECONDS
                             or self.files == self.total):
            self._last = now
            end = "" if self.tty and self.files < self.total else "\n"
            self.stream.write(("\r\033[K" if self.tty else "") + self.line() + end)
            self.stream.flush()

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        rtf = elapsed / self.audio if self.audio else 0.0
        left = elapsed * (self.total_bytes - self.bytes) / self.bytes if self.bytes else math.nan
        eta = format_clock(left) if math.isfinite(left) else "?"
        return (f"transcribe: {self.files}/{self.total} files, {self.audio / 3600:.2f} h audio, "
                f"RTF {rtf:.3f}, elapsed {format_clock(elapsed)}, ETA {eta}")


def format_clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


# ---------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------

def run_batch(inputs: Sequence[BatchInput], output_dir: str | os.PathLike[str],
              settings: BatchSettings = BatchSettings(), *, workers: int = 1,
              ray_address: str | None = None, files_per_task: int = FILES_PER_TASK,
              retry_failed: bool = False, progress: bool = True,
              summary_path: str | os.PathLike[str] | None = None) -> BatchReport:
    """Transcribe `inputs` (see `collect_inputs`) into `output_dir`, resuming an earlier run.

    Files already finished (see the module docstring) are skipped. `workers` processes (or Ray
    actors with `ray_address`) each load the model; `settings.formats` are written per file.
    Returns counts for this run; the summary file holds every file's row.
    """
    for fmt in settings.formats:
        if fmt not in ALL_FORMATS:
            raise ConfigError(f"unknown output format {fmt!r}; choose from "
                              f"{', '.join(ALL_FORMATS)}")
    if files_per_task < 1 or workers < 1:
        raise ConfigError(f"files per task and workers must be at least 1, got "
                          f"{files_per_task} and {workers}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    summary = Path(summary_path) if summary_path else output_dir / SUMMARY_FILE
    names = {str(entry.path): entry.name for entry in inputs}

    _remove_temporaries(output_dir, summary)
    # Keep the rows of finished files (one per file), drop the rest: those files are redone.
    latest = {row["path"]: row for row in read_summary(summary)}
    kept = {p: row for p, row in latest.items()
            if _finished(row, output_dir, settings.formats, retry_failed)}
    atomic_write_text(summary, "".join(json.dumps(row) + "\n" for row in kept.values()))

    tasks: list[list[str]] = []
    for start in range(0, len(inputs), files_per_task):
        task = [str(e.path) for e in inputs[start: start + files_per_task]]
        task = [p for p in task if p not in kept]
        if task:
            tasks.append(task)
    todo = sum(len(t) for t in tasks)
    skipped = len(inputs) - todo
    if skipped:
        log.info("%s: %d of %d files already done, skipped", summary, skipped, len(inputs))
    sizes = {p: _size(p) for task in tasks for p in task}
    meter = Progress(todo, sum(sizes.values()), enabled=progress)
    runner = (ray_runner(settings, ray_address, workers if workers > 1 else None) if ray_address
              else local_runner(settings, workers))
    done = failed = 0
    audio = 0.0
    start_time = time.monotonic()
    if tasks:
        for rows in runner(tasks):
            written = [_write_outputs(row, names[row["path"]], output_dir) for row in rows]
            _append_rows(summary, written)
            done += sum(row["status"] == "ok" for row in written)
            failed += sum(row["status"] != "ok" for row in written)
            seconds = sum(row["duration"] or 0.0 for row in written)
            audio += seconds
            meter.update(len(rows), sum(sizes[row["path"]] for row in rows), seconds)
    return BatchReport(total=len(inputs), skipped=skipped, done=done, failed=failed,
                       audio_seconds=audio, seconds=time.monotonic() - start_time, summary=summary)


def _write_outputs(row: dict[str, Any], name: str, output_dir: Path) -> dict[str, Any]:
    """Write a worker's rendered outputs atomically; the summary row that records them."""
    outputs = {}
    for fmt, text in row["texts"].items():
        relative = f"{name}.{fmt}"
        atomic_write_text(output_dir / relative, text)
        outputs[fmt] = relative
    return {"path": row["path"], "status": row["status"], "error": row["error"],
            "duration": row["duration"], "seconds": row["seconds"], "outputs": outputs}


def _remove_temporaries(output_dir: Path, summary: Path) -> None:
    """Delete the temporary files of writes that a killed job left (`atomic_write_text` names)."""
    pattern = re.compile(rf"\..+\.({'|'.join(ALL_FORMATS)}|{re.escape(summary.suffix[1:])})\.\d+\.tmp")
    for folder in {output_dir, summary.parent}:
        for path in folder.rglob(".*.tmp"):
            if pattern.fullmatch(path.name) and path.is_file():
                path.unlink(missing_ok=True)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0








__all__ = ["BatchInput", "BatchReport", "BatchSettings", "Transcriber", "collect_inputs",
           "read_audio_list", "read_summary", "run_batch"]
