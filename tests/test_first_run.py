"""The command line as a new user meets it: exports that decode like the original, output that
tools can read, and errors reported once, where they belong, with the right exit status.

A tiny random DeepSpeech2 saved as `tiny.harken` with a word LM `tiny.arpa` beside it and
decoding defaults that use it (the layout of the bundled model), on noise clips: the random
network's greedy output is a string of letters, its LM beam search the LM's words.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from harken.cli import main
from harken.decoding.options import GREEDY
from harken.errors import HarkenError
from harken.decoding.lm import build_lm, read_lm_info
from harken.model import load_model, new_model
from harken.models import count_parameters

torch.set_num_threads(1)

LM_SENTENCES = ["fw jk jf", "jk fw", "jf jk fw"]  # letters the random network favours
DECODING = {"lm": "tiny.arpa", "lm_weight": 1.0, "word_score": 4.0, "beam_width": 8}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A folder with tiny.harken, its LM tiny.arpa, and clips a.wav, b.wav, short.wav."""
    folder = tmp_path_factory.mktemp("first-run")
    torch.manual_seed(0)
    model = new_model("deepspeech2", "tiny")
    model.config = dataclasses.replace(model.config, decoding=dict(DECODING))
    model.save(folder / "tiny.harken")
    build_lm(LM_SENTENCES, 2, folder / "tiny", estimator="builtin")
    rng = np.random.default_rng(0)
    for name, seconds in (("a", 2.0), ("b", 1.5), ("short", 0.1)):
        sf.write(folder / f"{name}.wav", (0.1 * rng.standard_normal(int(16000 * seconds)))
                 .astype(np.float32), 16000)
    return folder


def run(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_lm_decoding_differs_from_greedy(tiny):
    """The premise of the other tests: the LM decides the transcript."""
    model = load_model(tiny / "tiny.harken")
    with_lm = model.transcribe(tiny / "a.wav").text
    assert with_lm and set(with_lm.split()) <= {"fw", "jk", "jf"}
    assert model.transcribe(tiny / "a.wav", GREEDY).text != with_lm


# -- export --------------------------------------------------------------------------------

def test_export_carries_its_lm_and_transcribes_like_pytorch(tiny, tmp_path, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    out = tmp_path / "m"
    assert run(capsys, "export", tiny / "tiny.harken", "--format", "onnx", "--out", out)[0] == 0
    assert (out / "tiny.arpa").read_bytes() == (tiny / "tiny.arpa").read_bytes()
    assert read_lm_info(out / "tiny.arpa") == read_lm_info(tiny / "tiny.arpa")
    clips = [tiny / "a.wav", tiny / "b.wav"]
    code, expected, _ = run(capsys, "transcribe", *clips, "-f", "json", "--model",
                            tiny / "tiny.harken")
    assert code == 0
    for backend in ([], ["--backend", "onnx"]):  # an export runs with ONNX by default
        code, got, err = run(capsys, "transcribe", *clips, "-f", "json", "--model", out,
                             *backend)
        assert (code, err) == (0, "")
        assert [json.loads(line)["text"] for line in got.splitlines()] == \
               [json.loads(line)["text"] for line in expected.splitlines()]
    code, info, _ = run(capsys, "info", "--model", out)
    info = json.loads(info)
    assert code == 0 and info["backend"] == "onnx"
    assert info["parameters"] == count_parameters(load_model(tiny / "tiny.harken").network) > 0
    assert info["decoding"] == DECODING


# -- output on stdout ------------------------------------------------------------------------

def test_manifests_are_read_without_output_dir(tiny, tmp_path, capsys):
    model = ["--model", tiny / "tiny.harken"]
    code, expected, _ = run(capsys, "transcribe", tiny / "a.wav", tiny / "b.wav", *model)
    assert code == 0 and len(expected.splitlines()) == 2 and ".wav: jf" in expected
    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text("".join(json.dumps({"audio": str(tiny / name)}) + "\n"
                             for name in ("a.wav", "b.wav")))
    listing = tmp_path / "list.txt"
    listing.write_text(f"{tiny / 'a.wav'}\n{tiny / 'b.wav'}\n")
    table = tmp_path / "list.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerows([["wav_filename", "wav_filesize", "transcript"],
                          [tiny / "a.wav", 1, "x"], [tiny / "b.wav", 1, "y"]])
    for manifest in (jsonl, listing, table):
        assert run(capsys, "transcribe", manifest, *model) == (0, expected, "")


