"""Property-based tests: arbitrary bytes, mutated files, manifests and text.

The budget is small here (CI); `scripts/fuzz.py` runs the same properties with thousands of
examples by setting HARKEN_FUZZ_EXAMPLES.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import hostile_inputs as hostile
from harken.audio import load_audio
from harken.training.manifests import Utterance, read_manifest
from harken.errors import AudioError, ManifestError
from harken.text import CharTokenizer, SentencePieceTokenizer, normalize_text, train_sentencepiece

EXAMPLES = int(os.environ.get("HARKEN_FUZZ_EXAMPLES", "25"))
BUDGET = settings(max_examples=EXAMPLES, deadline=5000,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SEEDS = {
    "wav": hostile.encode(hostile.TONE16[:2000]),
    "float-wav": hostile.encode(hostile.TONE16[:2000] / 32768, subtype="FLOAT"),
    "flac": hostile.encode(hostile.TONE16[:2000], fmt="FLAC"),
    "ogg": hostile.encode(hostile.TONE16[:4000] / 32768, fmt="OGG", subtype="VORBIS"),
}
if "MP3" in sf.available_formats():  # libsndfile 1.1+ writes MP3
    SEEDS["mp3"] = hostile.encode(hostile.TONE16[:4000] / 32768, fmt="MP3",
                                  subtype="MPEG_LAYER_III")


def decodes_or_refuses(data: bytes) -> None:
    """The contract of `load_audio` on any input: finite mono float32 samples, or AudioError."""
    try:
        audio = load_audio(data)
    except AudioError as exc:
        assert str(exc).startswith(f"<{len(data)} bytes>: ") and exc.reason
        return
    assert audio.dtype == np.float32 and audio.ndim == 1 and len(audio) > 0
    assert np.isfinite(audio).all()


@BUDGET
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_decode_or_raise_audio_error(data: bytes) -> None:
    assume(data)
    decodes_or_refuses(data)


@BUDGET
@given(st.sampled_from(sorted(SEEDS)), st.data())
def test_mutated_audio_files_decode_or_raise_audio_error(kind: str, data: st.DataObject) -> None:
    """Valid files with bytes overwritten, cut or inserted (headers included)."""
    blob = bytearray(SEEDS[kind])
    for _ in range(data.draw(st.integers(1, 8))):
        where = data.draw(st.integers(0, len(blob) - 1))
        action = data.draw(st.sampled_from(["set", "cut", "insert"]))
        if action == "set":
            blob[where] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del blob[where:]
        else:
            blob[where:where] = data.draw(st.binary(min_size=1, max_size=64))
        if not blob:
            break
    assume(blob)
    decodes_or_refuses(bytes(blob))


@BUDGET
@given(st.sampled_from(["wav", "float-wav", "flac"]), st.integers(0, 10_000))
def test_a_cut_lossless_file_is_refused_or_a_prefix(kind: str, cut: int) -> None:
    """Cutting a lossless file never yields wrong samples: a prefix of the original, or an error."""
    whole = load_audio(SEEDS[kind])
    data = SEEDS[kind][: min(cut, len(SEEDS[kind]) - 1)]
    assume(data)
    try:
        audio = load_audio(data)
    except AudioError:
        return
    np.testing.assert_array_equal(audio, whole[: len(audio)])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                       children, max_size=4),
    max_leaves=6)
manifest_line = st.one_of(
    st.binary(max_size=80),
    st.text(max_size=80).map(str.encode),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"audio": json_values | st.text(min_size=1, max_size=20),
                           "text": json_values | st.text(max_size=20)},
                          optional={"duration": json_values, "offset": json_values,
                                    "id": json_values}).map(lambda v: json.dumps(v).encode()),
)


@pytest.mark.filterwarnings("ignore:.*skipped:UserWarning")
@BUDGET
@given(st.lists(manifest_line, max_size=6), st.sampled_from([".jsonl", ".csv"]))
def test_any_manifest_parses_or_raises_manifest_error(tmp_path: Path, lines: list[bytes],
                                                      suffix: str) -> None:
    path = tmp_path / f"m{suffix}"
    path.write_bytes(b"\n".join(lines))
    for on_error in ("raise", "skip"):
        try:
            utterances = read_manifest(path, on_error=on_error)  # type: ignore[arg-type]
        except ManifestError as exc:
            assert str(exc).startswith(str(path))
            continue
        for u in utterances:
            assert isinstance(u, Utterance) and isinstance(u.text, str) and u.audio.is_absolute()
            assert u.duration is None or (np.isfinite(u.duration) and u.duration >= 0)
            assert np.isfinite(u.offset) and u.offset >= 0


@BUDGET
@given(st.text(max_size=60))
def test_normalisation_is_idempotent(text: str) -> None:
    once = normalize_text(text)
    assert normalize_text(once) == once
    assert once == once.strip() and "  " not in once


ENGLISH = CharTokenizer()


@BUDGET
@given(st.text(alphabet=ENGLISH.alphabet, max_size=60))
def test_char_tokenizer_round_trip(text: str) -> None:
    ids = ENGLISH.encode(text)
    assert 0 not in ids and ENGLISH.decode(ids) == text


@pytest.fixture(scope="module")
def sentencepiece() -> SentencePieceTokenizer:
    sentences = ["the quick brown fox jumps over the lazy dog", "hello world", "it's a test",
                 "pack my box with five dozen liquor jugs", "zebras quietly vex"] * 20
    return train_sentencepiece(sentences, 40)


@BUDGET
@given(text=st.text(alphabet=ENGLISH.alphabet, max_size=60))
def test_sentencepiece_round_trip_of_normalised_text(sentencepiece, text: str) -> None:
    text = normalize_text(text)
    ids = sentencepiece.encode(text)
    assert 0 not in ids and sentencepiece.decode(ids) == text
