"""Dynamic batching for the server: whole-audio requests and the network steps of streams.

- `Batcher` (asyncio): pieces of audio from concurrent requests go through
  `Model.log_probs` together; a batch takes what arrives within `max_wait_ms`, up to
  `max_batch` pieces.
- `StreamStepBatcher` (threads): concurrent streams of a step-by-step DeepSpeech2 model run
  `stream_step` as one batch. Streams whose states have the same shapes (after their first
  steps, all streams fed the same chunk size) are stacked along the batch axis; a batch runs
  once every stream being fed has reached its network step, or after `max_wait_ms`. A step
  costs about the same for 1 or 20 streams (small GRUs are bound by per-call overhead), so
  this is what lets a few cores serve many real-time streams. Other networks and final
  (flushing) steps run alone. Batched outputs equal unbatched ones up to float rounding.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch
from harken.models.deepspeech2 import DeepSpeech2State
from harken.models.registry import TimeBuffer


class Batcher:
    """Runs the acoustic model on pieces of audio from concurrent requests together.

    A batch starts with the first waiting piece and takes whatever else arrives within
    `max_wait_ms`, up to `max_batch` pieces; at most `threads` batches run at once.
    """

    def __init__(self, model: Any, max_batch: int, max_wait_ms: float, threads: int,
                 executor: ThreadPoolExecutor, metrics: Any) -> None:
        self.model = model
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.executor = executor
        self.metrics = metrics
        self._threads = threads
        self._waiting: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = []
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(threads)
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        for task in [self._loop_task, *self._tasks]:
            if task is not None:
                task.cancel()
        for _, future in self._waiting:
            future.cancel()

    async def log_probs(self, pieces: list[np.ndarray]) -> list[np.ndarray]:
        """(time, vocab) log-probabilities of each piece, as `Model.log_probs`."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in pieces]
        self._waiting.extend(zip(pieces, futures))
        self.metrics.queue_depth.set(len(self._waiting))
        self._arrived.set()
        return list(await asyncio.gather(*futures))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
            deadline = loop.time() + self.max_wait
            while len(self._waiting) < self.max_batch and (left := deadline - loop.time()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except asyncio.TimeoutError:
                    break
            await self._slots.acquire()
            batch = [(p, f) for p, f in self._waiting[: self.max_batch] if not f.done()]
            del self._waiting[: self.max_batch]
            self.metrics.queue_depth.set(len(self._waiting))
            if not batch:
                self._slots.release()
                continue
            task = loop.create_task(self._execute(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _execute(self, batch: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]]) -> None:
        try:
            self.metrics.batch_size.observe(len(batch))
            results = await asyncio.get_running_loop().run_in_executor(
                self.executor, self.model.log_probs, [p for p, _ in batch])
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)
        except Exception as exc:  # handed to the requests waiting for this batch
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        finally:
            self._slots.release()



# --- streams --------------------------------------------------------------------------------------

@dataclass
class _StepRequest:
    features: torch.Tensor  # (1, T, F)
    state: Any
    key: tuple[Any, ...]
    done: threading.Event = field(default_factory=threading.Event)
    result: tuple[torch.Tensor, Any] | None = None
    error: BaseException | None = None


def _ds2_key(features: torch.Tensor, state: Any) -> tuple[Any, ...] | None:
    """What must be equal for DeepSpeech2 states to be stacked (None: cannot be)."""

    if not isinstance(state, DeepSpeech2State) or state.finished:
        return None
    return (features.shape[1],
            tuple(None if b.frames is None else tuple(b.frames.shape) for b in state.conv),
            tuple(None if h is None else tuple(h.shape) for h in state.hidden),
            None if state.lookahead is None else tuple(state.lookahead.shape))


