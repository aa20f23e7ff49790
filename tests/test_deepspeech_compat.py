"""harken.compat.deepspeech: DeepSpeech 0.9's Python API on a harken model.

The model is the tiny Conformer of tests/fixtures/import (a NeMo archive imported by harken):
random weights, but deterministic transcripts to compare the API's answers with harken's.
"""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from harken.compat.deepspeech import Metadata, Model, Stream
from harken.interop.import_nemo import import_nemo

ROOT = Path(__file__).resolve().parents[1]
NEMO = ROOT / "tests" / "fixtures" / "import" / "nemo_conformer_bpe" / "model.nemo"
CLIP = ROOT / "examples" / "fox.wav"
ARPA = """\\data\\
ngram 1=5
ngram 2=3

\\1-grams:
-1.0\t<s>\t0
-1.0\t</s>\t0
-0.5\tsew\t0
-0.7\tshe\t0
-0.9\t<unk>\t0

\\2-grams:
-0.3\t<s> sew
-0.3\tsew sew
-0.4\tshe sew

\\end\\
"""


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ds") / "conformer.harken"
    import_nemo(NEMO, path)
    return path


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    with wave.open(str(CLIP), "rb") as fin:
        return np.frombuffer(fin.readframes(fin.getnframes()), np.int16)


@pytest.fixture()
def scorer(tmp_path: Path) -> Path:
    path = tmp_path / "lm.arpa"
    path.write_text(ARPA)
    return path


def test_stt_is_harkens_beam_search(model_path: Path, audio: np.ndarray) -> None:
    ds = Model(str(model_path))
    assert ds.sampleRate() == 16000
    expected = ds.harken_model.transcribe(audio.astype(np.float32) / 32768, vad=None,
                                          beam_width=ds.beamWidth()).text
    assert ds.stt(audio) == expected and len(expected.split()) > 3
    assert ds.setBeamWidth(1) == 0 and ds.beamWidth() == 1
    greedy = ds.harken_model.transcribe(audio.astype(np.float32) / 32768, vad=None,
                                        greedy=True).text
    assert ds.stt(audio) == greedy
    assert ds.setBeamWidth(0) == 0x2001 and ds.beamWidth() == 1
    with pytest.raises(TypeError, match="int16"):
        ds.stt(audio.astype(np.float32))


def test_metadata_tokens_and_timesteps(model_path: Path, audio: np.ndarray) -> None:
    ds = Model(str(model_path))
    metadata = ds.sttWithMetadata(audio, 3)
    assert isinstance(metadata, Metadata) and 1 <= len(metadata.transcripts) <= 3
    best = metadata.transcripts[0]
    assert "".join(t.text for t in best.tokens) == ds.stt(audio)
    steps = [t.timestep for t in best.tokens]
    assert steps == sorted(steps) and steps[-1] <= len(audio) / 16000 / 0.02
    assert all(t.start_time == pytest.approx(t.timestep * 0.02) for t in best.tokens)
    texts = ["".join(t.text for t in c.tokens) for c in metadata.transcripts]
    assert len(set(texts)) == len(texts)
    scores = [c.confidence for c in metadata.transcripts]
    assert scores == sorted(scores, reverse=True)


def test_stream_matches_stt_and_is_invalid_after_finish(model_path: Path,
                                                        audio: np.ndarray) -> None:
    ds = Model(str(model_path))
    stream = ds.createStream()
    assert isinstance(stream, Stream)
    partials = []
    for start in range(0, len(audio), 1600):
        stream.feedAudioContent(audio[start: start + 1600])
        partials.append(stream.intermediateDecode())
    assert partials[0] == "" or isinstance(partials[0], str)
    middle = stream.intermediateDecodeWithMetadata()
    assert "".join(t.text for t in middle.transcripts[0].tokens) == partials[-1]
    assert stream.finishStream() == ds.stt(audio)
    for call, action in ((lambda: stream.feedAudioContent(audio[:100]), "feed"),
                         (stream.intermediateDecode, "decode"),
                         (stream.intermediateDecodeWithMetadata, "decode"),
                         (stream.finishStream, "finish"), (stream.freeStream, "free")):
        with pytest.raises(RuntimeError, match=f"^Stream object is not valid. Trying to "
                                               f"{action} an already finished stream\\?$"):
            call()
    other = ds.createStream()
    other.feedAudioContent(audio)
    metadata = other.finishStreamWithMetadata(1)
    assert "".join(t.text for t in metadata.transcripts[0].tokens) == ds.stt(audio)
    freed = ds.createStream()
    freed.freeStream()
    with pytest.raises(RuntimeError, match="Stream object is not valid"):
        freed.finishStream()


