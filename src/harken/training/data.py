"""Training data: manifests -> utterances -> a mixed epoch -> length-bucketed batches.

- `harken.training.manifests` reads manifests into `Utterance`s.
- `mix_datasets` turns weighted `DatasetSpec`s into one epoch's list of (utterance, spec index).
- `SpeechDataset` loads, cuts, augments and tokenizes one item; `collate` pads items into a `Batch`.
- `BucketBatchSampler` groups utterances of similar length under a padded-seconds budget, with
  SortaGrad, distributed ranks and mid-epoch resume.

Every random choice is seeded from (seed, epoch, ...), so an epoch can be replayed exactly.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset, Sampler

from harken.errors import AudioError, ConfigError
from harken.training.manifests import OnError, Utterance, load_utterance, read_manifest, utterance_duration

logger = logging.getLogger(__name__)

Augmenter = Callable[[np.ndarray, np.random.Generator], np.ndarray]

# Tags that keep the random streams of mixing, batching and items independent for one (seed, epoch).
_MIX_STREAM, _BATCH_STREAM = 1, 2




























@dataclass(frozen=True)
class DatasetSpec:
    """One manifest in a training mixture.

    `weight` is how many times each utterance is used per epoch: 2 means twice, 0.3 means a random
    30% of them (a different 30% each epoch). `augment` holds augmentation settings passed through
    untouched. Utterances shorter than `min_duration` or longer than `max_duration` are left out.
    """

    manifest: str
    weight: float = 1.0
    augment: dict[str, Any] | None = field(default=None, hash=False)
    max_duration: float | None = None
    min_duration: float | None = None

    def __post_init__(self) -> None:
        low, high = self.min_duration, self.max_duration
        problem = None
        if not (math.isfinite(self.weight) and self.weight >= 0):
            problem = f"weight must be a number >= 0, got {self.weight}"
        elif any(value is not None and not value >= 0 for value in (low, high)):
            problem = f"durations must be >= 0 seconds, got min {low}, max {high}"
        elif low is not None and high is not None and low > high:
            problem = f"min_duration {low} is above max_duration {high}"
        if problem:
            raise ConfigError(f"dataset {self.manifest}: {problem}")


# Parsed manifests by path, with the (mtime, size, on_error) they were read with: mixing every
# epoch parses each file once, and again only when it changes.
_manifests: dict[str, tuple[tuple[int, int, str], list[Utterance]]] = {}


def _read_cached(path: str, on_error: OnError) -> list[Utterance]:
    try:
        stat = os.stat(path)
    except OSError:
        return read_manifest(path, on_error=on_error)  # raises the ManifestError
    key, stamp = os.path.abspath(path), (stat.st_mtime_ns, stat.st_size, on_error)
    if key not in _manifests or _manifests[key][0] != stamp:
        _manifests[key] = (stamp, read_manifest(path, on_error=on_error))
    return _manifests[key][1]


def mix_datasets(
    specs: Sequence[DatasetSpec], epoch: int, seed: int = 0, *, on_error: OnError = "raise"
) -> list[tuple[Utterance, int]]:
    """One epoch's utterances from weighted manifests, each with the index of its spec.

    An utterance of a spec with weight w appears floor(w) times, and a random share
    w - floor(w) of the spec's utterances once more (the count is rounded at random so that its
    expectation is exact). Deterministic for (seed, epoch); manifests are parsed once per process.
    """
    if not specs:
        raise ConfigError("no datasets to mix: give at least one DatasetSpec")
    mixed: list[tuple[Utterance, int]] = []
    for spec_index, spec in enumerate(specs):
        utterances = [
            u
            for u in _read_cached(spec.manifest, on_error)
            if (spec.min_duration is None or utterance_duration(u) >= spec.min_duration)
            and (spec.max_duration is None or utterance_duration(u) <= spec.max_duration)
        ]
        if not utterances:
            warnings.warn(f"{spec.manifest}: no utterance within the duration limits", stacklevel=2)
            continue
        rng = np.random.default_rng([seed, epoch, _MIX_STREAM, spec_index])
        whole = math.floor(spec.weight)
        share = (spec.weight - whole) * len(utterances)
        extra = math.floor(share) + int(rng.random() < share - math.floor(share))
        counts = np.full(len(utterances), whole)
        counts[rng.choice(len(utterances), size=extra, replace=False)] += 1
        for utterance, count in zip(utterances, counts.tolist()):
            mixed.extend([(utterance, spec_index)] * count)
    return mixed


class SpeechDataset(Dataset):
    """Items for CTC training: {"audio": float32 (N,), "tokens": int64 (U,), "id": str}, or None.

    `items` are (utterance, spec index) pairs from `mix_datasets`, or bare utterances (spec 0).
    Tokens are `encode(normalize(text))`. `augmenters[spec]` (when given and not None) transforms
    the waveform with a generator seeded from (seed, epoch, index), so augmentation is the same
    in any worker and after a resume. An item whose audio cannot be loaded or whose transcript
    cannot be encoded is None; the reason is logged once per file and kept in `failures`
    (per process: each DataLoader worker has its own copy). `sample_rate` defaults to
    `harken.audio.SAMPLE_RATE`.

    With DataLoader workers, call `set_epoch` before creating the epoch's iterator and leave
    `persistent_workers` off, or the workers keep the old epoch.
    """

    def __init__(
        self,
        items: Sequence[tuple[Utterance, int] | Utterance],
        encode: Callable[[str], Sequence[int]],
        normalize: Callable[[str], str],
        *,
        sample_rate: int | None = None,
        augmenters: Sequence[Augmenter | None] = (),
        seed: int = 0,
    ) -> None:
        self.items = [item if isinstance(item, tuple) else (item, 0) for item in items]
        self.encode = encode
        self.normalize = normalize
        self.sample_rate = sample_rate
        self.augmenters = list(augmenters)
        self.seed = seed
        self.epoch = 0
        self.failures: dict[Path, str] = {}
        if self.augmenters:
            bad = sorted({spec for _, spec in self.items if not 0 <= spec < len(self.augmenters)})
            if bad:
                count = len(self.augmenters)
                raise ConfigError(f"items come from spec(s) {bad} but {count} augmenters are given")

    @property
    def utterances(self) -> list[Utterance]:
        """The utterances in item order (what `BucketBatchSampler` takes)."""
        return [utterance for utterance, _ in self.items]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch that seeds augmentation."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        utterance, spec = self.items[index]
        try:
            tokens = self._tokens(utterance.text)
            audio = self._audio(utterance, spec, index)
        except _Unusable as exc:
            if utterance.audio not in self.failures:
                self.failures[utterance.audio] = str(exc)
                logger.warning("%s (id %s): skipped, %s", utterance.audio, utterance.id, exc)
            return None
        return {
            "audio": torch.from_numpy(audio),
            "tokens": torch.tensor(tokens, dtype=torch.int64),
            "id": utterance.id,
        }

    def _tokens(self, text: str) -> list[int]:
        try:
            tokens = list(self.encode(self.normalize(text)))
        except (ValueError, LookupError) as exc:
            raise _Unusable(f"cannot encode the transcript {text!r} ({exc})") from exc
        if not tokens and text.strip():  # an empty transcript is allowed: silence
            raise _Unusable(f"the transcript {text!r} encodes to no tokens")
        return tokens

    def _audio(self, utterance: Utterance, spec: int, index: int) -> np.ndarray:
        try:
            audio = load_utterance(utterance, self.sample_rate)
            augment = self.augmenters[spec] if self.augmenters else None
            if augment is not None:
                audio = augment(audio, np.random.default_rng([self.seed, self.epoch, index]))
        except AudioError as exc:
            raise _Unusable(exc.reason) from exc
        # A writable, contiguous float32 copy only when needed (torch.from_numpy shares memory).
        return np.require(audio, np.float32, ["C_CONTIGUOUS", "WRITEABLE"])


class _Unusable(Exception):
    """Why one dataset item is skipped."""


@dataclass
class Batch:
    """A padded batch: `audio` (B, N) float32 zero-padded, `audio_lengths` (B,) int64 samples,
    `tokens` (B, U) int64 padded with 0 (the CTC blank), `token_lengths` (B,) int64, `ids` (B)."""

    audio: torch.Tensor
    audio_lengths: torch.Tensor
    tokens: torch.Tensor
    token_lengths: torch.Tensor
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """The same batch with its tensors on `device`."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """Called by `DataLoader(pin_memory=True)`."""
        return self._map(torch.Tensor.pin_memory)

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        tensors = (self.audio, self.audio_lengths, self.tokens, self.token_lengths)
        return Batch(*map(fn, tensors), ids=self.ids)


def collate(items: Sequence[dict[str, Any] | None]) -> Batch | None:
    """Pad `SpeechDataset` items into a `Batch`, dropping the None ones; None when none is left."""
    kept = [item for item in items if item is not None]
    if not kept:
        return None

    def lengths(key: str) -> torch.Tensor:
        return torch.tensor([len(item[key]) for item in kept], dtype=torch.int64)

    return Batch(
        audio=pad_sequence([item["audio"] for item in kept], batch_first=True),
        audio_lengths=lengths("audio"),
        tokens=pad_sequence([item["tokens"] for item in kept], batch_first=True),
        token_lengths=lengths("tokens"),
        ids=[item["id"] for item in kept],
    )


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of utterances of similar length whose padded audio fits `max_batch_seconds`.

    Utterances are sorted by duration (ties in a random order each epoch) and cut greedily into
    batches with (longest duration x batch size) <= `max_batch_seconds` and at most
    `max_batch_size` items; an utterance longer than the budget gets a batch of its own (logged).
    The batch order is shuffled per epoch from (seed, epoch); with `sortagrad`, epoch 0 runs from
    the shortest batch to the longest; with `shuffle=False` every epoch does (evaluation).
    With `num_replicas` > 1 each rank takes every num_replicas-th batch; the batch count is made a
    multiple of num_replicas by repeating the first batches of the epoch (or, with `drop_last`,
    by dropping the last ones), so every rank runs the same number of steps. With
    `split_batches`, every batch is instead a global batch shared out between the ranks (rank r
    takes items r, r + num_replicas, ...; a batch with fewer items than ranks repeats some), so
    data-parallel training sees the same batches as one process.
    Resuming: `start_batch` is how many batches of one epoch this rank has done; they are skipped
    in `epoch`, or, when `epoch` is not given, in the first epoch selected (`set_epoch`); other
    epochs start from their first batch. `__len__` counts the batches still to come.
    `durations` are seconds, or `Utterance`s whose durations come from the manifest or are
    measured once per file (`utterance_duration`).
    """

    def __init__(
        self,
        durations: Sequence[Utterance | float],
        max_batch_seconds: float,
        *,
        max_batch_size: int | None = None,
        shuffle: bool = True,
        sortagrad: bool = False,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
        split_batches: bool = False,
        epoch: int | None = None,
        start_batch: int = 0,
    ) -> None:
        if not max_batch_seconds > 0:
            raise ConfigError(f"max_batch_seconds must be > 0, got {max_batch_seconds}")
        if max_batch_size is not None and max_batch_size < 1:
            raise ConfigError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ConfigError(f"need 0 <= rank < num_replicas, got rank {rank} of {num_replicas}")
        self.durations = np.array(
            [utterance_duration(d) if isinstance(d, Utterance) else float(d) for d in durations],
            dtype=np.float64,
        )
        self.max_batch_seconds = float(max_batch_seconds)
        self.max_batch_size = max_batch_size
        self.shuffle = shuffle
        self.sortagrad = sortagrad
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        self.split_batches = split_batches
        if start_batch < 0:
            raise ConfigError(f"start_batch must be >= 0, got {start_batch}")
        self.epoch = epoch or 0
        self._resume: tuple[int | None, int] = (epoch, start_batch)
        # Sorted durations do not depend on how ties are ordered, so neither do the batch sizes.
        self._sizes = self._batch_sizes(np.sort(self.durations, kind="stable"))
        too_long = self.durations > self.max_batch_seconds
        if too_long.any():
            logger.warning(
                "%d utterance(s) exceed max_batch_seconds %.1f (longest %.1f s); each gets a batch "
                "of its own", int(too_long.sum()), self.max_batch_seconds, self.durations.max()
            )

    def _batch_sizes(self, sorted_durations: np.ndarray) -> list[int]:
        sizes: list[int] = []
        size = 0
        for duration in sorted_durations.tolist():  # ascending: the newest item is the longest
            full = size > 0 and (
                (size + 1) * duration > self.max_batch_seconds
                or (self.max_batch_size is not None and size == self.max_batch_size)
            )
            if full:
                sizes.append(size)
                size = 0
            size += 1
        if size:
            sizes.append(size)
        return sizes

    def set_epoch(self, epoch: int, start_batch: int | None = None) -> None:
        """Select the epoch (it seeds the order) and, optionally, how many of its batches this
        rank has done already (resume)."""
        if start_batch is not None and start_batch < 0:
            raise ConfigError(f"start_batch must be >= 0, got {start_batch}")
        resume_epoch, skip = self._resume
        if start_batch is not None or resume_epoch is None:  # bind the skip to this epoch
            self._resume = (epoch, skip if start_batch is None else start_batch)
        self.epoch = epoch

    @property
    def start_batch(self) -> int:
        """How many batches of the current epoch this rank skips."""
        resume_epoch, skip = self._resume
        return skip if resume_epoch in (None, self.epoch) else 0

    def _batches_per_rank(self) -> int:
        if self.split_batches:
            return len(self._sizes)
        if self.drop_last:
            return len(self._sizes) // self.num_replicas
        return -(-len(self._sizes) // self.num_replicas)

    def __len__(self) -> int:
        return max(0, self._batches_per_rank() - self.start_batch)

    def _epoch_batches(self) -> list[list[int]]:
        """All batches of the current epoch, in order, before splitting between ranks."""
        rng = np.random.default_rng([self.seed, self.epoch, _BATCH_STREAM])
        if self.shuffle:
            order = np.lexsort((rng.random(len(self.durations)), self.durations))
        else:
            order = np.argsort(self.durations, kind="stable")
        bounds = np.cumsum(self._sizes)[:-1]
        batches = [chunk.tolist() for chunk in np.split(order, bounds)] if self._sizes else []
        if self.shuffle and not (self.sortagrad and self.epoch == 0):
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._epoch_batches()
        if self.split_batches:
            n = self.num_replicas
            shared = [(b if len(b) >= n else (b * n)[:n])[self.rank :: n] for b in batches]
            return iter(shared[self.start_batch :])
        total = self._batches_per_rank() * self.num_replicas
        while batches and len(batches) < total:  # pad by repeating from the start of the epoch
            batches += batches[: total - len(batches)]
        mine = batches[:total][self.rank :: self.num_replicas]
        return iter(mine[self.start_batch :])