def test_several_files_on_stdout_are_json_lines_and_subtitles_are_refused(tiny, capsys):
    clips = [tiny / "a.wav", tiny / "missing.wav", tiny / "b.wav"]
    code, out, err = run(capsys, "transcribe", *clips, "-f", "json", "--model",
                         tiny / "tiny.harken")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and [r["file"] for r in rows] == [str(c) for c in clips]
    assert rows[0]["text"] and rows[0]["words"] and "missing.wav" in rows[1]["error"]
    code, single, _ = run(capsys, "transcribe", clips[0], "-f", "json", "--model",
                          tiny / "tiny.harken")
    single = json.loads(single)  # one file: the JSON object as before, indented
    assert code == 0 and single["text"] == rows[0]["text"] and set(rows[0]) - set(single) == {"file"}
    for fmt in ("srt", "vtt"):
        code, out, err = run(capsys, "transcribe", clips[0], clips[2], "-f", fmt)
        assert (code, out) == (2, "")
        assert err == (f"harken: error: -f {fmt} holds one file's subtitles: 2 inputs need "
                       f"--output-dir (one .{fmt} file each)\n")


def test_an_empty_transcript_says_why(tiny, tmp_path, capsys):
    torch.manual_seed(0)
    model = new_model("deepspeech2", "tiny")  # a network that hears nothing: blank wins
    head = [m for m in model.network.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        head.bias[0] = 1e3
    model.save(tmp_path / "deaf.harken")
    code, out, err = run(capsys, "transcribe", tiny / "short.wav", "--model",
                         tmp_path / "deaf.harken")
    assert (code, out) == (0, "\n")
    assert err == (f"harken: note: {tiny / 'short.wav'}: no words: 0.10 s of audio is too short "
                   "to hold speech (less than 0.25 s)\n")
    code, out, err = run(capsys, "transcribe", tiny / "a.wav", "--model", tmp_path / "deaf.harken")
    assert (code, out) == (0, "\n")
    assert err == (f"harken: note: {tiny / 'a.wav'}: no words recognised in 2.00 s of audio "
                   "(silence, noise or another language?)\n")


# -- errors where they belong ------------------------------------------------------------------

@pytest.mark.parametrize("output_dir", [False, True])
def test_a_missing_lm_is_one_usage_error(tiny, tmp_path, capsys, output_dir):
    missing = tmp_path / "missing.bin"
    extra = ["-o", tmp_path / "out"] if output_dir else []
    code, out, err = run(capsys, "transcribe", tiny / "a.wav", tiny / "b.wav", "--model",
                         tiny / "tiny.harken", "--lm", missing, *extra)
    assert (code, out, err) == (2, "", f"harken: error: lm: {missing} does not exist\n")
    assert not list((tmp_path / "out").glob("*.txt"))


def test_a_model_that_is_no_export_is_one_usage_error(tiny, capsys):
    pytest.importorskip("onnxruntime")
    code, out, err = run(capsys, "transcribe", tiny / "a.wav", tiny / "b.wav", "--model",
                         tiny / "tiny.harken", "--backend", "onnx")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "not an ONNX export" in err


def test_evaluate_names_a_failed_file_once_and_exits_non_zero(tiny, tmp_path, capsys):
    manifest = tmp_path / "dev.jsonl"
    manifest.write_text(json.dumps({"audio": str(tiny / "a.wav"), "text": "jf"}) + "\n"
                        + json.dumps({"audio": str(tiny / "gone.wav"), "text": "fw"}) + "\n")
    code, out, err = run(capsys, "evaluate", manifest, "--model", tiny / "tiny.harken", "--json")
    assert code == 1 and json.loads(out)["n"] == 1
    failed = [line for line in err.splitlines() if "gone.wav" in line]
    assert len(failed) == 1 and failed[0].count("gone.wav") == 1
    assert "--allow-failures" in err
    code, _, _ = run(capsys, "evaluate", manifest, "--model", tiny / "tiny.harken",
                     "--allow-failures")
    assert code == 0


def test_listen_without_portaudio_names_the_library_and_the_pipe(tmp_path, monkeypatch):
    from harken.streaming import _microphone_chunks

    (tmp_path / "sounddevice.py").write_text("raise OSError('PortAudio library not found')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    with pytest.raises(HarkenError) as caught:
        next(_microphone_chunks(1600, 16000))
    message = str(caught.value)
    assert "libportaudio2" in message and "| harken listen -" in message
    assert "pip install" not in message


def test_serve_reports_a_port_in_use_once_and_prints_after_binding(tiny, capsys, monkeypatch):
    pytest.importorskip("fastapi")
    uvicorn = pytest.importorskip("uvicorn")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, out, err = run(capsys, "serve", "--model", tiny / "tiny.harken", "--port", port,
                             "--db", ":memory:")
    assert (code, out) == (1, "")
    assert err == (f"harken: error: serve: port {port} on 127.0.0.1 is already in use (another "
                   "server?); choose another with --port\n")
    served = []

    def fake_run(self, sockets=None):  # what uvicorn is handed, and what was printed by then
        served.append((sockets[0].getsockname()[1], capsys.readouterr().out))

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    code, _, _ = run(capsys, "serve", "--model", tiny / "tiny.harken", "--port", 0,
                     "--db", ":memory:")
    (bound, printed), = served
    assert code == 0 and bound > 0
    assert printed == f"harken: serving tiny on http://127.0.0.1:{bound} (jobs in :memory:)\n"


def test_lm_tune_does_not_store_weights_worse_than_greedy(tiny, tmp_path, capsys):
    model = load_model(tiny / "tiny.harken")
    greedy = model.transcribe(tiny / "a.wav", GREEDY).text  # the reference: greedy is perfect
    manifest = tmp_path / "dev.jsonl"
    manifest.write_text(json.dumps({"audio": str(tiny / "a.wav"), "text": greedy}) + "\n")
    info_before = (tiny / "tiny.lm.json").read_text()
    code, out, err = run(capsys, "lm", "tune", manifest, "--model", tiny / "tiny.harken", "--lm",
                         tiny / "tiny.arpa", "--lm-weights", "0.5", "1", "--word-scores", "1",
                         "--beam-widths", "8", "--write")
    assert code == 1 and "greedy WER 0.00%" in out
    assert "worse than greedy decoding" in err and "not writing" in err
    assert (tiny / "tiny.lm.json").read_text() == info_before


# -- start-up (harken --help without torch: tests/test_architecture.py) ---------------------------

def test_the_lexicon_is_cached_next_to_the_lm_and_decodes_the_same(tiny, tmp_path):
    from harken.decoding.ctc_beam import Decoder
    from harken.decoding.options import DecodeOptions

    folder = tmp_path / "lm"
    folder.mkdir()
    lm = build_lm(LM_SENTENCES + ["fj wk", "kw jj"], 2, folder / "words", estimator="builtin").arpa
    model = load_model(tiny / "tiny.harken")
    options = DecodeOptions(lm=str(lm), beam_width=8, lm_weight=1.0, word_score=4.0)
    rng = np.random.default_rng(1)
    log_probs = [np.log(rng.dirichlet(np.full(model.tokenizer.vocab_size, 0.3), size=40))
                 .astype(np.float32) for _ in range(4)]

    def decode(decoder):
        return [decoder.decode(lp, 0.04).text for lp in log_probs]

    first = Decoder(model.tokenizer, options)  # builds the trie and writes the cache
    caches = sorted(folder.glob("words.arpa.lexicon-*.npz"))
    assert len(caches) == 1
    second = Decoder(model.tokenizer, options)  # built from the cache
    assert second.words == first.words and decode(second) == decode(first)
    assert any(decode(first))
    caches[0].write_bytes(b"not a cache")  # unreadable: rebuilt, same results
    assert decode(Decoder(model.tokenizer, options)) == decode(first)
    Decoder(model.tokenizer, DecodeOptions(lm=str(lm), hotwords={"jj": 5.0}))
    assert sorted(folder.glob("words.arpa.lexicon-*.npz")) == caches  # hotwords: not cached


def test_threads_apply_without_output_dir_and_small_models_use_one(tiny, capsys):
    try:
        assert run(capsys, "transcribe", tiny / "a.wav", "--model", tiny / "tiny.harken",
                   "--threads", 2)[0] == 0
        assert torch.get_num_threads() == 2
        assert run(capsys, "transcribe", tiny / "a.wav", "--model", tiny / "tiny.harken")[0] == 0
        assert torch.get_num_threads() == 1  # a small network: one thread
        code, out, err = run(capsys, "transcribe", tiny / "a.wav", "--threads", 0)
        assert (code, out, err) == (2, "", "harken: error: --threads must be at least 1, got 0\n")
    finally:
        torch.set_num_threads(1)