def test_errors_as_deepspeech_raises_them(model_path: Path, tmp_path: Path,
                                          scorer: Path) -> None:
    with pytest.raises(RuntimeError, match=r"^CreateModel failed with 'Missing model "
                                           r"information.' \(0x1000\)"):
        Model(str(tmp_path / "output_graph.pbmm"))
    (tmp_path / "graph.pbmm").write_bytes(b"\x08\x01 not a harken model")
    with pytest.raises(RuntimeError, match=r"^CreateModel failed with 'Error reading the proto "
                                           r"buffer model file.' \(0x3005\)"):
        Model(str(tmp_path / "graph.pbmm"))
    ds = Model(str(model_path))
    with pytest.raises(RuntimeError, match=r"AddHotWord failed with 'External scorer is not "
                                           r"enabled.' \(0x2004\)"):
        ds.addHotWord("sew", 5.0)
    assert ds.setScorerAlphaBeta(0.5, 1.0) == 0x2004
    with pytest.raises(RuntimeError, match=r"Could not read scorer file.' \(0x2005\)"):
        ds.enableExternalScorer(str(tmp_path / "kenlm.scorer"))
    ds.enableExternalScorer(str(scorer))
    assert ds.setScorerAlphaBeta(0.5, 1.0) == 0
    ds.addHotWord("she", 4.0)
    with pytest.raises(RuntimeError, match=r"^AddHotWord failed with 'Could not insert "
                                           r"hot-word.' \(0x3008\)$"):
        ds.addHotWord("she", 2.0)
    ds.eraseHotWord("she")
    with pytest.raises(RuntimeError, match=r"^EraseHotWord failed with 'Could not erase "
                                           r"hot-word.' \(0x3010\)$"):
        ds.eraseHotWord("she")
    ds.clearHotWords()
    assert ds.disableExternalScorer() == 0
    assert ds.disableExternalScorer() == 0x2004  # DS_ERR_SCORER_NOT_ENABLED, as DeepSpeech


def test_scorer_and_hot_words_steer_the_words(model_path: Path, audio: np.ndarray,
                                              scorer: Path) -> None:
    ds = Model(str(model_path))
    ds.enableExternalScorer(str(scorer))
    words = ds.stt(audio).split()
    assert words and set(words) <= {"sew", "she"}  # a word LM: lexicon decoding
    assert ds.setScorerAlphaBeta(0.5, -10.0) == 0  # a word penalty: fewer words
    fewer = ds.stt(audio).split()
    assert 0 < len(fewer) < len(words)
    assert ds.setScorerAlphaBeta(0.5, 1.0) == 0
    ds.addHotWord("sew", -20.0)  # DeepSpeech allows negative boosts
    assert len(ds.stt(audio).split()) < len(words)
    ds.disableExternalScorer()
    assert ds.stt(audio) == Model(str(model_path)).stt(audio)


def test_deepspeech_client_usage(model_path: Path, scorer: Path, capsys: pytest.CaptureFixture
                                 ) -> None:
    """The calls of DeepSpeech's command-line client (native_client/python/client.py), in
    order; only the import differs."""
    def words_from_candidate_transcript(metadata):
        word, words, word_start_time = "", [], 0
        for i, token in enumerate(metadata.tokens):
            if token.text != " ":
                if len(word) == 0:
                    word_start_time = token.start_time
                word = word + token.text
            if token.text == " " or i == len(metadata.tokens) - 1:
                word_duration = max(token.start_time - word_start_time, 0)
                words.append({"word": word, "start_time": round(word_start_time, 4),
                              "duration": round(word_duration, 4)})
                word = ""
        return words

    ds = Model(str(model_path))
    ds.setBeamWidth(16)
    desired_sample_rate = ds.sampleRate()
    ds.enableExternalScorer(str(scorer))
    ds.setScorerAlphaBeta(0.75, 1.85)
    ds.addHotWord("sew", 2.0)
    fin = wave.open(str(CLIP), "rb")
    assert fin.getframerate() == desired_sample_rate
    audio = np.frombuffer(fin.readframes(fin.getnframes()), np.int16)
    fin.close()
    print(ds.stt(audio))
    result = ds.sttWithMetadata(audio, 3)
    words = words_from_candidate_transcript(result.transcripts[0])
    printed = capsys.readouterr().out.strip()
    assert printed == " ".join(w["word"] for w in words)
    assert all(w["duration"] >= 0 for w in words)


