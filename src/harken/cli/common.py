"""Options shared by commands: which model, how to decode."""

from __future__ import annotations

import argparse
import json
import zipfile
from typing import Any

from harken.decoding.hotwords import parse_hotword
from harken.decoding.options import DecodeOptions, requested_options
from harken.errors import ConfigError, HarkenError, UsageError
from harken.model import Model, load_model
from harken.modelfile import CONFIG_FILE, bundled_models, resolve_model_path

# PyTorch networks with fewer weights than this run on one thread unless --threads says
# otherwise (harken transcribe, evaluate).
SMALL_MODEL_PARAMETERS = 10_000_000


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", "-m", default=None,
                        help="model folder, .harken file or bundled model name (default: en-small)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--backend", default=None,
                        choices=("torch", "onnx", "onnx-fp32", "onnx-int8"),
                        help="torch, or onnx for a folder made by `harken export` (default: "
                             "onnx for an export, else torch)")


def add_decode_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("decoding")
    group.add_argument("--beam-width", type=int, default=None, help="beam width (1 = greedy)")
    group.add_argument("--lm", default=None, help="n-gram language model (ARPA or KenLM binary)")
    group.add_argument("--no-lm", action="store_true", help="do not use the model's default LM")
    group.add_argument("--alpha", "--lm-weight", dest="lm_weight", type=float, default=None,
                       help="language model weight")
    group.add_argument("--beta", "--word-score", dest="word_score", type=float, default=None,
                       help="word insertion bonus")
    group.add_argument("--hotword", action="append", default=[], metavar="WORD:BOOST",
                       help="boost a word or phrase (repeatable), e.g. --hotword 'harken:8'")
    group.add_argument("--greedy", action="store_true", help="greedy decoding, no beam search")


def decode_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Decoding options given on the command line, as keyword overrides for the model's defaults."""
    overrides: dict[str, Any] = {}
    if args.greedy:
        overrides["greedy"] = True
    if args.beam_width is not None:
        overrides["beam_width"] = args.beam_width
    if args.no_lm:
        overrides["lm"] = None
    elif args.lm:
        overrides["lm"] = args.lm
    if args.lm_weight is not None:
        overrides["lm_weight"] = args.lm_weight
    if args.word_score is not None:
        overrides["word_score"] = args.word_score
    if args.hotword:
        hotwords: dict[str, float] = {}
        for item in args.hotword:
            try:
                word, boost = parse_hotword(item)
            except ConfigError:
                raise HarkenError(f"--hotword {item!r}: expected WORD:BOOST with a number") from None
            hotwords[word] = boost
        overrides["hotwords"] = hotwords
    return overrides


def resolve_backend(model: str | None, backend: str | None) -> str:
    """`backend` when given; else "onnx" for a model written by `harken export`, "torch" for
    any other (and for a model that cannot be read: loading it reports why)."""
    if backend is not None:
        return backend
    if model is None or str(model) in bundled_models():  # PyTorch models (checked when loaded)
        return "torch"
    try:
        path = resolve_model_path(model)
        if path.is_dir():
            text = (path / CONFIG_FILE).read_text(encoding="utf-8")
        else:
            with zipfile.ZipFile(path) as zf:
                text = zf.read(CONFIG_FILE).decode("utf-8")
        data = json.loads(text)
    except (HarkenError, OSError, KeyError, ValueError, zipfile.BadZipFile):
        return "torch"
    return "onnx" if isinstance(data, dict) and data.get("export") else "torch"


def load_model_args(args: argparse.Namespace) -> Model:
    return load_model(args.model, device=args.device,
                      backend=resolve_backend(args.model, args.backend))


def decode_options(model: Any, args: argparse.Namespace) -> Any:
    """Decoding options from the command line over the model's stored defaults (None: its defaults)."""
    return requested_options(model, decode_overrides(args))


def load_checked(args: argparse.Namespace) -> tuple[Model, DecodeOptions | None]:
    """The model and decoding options of the command line, with the decoder built once (its
    LM loaded, its lexicon made): a model, LM or decoding option that cannot be used is one
    `UsageError` here, before any input is read, instead of the same failure for every file."""
    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            raise UsageError(f"--threads must be at least 1, got {threads}")
        import torch  # the command is running: torch is needed (not for `harken --help`)

        torch.set_num_threads(threads)
    try:
        model = load_model_args(args)
        options = decode_options(model, args)
        model.decoder(options)  # built and cached: the first file reuses it
    except UsageError:
        raise
    except HarkenError as exc:
        raise UsageError(str(exc)) from exc
    if threads is None:
        _small_model_threads(model)
    return model, options


def _small_model_threads(model: Model) -> None:
    """One PyTorch thread for a small network: its per-frame work is too small to share, and
    idle threads spinning between operations cost more than they give (docs/performance.md:
    11x the wall time for the bundled model with 2 threads on a busy 2-core machine)."""
    if model.config.export:
        return
    # imported when the command runs: it loads torch, `harken --help` does not
    from harken.models.registry import count_parameters

    if count_parameters(model.network) >= SMALL_MODEL_PARAMETERS:
        return
    import torch

    torch.set_num_threads(1)
