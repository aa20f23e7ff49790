"""`harken export`: ONNX export."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from harken.model import load_model

if TYPE_CHECKING:

    pass
from harken.interop.onnx_export import OPSET, export_onnx


def register(sub: Any) -> None:
    """Add `harken export MODEL --format onnx [--int8] --out DIR` to the CLI."""
    p = sub.add_parser("export", help="export a model to ONNX for ONNX Runtime",
                       description="Export a model's network to ONNX (float32, and int8 with "
                                   "--int8); load the folder with --backend onnx.")
    p.add_argument("model", help="model folder, .harken file or bundled model name")
    p.add_argument("--format", choices=("onnx",), default="onnx")
    p.add_argument("--int8", action="store_true",
                   help="also write model.int8.onnx (dynamic int8 quantisation)")
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    model = load_model(args.model)
    out = export_onnx(model, args.out, int8=args.int8, opset=args.opset)
    info = json.loads((out / "config.json").read_text())["export"]
    if info["format"] == "onnx-transducer":
        print(f"{out}: {', '.join(info['graphs'])} (harken.interop.transducer_onnx.OnnxTransducer)")
        return 0
    sizes = ", ".join(f"{name} {(out / name).stat().st_size / 1e6:.1f} MB"
                      for name in (info["fp32"], info["int8"]) if name)
    print(f"{out}: {sizes}; --backend onnx runs the {info['default']} model")
    return 0