def test_candidates_have_their_own_timings(model_path: Path, audio: np.ndarray) -> None:
    """N-best candidates of `sttWithMetadata`, `finishStreamWithMetadata` and
    `intermediateDecodeWithMetadata`: up to n, distinct, each timed by its own alignment."""
    ds = Model(str(model_path))
    ds.setBeamWidth(16)
    result = ds.sttWithMetadata(audio, 4)
    texts = ["".join(t.text for t in c.tokens) for c in result.transcripts]
    assert 2 <= len(texts) <= 4 and len(set(texts)) == len(texts)
    for candidate in result.transcripts:
        starts = [t.start_time for t in candidate.tokens if t.text != " "]
        assert starts == sorted(starts)
    timings = {tuple(t.start_time for t in c.tokens) for c in result.transcripts}
    assert len(timings) > 1  # not every candidate reuses the best one's times
    stream = ds.createStream()
    stream.feedAudioContent(audio)
    final = stream.finishStreamWithMetadata(4)
    assert ["".join(t.text for t in c.tokens) for c in final.transcripts] == texts


def test_intermediate_candidates_of_a_streaming_model() -> None:
    ds = Model("en-small")  # the bundled model streams step by step (partials as it goes)
    with wave.open(str(ROOT / "examples" / "stella.wav"), "rb") as fin:
        audio = np.frombuffer(fin.readframes(fin.getnframes()), np.int16)
    stream = ds.createStream()
    stream.feedAudioContent(audio[: len(audio) // 2])
    middle = stream.intermediateDecodeWithMetadata(3)
    texts = ["".join(t.text for t in c.tokens) for c in middle.transcripts]
    assert 2 <= len(texts) <= 3 and len(set(texts)) == len(texts)
    assert texts[0] == stream.intermediateDecode() != ""
    assert len(stream.intermediateDecodeWithMetadata(1).transcripts) == 1


def test_deepspeech_console_script(model_path: Path, scorer: Path, audio: np.ndarray,
                                   capsys: pytest.CaptureFixture) -> None:
    """`deepspeech` with the 0.9.3 client's flags; DeepSpeech file names name harken files."""
    from harken.compat.deepspeech_client import main, model_alias, scorer_alias

    graph = str(model_path.with_suffix(".pbmm"))  # conformer.pbmm -> conformer.harken
    lm = str(scorer.with_suffix(".scorer"))  # lm.scorer -> lm.arpa
    assert model_alias(graph) == str(model_path) and scorer_alias(lm) == str(scorer)
    assert model_alias("en-small.pbmm") == "en-small"
    ds = Model(str(model_path))
    ds.setBeamWidth(8)
    ds.enableExternalScorer(str(scorer))
    ds.addHotWord("sew", 2.0)
    assert main(["--model", graph, "--scorer", lm, "--audio", str(CLIP), "--beam_width", "8",
                 "--hot_words", "sew:2"]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == ds.stt(audio)
    assert "Running inference." in out.err
    assert main(["--model", graph, "--audio", str(CLIP), "--json",
                 "--candidate_transcripts", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 1 <= len(result["transcripts"]) <= 2
    assert {"word", "start_time", "duration"} <= set(result["transcripts"][0]["words"][0])
    assert main(["--model", graph, "--audio", str(CLIP), "--extended"]) == 0
    assert capsys.readouterr().out.strip() == Model(str(model_path)).stt(audio)
    assert main(["--model", "missing.pbmm", "--audio", str(CLIP)]) == 1
    assert "CreateModel failed with 'Missing model information.'" in capsys.readouterr().err
