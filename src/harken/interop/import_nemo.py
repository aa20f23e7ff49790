"""Import NVIDIA NeMo CTC checkpoints (`.nemo` archives) as harken models.

    harken import nemo stt_en_citrinet_1024.nemo citrinet-1024/

Supported: `EncDecCTCModel` (characters) and `EncDecCTCModelBPE` (SentencePiece) with a
`ConvASREncoder` (Jasper, QuartzNet, Citrinet -> harken's "jasper" architecture) or a
`ConformerEncoder` with "striding" subsampling and relative-position attention (-> "conformer"),
an `AudioToMelSpectrogramPreprocessor` and a `ConvASRDecoder`. The archive is a tar holding
`model_config.yaml`, `model_weights.ckpt` (read with `torch.load(weights_only=True)`: tensors
only, never arbitrary pickles) and the tokenizer files. Anything else raises `ModelError` naming
the setting that harken cannot reproduce.

NeMo's decoder puts the CTC blank last; harken's tokenizers put it first, so the decoder's rows
are rotated on import (`harken.interop.importers.blank_first`).
"""

from __future__ import annotations

import io
import math
import os
import tarfile
from pathlib import Path
from typing import Any

import torch

from harken.errors import DependencyError, ModelError
from harken.interop.importers import blank_first, build_imported, check_unused, sha256_of
from harken.model import Model
from harken.features import FeatureConfig, mel_filterbank
from harken.text import CharTokenizer, SentencePieceTokenizer

# Keys of NeMo's state dict that harken recomputes (mel filters, window, positional tables).
_DERIVED_PREFIXES = ("preprocessor.", "encoder.pos_enc.", "spec_augmentation.", "loss.")
MAX_ARCHIVE_MEMBER_BYTES = 8 << 30  # a single member larger than this is refused

# NeMo's AudioToMelSpectrogramPreprocessor defaults (used for keys the config leaves out).
_PREPROCESSOR_DEFAULTS: dict[str, Any] = {
    "sample_rate": 16000, "window_size": 0.02, "window_stride": 0.01, "n_window_size": None,
    "n_window_stride": None, "window": "hann", "normalize": "per_feature", "n_fft": None,
    "preemph": 0.97, "features": 64, "lowfreq": 0, "highfreq": None, "log": True,
    "log_zero_guard_type": "add", "log_zero_guard_value": 2**-24, "dither": 1e-5, "pad_to": 16,
    "frame_splicing": 1, "exact_pad": False, "stft_exact_pad": False, "pad_value": 0,
    "mag_power": 2.0, "mel_norm": "slaney",
}
# ConvASREncoder block settings harken reproduces only at these values.
_BLOCK_FIXED = {"groups": 1, "heads": -1, "normalization": "batch", "future_context": -1,
                "residual_mode": ("add", "stride_add")}


