"""Streaming partials with the bundled model and its LM: they grow, never go blank once text has
appeared, and their stable part never retracts, whatever the chunk size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flashlight.lib.text")
sf = pytest.importorskip("soundfile")

from harken.model import load_model  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def bundled():
    model = load_model("en-small")
    options = model.decode_options()
    if options is None or options.lm is None:
        pytest.skip("the bundled model has no default LM")
    return model


@pytest.mark.parametrize("chunk_ms", [40, 160, 480])
def test_partials_with_the_lm_never_flicker(bundled, chunk_ms: int) -> None:
    audio = sf.read(str(EXAMPLES / "stella.wav"), dtype="float32")[0]
    stream = bundled.stream()
    chunk = chunk_ms * bundled.sample_rate // 1000
    partials = []
    for start in range(0, len(audio), chunk):
        stream.feed(audio[start:start + chunk])
        partials.append(stream.partial())
    final = stream.finish()
    texts = [p.text for p in partials]
    first = next(i for i, text in enumerate(texts) if text)
    assert all(texts[first:]), texts  # once text appeared, never blank
    stable_words = [p.words[:p.stable_words] for p in partials]
    for before, after in zip(stable_words, stable_words[1:]):
        assert after[:len(before)] == before  # stable words (with their times) stay
    for p in partials:
        assert p.text == " ".join(w.word for w in p.words)
        assert p.stable == " ".join(w.word for w in p.words[:p.stable_words])
    # the partials show the words of the final result as they are spoken, not only at the end
    shown = {w.word for p in partials for w in p.words}
    final_words = [w.word for w in final.words]
    assert len(final_words) >= 8
    assert sum(w in shown for w in final_words) >= len(final_words) - 2
    assert partials[-1].stable_words >= 3
    assert final.text.startswith(partials[-1].stable)
