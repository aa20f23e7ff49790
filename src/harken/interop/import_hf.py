"""Import Hugging Face `Wav2Vec2ForCTC` / `HubertForCTC` folders as harken models.

    harken import hf wav2vec2-base-960h/ w2v-base/

The folder is what `save_pretrained` writes (or a downloaded model repository): config.json,
model.safetensors (or pytorch_model.bin, read with `torch.load(weights_only=True)`), vocab.json
and preprocessor_config.json. The network becomes harken's "wav2vec2" architecture reading raw
samples (`FeatureConfig(kind="waveform")`, normalised per utterance when the feature extractor
has `do_normalize`); the vocabulary becomes a `VocabTokenizer` with the CTC blank (the pad
token) first and the word delimiter "|" as the space. transformers is not needed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from harken.errors import ModelError
from harken.interop.importers import blank_first, build_imported, check_unused, sha256_of
from harken.model import Model
from harken.text import VocabTokenizer

_MODEL_TYPES = {"wav2vec2": ("Wav2Vec2ForCTC", "wav2vec2."), "hubert": ("HubertForCTC", "hubert.")}
# Weights only used in pre-training or fine-tuning (masking, quantiser, projections).
_TRAINING_ONLY = ("masked_spec_embed", "quantizer.", "project_q.", "project_hid.")
_CONFIG_DEFAULTS: dict[str, Any] = {
    "conv_dim": [512] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2], "conv_bias": False, "feat_extract_norm": "group",
    "feat_extract_activation": "gelu", "feat_proj_layer_norm": True, "hidden_size": 768,
    "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
    "hidden_act": "gelu", "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16,
    "do_stable_layer_norm": False, "layer_norm_eps": 1e-5, "pad_token_id": 0,
}


def import_hf(folder: str | os.PathLike[str], out: str | os.PathLike[str] | None = None,
              lowercase: bool = True) -> Model:
    """Convert a Hugging Face CTC model folder into a harken `Model` (saved to `out` if given).

    `lowercase` maps single-letter tokens to lower case (wav2vec2's English vocabularies are
    upper case, harken's normaliser and language models lower case).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"{folder}: not a folder (expected a Hugging Face model folder)")
    config = _read_json(folder / "config.json")
    vocab = _read_json(folder / "vocab.json")
    preprocessor = _read_preprocessor(folder)
    state = _read_weights(folder)
    model = hf_to_harken(config, state, vocab, preprocessor, source=str(folder),
                         lowercase=lowercase)
    model.config.training["imported_from"]["sha256"] = sha256_of(folder)
    if out is not None:
        model.save(out)
    return model


def hf_to_harken(config: dict[str, Any], state: dict[str, torch.Tensor], vocab: dict[str, int],
                 preprocessor: dict[str, Any], source: str = "<hf>",
                 lowercase: bool = True) -> Model:
    """Build the harken model of a transformers CTC config, state dict and vocabulary."""

    model_type = config.get("model_type")
    if model_type not in _MODEL_TYPES:
        raise ModelError(f"{source}: model_type {model_type!r} is not supported (harken imports "
                         f"{', '.join(v[0] for v in _MODEL_TYPES.values())})")
    class_name, prefix = _MODEL_TYPES[model_type]
    architectures = config.get("architectures") or [class_name]
    if class_name not in architectures:
        raise ModelError(f"{source}: {architectures} is not a CTC model (expected {class_name}; "
                         "a pre-trained model without a CTC head cannot transcribe)")
    c = {**_CONFIG_DEFAULTS, **config}
    for key, allowed in (("add_adapter", False), ("conv_pos_batch_norm", False),
                         ("use_weighted_layer_sum", False)):
        if c.get(key, allowed) != allowed:
            raise ModelError(f"{source}: {key} = {c[key]!r} is not supported")
    if c.get("position_embeddings_type") not in (None, "relative"):  # conformer variants
        raise ModelError(f"{source}: position_embeddings_type {c['position_embeddings_type']!r}"
                         " is not supported")
    network = {
        "conv_dim": tuple(c["conv_dim"]), "conv_kernel": tuple(c["conv_kernel"]),
        "conv_stride": tuple(c["conv_stride"]), "conv_bias": bool(c["conv_bias"]),
        "feat_extract_norm": c["feat_extract_norm"],
        "feat_extract_activation": c["feat_extract_activation"],
        "feat_proj_layer_norm": bool(c["feat_proj_layer_norm"]) if model_type == "hubert"
        else True,
        "hidden_size": c["hidden_size"], "num_hidden_layers": c["num_hidden_layers"],
        "num_attention_heads": c["num_attention_heads"],
        "intermediate_size": c["intermediate_size"], "hidden_act": c["hidden_act"],
        "num_conv_pos_embeddings": c["num_conv_pos_embeddings"],
        "num_conv_pos_embedding_groups": c["num_conv_pos_embedding_groups"],
        "layer_norm_first": bool(c["do_stable_layer_norm"]),
        "layer_norm_eps": float(c["layer_norm_eps"]), "dropout": 0.0,
    }
    blank = c["pad_token_id"]
    tokens = _vocab_tokens(vocab, source)
    if not isinstance(blank, int) or not 0 <= blank < len(tokens):
        raise ModelError(f"{source}: pad_token_id {blank!r} (the CTC blank) is not in the "
                         f"vocabulary of {len(tokens)} tokens")
    delimiter = _read_delimiter(Path(source))
    ordered = [tokens[blank]] + [t for i, t in enumerate(tokens) if i != blank]
    ordered = [" " if t == delimiter else t for t in ordered]
    if lowercase:
        ordered = [t.lower() if len(t) == 1 else t for t in ordered]
    try:
        tokenizer = VocabTokenizer(ordered[1:])
    except ValueError as exc:
        raise ModelError(f"{source}: vocab.json: {exc}") from exc

    weights: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(prefix):
            key = key[len(prefix):]
        if key.startswith(_TRAINING_ONLY):
            continue
        weights[key] = value
    _fold_weight_norm(weights, "encoder.pos_conv_embed.conv", source)
    for name in ("lm_head.weight", "lm_head.bias"):
        if name not in weights:
            raise ModelError(f"{source}: {name} is missing (not a CTC fine-tuned model)")
        if weights[name].shape[0] != len(tokens):
            raise ModelError(f"{source}: lm_head has {weights[name].shape[0]} outputs, "
                             f"vocab.json {len(tokens)} tokens")
        weights[name] = blank_first(weights[name], blank)
    check_unused(weights, source)
    features = {"kind": "waveform",
                "sample_rate": int(preprocessor.get("sampling_rate", 16000)),
                "hop_length_ms": 1000 / int(preprocessor.get("sampling_rate", 16000)),
                "n_mels": 1, "normalize": "per_feature"
                if preprocessor.get("do_normalize", True) else "none",
                "std_epsilon": 0.0, "variance_epsilon": 1e-7, "dither": 0.0, "preemphasis": 0.0}
    return build_imported("wav2vec2", network, features, tokenizer, weights, source,
                          {"format": "huggingface", "class": class_name,
                           "folder": Path(source).name})


def _read_preprocessor(folder: Path) -> dict[str, Any]:
    """The feature extractor's settings: preprocessor_config.json, or the "feature_extractor"
    of processor_config.json (transformers 5); {} (transformers' defaults) when neither."""
    if (folder / "preprocessor_config.json").is_file():
        return _read_json(folder / "preprocessor_config.json")  # type: ignore[no-any-return]
    if (folder / "processor_config.json").is_file():
        nested = _read_json(folder / "processor_config.json").get("feature_extractor", {})
        return nested if isinstance(nested, dict) else {}
    return {}


def _vocab_tokens(vocab: dict[str, int], source: str) -> list[str]:
    ids = sorted(vocab.values()) if isinstance(vocab, dict) else None
    if not ids or ids != list(range(len(ids))):
        raise ModelError(f"{source}: vocab.json must map tokens to the ids 0..N-1")
    tokens = [""] * len(ids)
    for token, i in vocab.items():
        tokens[i] = token
    return tokens


def _read_delimiter(folder: Path) -> str:
    path = folder / "tokenizer_config.json"
    if path.is_file():
        value = _read_json(path).get("word_delimiter_token", "|")
        return value if isinstance(value, str) else "|"
    return "|"


def _fold_weight_norm(weights: dict[str, torch.Tensor], name: str, source: str) -> None:
    """Replace a conv's weight-norm parameters (g, v; normalised over dim 2) by its weight."""
    for g_key, v_key in ((f"{name}.weight_g", f"{name}.weight_v"),
                         (f"{name}.parametrizations.weight.original0",
                          f"{name}.parametrizations.weight.original1")):
        if g_key in weights and v_key in weights:
            g, v = weights.pop(g_key).float(), weights.pop(v_key).float()
            norm = v.norm(dim=(0, 1), keepdim=True)  # weight_norm(dim=2): over all other dims
            weights[f"{name}.weight"] = v * (g / norm)
            return
    if f"{name}.weight" not in weights:
        raise ModelError(f"{source}: the positional convolution's weights ({name}) are missing")


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    safetensors_path = folder / "model.safetensors"
    if safetensors_path.is_file():
        from safetensors.torch import load_file

        try:
            return load_file(str(safetensors_path))
        except Exception as exc:  # safetensors raises its own error types
            raise ModelError(f"{safetensors_path}: unreadable ({exc})") from exc
    bin_path = folder / "pytorch_model.bin"
    if bin_path.is_file():
        try:
            state = torch.load(bin_path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelError(f"{bin_path}: not a tensors-only checkpoint "
                             f"({type(exc).__name__}: {exc})") from exc
        if not isinstance(state, dict):
            raise ModelError(f"{bin_path}: expected a state dict, got {type(state).__name__}")
        return state
    raise ModelError(f"{folder}: no model.safetensors or pytorch_model.bin (sharded checkpoints "
                     "are not supported)")


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise ModelError(f"{path}: missing (a Hugging Face model folder needs it)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from exc
