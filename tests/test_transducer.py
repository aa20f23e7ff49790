"""Transducer models: building, files, decoding, streaming, training through `harken train`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from harken.errors import ConfigError
from harken.model import load_model, new_model
from harken.models.registry import build_model, model_config
from harken.training.config import config_from_dict
from harken.training.loop import train
from harken.decoding.transducer_search import decode_frames, make_search

from conftest import PHRASES

ENCODERS = {  # streamable tiny encoders (streamed == offline)
    "conformer": {"chunk_size": 4, "causal_conv": True},
    "deepspeech2": {"bidirectional": False},
    "citrinet": {},
}
EXACT_FEATURES = {"normalize": "none", "dither": 0.0}  # streams exactly (see docs/streaming.md)


def audio(seconds: float = 1.3, seed: int = 0) -> np.ndarray:
    rng = np.random.RandomState(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.1 * np.sin(2 * np.pi * 220 * t * (1 + t)) + 0.05 * rng.randn(len(t))).astype(
        np.float32)


def tiny(encoder: str = "conformer", **overrides) -> object:
    torch.manual_seed(0)
    return new_model("transducer", "tiny", features=EXACT_FEATURES, encoder=encoder,
                     encoder_overrides=ENCODERS[encoder], **overrides)


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
@pytest.mark.parametrize("head,predictor", [("transducer", "lstm"), ("hybrid", "stateless"),
                                            ("transducer", "gru")])
def test_every_encoder_saves_and_loads_with_the_same_outputs(tmp_path, encoder, head, predictor):
    model = tiny(encoder, head=head, predictor=predictor)
    wave = audio()
    before = model.transcribe(wave, beam_width=3)
    path = model.save(tmp_path / "model.harken")
    config = json.loads(__import__("zipfile").ZipFile(path).read("config.json"))
    assert config["architecture"] == "transducer"
    assert config["network"]["encoder"] == encoder and config["network"]["head"] == head
    loaded = load_model(path)
    after = loaded.transcribe(wave, beam_width=3)
    assert after.text == before.text and after.score == pytest.approx(before.score, abs=1e-4)
    has_ctc = any(".inner." in k for k in loaded.network.state_dict())
    assert has_ctc == (head == "hybrid")


def test_loss_of_a_batch_equals_each_utterance_alone() -> None:
    torch.manual_seed(0)
    net = build_model("transducer", model_config("transducer", "tiny", head="hybrid"), 80, 29)
    net.eval()
    features = torch.randn(3, 120, 80)
    lengths = torch.tensor([120, 70, 95])
    targets = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0], [9, 10, 11, 0]])
    target_lengths = torch.tensor([4, 2, 3])
    batched = net(features, lengths, targets, target_lengths)
    chunked = build_model("transducer", model_config("transducer", "tiny", head="hybrid",
                                                     loss_chunk=1), 80, 29)
    chunked.load_state_dict(net.state_dict())
    chunked.eval()
    assert torch.allclose(chunked(features, lengths, targets, target_lengths), batched, atol=1e-5)
    for b in range(3):
        t, u = int(lengths[b]), int(target_lengths[b])
        alone = net(features[b: b + 1, :t], lengths[b: b + 1], targets[b: b + 1, :u],
                    target_lengths[b: b + 1])
        assert alone.item() == pytest.approx(batched[b].item(), rel=1e-4)


def reference_greedy(net, frames: torch.Tensor, max_symbols: int) -> list[int]:
    """Textbook greedy transducer decoding, one joint call at a time."""
    tokens: list[int] = []
    with torch.no_grad():
        state = net.predictor.initial_state(1)
        out, state = net.predictor.step(torch.tensor([0]), state)
        for frame in frames:
            for _ in range(max_symbols):
                logits = net.joint(net.joint.encoder_proj(frame), net.joint.predictor_proj(out[0]))
                token = int(logits.argmax())
                if token == 0:
                    break
                tokens.append(token)
                out, state = net.predictor.step(torch.tensor([token]), state)
    return tokens


@pytest.mark.parametrize("max_symbols", [1, 3])
def test_greedy_search_equals_the_textbook_loop(max_symbols: int) -> None:
    model = tiny("deepspeech2")
    net = model.network
    frames = torch.from_numpy(model.log_probs([audio()])[0])
    search = make_search(net, model.tokenizer, model.frame_seconds, max_symbols=max_symbols)
    search.feed(frames)
    result = search.finish()
    expected = reference_greedy(net, frames, max_symbols)
    assert result.text == model.tokenizer.decode(expected).strip()
    assert len(expected) > 5  # an untrained model emits plenty of tokens
    search_ids = [i for i in model.tokenizer.encode(result.text.replace("  ", " "))]
    assert len(search_ids) <= len(expected)


@pytest.mark.parametrize("max_symbols", [1, 3])
def test_beam_search_scores_no_worse_than_greedy_and_returns_nbest(max_symbols: int) -> None:
    from harken.decoding.options import DecodeOptions

    model = tiny("conformer")
    frames = model.log_probs([audio(seed=3)])[0]
    greedy = decode_frames(model.network, frames, model.tokenizer, model.frame_seconds,
                           max_symbols=max_symbols)
    beam = decode_frames(model.network, frames, model.tokenizer, model.frame_seconds,
                         DecodeOptions(beam_width=8, nbest=3, token_beam=None),
                         max_symbols=max_symbols)
    assert beam.score >= greedy.score - 1e-4
    assert len(beam.alternatives) == 3
    scores = [a.score for a in beam.alternatives]
    assert scores == sorted(scores, reverse=True)
    assert beam.alternatives[0].text == beam.text


@pytest.mark.parametrize("encoder", ["conformer", "deepspeech2"])
@pytest.mark.parametrize("options", [{}, {"beam_width": 4}, {"beam_width": 4,
                                                             "hotwords": {"zebra": 3.0}}])
def test_streamed_equals_offline(encoder: str, options: dict) -> None:
    model = tiny(encoder)
    wave = audio(2.0, seed=1)
    offline = model.transcribe(wave, **options)
    stream = model.stream(**options)
    assert stream.exact
    for start in range(0, len(wave), 1234):
        stream.feed(wave[start: start + 1234])
        stream.partial()
    streamed = stream.finish()
    assert streamed.text == offline.text
    assert streamed.score == pytest.approx(offline.score, abs=1e-3)
    assert [(w.start, w.end) for w in streamed.words] == [(w.start, w.end) for w in offline.words]


def test_ctc_only_settings_and_bad_options_are_refused() -> None:
    model = tiny("conformer")
    with pytest.raises(ConfigError, match="vocabulary is a CTC beam search setting"):
        model.transcribe(audio(), vocabulary=["yes"])
    with pytest.raises(ConfigError, match="needs a hybrid model"):
        model.transcribe(audio(), head="ctc")
    with pytest.raises(ConfigError, match="max_symbols must be a positive integer"):
        model.transcribe(audio(), max_symbols=0)
    with pytest.raises(ConfigError, match="predictor"):
        model_config("transducer", "tiny", predictor="transformer")
    with pytest.raises(ConfigError, match="unknown size 'huge'"):
        model_config("transducer", "tiny", encoder_size="huge")


# --- training ------------------------------------------------------------------------------------

TRAIN_STEPS = 300
TRAIN_ENCODER = {"chunk_size": 8, "causal_conv": True}


@pytest.fixture(scope="module")
def trained_hybrid(tts_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny streaming hybrid (chunked causal Conformer + stateless predictor + CTC head)
    trained with `harken train` on the six phrases."""
    data = {
        "model": {"architecture": "transducer", "size": "tiny",
                  "overrides": {"encoder": "conformer", "head": "hybrid", "ctc_weight": 0.3,
                                "predictor": "stateless", "encoder_overrides": TRAIN_ENCODER}},
        "data": {"train": [{"manifest": str(tts_corpus)}], "max_batch_seconds": 60.0,
                 "num_workers": 0, "sortagrad": False},
        "optim": {"lr": 5e-3, "warmup_steps": 20, "max_steps": TRAIN_STEPS, "epochs": 10_000,
                  "schedule": "constant", "weight_decay": 0.0},
        "specaugment": {"enabled": False},
        "features": EXACT_FEATURES,
        "run": {"out_dir": str(tmp_path_factory.mktemp("hybrid")), "seed": 1, "device": "cpu",
                "checkpoint_every": 1000, "log_every": 50, "progress": False,
                "epochs_per_eval": 100_000},
    }
    return train(config_from_dict(data))


