"""PyTorch vs ONNX Runtime fp32 vs ONNX Runtime int8, side by side, in one run.

For one model (a harken model, or a freshly initialised one of --arch/--size with a fixed seed),
exports it to ONNX with int8, then runs each backend at each thread count in its own process
and prints: real-time factor of the whole pipeline (log-mel + network) and of the network alone,
import and load time, peak resident memory of the process, the model files' size, the fraction
of frames whose greedy (argmax) token equals PyTorch's, and WER when --manifest is given.
"onnx no torch" is the fp32 export run by `harken.interop.onnx_runtime` (numpy features, PyTorch not
imported at all).

Usage:
    python benchmarks/backends.py [--model PATH | --arch deepspeech2 --size small]
        [--threads 1 2] [--seconds 8] [--repeats 5] [--int8-ops MatMul,Gemm]
        [--manifest test.jsonl --limit 200]

Random weights measure speed, memory and size faithfully; agreement and WER need a trained model.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BACKENDS = ("torch", "onnx-fp32", "onnx-int8", "onnx no torch")
NO_TORCH = "onnx no torch"


def synthetic_audio(seconds: float, sample_rate: int = 16000) -> np.ndarray:
    """Deterministic speech-like test signal: a few gliding harmonics plus a little noise."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    pitch = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t) ** 2
    wave = sum(np.sin(k * phase) / k for k in range(1, 8)) * envelope
    return (0.1 * wave + 0.005 * rng.standard_normal(len(t))).astype(np.float32)


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM: unlike ru_maxrss, not inherited at exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # macOS: bytes, Linux: kB


def child(args: argparse.Namespace) -> None:
    """Measure one backend at one thread count; print one JSON line."""
    if args.backend == NO_TORCH:
        child_without_torch(args)
        return
    began = time.perf_counter()
    import torch

    torch.set_num_threads(args.threads)
    from harken.model import load_model

    import_seconds = time.perf_counter() - began
    began = time.perf_counter()
    model = load_model(args.path, backend=args.backend)
    load_seconds = time.perf_counter() - began
    audio = synthetic_audio(args.seconds)
    with torch.inference_mode():
        features, frames = model.featurizer(torch.from_numpy(audio)[None], None)
        measure(args, model, audio, features, frames, import_seconds, load_seconds)


def child_without_torch(args: argparse.Namespace) -> None:
    """`child` for harken.interop.onnx_runtime, with importing torch made impossible."""
    sys.modules["torch"] = None  # type: ignore[assignment]
    began = time.perf_counter()
    from harken.interop.onnx_runtime import load_onnx_model

    import_seconds = time.perf_counter() - began
    began = time.perf_counter()
    model = load_onnx_model(args.path, "onnx-fp32", threads=args.threads)
    load_seconds = time.perf_counter() - began
    audio = synthetic_audio(args.seconds)
    features, frames = model.featurizer(audio[None], None)
    measure(args, model, audio, features, frames, import_seconds, load_seconds)


def measure(args: argparse.Namespace, model: Any, audio: np.ndarray, features: Any, frames: Any,
            import_seconds: float, load_seconds: float) -> None:
    """Time the pipeline and the network alone; print the results as one JSON line."""
    totals, networks = [], []
    for i in range(args.repeats + 1):  # the first run warms up and is not counted
        began = time.perf_counter()
        log_probs = model.log_probs([audio])[0]
        middle = time.perf_counter()
        model.network(features, frames)
        ended = time.perf_counter()
        if i:
            totals.append(middle - began)
            networks.append(ended - middle)
    result = {"rtf": statistics.median(totals) / args.seconds,
              "network_rtf": statistics.median(networks) / args.seconds,
              "import_s": import_seconds, "load_s": load_seconds,
              "argmax": log_probs.argmax(-1).tolist()}
    if args.manifest:
        from harken.decoding.options import GREEDY
        from harken.training.evaluate import evaluate_manifests

        # Greedy: the acoustic models are compared (an LM stored with the model is not exported).
        result["wer"] = evaluate_manifests(model, [args.manifest], GREEDY, limit=args.limit,
                                           progress=False).wer
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