def read_nemo_archive(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any],
                                                             dict[str, bytes]]:
    """(config, state dict, other files by base name) from a `.nemo` archive."""
    yaml = yaml_module()
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such .nemo file")
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar.getmembers():
                if not member.isfile():
                    continue
                if member.size > MAX_ARCHIVE_MEMBER_BYTES:
                    raise ModelError(f"{path}: member {member.name!r} is too large "
                                     f"({member.size} bytes)")
                handle = tar.extractfile(member)
                if handle is not None:
                    files[Path(member.name).name] = handle.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ModelError(f"{path}: not a .nemo archive ({exc})") from exc
    for needed in ("model_config.yaml", "model_weights.ckpt"):
        if needed not in files:
            raise ModelError(f"{path}: {needed} is missing from the archive (found "
                             f"{sorted(files)})")
    try:
        config = yaml.safe_load(files.pop("model_config.yaml").decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: model_config.yaml is not valid YAML ({exc})") from exc
    try:
        state = torch.load(io.BytesIO(files.pop("model_weights.ckpt")), map_location="cpu",
                           weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ... for bad files
        raise ModelError(f"{path}: model_weights.ckpt is not a tensors-only checkpoint "
                         f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(config, dict) or not isinstance(state, dict):
        raise ModelError(f"{path}: unexpected archive contents (config {type(config).__name__}, "
                         f"weights {type(state).__name__})")
    return config, state, files


def import_nemo(path: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Model:
    """Convert a NeMo CTC `.nemo` archive into a harken `Model` (saved to `out` when given)."""
    config, state, files = read_nemo_archive(path)
    model = nemo_to_harken(config, state, files, source=str(path))
    model.config.training["imported_from"]["sha256"] = sha256_of(path)
    if out is not None:
        model.save(out)
    return model


def nemo_to_harken(config: dict[str, Any], state: dict[str, Any], files: dict[str, bytes],
                   source: str = "<nemo>") -> Model:
    """Build the harken model of a NeMo CTC model's config, weights and tokenizer files."""
    target = str(config.get("target") or config.get("_target_") or "")
    kind = target.rsplit(".", 1)[-1]
    if kind not in ("EncDecCTCModel", "EncDecCTCModelBPE", ""):
        raise ModelError(f"{source}: {kind} models are not supported; harken imports NeMo CTC "
                         "models (EncDecCTCModel, EncDecCTCModelBPE)")
    features = preprocessor_features(_section(config, "preprocessor", source), source)
    encoder = _section(config, "encoder", source)
    encoder_kind = str(encoder.get("_target_", "")).rsplit(".", 1)[-1]
    if encoder_kind == "ConvASREncoder":
        architecture, network = "jasper", conv_asr_config(encoder, source)
        channels = network["filters"][-1]
    elif encoder_kind == "ConformerEncoder":
        architecture, network = "conformer", conformer_config(encoder, source)
        channels = network["d_model"]
    else:
        raise ModelError(f"{source}: encoder {encoder_kind or '(none)'} is not supported; "
                         "expected ConvASREncoder (Jasper, QuartzNet, Citrinet) or "
                         "ConformerEncoder")
    decoder = _section(config, "decoder", source)
    if str(decoder.get("_target_", "")).rsplit(".", 1)[-1] not in ("ConvASRDecoder", ""):
        raise ModelError(f"{source}: decoder {decoder.get('_target_')} is not supported "
                         "(expected ConvASRDecoder)")
    if decoder.get("feat_in", channels) != channels:
        raise ModelError(f"{source}: decoder.feat_in {decoder.get('feat_in')} does not match "
                         f"the encoder's {channels} output channels")
    tokenizer = _tokenizer(config, decoder, files, source)

    weights = {k: v for k, v in state.items() if not k.startswith(_DERIVED_PREFIXES)}
    _check_filterbank(state, features, source)
    if architecture == "conformer" and "encoder.pos_bias_u" in weights:  # untie_biases=False
        u, v = weights.pop("encoder.pos_bias_u"), weights.pop("encoder.pos_bias_v")
        for i in range(network["n_layers"]):
            weights[f"encoder.layers.{i}.self_attn.pos_bias_u"] = u
            weights[f"encoder.layers.{i}.self_attn.pos_bias_v"] = v
    for name in ("decoder.decoder_layers.0.weight", "decoder.decoder_layers.0.bias"):
        if name not in weights:
            raise ModelError(f"{source}: {name} is missing from the weights")
        if weights[name].shape[0] != tokenizer.vocab_size:
            raise ModelError(f"{source}: the decoder has {weights[name].shape[0]} outputs, the "
                             f"tokenizer {tokenizer.vocab_size - 1} tokens + blank")
        weights[name] = blank_first(weights[name], blank=tokenizer.vocab_size - 1)
    check_unused(weights, source)
    return build_imported(
        architecture, network, features, tokenizer, weights, source,
        {"format": "nemo", "target": target, "encoder": encoder_kind,
         "file": Path(source).name})


def preprocessor_features(pre: dict[str, Any], source: str = "<nemo>") -> dict[str, Any]:
    """harken `FeatureConfig` values reproducing NeMo's AudioToMelSpectrogramPreprocessor."""
    target = str(pre.get("_target_", "")).rsplit(".", 1)[-1]
    if target not in ("AudioToMelSpectrogramPreprocessor", ""):
        raise ModelError(f"{source}: preprocessor {target} is not supported (expected "
                         "AudioToMelSpectrogramPreprocessor)")
    p = {**_PREPROCESSOR_DEFAULTS, **pre}

    def unsupported(key: str, expected: str) -> ModelError:
        return ModelError(f"{source}: preprocessor.{key} = {p[key]!r} is not supported "
                          f"(harken reproduces {expected})")

    sample_rate = int(p["sample_rate"])
    win = p["n_window_size"] or int(p["window_size"] * sample_rate)
    hop = p["n_window_stride"] or int(p["window_stride"] * sample_rate)
    checks = {"window": ("hann", "'hann'"), "log": (True, "log features"),
              "log_zero_guard_type": ("add", "'add'"), "frame_splicing": (1, "1"),
              "exact_pad": (False, "False"), "stft_exact_pad": (False, "False"),
              "pad_value": (0, "0"), "mag_power": (2.0, "2.0 (power spectrum)")}
    for key, (value, expected) in checks.items():
        if p[key] != value:
            raise unsupported(key, expected)
    if p["mel_norm"] not in ("slaney", None):
        raise unsupported("mel_norm", "'slaney' or None")
    if not isinstance(p["log_zero_guard_value"], (int, float)):
        raise unsupported("log_zero_guard_value", "a number")
    normalize = p["normalize"]
    if normalize not in ("per_feature", None, False, "", "none"):
        raise unsupported("normalize", "'per_feature' or none")
    pad_to = p["pad_to"]
    if pad_to == "max":
        pad_to = 0  # padding to the longest input changes nothing inside an utterance
    if not isinstance(pad_to, int) or pad_to < 0:
        raise unsupported("pad_to", "a non-negative integer or 'max'")
    return {
        "sample_rate": sample_rate,
        "n_fft": int(p["n_fft"] or 2 ** math.ceil(math.log2(win))),
        "win_length_ms": win * 1000 / sample_rate,
        "hop_length_ms": hop * 1000 / sample_rate,
        "n_mels": int(p["features"]),
        "f_min": float(p["lowfreq"] or 0.0),
        "f_max": None if p["highfreq"] is None else float(p["highfreq"]),
        "preemphasis": float(p["preemph"] or 0.0),
        "mel_scale": "slaney",
        "mel_norm": p["mel_norm"],
        "log_guard": float(p["log_zero_guard_value"]),
        "normalize": "per_feature" if normalize == "per_feature" else "none",
        "dither": float(p["dither"] or 0.0),
        "pad_to": pad_to,
        "window_periodic": False,
        "std_epsilon": 1e-5,
        "variance_epsilon": 0.0,
        "unbiased_std": True,
        "drop_last_frame": True,
    }


def conv_asr_config(encoder: dict[str, Any], source: str = "<nemo>") -> dict[str, Any]:
    """harken `JasperConfig` values for a NeMo ConvASREncoder config."""
    blocks = encoder.get("jasper")
    if not isinstance(blocks, list) or not blocks:
        raise ModelError(f"{source}: encoder.jasper (the list of blocks) is missing")
    # conv_mask=False is accepted: harken always masks, which changes nothing for an
    # utterance alone (only what padding in a batch would leak).
    activation = encoder.get("activation", "relu")
    columns: dict[str, list[Any]] = {k: [] for k in (
        "filters", "repeat", "kernel", "stride", "dilation", "residual", "separable", "se",
        "se_reduction", "stride_last", "residual_dense")}
    for i, block in enumerate(blocks):
        where = f"encoder.jasper[{i}]"
        for key, allowed in _BLOCK_FIXED.items():
            if key in block and block[key] not in (allowed if isinstance(allowed, tuple)
                                                   else (allowed,)):
                raise ModelError(f"{source}: {where}.{key} = {block[key]!r} is not supported "
                                 f"(harken reproduces {allowed!r})")
        for key in ("kernel", "stride", "dilation"):
            value = block.get(key, [1])
            if not isinstance(value, (list, tuple)) or len(value) != 1:
                raise ModelError(f"{source}: {where}.{key} = {value!r}: expected one value")
        kernel = _scaled_kernel(block["kernel"][0], block.get("kernel_size_factor", 1.0))
        if kernel % 2 == 0:
            raise ModelError(f"{source}: {where}: even kernel {kernel} is not supported")
        columns["filters"].append(int(block["filters"]))
        columns["repeat"].append(int(block.get("repeat", 1)))
        columns["kernel"].append(kernel)
        columns["stride"].append(int(block.get("stride", [1])[0]))
        columns["dilation"].append(int(block.get("dilation", [1])[0]))
        columns["residual"].append(bool(block.get("residual", False)))
        columns["separable"].append(bool(block.get("separable", False)))
        columns["se"].append(bool(block.get("se", False)))
        columns["se_reduction"].append(int(block.get("se_reduction_ratio", 8)))
        columns["stride_last"].append(bool(block.get("stride_last", False)))
        columns["residual_dense"].append(bool(block.get("residual_dense", False)))
    return {**{k: tuple(v) for k, v in columns.items()}, "activation": activation, "dropout": 0.0}


def _scaled_kernel(kernel: int, factor: float) -> int:
    """NeMo's compute_new_kernel_size: int(kernel * factor), at least 1, rounded up to odd."""
    k = max(int(kernel * factor), 1)
    return k + 1 if k % 2 == 0 else k


def conformer_config(encoder: dict[str, Any], source: str = "<nemo>") -> dict[str, Any]:
    """harken `ConformerConfig` values for a NeMo ConformerEncoder config."""
    def get(key: str, default: Any) -> Any:
        value = encoder.get(key, default)
        return default if value is None else value

    def refuse(key: str, expected: str) -> ModelError:
        return ModelError(f"{source}: encoder.{key} = {encoder.get(key)!r} is not supported "
                          f"(harken's Conformer has {expected})")

    if get("subsampling", "striding") != "striding":
        raise refuse("subsampling", "'striding' conv subsampling only (not dw_striding/"
                     "FastConformer, vggnet or stacking)")
    if get("self_attention_model", "rel_pos") != "rel_pos":
        raise refuse("self_attention_model", "'rel_pos' attention only")
    if get("feat_out", -1) not in (-1, 0):
        raise refuse("feat_out", "no output projection (feat_out=-1)")
    if get("causal_downsampling", False):
        raise refuse("causal_downsampling", "symmetric subsampling only")
    if get("conv_context_size", None) not in (None, "symmetric"):
        raise refuse("conv_context_size", "symmetric depthwise convolutions only")
    if get("att_context_style", "regular") != "regular":
        raise refuse("att_context_style", "'regular' limited context only")
    if encoder.get("reduction") or encoder.get("reduction_position") not in (None, -1):
        raise refuse("reduction", "no time reduction (Squeezeformer)")
    norm = get("conv_norm_type", "batch_norm")
    if norm not in ("batch_norm", "layer_norm"):
        raise refuse("conv_norm_type", "'batch_norm' or 'layer_norm'")
    context = get("att_context_size", [-1, -1])
    if isinstance(context[0], (list, tuple)):  # multi-lookahead models list several contexts
        context = context[0]
    d_model = int(encoder["d_model"])
    channels = int(get("subsampling_conv_channels", -1))
    return {
        "d_model": d_model,
        "n_layers": int(encoder["n_layers"]),
        "n_heads": int(get("n_heads", 4)),
        "ff_expansion": int(get("ff_expansion_factor", 4)),
        "conv_kernel": int(get("conv_kernel_size", 31)),
        "conv_norm": norm,
        "subsampling_factor": int(get("subsampling_factor", 4)),
        "subsampling_channels": None if channels in (-1, d_model) else channels,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "xscaling": bool(get("xscaling", True)),
        "att_context": None if list(context) == [-1, -1] else tuple(int(c) for c in context),
    }


def _tokenizer(config: dict[str, Any], decoder: dict[str, Any], files: dict[str, bytes],
               source: str) -> Any:

    tok = config.get("tokenizer")
    if tok:
        if tok.get("type", "bpe") != "bpe":
            raise ModelError(f"{source}: tokenizer.type {tok.get('type')!r} is not supported "
                             "(harken reads SentencePiece 'bpe' tokenizers)")
        name = Path(str(tok.get("model_path", "")).removeprefix("nemo:")).name
        if name not in files:
            found = [n for n in files if n.endswith("tokenizer.model")]
            if len(found) != 1:
                raise ModelError(f"{source}: the SentencePiece model {name or '?'} is missing "
                                 "from the archive")
            name = found[0]
        return SentencePieceTokenizer(files[name])
    labels = decoder.get("vocabulary") or config.get("labels")
    if not labels or not all(isinstance(c, str) and len(c) == 1 for c in labels):
        raise ModelError(f"{source}: expected a character vocabulary (decoder.vocabulary) of "
                         f"single characters, got {labels!r}")
    try:
        return CharTokenizer("".join(labels))
    except ValueError as exc:
        raise ModelError(f"{source}: {exc}") from exc


def _check_filterbank(state: dict[str, Any], features: dict[str, Any], source: str) -> None:
    """The archive's mel filters (when stored) must equal the ones harken computes."""

    stored = state.get("preprocessor.featurizer.fb")
    if stored is None:
        return
    ours = mel_filterbank(FeatureConfig.from_dict(features))
    stored = stored.reshape(stored.shape[-2:]).float()
    if stored.shape != ours.shape or not torch.allclose(stored, ours, atol=1e-6):
        raise ModelError(f"{source}: the archive's mel filterbank {tuple(stored.shape)} differs "
                         "from the one its preprocessor settings give")


def _section(config: dict[str, Any], key: str, source: str) -> dict[str, Any]:
    value = config.get(key)
    if not isinstance(value, dict):
        raise ModelError(f"{source}: the config has no {key} section")
    return value


def yaml_module() -> Any:
    try:
        import yaml
    except ImportError as exc:
        raise DependencyError("PyYAML is needed to read .nemo archives: "
                              "pip install 'harken[import]'") from exc
    return yaml