@pytest.mark.slow
def test_tiny_transducer_learns_its_training_phrases_exactly(trained_hybrid, tts_corpus):
    model = load_model(trained_hybrid)
    files = [tts_corpus.parent / f"utt0_{i}.wav" for i in range(len(PHRASES))]
    # Beam search sums the alignments of a hypothesis; greedy search follows one and, with
    # this little training, sometimes stops a word short (docs/transducer.md).
    assert [r.text for r in model.transcribe_batch(files, beam_width=4)] == PHRASES
    greedy = [r.text for r in model.transcribe_batch(files)]
    assert sum(g == p for g, p in zip(greedy, PHRASES)) >= 3
    result = model.transcribe(files[5], beam_width=4)  # "red green blue"
    assert [w.word for w in result.words] == ["red", "green", "blue"]
    starts = [w.start for w in result.words]
    assert starts == sorted(starts) and result.words[-1].end <= result.duration + 0.05
    assert all(0.0 < w.confidence <= 1.0 for w in result.words)


@pytest.mark.slow
def test_hybrid_ctc_head_decodes_the_training_phrases_too(trained_hybrid, tts_corpus):
    model = load_model(trained_hybrid)
    files = [tts_corpus.parent / f"utt0_{i}.wav" for i in range(len(PHRASES))]
    assert [r.text for r in model.transcribe_batch(files, head="ctc")] == PHRASES


