"""`harken import`: NeMo and Hugging Face CTC models against the originals' own outputs.

The fixtures (tests/fixtures/import, made by tests/fixtures/make_import_fixtures.py with NeMo
and transformers) hold tiny randomly initialised models saved by each library and that
library's log-probabilities and greedy transcript on examples/fox.wav. Neither library is
needed here.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from harken.cli import main
from harken.errors import ConfigError, ModelError
from harken.interop.import_hf import hf_to_harken, import_hf
from harken.interop.import_nemo import import_nemo, nemo_to_harken, read_nemo_archive
from harken.model import load_model
from harken.text import VocabTokenizer, load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "import"
CLIP = ROOT / "examples" / "fox.wav"
NEMO_KINDS = ["nemo_citrinet_bpe", "nemo_quartznet_char", "nemo_jasper_dr_char",
              "nemo_conformer_bpe"]
HF_KINDS = ["hf_wav2vec2_base", "hf_wav2vec2_stable", "hf_hubert"]
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    wave, rate = sf.read(CLIP, dtype="float32")
    assert rate == 16000
    return wave


def reference(kind: str) -> tuple[np.ndarray, str]:
    data = np.load(FIXTURES / f"{kind}.npz")
    return data["log_probs"], str(data["transcript"])


@pytest.mark.parametrize("kind", NEMO_KINDS)
def test_nemo_import_matches_nemo(kind: str, audio: np.ndarray) -> None:
    model = import_nemo(FIXTURES / kind / "model.nemo")
    expected, transcript = reference(kind)
    expected = np.concatenate([expected[:, -1:], expected[:, :-1]], axis=1)  # NeMo: blank last
    got = model.log_probs([audio])[0]
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < TOLERANCE
    text = model.transcribe(audio, vad=None, greedy=True).text
    assert text == transcript


@pytest.mark.parametrize("kind", HF_KINDS)
def test_hf_import_matches_transformers(kind: str, audio: np.ndarray) -> None:
    model = import_hf(FIXTURES / kind, lowercase=False)
    expected, transcript = reference(kind)
    expected = np.concatenate([expected[:, :1], expected[:, 1:]], axis=1)  # blank (<pad>) is 0
    got = model.log_probs([audio])[0]
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < TOLERANCE
    text = model.transcribe(audio, vad=None, greedy=True).text
    # transformers keeps runs of spaces between "|" tokens; harken joins words with one space.
    assert text == " ".join(transcript.split()) and len(text) > 20
    lower = import_hf(FIXTURES / kind).transcribe(audio, vad=None, greedy=True).text
    assert lower == _lower_letters(text) != text


def _lower_letters(text: str) -> str:
    """Lowercase single letters, keep <s>, </s>, <unk> as they are."""
    out, i = [], 0
    while i < len(text):
        for special in ("</s>", "<s>", "<unk>"):
            if text.startswith(special, i):
                out.append(special)
                i += len(special)
                break
        else:
            out.append(text[i].lower())
            i += 1
    return "".join(out)


def test_imported_models_are_ordinary_model_files(tmp_path: Path, audio: np.ndarray) -> None:
    for kind, out in (("nemo_conformer_bpe", tmp_path / "conformer.harken"),
                      ("hf_wav2vec2_base", tmp_path / "w2v")):
        source = FIXTURES / kind / "model.nemo" if kind.startswith("nemo") else FIXTURES / kind
        assert main(["import", kind.split("_")[0], str(source), str(out)]) == 0
        loaded = load_model(out)
        direct = (import_nemo(source) if kind.startswith("nemo") else import_hf(source))
        np.testing.assert_array_equal(loaded.log_probs([audio])[0], direct.log_probs([audio])[0])
        assert loaded.config.training["imported_from"]["sha256"]
        assert loaded.config.size == "imported"


def test_padding_does_not_change_imported_outputs(audio: np.ndarray) -> None:
    for model in (import_hf(FIXTURES / "hf_wav2vec2_base"),
                  import_nemo(FIXTURES / "nemo_citrinet_bpe" / "model.nemo")):
        alone = model.log_probs([audio[:20000]])[0]
        batched = model.log_probs([audio[:20000], audio])[0]
        assert np.abs(alone - batched).max() < 1e-4


# --- what cannot be imported -------------------------------------------------------------

@pytest.fixture(scope="module")
def conformer_archive() -> tuple[dict, dict, dict]:
    return read_nemo_archive(FIXTURES / "nemo_conformer_bpe" / "model.nemo")


@pytest.mark.parametrize(("section", "key", "value", "message"), [
    ("encoder", "subsampling", "dw_striding", r"encoder.subsampling = 'dw_striding'.*striding"),
    ("encoder", "self_attention_model", "abs_pos", r"self_attention_model = 'abs_pos'"),
    ("preprocessor", "log_zero_guard_type", "clamp", r"preprocessor.log_zero_guard_type"),
    ("preprocessor", "normalize", "all_features", r"preprocessor.normalize = 'all_features'"),
    ("preprocessor", "frame_splicing", 3, r"frame_splicing = 3"),
    ("encoder", "_target_", "nemo.collections.asr.modules.SqueezeformerEncoder",
     r"SqueezeformerEncoder is not supported"),
])
def test_unsupported_nemo_settings_are_named(conformer_archive: tuple, section: str, key: str,
                                             value: object, message: str) -> None:
    config, state, files = conformer_archive
    changed = json.loads(json.dumps(config))
    changed[section][key] = value
    with pytest.raises(ModelError, match=message):
        nemo_to_harken(changed, state, files, source="x.nemo")


def test_unsupported_nemo_model_classes(conformer_archive: tuple) -> None:
    config, state, files = conformer_archive
    rnnt = {**config, "target": "nemo.collections.asr.models.EncDecRNNTBPEModel"}
    with pytest.raises(ModelError, match="EncDecRNNTBPEModel models are not supported"):
        nemo_to_harken(rnnt, state, files)
    with pytest.raises(ModelError, match="tokenizer.model.*missing"):
        nemo_to_harken(config, state, {}, source="x.nemo")
    partial = {k: v for k, v in state.items() if "layers.1." not in k}
    with pytest.raises(ModelError, match=r"missing \['encoder.layers.1"):
        nemo_to_harken(config, partial, files)


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


class Gadget:  # an arbitrary object: a pickle of it is refused by weights_only loading
    pass


def test_nemo_archives_hold_tensors_only(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    torch.save({"decoder.decoder_layers.0.weight": Gadget()}, buffer)
    bad = _tar(tmp_path / "bad.nemo", {"./model_config.yaml": b"encoder: {}\n",
                                       "./model_weights.ckpt": buffer.getvalue()})
    with pytest.raises(ModelError, match="not a tensors-only checkpoint"):
        read_nemo_archive(bad)
    missing = _tar(tmp_path / "missing.nemo", {"model_config.yaml": b"a: 1\n"})
    with pytest.raises(ModelError, match="model_weights.ckpt is missing"):
        read_nemo_archive(missing)
    (tmp_path / "text.nemo").write_text("not a tar")
    with pytest.raises(ModelError, match="not a .nemo archive"):
        read_nemo_archive(tmp_path / "text.nemo")


def test_hf_folders_are_checked(tmp_path: Path) -> None:
    folder = tmp_path / "w2v"
    shutil.copytree(FIXTURES / "hf_wav2vec2_stable", folder)
    config = json.loads((folder / "config.json").read_text())
    vocab = json.loads((folder / "vocab.json").read_text())
    from safetensors.torch import load_file

    state = load_file(str(folder / "model.safetensors"))
    with pytest.raises(ModelError, match="model_type 'wav2vec2-conformer' is not supported"):
        hf_to_harken({**config, "model_type": "wav2vec2-conformer"}, state, vocab, {})
    with pytest.raises(ModelError, match=r"\['Wav2Vec2ForPreTraining'\] is not a CTC model"):
        hf_to_harken({**config, "architectures": ["Wav2Vec2ForPreTraining"]}, state, vocab, {})
    no_head = {k: v for k, v in state.items() if not k.startswith("lm_head")}
    with pytest.raises(ModelError, match="lm_head.weight is missing"):
        hf_to_harken(config, no_head, vocab, {})
    with pytest.raises(ModelError, match="add_adapter"):
        hf_to_harken({**config, "add_adapter": True}, state, vocab, {})
    # transformers 5 keeps the feature extractor's settings in processor_config.json only
    (folder / "preprocessor_config.json").unlink()
    assert import_hf(folder).feature_config.normalize == "per_feature"
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="no model.safetensors or pytorch_model.bin"):
        import_hf(folder)


def test_hf_pytorch_model_bin_is_read_weights_only(tmp_path: Path, audio: np.ndarray) -> None:
    from safetensors.torch import load_file

    folder = tmp_path / "w2v"
    shutil.copytree(FIXTURES / "hf_hubert", folder)
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    np.testing.assert_allclose(import_hf(folder).log_probs([audio])[0],
                               import_hf(FIXTURES / "hf_hubert").log_probs([audio])[0])
    torch.save({"lm_head.weight": Gadget()}, folder / "pytorch_model.bin")
    with pytest.raises(ModelError, match="not a tensors-only checkpoint"):
        import_hf(folder)


def test_vocab_tokenizer() -> None:
    tokenizer = VocabTokenizer(["<unk>", " ", "a", "b", "'"])
    assert tokenizer.tokens[0] == "<blank>" and tokenizer.vocab_size == 6
    assert tokenizer.encode("ab a") == [3, 4, 2, 3]
    assert tokenizer.split_words([3, 0, 4, 2, 1, 3]) == [("ab", [0, 2]), ("<unk>a", [4, 5])]
    assert tokenizer.decode([1, 3, 0, 2]) == "<unk>a "
    again = load_tokenizer(tokenizer.to_config(), ".")
    assert again.tokens == tokenizer.tokens
    with pytest.raises(ValueError, match=r"cannot encode characters 'c'"):
        tokenizer.encode("ac")
    with pytest.raises(ConfigError, match="including the space"):
        load_tokenizer({"kind": "vocab", "tokens": ["a", "b"]}, ".")


def test_imported_models_export_to_onnx(tmp_path: Path, audio: np.ndarray) -> None:
    from harken.interop.onnx_export import export_onnx

    for name, model in (("jasper", import_nemo(FIXTURES / "nemo_quartznet_char" / "model.nemo")),
                        ("wav2vec2", import_hf(FIXTURES / "hf_wav2vec2_stable"))):
        onnx_model = load_model(export_onnx(model, tmp_path / name), backend="onnx")
        difference = np.abs(onnx_model.log_probs([audio])[0] - model.log_probs([audio])[0])
        assert difference.max() < TOLERANCE, name


def test_nemo_preprocessor_defaults_and_feature_options() -> None:
    from harken.features import FeatureConfig, Waveform
    from harken.interop.import_nemo import preprocessor_features

    features = FeatureConfig.from_dict(preprocessor_features({}))  # NeMo's own defaults
    assert (features.win_length, features.hop_length, features.n_fft) == (320, 160, 512)
    assert (features.n_mels, features.pad_to, features.preemphasis) == (64, 16, 0.97)
    assert not features.window_periodic and features.unbiased_std and features.drop_last_frame
    assert FeatureConfig().window_periodic and not FeatureConfig().drop_last_frame
    with pytest.raises(ConfigError, match="kind must be one of"):
        FeatureConfig(kind="mfcc")
    # Hugging Face's zero_mean_unit_var_norm: (x - mean) / sqrt(var + 1e-7) over valid samples
    waveform = Waveform(FeatureConfig(kind="waveform", std_epsilon=0.0, variance_epsilon=1e-7))
    x = torch.randn(2, 1000) * 0.1
    out, lengths = waveform(x, torch.tensor([1000, 600]))
    short = x[1, :600].numpy().astype(np.float64)
    expected = (short - short.mean()) / np.sqrt(short.var() + 1e-7)
    np.testing.assert_allclose(out[1, :600, 0].numpy(), expected, atol=1e-5)
    assert out.shape == (2, 1000, 1) and float(out[1, 600:].abs().max()) == 0.0
