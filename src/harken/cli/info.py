"""`harken info`: describe a model."""

from __future__ import annotations

import argparse
import json
from typing import Any

from harken.cli.common import add_model_args, load_model_args, resolve_backend


def register(sub: Any) -> None:
    p = sub.add_parser("info", help="describe a model")
    add_model_args(p)
    p.set_defaults(func=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    # imported when the command runs: it loads torch, `harken --help` does not
    from harken.models.registry import count_parameters

    model = load_model_args(args)
    c = model.config
    backend = "torch"
    if c.export:  # an exported network: its weights are in the ONNX graph
        backend = resolve_backend(args.model, args.backend)
        parameters = int(c.export.get("parameters") or _onnx_parameters(model.network))
    else:
        parameters = count_parameters(model.network)
    print(json.dumps({"path": str(model.path), "architecture": c.architecture, "size": c.size,
                      "backend": backend, "parameters": parameters,
                      "vocab_size": model.tokenizer.vocab_size, "tokenizer": c.tokenizer.get("kind"),
                      "frame_seconds": model.frame_seconds, "decoding": c.decoding,
                      "training": {k: v for k, v in c.training.items() if k != "config"},
                      "punctuator": _punctuator_info(model)}, indent=2))
    return 0


def _onnx_parameters(network: Any) -> int:
    """The number of weights in an exported network's graph (exports made before the count
    was stored in their config)."""
    import onnx  # optional (harken[onnx]); an export cannot be loaded without it anyway

    path = getattr(network, "path", None)
    if path is None:
        return 0
    graph = onnx.load(str(path), load_external_data=False).graph
    total = 0
    for initializer in graph.initializer:
        count = 1
        for dim in initializer.dims:
            count *= int(dim)
        total += count
    return total


def _punctuator_info(model: Any) -> dict[str, Any] | None:
    """What `harken info` says of the model's punctuator (None: transcripts stay raw)."""
    punctuator = getattr(model, "punctuator", None)
    if punctuator is None:
        return None
    return {"path": str(punctuator.path) if punctuator.path else None,
            "language": punctuator.config.language, "vocab_size": punctuator.config.vocab_size}
