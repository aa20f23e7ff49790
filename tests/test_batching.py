"""Server batching: stream steps of concurrent streams batched equal each stream run alone."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from harken.serving.batching import StreamStepBatcher
from harken.streaming import StreamingLogMel

from test_server import bursts, tiny_streaming_model


class _Sizes:
    """Stands in for the server's metrics: records the batch sizes."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.stream_batch_size = self

    def observe(self, value: int) -> None:
        self.sizes.append(value)


def _alone(model, audio: np.ndarray, chunk: int) -> np.ndarray:
    features = StreamingLogMel(model.featurizer)
    state, out = model.network.initial_state(), []
    with torch.inference_mode():
        for i in range(0, len(audio), chunk):
            frames = features.feed(torch.from_numpy(audio[i: i + chunk]))
            log_probs, state = model.network.stream_step(frames[None], state)
            out.append(log_probs[0])
        log_probs, state = model.network.stream_step(features.finish()[None], state, final=True)
    return torch.cat([*out, log_probs[0]]).numpy()


def test_concurrent_stream_steps_are_batched_and_unchanged() -> None:
    torch.set_num_threads(1)
    model = tiny_streaming_model()
    audios = [bursts(2.5 + 0.3 * i, seed=i) for i in range(6)]
    chunk = 1600
    sizes = _Sizes()
    batcher = StreamStepBatcher(model.network, max_batch=4, max_wait_ms=200, metrics=sizes)
    results: dict[int, np.ndarray] = {}
    steps = [len(range(0, len(a), chunk)) for a in audios]
    pacer = _Pacer(steps)  # streams step together, as real-time streams fed at the same pace

    def run(index: int) -> None:
        audio = audios[index]
        features = StreamingLogMel(model.featurizer)
        state, out = model.network.initial_state(), []
        for i in range(0, len(audio), chunk):
            pacer.wait()
            with batcher.feeding():
                frames = features.feed(torch.from_numpy(audio[i: i + chunk]))
                log_probs, state = batcher.step(frames[None], state, False)
            out.append(log_probs[0])
        log_probs, state = batcher.step(features.finish()[None], state, True)
        results[index] = torch.cat([*out, log_probs[0]]).numpy()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(audios))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    batcher.close()
    for index, audio in enumerate(audios):
        np.testing.assert_allclose(results[index], _alone(model, audio, chunk), atol=1e-5)
    assert max(sizes.sizes) == 4, "no batch of concurrent streams was formed"
    assert sum(sizes.sizes) >= sum(steps) - len(audios)


class _Pacer:
    """A barrier for threads that step different numbers of times: at each step, waits for
    the threads that still have that step."""

    def __init__(self, steps: list[int]) -> None:
        self._cond = threading.Condition()
        self._step = 0
        self._waiting = 0
        self._steps = steps

    def wait(self) -> None:
        with self._cond:
            active = sum(1 for n in self._steps if n > self._step)
            self._waiting += 1
            if self._waiting >= active:
                self._waiting = 0
                self._step += 1
                self._cond.notify_all()
            else:
                step = self._step
                self._cond.wait_for(lambda: self._step != step, timeout=10)


def test_streams_through_the_batcher_give_the_same_transcripts() -> None:
    model = tiny_streaming_model()
    audio = bursts(3.0, seed=3)
    expected = model.stream()
    expected.feed(audio)
    batcher = StreamStepBatcher(model.network, max_batch=8, max_wait_ms=1)
    try:
        calls = []

        def step(*args):
            calls.append(1)
            return batcher.step(*args)

        stream = model.stream(step=step)  # the network's steps go through the batcher
        assert stream.exact
        for i in range(0, len(audio), 999):
            with batcher.feeding():
                stream.feed(audio[i: i + 999])
        got = stream.finish()
    finally:
        batcher.close()
    want = expected.finish()
    assert calls and got.text == want.text and got.text
    assert [(w.word, w.start, w.end) for w in got.words] == [(w.word, w.start, w.end)
                                                             for w in want.words]
    with pytest.raises(RuntimeError, match="closed"):
        batcher.step(torch.zeros(1, 4, 80), model.network.initial_state(), False)