@pytest.mark.slow
def test_trained_transducer_streams_like_offline_and_hotwords_steer_the_beam(trained_hybrid,
                                                                            tts_corpus):
    from harken.audio import load_audio

    model = load_model(trained_hybrid)
    wave = load_audio(tts_corpus.parent / "utt0_4.wav")
    stream = model.stream(beam_width=4)
    for start in range(0, len(wave), 1600):
        stream.feed(wave[start: start + 1600])
    assert stream.finish().text == model.transcribe(wave, beam_width=4).text == "hello world"
    # A large enough boost for a phrase the model never heard wins the beam.
    boosted = model.transcribe(wave, beam_width=8, token_beam=None,
                               hotwords={"hello word": 40.0})
    assert boosted.text == "hello word"
    assert math.isfinite(boosted.score)


# --- ONNX ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("encoder,predictor", [("deepspeech2", "lstm"), ("conformer", "stateless"),
                                               ("citrinet", "gru")])
def test_onnx_graphs_decode_like_pytorch(tmp_path, encoder, predictor):
    pytest.importorskip("onnxruntime")
    from harken.interop.onnx_export import export_onnx
    from harken.interop.transducer_onnx import OnnxTransducer, check_export

    model = tiny(encoder, predictor=predictor)
    folder = export_onnx(model, tmp_path / "onnx")  # transducers: three graphs
    assert sorted(p.name for p in folder.glob("*.onnx")) == ["encoder.onnx", "joint.onnx",
                                                              "predictor.onnx"]
    assert check_export(model.network, folder) < 1e-4
    wave = audio(seed=5)
    expected = model.transcribe(wave)
    got = OnnxTransducer(folder).transcribe(wave)
    assert len(expected.text) > 3 and got.text == expected.text
    assert got.score == pytest.approx(expected.score, abs=1e-3)
    assert [(w.start, w.end) for w in got.words] == [(w.start, w.end) for w in expected.words]
    (folder / "joint.onnx").write_bytes((folder / "joint.onnx").read_bytes() + b"x")
    with pytest.raises(Exception, match="joint.onnx is corrupt"):
        OnnxTransducer(folder)


@pytest.mark.slow
def test_word_lm_fusion_adds_weighted_lm_and_word_scores(trained_hybrid, tts_corpus, tmp_path):
    import kenlm

    from harken.audio import load_audio
    from harken.decoding.lm import build_lm

    model = load_model(trained_hybrid)
    lm = build_lm(["hello word", "go left", "stop now", "red green blue"] * 3, 2,
                  tmp_path / "words.arpa").best
    wave = load_audio(tts_corpus.parent / "utt0_4.wav")
    plain = model.transcribe(wave, beam_width=4, nbest=2)
    fused = model.transcribe(wave, beam_width=4, nbest=2, lm=str(lm), lm_weight=0.7,
                             word_score=0.25)
    assert plain.text == fused.text == "hello world"
    lm_log10 = kenlm.Model(str(lm)).score("hello world", bos=True, eos=True)
    acoustic = fused.alternatives[0].acoustic_score
    # (the beams differ a little: alignments merged into the best hypothesis can differ)
    assert acoustic == pytest.approx(plain.alternatives[0].acoustic_score, abs=0.05)
    expected = acoustic + 0.7 * lm_log10 * math.log(10) + 0.25 * 2
    assert fused.score == pytest.approx(expected, abs=1e-3)


def test_training_config_selects_a_transducer_and_checks_its_settings(tmp_path) -> None:
    from harken.training.config import load_config

    toml = tmp_path / "train.toml"
    toml.write_text('[model]\narchitecture = "transducer"\nsize = "tiny"\n'
                    'overrides = { encoder = "citrinet", head = "hybrid", ctc_weight = 0.5, '
                    'encoder_overrides = { repeat = 2 } }\n'
                    '[data]\ntrain = ["train.jsonl"]\n')
    config = load_config(toml)
    assert config.model.overrides["encoder_overrides"] == {"repeat": 2}
    network = build_model("transducer", model_config("transducer", "tiny",
                                                     **config.model.overrides), 80, 29)
    assert network.config.encoder_config().repeat == 2 and network.has_ctc
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(toml, ["model.overrides.encoder_overrides.kernels=3"])
    with pytest.raises(ConfigError, match="ctc_weight"):
        load_config(toml, ["model.overrides.ctc_weight=1.5"])


def test_lm_tuning_refuses_transducers(tmp_path) -> None:
    from harken.errors import HarkenError
    from harken.training.lm_tune import cached_log_probs

    manifest = tmp_path / "m.jsonl"
    manifest.write_text("")
    with pytest.raises(HarkenError, match="transducer models decode with their own search"):
        cached_log_probs(tiny("conformer"), [manifest])
