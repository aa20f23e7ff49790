"""Training throughput and inference speed of the `small` models on this machine.

Prints, per architecture: parameters, training throughput in audio-seconds per second (x real
time; the goal for a ~5 M-parameter model on 2 CPU cores is >= 80x), and inference real-time
factor; and PocketSphinx's real-time factor on the same audio (when installed), with the ratio.

Usage: python benchmarks/engine_speed.py [--threads 2] [--batch 16] [--seconds 8] [--steps 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from harken.model import new_model
from harken.models.registry import count_parameters

STREAMING_DS2 = {"bidirectional": False, "lookahead": 8, "rnn_hidden": 320, "rnn_layers": 4,
                 "time_stride": 4}


def training_throughput(model, batch: int, seconds: float, steps: int) -> float:
    rate = model.sample_rate
    audio = torch.randn(batch, int(seconds * rate)) * 0.1
    lengths = torch.full((batch,), audio.shape[1])
    targets = torch.randint(1, model.tokenizer.vocab_size, (batch, int(seconds * 12)))
    target_lengths = torch.full((batch,), targets.shape[1])
    optimizer = torch.optim.AdamW(model.network.parameters(), lr=1e-4)
    model.network.train()
    times = []
    for _ in range(steps + 1):
        began = time.perf_counter()
        features, frames = model.featurizer(audio, lengths)
        log_probs, out_lengths = model.network(features, frames)
        loss = F.ctc_loss(log_probs.transpose(0, 1), targets, out_lengths, target_lengths,
                          zero_infinity=True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - began)
    model.eval()
    return batch * seconds / float(np.median(times[1:]))


def inference_rtf(model, seconds: float) -> float:
    audio = (np.random.default_rng(0).standard_normal(int(seconds * model.sample_rate)) * 0.1
             ).astype(np.float32)
    model.transcribe(audio)
    began = time.perf_counter()
    model.transcribe(audio)
    return (time.perf_counter() - began) / seconds


def pocketsphinx_rtf(seconds: float) -> float | None:
    try:
        from pocketsphinx import Decoder
    except ImportError:
        return None
    audio = (np.random.default_rng(0).standard_normal(int(seconds * 16000)) * 3000).astype(np.int16)
    decoder = Decoder(loglevel="FATAL")
    began = time.perf_counter()
    decoder.start_utt()
    decoder.process_raw(audio.tobytes(), full_utt=True)
    decoder.end_utt()
    return (time.perf_counter() - began) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peer = pocketsphinx_rtf(args.seconds)
    print(f"{'model':32s} {'params':>8s} {'train x RT':>11s} {'infer RTF':>10s} {'RTF vs pocketsphinx':>20s}")
    for name, architecture, overrides in (
        ("deepspeech2 small (bi-GRU)", "deepspeech2", {}),
        ("deepspeech2 small (streaming)", "deepspeech2", STREAMING_DS2),
        ("conformer small", "conformer", {}),
        ("citrinet small", "citrinet", {}),
    ):
        model = new_model(architecture, "small", **overrides)
        throughput = training_throughput(model, args.batch, args.seconds, args.steps)
        rtf = inference_rtf(model, args.seconds)
        ratio = f"{rtf / peer:.3f}x" if peer else "n/a"
        print(f"{name:32s} {count_parameters(model.network) / 1e6:7.2f}M {throughput:10.1f}x "
              f"{rtf:10.4f} {ratio:>20s}", flush=True)
    if peer:
        print(f"pocketsphinx (en-us) RTF on the same audio: {peer:.4f}")


if __name__ == "__main__":
    main()
