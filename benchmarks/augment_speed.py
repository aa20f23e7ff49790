"""Cost of each augmentation in milliseconds per second of audio, one CPU thread.

    python benchmarks/augment_speed.py [--seconds 4] [--draws 30] [--audio FILE]

Prints one line per transform (applied with probability 1), the expected cost of the default
chain (`AugmentConfig()`: each row times its probability) and the chain's measured cost. When
audiomentations is importable, its nearest equivalents are timed on the same audio and the
ratio harken / audiomentations is printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time

import numpy as np

from harken.audio import SAMPLE_RATE, load_audio
from harken.training.augment import AugmentConfig, build_augmenter


def _speech_like(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Harmonic bursts with silences: a stand-in when no recording is given."""
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    voice = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / SAMPLE_RATE) / k for k in range(1, 20))
    envelope = (np.sin(2 * np.pi * 2.5 * t) > -0.3).astype(float)
    return (0.1 * voice * envelope + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


def _time(fn, audio: np.ndarray, draws: int, tries: int = 3) -> float:
    """Milliseconds per second of audio, averaged over `draws` random draws (seeds); each draw
    counts its best of `tries` runs, the one least disturbed by other work on the machine."""
    per_draw = []
    for i in range(draws):
        best = math.inf
        for _ in range(tries):
            rng = np.random.default_rng(i)
            start = time.perf_counter()
            fn(audio, rng)
            best = min(best, time.perf_counter() - start)
        per_draw.append(best)
    return 1000 * float(np.mean(per_draw)) / (len(audio) / SAMPLE_RATE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--draws", type=int, default=30, help="random draws per transform")
    parser.add_argument("--audio", default=None, help="a speech recording (default: generated)")
    args = parser.parse_args()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    rng = np.random.default_rng(0)
    audio = load_audio(args.audio) if args.audio else _speech_like(args.seconds, rng)
    audio = audio[: round(args.seconds * SAMPLE_RATE)]
    babble = [_speech_like(3.0, np.random.default_rng(k)) for k in range(8)]

    off = AugmentConfig.from_dict({f.name: False for f in dataclasses.fields(AugmentConfig)})
    results: dict[str, float] = {}
    for f in dataclasses.fields(AugmentConfig):
        section = getattr(AugmentConfig(), f.name)
        variants = {f.name: dataclasses.replace(section, prob=1.0)}
        if f.name == "speed":
            variants = {"speed": dataclasses.replace(section, prob=1.0, factors=(0.9, 1.1))}
        if f.name == "codec":
            variants = {
                f"codec {c}": dataclasses.replace(section, prob=1.0, codecs=(c,))
                for c in section.codecs
            }
        if f.name == "noise_files":
            continue  # same cost as babble of one clip plus decoding
        for label, variant in variants.items():
            config = dataclasses.replace(off, **{f.name: variant})
            augment = build_augmenter(config, babble_source=babble)
            results[label] = _time(augment, audio, args.draws)
    defaults = AugmentConfig()
    share = sum(f != 1.0 for f in defaults.speed.factors) / len(defaults.speed.factors)
    transforms = {f.name for f in dataclasses.fields(AugmentConfig)} - {"speed"}
    expected = defaults.speed.prob * share * results["speed"] + sum(
        getattr(defaults, name).prob * ms for name, ms in results.items() if name in transforms
    )
    results["default chain (expected)"] = expected
    results["default chain (measured)"] = _time(build_augmenter(defaults), audio, 200)

    peer = _audiomentations(audio, args.draws)
    print(
        f"{'transform':28s} {'ms per s of audio':>18s}"
        + ("   audiomentations    ratio" if peer else "")
    )
    for label, ms in results.items():
        line = f"{label:28s} {ms:18.3f}"
        if label in peer:
            line += f" {peer[label]:17.3f} {ms / peer[label]:8.2f}"
        print(line)


def _audiomentations(audio: np.ndarray, repeats: int) -> dict[str, float]:
    try:
        import audiomentations as am
    except ImportError:
        return {}
    transforms = {
        "speed": lambda: am.Resample(min_sample_rate=14545, max_sample_rate=17778, p=1.0),
        "tempo": lambda: am.TimeStretch(
            min_rate=0.85, max_rate=1.15, leave_length_unchanged=False, p=1.0
        ),
        "noise": lambda: am.AddColorNoise(min_snr_db=5, max_snr_db=40, p=1.0),
        "band_limit": lambda: am.BandPassFilter(p=1.0),
        "gain": lambda: am.Gain(p=1.0),
        "clipping": lambda: am.ClippingDistortion(p=1.0),
        "codec mp3": lambda: am.Mp3Compression(min_bitrate=8, max_bitrate=32, p=1.0),
    }
    results = {}
    for label, make in transforms.items():
        try:
            transform = make()
            results[label] = _time(
                lambda a, rng, t=transform: t(a, sample_rate=SAMPLE_RATE), audio, repeats
            )
        except Exception as exc:  # an optional backend missing: leave that row without a peer
            print(f"audiomentations {label}: skipped ({str(exc)[:80]})")
    return results


if __name__ == "__main__":
    main()
