"""numpy features (harken.features_np) vs PyTorch features (harken.features, torch.stft).

Computes the log-mel of the same audio (default 60 s, one utterance, harken's default
settings and NeMo's) with both implementations, one thread each, and prints the median time of
each, their ratio and the largest difference.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/features_np.py [--seconds 60] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from backends import synthetic_audio  # noqa: E402

from harken.features import FeatureConfig, LogMel  # noqa: E402
from harken.features_np import NumpyLogMel  # noqa: E402
from harken.interop.import_nemo import preprocessor_features  # noqa: E402


def median_seconds(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    audio = synthetic_audio(args.seconds)
    configs = {"harken default": FeatureConfig(),
               "nemo": FeatureConfig.from_dict(preprocessor_features({}))}
    print(f"{args.seconds:g} s of audio, median of {args.repeats}, 1 thread")
    print(f"{'settings':<15} {'torch ms':>9} {'numpy ms':>9} {'numpy/torch':>11} {'max diff':>9}")
    for name, config in configs.items():
        torch_module = LogMel(config).eval()
        numpy_module = NumpyLogMel(config)
        x = torch.from_numpy(audio)[None]

        def with_torch() -> np.ndarray:
            with torch.inference_mode():
                return torch_module(x)[0].numpy()

        def with_numpy() -> np.ndarray:
            return numpy_module(audio[None])[0]

        torch_s = median_seconds(with_torch, args.repeats)
        numpy_s = median_seconds(with_numpy, args.repeats)
        difference = float(np.abs(with_torch() - with_numpy()).max())
        print(f"{name:<15} {1000 * torch_s:>9.1f} {1000 * numpy_s:>9.1f} "
              f"{numpy_s / torch_s:>10.2f}x {difference:>9.2e}")


if __name__ == "__main__":
    main()
