"""Written transcripts: punctuator labels, a tiny trained punctuator's exact outputs, inverse
text normalisation, and written text in Transcript, txt/json/srt and the server."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from harken.decoding import Segment, Transcript, Word
from harken.errors import ConfigError, ModelError
from harken.written.itn import inverse_normalize, inverse_normalize_words
from harken.written.punctuator import PunctuatorConfig, label_sentence, load_punctuator, rule_baseline, save_punctuator, split_of
from harken.training.punctuator import TagScores, TrainOptions, train_punctuator
from harken.text import TextNormalizer, normalize_english
from harken.transcribe import format_transcript, subtitle_cues
from harken.written import write_transcript, written_words

NAMES = ("stella", "bob", "alice", "mary", "john", "paris", "london")


def tiny_text(path: Path) -> Path:
    """Sentences from a few templates: statements, questions, commas, names, money and times."""
    rng = random.Random(0)
    lines = []
    for i in range(600):
        n, m = (rng.choice(NAMES).capitalize() for _ in range(2))
        sentence = rng.choice([f"Please call {n}.", f"Where is {n}?", f"Ask {n} to bring the books.",
                               f"{n} and {m} went home, and they slept.", f"Did {n} see {m}?",
                               "I paid $21 at 3:30 PM."])
        lines.append(f"group{i % 7}\t{sentence}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


TINY = PunctuatorConfig(vocab_size=100, hash_buckets=256, dim=16, hidden=16, layers=1,
                        dropout=0.0)
TINY_TRAINING = TrainOptions(max_steps=120, batch_size=16, max_words=24, checkpoint_every=60,
                             dev_windows=50, warmup_steps=20, lr=1e-2)


@pytest.fixture(scope="module")
def punctuator(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("punctuator")
    torch.set_num_threads(1)
    path = train_punctuator([tiny_text(folder / "text.txt")], folder / "tiny.punct", TINY,
                            TINY_TRAINING)
    return load_punctuator(path)


# --- labels -------------------------------------------------------------------------------------

def test_labels_of_written_sentences() -> None:
    english = TextNormalizer("en")
    assert label_sentence("Call Stella, please.", english) == [
        ("call", 1, 0), ("stella", 1, 1), ("please", 0, 2)]
    assert label_sentence('"What?" she said--and left.', english) == [
        ("what", 1, 3), ("she", 0, 0), ("said", 0, 7), ("and", 0, 0), ("left", 0, 2)]
    # numbers spelled out as the normaliser does; casing of "NASA" is all capitals
    assert label_sentence("NASA paid $21; fine!", english) == [
        ("nasa", 2, 0), ("paid", 0, 0), ("twenty", 0, 0), ("one", 0, 0), ("dollars", 0, 6),
        ("fine", 0, 4)]
    # any alphabet: Cyrillic casing with the default normaliser
    assert label_sentence("Привет, Мир!", TextNormalizer("ru")) == [
        ("привет", 1, 1), ("мир", 1, 4)]


def test_held_out_groups_are_fixed_by_name() -> None:
    assert [split_of(g) for g in ("1", "2", "3", "4")] == [split_of(g) for g in "1234"]
    splits = [split_of(str(i)) for i in range(2000)]
    assert 0.02 < splits.count("test") / 2000 < 0.08 and 0.02 < splits.count("dev") / 2000 < 0.08


def test_scores_count_per_class() -> None:
    scores = TagScores()
    scores.add([(1, 0), (0, 1), (0, 2)], [(1, 0), (0, 2), (0, 2)])
    table = scores.punctuation()
    assert table[","] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert table["."]["precision"] == 0.5 and table["."]["recall"] == 1.0
    assert scores.casing_accuracy() == 1.0
    assert rule_baseline(["a", "b", "c"]) == [(1, 0), (0, 0), (0, 2)]


# --- a tiny trained punctuator ------------------------------------------------------------------

def test_tiny_punctuator_restores_sentences(punctuator) -> None:
    assert punctuator("please call stella ask her to bring the books") == \
        "Please call Stella. Ask her to bring the books."
    assert punctuator("where is bob") == "Where is Bob?"
    assert punctuator("did alice see mary") == "Did Alice see Mary?"
    assert punctuator("john and paris went home and they slept") == \
        "John and Paris went home, and they slept."
    assert punctuator("") == ""


def test_mark_biases_are_calibrated_and_applied(punctuator) -> None:
    from dataclasses import replace

    from harken.written.punctuator import Punctuator

    assert len(punctuator.config.punct_bias) == 8  # chosen on dev text at the end of training
    silent = replace(punctuator.config, punct_bias=(50.0,) + (0.0,) * 7)
    quiet = Punctuator(silent, punctuator.vocabulary, punctuator.network)
    assert quiet("please call stella ask her to bring the books") == \
        "Please call Stella Ask her to bring the books."  # marks off, casing as predicted
    with pytest.raises(ConfigError, match="punct_bias: expected 8 numbers"):
        PunctuatorConfig(punct_bias=(1.0,))


def test_written_words_add_numbers_and_fold_spans(punctuator) -> None:
    words = "i paid twenty one dollars at three thirty p m".split()
    assert written_words(words, punctuator) == ["I", "paid", "$21", "", "", "at", "3:30 PM.",
                                                 "", "", ""]


def test_punctuator_file_round_trip_and_damage(punctuator, tmp_path: Path) -> None:
    path = save_punctuator(punctuator.network, punctuator.config, punctuator.vocabulary,
                           tmp_path / "copy.punct")
    copy = load_punctuator(path)
    words = "where is stella please call bob".split()
    assert copy.tag(words) == punctuator.tag(words)
    assert path.stat().st_size < 100_000  # float16 weights of a tiny model
    with pytest.raises(ModelError, match="SHA-256 mismatch"):
        load_punctuator(path, expected_sha256="0" * 64)
    bad = tmp_path / "bad.punct"
    bad.write_bytes(b"not safetensors")
    with pytest.raises(ModelError, match="bad.punct: not a readable safetensors file"):
        load_punctuator(bad)
    with pytest.raises(ModelError, match="no such punctuator file"):
        load_punctuator(tmp_path / "missing.punct")


def test_training_resumes_and_refuses_too_little_text(tmp_path: Path) -> None:
    text = tiny_text(tmp_path / "text.txt")
    options = TrainOptions(max_steps=30, batch_size=8, max_words=16, checkpoint_every=20,
                           dev_windows=10, warmup_steps=5)
    train_punctuator([text], tmp_path / "a.punct", TINY, options)
    checkpoints = sorted((tmp_path / "a.punct.run" / "checkpoints").glob("step-*"))
    assert [p.name for p in checkpoints] == ["step-00000020", "step-00000030"]
    longer = TrainOptions(**{**options.__dict__, "max_steps": 40})
    train_punctuator([text], tmp_path / "a.punct", TINY, longer, resume=True)
    state = json.loads((tmp_path / "a.punct.run/checkpoints/step-00000040/state.json").read_text())
    assert state["step"] == 40
    short = tmp_path / "short.txt"
    short.write_text("Hello there.\n")
    with pytest.raises(ConfigError, match="only 2 words of training text"):
        train_punctuator([short], tmp_path / "b.punct", TINY, options)
    with pytest.raises(ConfigError, match="min_words/max_words"):
        TrainOptions(min_words=10, max_words=5)


# --- inverse text normalisation -----------------------------------------------------------------

ITN_CASES = [
    ("i paid twenty one dollars at three thirty p m", "i paid $21 at 3:30 PM"),
    ("twenty one dollars and fifty cents", "$21.50"),
    ("two million dollars", "$2 million"),
    ("one thousand five hundred men", "1500 men"),
    ("four thousand five hundred and twenty one", "4521"),
    ("it cost two hundred and fifty thousand dollars", "it cost $250,000"),
    ("between eighteen hundred and nineteen hundred", "between 1800 and 1900"),
    ("a hundred and ten miles", "110 miles"),
    ("one of the two men", "one of the two men"),
    ("on may fifth nineteen ninety nine", "on May 5th, 1999"),
    ("on june five", "on June 5"),
    ("it may one day come", "it may one day come"),
    ("the twenty first of june", "the 21st of June"),
    ("the first time", "the first time"),
    ("one hundred and twenty third street", "123rd street"),
    ("down to eighteen eighteen part two", "down to 1818 part two"),
    ("nineteen oh five", "1905"),
    ("nineteen hundred and five", "1905"),
    ("in fifteen hundred", "in 1500"),
    ("two thousand and five", "2005"),
    ("in the nineteen nineties", "in the 1990s"),
    ("june nineteen fourteen", "June 1914"),
    ("three point one four", "3.14"),
    ("twelve point five percent", "12.5%"),
    ("fifty percent of two hundred and five kilograms", "50% of 205 kg"),
    ("minus five degrees", "-5 degrees"),
    ("zero zero seven", "007"),
    ("at seven fifteen we left", "at 7:15 we left"),
    ("eleven o'clock", "11 o'clock"),
    ("five hundred pounds sterling", "£500"),
]


@pytest.mark.parametrize("spoken, written", ITN_CASES)
def test_inverse_normalization(spoken: str, written: str) -> None:
    assert inverse_normalize(spoken) == written


def test_inverse_normalization_inverts_the_normaliser() -> None:
    for text in ("$21.50", "12,500", "1999", "21st", "3.14", "12.5%", "1990s", "-5", "2005"):
        assert inverse_normalize(normalize_english(text)) == text


def test_numbers_do_not_run_across_punctuation() -> None:
    words = "two hundred twenty men".split()
    assert [(r.start, r.end, r.text) for r in inverse_normalize_words(words)] == [(0, 3, "220")]
    spans = inverse_normalize_words(words, ["", ",", "", "."])
    assert [(r.start, r.end, r.text) for r in spans] == [(0, 2, "200"), (2, 3, "20")]
    clock = "three thirty p m".split()  # the punctuator may write "p. m."
    assert [(r.start, r.end, r.text) for r in inverse_normalize_words(clock, ["", "", ".", "."])
            ] == [(0, 4, "3:30 PM")]
    with pytest.raises(ValueError, match="one entry per word"):
        inverse_normalize_words(words, [""])


# --- written transcripts and output formats -----------------------------------------------------

def _transcript(text: str) -> Transcript:
    words = [Word(w, 0.5 * i, 0.5 * i + 0.4, 0.9) for i, w in enumerate(text.split())]
    segments = [Segment(" ".join(w.word for w in words), words[0].start, words[-1].end, words)]
    return Transcript(text=text, words=words, segments=segments, duration=words[-1].end + 0.1)


def test_written_transcript_keeps_times_and_spoken_words(punctuator) -> None:
    raw = _transcript("please call stella i paid twenty one dollars")
    written = write_transcript(raw, punctuator)
    assert written.text == "Please call Stella. I paid $21."
    assert written.raw_text == raw.text
    assert [w.word for w in written.words] == [w.word for w in raw.words]
    assert [(w.start, w.end) for w in written.words] == [(w.start, w.end) for w in raw.words]
    assert [w.written for w in written.words] == ["Please", "call", "Stella.", "I", "paid",
                                                  "$21.", "", ""]
    assert written.segments[0].text == written.text
    assert write_transcript(written, punctuator) is written  # already written
    data = json.loads(format_transcript(written, "json"))
    assert data["text"] == written.text and data["raw_text"] == raw.text
    assert data["words"][5] == {"word": "twenty", "start": 2.5, "end": 2.9, "confidence": 0.9,
                                "written": "$21."}
    assert format_transcript(written, "txt") == "Please call Stella. I paid $21.\n"


def test_subtitles_show_written_words_and_end_at_sentences(punctuator) -> None:
    text = ("please call stella ask her to bring the books where is bob did alice see mary "
            "john and paris went home and they slept")
    written = write_transcript(_transcript(text), punctuator)
    cues = subtitle_cues(written, line_chars=30, lines=1)
    assert [c[2] for c in cues] == ["Please call Stella.", "Ask her to bring the books.",
                                    "Where is Bob?", "Did Alice see Mary?",
                                    "John and Paris went home, and", "they slept."]
    assert [c[:2] for c in cues[:2]] == [(0.0, 1.4), (1.5, 4.4)]
    srt = format_transcript(written, "srt")  # two lines of 42: whole sentences fit in a cue
    assert srt.startswith("1\n00:00:00,000 --> 00:00:04,400\nPlease call Stella. Ask her to "
                          "bring the\nbooks.\n\n2\n00:00:04,500 --> 00:00:11,900\nWhere is")
    # a number's cue runs to the end of its last spoken word
    money = write_transcript(_transcript("i paid twenty one dollars"), punctuator)
    assert subtitle_cues(money) == [(0.0, 2.4, "I paid $21.")]


def test_text_only_transcripts_are_written_too(punctuator) -> None:
    raw = Transcript(text="where is bob", segments=[Segment("where is bob", 0.0, 1.0)])
    written = write_transcript(raw, punctuator)
    assert written.text == "Where is Bob?" and written.segments[0].text == "Where is Bob?"


def test_model_writes_by_default_and_raw_on_request(punctuator, tmp_path: Path) -> None:
    from harken.model import load_model, new_model

    torch.manual_seed(0)
    model = new_model("deepspeech2", "tiny")
    audio = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    assert model.transcribe(audio).raw_text is None  # no punctuator: raw text
    model.punctuator = punctuator
    raw = model.transcribe(audio, written=False)
    written = model.transcribe(audio)
    assert raw.raw_text is None and written.raw_text == raw.text
    assert written.text == write_transcript(raw, punctuator).text
    saved = load_model(model.save(tmp_path / "m.harken"))
    assert saved.punctuator is not None and saved.transcribe(audio).text == written.text
    assert "punctuator.safetensors" in saved.config.files


def test_bundled_punctuator_is_checked_and_loaded(punctuator, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import harken.model
    import harken.modelfile as model_module
    from harken.model import load_model, new_model
    from harken.modelfile import sha256_file

    torch.manual_seed(0)
    model_path = new_model("deepspeech2", "tiny").save(tmp_path / "en-small.harken")
    punct_path = save_punctuator(punctuator.network, punctuator.config, punctuator.vocabulary,
                                 tmp_path / "en-small.punct")
    registry = tmp_path / "models.json"
    registry.write_text(json.dumps({"en-small": {
        "file": model_path.name, "sha256": sha256_file(model_path),
        "punctuator": {"file": punct_path.name, "sha256": sha256_file(punct_path)}}}))
    monkeypatch.setattr(model_module, "ASSETS", tmp_path)
    monkeypatch.setattr(harken.model, "ASSETS", tmp_path)  # (the punctuator of a bundled model)
    monkeypatch.setattr(model_module, "REGISTRY_FILE", registry)
    model = load_model()
    assert model.punctuator is not None
    assert model.punctuator.tag(["where", "is", "bob"]) == punctuator.tag(["where", "is", "bob"])
    punct_path.write_bytes(punct_path.read_bytes() + b"\0")
    with pytest.raises(ModelError, match="en-small.punct: the punctuator is corrupt"):
        load_model("en-small")


def test_server_rest_and_websocket_give_written_text(punctuator) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    pytest.importorskip("websockets")
    import asyncio

    from test_server import _stream, bursts, running, tiny_streaming_model, transcribe_request, \
        wav_bytes

    from harken.vad import EndpointConfig

    torch.set_num_threads(1)
    model = tiny_streaming_model()
    model.punctuator = punctuator
    data = wav_bytes(bursts(3.0, seed=1))
    raw = model.transcribe(data, written=False)
    written = model.transcribe(data)
    assert written.text != raw.text and written.raw_text == raw.text
    audio = bursts(6.0, seed=2, gaps=2)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    local = model.stream(endpoint=EndpointConfig(method="energy", silence_ms=600))
    finals = [t for t in local.feed(pcm) if t.text] + [local.finish()]
    with running(model, vad="energy") as base:
        assert transcribe_request(base, data).json() == {"text": written.text}
        assert transcribe_request(base, data, raw="true").json() == {"text": raw.text}
        verbose = transcribe_request(base, data, response_format="verbose_json",
                                     **{"timestamp_granularities[]": "word"}).json()
        assert verbose["text"] == written.text
        assert [(w["word"], w["start"], w["end"], w["written"]) for w in verbose["words"]] == [
            (w.word, round(w.start, 3), round(w.end, 3), v.written)
            for w, v in zip(raw.words, written.words)]
        srt = transcribe_request(base, data, response_format="srt").text
        assert srt == format_transcript(written, "srt")
        bad = transcribe_request(base, data, raw="maybe")
        assert bad.status_code == 400 and "raw must be true or false" in bad.text
        messages = asyncio.run(_stream(base.replace("http", "ws") + "/v1/stream", [
            {"sample_rate": 16000, "encoding": "pcm_s16le", "partials": False}],
            [pcm[i: i + 3200] for i in range(0, len(pcm), 3200)]))
    got = [m for m in messages if m["type"] == "final"]
    assert [m["text"] for m in got] == [model.write(t).text for t in finals]
    assert [[w["start"] for w in m["words"]] for m in got] == [
        [round(w.start, 3) for w in t.words] for t in finals]


def test_punctuator_commands(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from harken.cli import main
    from harken.model import load_model, new_model

    text = tiny_text(tmp_path / "text.txt")
    out = tmp_path / "cli.punct"
    assert main(["punctuator", "train", str(text), "--out", str(out), "--max-steps", "3",
                 "--vocab-size", "50"]) == 0
    assert load_punctuator(out).config.vocab_size == 50
    assert main(["punctuator", "calibrate", str(out), str(text), "--out",
                 str(tmp_path / "calibrated.punct")]) == 0
    assert len(load_punctuator(tmp_path / "calibrated.punct").config.punct_bias) == 8
    assert main(["punctuator", "apply", str(out), "--text", "where is bob"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith(("?", ".", "!"))
    torch.manual_seed(0)
    model = new_model("deepspeech2", "tiny").save(tmp_path / "m.harken")
    assert main(["punctuator", "attach", str(model), str(out), "--out",
                 str(tmp_path / "m2.harken")]) == 0
    assert load_model(tmp_path / "m2.harken").punctuator is not None
    assert main(["punctuator", "train", str(tmp_path / "missing.txt"), "--out", str(out)]) == 1
    assert "missing.txt: no such text file" in capsys.readouterr().err


def test_transcribe_command_writes_text_unless_raw(punctuator, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    import soundfile as sf
    from test_server import bursts, tiny_streaming_model

    from harken.cli import main

    torch.set_num_threads(1)
    model = tiny_streaming_model()
    model.punctuator = punctuator
    path = model.save(tmp_path / "written.harken")
    wav = tmp_path / "clip.wav"
    sf.write(wav, bursts(3.0, seed=1), 16000, subtype="PCM_16")
    raw = model.transcribe(wav, written=False)
    assert raw.text
    assert main(["transcribe", str(wav), "--model", str(path)]) == 0
    assert capsys.readouterr().out == model.write(raw).text + "\n"
    assert main(["transcribe", str(wav), "--model", str(path), "--raw"]) == 0
    assert capsys.readouterr().out == raw.text + "\n"
    assert main(["transcribe", str(wav), "--model", str(path), "-f", "json", "-o",
                 str(tmp_path / "out")]) == 0
    data = json.loads((tmp_path / "out" / "clip.json").read_text())
    assert data["text"] == model.write(raw).text and data["raw_text"] == raw.text
    assert [(w["word"], w["start"]) for w in data["words"]] == [(w.word, w.start)
                                                                for w in raw.words]


def test_the_bundled_punctuator_writes_english() -> None:
    """The punctuator shipped with en-small (docs/written-text.md): exact outputs."""
    from harken.modelfile import ASSETS, bundled_models
    from harken.written.punctuator import load_punctuator as load

    entry = bundled_models().get("en-small", {}).get("punctuator")
    if entry is None:
        pytest.skip("this install ships no punctuator for en-small")
    punctuator = load(ASSETS / entry["file"], entry["sha256"])
    assert " ".join(written_words("i paid twenty one dollars at three thirty p m".split(),
                                  punctuator)).split() == ["I", "paid", "$21", "at", "3:30", "PM."]
    assert punctuator("where are you going") == "Where are you going?"
    assert punctuator("what time is it i think it is late") == "What time is it? I think it is late."


def test_onnx_export_keeps_the_punctuator(punctuator, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from test_server import bursts, tiny_streaming_model

    from harken.interop.onnx_export import export_onnx
    from harken.model import load_model

    torch.set_num_threads(1)
    model = tiny_streaming_model()
    model.punctuator = punctuator
    audio = bursts(2.0, seed=3)
    exported = load_model(export_onnx(model, tmp_path / "onnx"), backend="onnx")
    assert exported.punctuator is not None
    assert exported.transcribe(audio).text == model.transcribe(audio).text
    assert exported.transcribe(audio).raw_text == model.transcribe(audio, written=False).text
