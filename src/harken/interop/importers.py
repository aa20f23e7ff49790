"""`harken import`: pretrained CTC models from other toolkits as ordinary harken models.

    harken import nemo FILE.nemo OUT      NeMo Jasper/QuartzNet/Citrinet/Conformer CTC archives
    harken import hf DIR OUT              Hugging Face Wav2Vec2ForCTC / HubertForCTC folders

The converters live in `harken.interop.import_nemo` and `harken.interop.import_hf`; this module holds what they
share: rotating the CTC blank to index 0, checking that every weight was used, and building
the harken `Model`. Neither NeMo nor transformers is needed. See docs/importing.md.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from harken.errors import ModelError
from harken.model import Model
from harken.modelfile import ModelConfig
from harken.features import FeatureConfig
from harken.models.registry import build_model, config_from_dict


def blank_first(weight: torch.Tensor, blank: int) -> torch.Tensor:
    """Rows of an output layer reordered so that row `blank` comes first, the others in order."""
    order = [blank] + [i for i in range(weight.shape[0]) if i != blank]
    return weight[order].contiguous()


def check_unused(weights: dict[str, Any], source: str) -> None:
    """`ModelError` unless every value is a tensor (the checkpoint holds tensors only)."""
    bad = [k for k, v in weights.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelError(f"{source}: entries that are not tensors: {bad[:5]}")


def build_imported(architecture: str, network: dict[str, Any], features: dict[str, Any],
                   tokenizer: Any, weights: dict[str, torch.Tensor], source: str,
                   origin: dict[str, Any]) -> Model:
    """The harken `Model` of an imported network; `ModelError` naming missing, unexpected or
    mis-shaped weights."""

    feature_config = FeatureConfig.from_dict(features)
    net_config = config_from_dict(architecture, network, source=f"{source} ({architecture})")
    net = build_model(architecture, net_config, feature_config.feature_dim, tokenizer.vocab_size)
    expected = net.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise ModelError(f"{source}: the weights do not fit harken's {architecture}: missing "
                         f"{missing[:8]}{' ...' if len(missing) > 8 else ''}, unexpected "
                         f"{unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
    wrong = [f"{k} {tuple(v.shape)} (expected {tuple(expected[k].shape)})"
             for k, v in weights.items() if v.shape != expected[k].shape]
    if wrong:
        raise ModelError(f"{source}: weights of the wrong shape: {', '.join(wrong[:5])}")
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in weights.items()}, strict=True)
    config = ModelConfig(architecture=architecture, size="imported", network=net_config.to_dict(),
                         features=feature_config.to_dict(), tokenizer=tokenizer.to_config(),
                         training={"imported_from": origin})
    return Model(config, net, tokenizer)


def sha256_of(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, or of a folder's files (names and contents, sorted by name)."""
    path = Path(path)
    digest = hashlib.sha256()
    for member in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if member.is_file():
            if path.is_dir():
                digest.update(str(member.relative_to(path)).encode() + b"\0")
            with open(member, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()