def prepare(args: argparse.Namespace, folder: Path) -> tuple[Path, Path, str]:
    """Write the PyTorch model and its ONNX export under `folder`."""
    import torch

    from harken.interop import onnx_export as export
    from harken.model import load_model, new_model

    if args.model:
        model = load_model(args.model)
    else:
        torch.manual_seed(0)
        model = new_model(args.arch, args.size)
        # Random BatchNorm statistics, so the network is not an identity around them.
        for module in model.network.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    architecture = model.config.architecture
    if args.int8_ops:
        export.INT8_OPS[architecture] = tuple(args.int8_ops.split(","))
    torch_path = model.save(folder / "torch")
    onnx_path = export.export_onnx(model, folder / "onnx", int8=True)
    return torch_path, onnx_path, architecture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a harken model (default: random weights)")
    parser.add_argument("--arch", default="deepspeech2")
    parser.add_argument("--size", default="small")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--int8-ops", default=None,
                        help="comma-separated ONNX operators to quantise (default: harken's)")
    parser.add_argument("--manifest", default=None, help="JSONL manifest for WER")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--path", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--backend", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.threads = args.threads[0]
        child(args)
        return

    with tempfile.TemporaryDirectory(prefix="harken-backends-") as tmp:
        torch_path, onnx_path, architecture = prepare(args, Path(tmp))
        config = json.loads((onnx_path / "config.json").read_text())
        sizes = {"torch": (torch_path / "weights.safetensors").stat().st_size,
                 "onnx-fp32": (onnx_path / config["export"]["fp32"]).stat().st_size,
                 "onnx-int8": (onnx_path / config["export"]["int8"]).stat().st_size}
        sizes[NO_TORCH] = sizes["onnx-fp32"]
        rows = []
        for threads in args.threads:
            reference = None
            for backend in BACKENDS:
                command = [sys.executable, __file__, "--child", "--backend", backend,
                           "--path", str(torch_path if backend == "torch" else onnx_path),
                           "--threads", str(threads), "--seconds", str(args.seconds),
                           "--repeats", str(args.repeats)]
                if args.manifest and backend != NO_TORCH:  # scoring needs harken.training.evaluate (torch);
                    command += ["--manifest", args.manifest]  # its outputs equal onnx-fp32's
                    if args.limit:
                        command += ["--limit", str(args.limit)]
                env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
                out = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
                result = json.loads(out.stdout.strip().splitlines()[-1])
                argmax = np.array(result.pop("argmax"))
                if reference is None:
                    reference = argmax
                result["agree"] = float((argmax == reference).mean())
                rows.append((threads, backend, result))

    print(f"{architecture} {args.model or args.size + ' (random weights)'}, {args.seconds:g} s "
          f"of audio, median of {args.repeats}; int8 quantises "
          f"{','.join(config['export']['int8_ops'])}; backend=onnx runs "
          f"{config['export']['default']}")
    header = (f"{'threads':>7} {'backend':<13} {'RTF':>7} {'net RTF':>8} {'speed-up':>8} "
              f"{'size MB':>8} {'peak RSS MB':>11} {'import s':>8} {'load s':>7} "
              f"{'argmax=torch':>12}")
    if args.manifest:
        header += f" {'WER %':>6}"
    print(header)
    base = {}
    for threads, backend, r in rows:
        base.setdefault(threads, r["rtf"])
        line = (f"{threads:>7} {backend:<13} {r['rtf']:>7.4f} {r['network_rtf']:>8.4f} "
                f"{base[threads] / r['rtf']:>7.2f}x {sizes[backend] / 1e6:>8.2f} "
                f"{r['peak_rss_mb']:>11.0f} {r['import_s']:>8.2f} {r['load_s']:>7.2f} "
                f"{100 * r['agree']:>11.1f}%")
        if args.manifest:
            line += f" {100 * r['wer']:>6.2f}" if "wer" in r else f" {'=fp32':>6}"
        print(line)


if __name__ == "__main__":
    main()
