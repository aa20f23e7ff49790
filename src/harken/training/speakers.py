"""Training speaker encoders (x-vector) with an additive angular margin softmax, and scoring
them by equal error rate.

`train_speaker_encoder(config, utterances, options)` takes mel power spectrograms
(`harken.diarization.speakers.MelPower`) with a speaker index each and trains on random crops of
`config.window_seconds`, with feature-domain augmentation (noise added in the power domain,
random band and time masks). `equal_error_rate(embeddings, speakers)` scores every pair of
trials by cosine similarity.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from harken.errors import ConfigError
from harken.diarization.speakers import (
    HOP,
    SAMPLE_RATE,
    SpeakerConfig,
    SpeakerEncoder,
    build_network,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpeakerTrainOptions:
    """`margin`/`scale`: AAM-softmax m (radians) and s; `steps` at `batch_size` crops;
    `noise_probability`: share of crops with added noise at `snr_db` (low, high)."""

    steps: int = 2000
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    margin: float = 0.2
    scale: float = 30.0
    noise_probability: float = 0.5
    snr_db: tuple[float, float] = (5.0, 30.0)
    mask_probability: float = 0.5
    seed: int = 0
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 2:
            raise ConfigError(f"steps must be >= 1 and batch_size >= 2, got {self.steps}, "
                              f"{self.batch_size}")
        if not 0 <= self.margin < 1 or self.scale <= 0:
            raise ConfigError(f"AAM-softmax needs 0 <= margin < 1 and scale > 0, got "
                              f"{self.margin}, {self.scale}")


class AAMSoftmax(nn.Module):
    """Additive angular margin softmax (ArcFace): (B, D) embeddings, (B,) labels -> loss."""

    def __init__(self, dim: int, classes: int, margin: float, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, dim) * 0.01)
        self.margin, self.scale = margin, scale

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cosine = nn.functional.linear(nn.functional.normalize(embeddings),
                                      nn.functional.normalize(self.weight)).clamp(-1 + 1e-7, 1 - 1e-7)
        theta = torch.acos(cosine)
        target = torch.cos(theta + self.margin)
        onehot = nn.functional.one_hot(labels, cosine.shape[1]).bool()
        logits = torch.where(onehot, target, cosine) * self.scale
        return nn.functional.cross_entropy(logits, labels)


def _crop_batch(utterances: Sequence[np.ndarray], labels: np.ndarray, frames: int,
                options: SpeakerTrainOptions, rng: np.random.Generator
                ) -> tuple[torch.Tensor, torch.Tensor]:
    picks = rng.integers(0, len(utterances), options.batch_size)
    batch = np.zeros((options.batch_size, frames, utterances[0].shape[1]), np.float32)
    for row, i in enumerate(picks):
        mel = utterances[i]
        if len(mel) > frames:
            start = int(rng.integers(0, len(mel) - frames + 1))
            mel = mel[start: start + frames]
        mel = np.tile(mel, (-(-frames // len(mel)), 1))[:frames]  # short ones repeat
        mel = mel.astype(np.float32)
        if rng.random() < options.noise_probability:  # noise at a random SNR, power domain
            snr = rng.uniform(*options.snr_db)
            tilt = np.linspace(1.0, rng.uniform(0.1, 3.0), mel.shape[1])[None, :]
            noise = rng.exponential(1.0, mel.shape).astype(np.float32) * tilt
            mel = mel + noise * (mel.mean() / noise.mean()) * 10 ** (-snr / 10)
        if rng.random() < options.mask_probability:
            f0 = int(rng.integers(0, mel.shape[1] - 4))
            mel[:, f0: f0 + int(rng.integers(1, 5))] = mel.min()
            t0 = int(rng.integers(0, max(1, frames - 20)))
            mel[t0: t0 + int(rng.integers(1, 20))] *= 0.01
        batch[row] = mel
    return torch.from_numpy(batch), torch.from_numpy(labels[picks].astype(np.int64))


def train_speaker_encoder(config: SpeakerConfig, utterances: Sequence[np.ndarray],
                          speakers: Sequence[int], options: SpeakerTrainOptions | None = None,
                          on_step: Callable[[int, float, nn.Module], None] | None = None) -> SpeakerEncoder:
    """Train an x-vector on mel power spectrograms (T_i, n_mels) labelled 0..K-1.

    Returns the encoder in eval mode. `on_step(step, loss, network)` is called every step (logging,
    checkpoints); `options.max_seconds` stops training early."""
    options = options or SpeakerTrainOptions()
    if config.architecture != "xvector":
        raise ConfigError(f"only x-vector encoders are trained here, got {config.architecture!r}")
    labels = np.asarray(speakers)
    if len(utterances) != len(labels) or len(utterances) == 0:
        raise ValueError(f"expected one speaker per utterance, got {len(utterances)} "
                         f"utterances and {len(labels)} speakers")
    classes = int(labels.max()) + 1
    if classes < 2:
        raise ValueError("training a speaker encoder needs at least 2 speakers")
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    network = build_network(config)
    head = AAMSoftmax(config.embedding_dim, classes, options.margin, options.scale)
    params = list(network.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=options.learning_rate,
                                  weight_decay=options.weight_decay)
    warmup = max(1, options.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(
        (s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(1.0, s / options.steps)))))
    frames = round(config.window_seconds * SAMPLE_RATE / HOP) + 1
    network.train()
    began = time.monotonic()
    for step in range(options.steps):
        x, y = _crop_batch(utterances, labels, frames, options, rng)
        # margin ramps in over the first fifth of training (AAM from the start can stall)
        head.margin = options.margin * min(1.0, step / max(1, options.steps // 5))
        loss = head(network(x), y)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 5.0)
        optimizer.step()
        schedule.step()
        if on_step is not None:
            on_step(step, float(loss), network)
        if options.max_seconds is not None and time.monotonic() - began > options.max_seconds:
            log.info("stopping at step %d: %.0f s", step, time.monotonic() - began)
            break
    network.eval()
    return SpeakerEncoder(config, network)


def equal_error_rate(embeddings: np.ndarray, speakers: Sequence[object]) -> tuple[float, float]:
    """(EER, threshold) over all pairs of (N, D) embeddings scored by cosine similarity:
    the rate where false acceptances equal false rejections."""
    emb = np.asarray(embeddings, np.float64)
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    names = np.asarray([str(s) for s in speakers])
    if emb.ndim != 2 or len(emb) != len(names) or len(set(names)) < 2:
        raise ValueError(f"expected (N, D) embeddings of at least two speakers, got "
                         f"{emb.shape} and {len(set(names))} speaker(s)")
    iu = np.triu_indices(len(emb), 1)
    scores = (emb @ emb.T)[iu]
    same = (names[:, None] == names[None, :])[iu]
    if same.all() or not same.any():
        raise ValueError("EER needs both same-speaker and different-speaker pairs")
    order = np.argsort(-scores)
    same_sorted = same[order]
    accepted_same = np.cumsum(same_sorted) / same.sum()  # 1 - false rejection
    accepted_diff = np.cumsum(~same_sorted) / (~same).sum()  # false acceptance
    frr = 1 - accepted_same
    i = int(np.argmin(np.abs(frr - accepted_diff)))
    return float((frr[i] + accepted_diff[i]) / 2), float(scores[order][i])