def _stack(states: list[Any]) -> Any:
    """B single-stream DeepSpeech2 states -> one state of batch B (seen/emitted counted from 0:
    the batch's step adds the same to every stream)."""

    first = states[0]
    conv = tuple(TimeBuffer(None if b.frames is None else
                            torch.cat([s.conv[i].frames for s in states]), 0, 0)
                 for i, b in enumerate(first.conv))
    hidden = tuple(None if h is None else torch.cat([s.hidden[i] for s in states], dim=1)
                   for i, h in enumerate(first.hidden))
    lookahead = (None if first.lookahead is None
                 else torch.cat([s.lookahead for s in states]))
    return DeepSpeech2State(conv, hidden, lookahead, False)


def _unstack(new: Any, old: list[Any]) -> list[Any]:
    """The batched step's new state -> one state per stream, with its own counters."""

    out = []
    for row, before in enumerate(old):
        conv = tuple(TimeBuffer(None if b.frames is None else b.frames[row: row + 1],
                                o.seen + b.seen, o.emitted + b.emitted)
                     for b, o in zip(new.conv, before.conv))
        hidden = tuple(None if h is None else h[:, row: row + 1] for h in new.hidden)
        lookahead = None if new.lookahead is None else new.lookahead[row: row + 1]
        out.append(DeepSpeech2State(conv, hidden, lookahead, new.finished))
    return out


class StreamStepBatcher:
    """Batches `stream_step` of concurrent streams (see the module docstring).

    Streams call `step` from their own threads (it blocks until the batch ran), inside
    `feeding()` so that the batcher knows how many streams may still join a batch.
    """

    def __init__(self, network: Any, max_batch: int, max_wait_ms: float,
                 metrics: Any = None) -> None:
        self.network = network
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.metrics = metrics
        self._cond = threading.Condition()
        self._pending: list[_StepRequest] = []
        self._feeding = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="harken-stream-batch",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(5)

    @contextlib.contextmanager
    def feeding(self) -> Iterator[None]:
        with self._cond:
            self._feeding += 1
        try:
            yield
        finally:
            with self._cond:
                self._feeding -= 1
                self._cond.notify_all()

    def step(self, features: torch.Tensor, state: Any, final: bool) -> tuple[torch.Tensor, Any]:
        """`network.stream_step(features, state, final)` for one stream, batched with others."""
        key = None if final or self.max_batch == 1 else _ds2_key(features, state)
        if key is None:
            with torch.inference_mode():
                return self.network.stream_step(features, state, final)  # type: ignore[no-any-return]
        request = _StepRequest(features, state, key)
        with self._cond:
            if self._closed:
                raise RuntimeError("the stream batcher is closed")
            self._pending.append(request)
            self._cond.notify_all()
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request.result  # type: ignore[return-value]

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    for request in self._pending:
                        request.error = RuntimeError("the stream batcher is closed")
                        request.done.set()
                    return
                deadline = time.monotonic() + self.max_wait
                while (len(self._pending) < min(self._feeding, self.max_batch)
                       and (left := deadline - time.monotonic()) > 0):
                    self._cond.wait(left)
                batch, self._pending = self._pending, []
            groups: dict[tuple[Any, ...], list[_StepRequest]] = {}
            for request in batch:
                groups.setdefault(request.key, []).append(request)
            for group in groups.values():
                for start in range(0, len(group), self.max_batch):
                    self._execute(group[start: start + self.max_batch])

    def _execute(self, group: list[_StepRequest]) -> None:
        try:
            if self.metrics is not None:
                self.metrics.stream_batch_size.observe(len(group))
            with torch.inference_mode():
                features = torch.cat([r.features for r in group])
                log_probs, state = self.network.stream_step(
                    features, _stack([r.state for r in group]), False)
            for row, (request, new) in enumerate(zip(group, _unstack(state, [r.state for r in group]))):
                request.result = (log_probs[row: row + 1], new)
        except BaseException as exc:  # handed to the streams waiting for this batch
            for request in group:
                request.error = exc
        for request in group:
            request.done.set()


__all__ = ["Batcher", "StreamStepBatcher"]
