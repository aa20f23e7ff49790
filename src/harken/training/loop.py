"""The training loop: CTC (and transducer) models from a `TrainConfig`, resume, DDP, evaluation.

A run writes into its `run.out_dir`:

- ``checkpoints/step-NNNNNNN/`` (weights, optimizer and RNG state as safetensors + JSON, written
  atomically), the newest named in ``checkpoints/latest``;
- ``model/`` (the last weights as a harken model) and ``best/`` (best dev WER so far);
- ``metrics.jsonl`` (one line per log interval and per evaluation) and ``metrics.png``.

`--resume` continues a killed run from its latest checkpoint with the same data order, the same
augmentation and the same random state, so the result equals an uninterrupted run on CPU.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from harken.errors import AudioError, ConfigError
from harken.features import FeatureConfig, LogMel, SpecAugment, STD_EPSILON
from harken.model import load_model, new_model
from harken.text import (CharTokenizer, derive_alphabet, read_texts, SentencePieceTokenizer,
                         train_sentencepiece)
from harken.training.augment import AugmentConfig, build_augmenter
from harken.training.data import (BucketBatchSampler, collate, DatasetSpec, mix_datasets,
                                  SpeechDataset)
from harken.training.evaluate import evaluate_manifests
from harken.training.manifests import load_utterance
from harken.training.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from harken.training.config import (TrainConfig, lr_lambda, needs_global_stats, specaugment_config,
                                   text_normalizer)

log = logging.getLogger(__name__)



# ---------------------------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------------------------



def _pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"run.device={name}: CUDA is not available on this machine")
    return torch.device(name)


def _distributed() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local




def build_tokenizer(config: TrainConfig, out_dir: Path, rank: int):
    """The run's tokenizer: characters (alphabet given, or derived from the training text once
    and kept in the run folder), or SentencePiece trained once (rank 0) and reused."""

    normalizer = text_normalizer(config)
    sources = config.tokenizer.text or [e.manifest for e in config.data.train]
    texts = (t for s in sources for t in read_texts(s))
    if config.tokenizer.kind == "char" and config.tokenizer.alphabet != "auto":
        return CharTokenizer(config.tokenizer.alphabet, normalizer)
    model_file = out_dir / ("alphabet.json" if config.tokenizer.kind == "char" else "tokenizer.model")
    if rank == 0 and not model_file.exists():
        if config.tokenizer.kind == "char":
            alphabet = derive_alphabet(map(normalizer, texts), config.tokenizer.min_char_count)
            data = json.dumps(alphabet, ensure_ascii=False).encode()
            log.info("alphabet of %d characters from the training text: %r", len(alphabet),
                     alphabet)
        else:
            data = train_sentencepiece(texts, config.tokenizer.vocab_size,
                                       model_type=config.tokenizer.model_type,
                                       character_coverage=config.tokenizer.character_coverage,
                                       language=normalizer).serialized()
        tmp = model_file.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, model_file)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    if config.tokenizer.kind == "char":
        return CharTokenizer(json.loads(model_file.read_text(encoding="utf-8")), normalizer)
    return SentencePieceTokenizer(model_file.read_bytes(), normalizer)


def _init_model(config: TrainConfig, tokenizer: Any):
    model = new_model(config.model.architecture, config.model.size, tokenizer=tokenizer,
                      features=config.features, **config.model.overrides)
    if config.model.init_from:
        source = load_model(config.model.init_from)
        state = source.network.state_dict()
        own = model.network.state_dict()
        same_vocab = source.tokenizer.tokens == tokenizer.tokens
        vocab = source.tokenizer.vocab_size
        # With a new tokenizer the output layer (the tensors sized by the vocabulary) starts afresh.
        kept = {k: v for k, v in state.items()
                if k in own and own[k].shape == v.shape
                and (same_vocab or not (v.ndim >= 1 and v.shape[0] == vocab))}
        model.network.load_state_dict(kept, strict=False)
        log.info("initialised %d/%d tensors from %s%s", len(kept), len(own), config.model.init_from,
                 "" if same_vocab else " (new tokenizer: output layer re-initialised)")
    return model


def train(config: TrainConfig, resume: bool = False,
          on_step: Callable[[int], None] | None = None) -> Path:
    """Train a model as configured; returns the folder of the final harken model.

    `on_step(step)` is called after every optimizer step and checkpoint (for monitoring or
    stopping a run: an exception raised there ends it like a kill would).
    """
    world, rank, device = _setup_device(config)
    out_dir = Path(config.run.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = latest_checkpoint(out_dir) if resume else None
    if resume and checkpoint is None and rank == 0:
        log.warning("--resume: no checkpoint in %s, starting from scratch", out_dir)
    if not resume and latest_checkpoint(out_dir) is not None:
        raise ConfigError(f"{out_dir} already holds a run; pass --resume to continue it or choose "
                          "another run.out_dir")
    if needs_global_stats(config.features):
        config = _with_global_stats(config, out_dir, rank)
    if rank == 0:
        (out_dir / "train_config.json").write_text(json.dumps(config.to_dict(), indent=2))

    torch.manual_seed(config.run.seed)
    tokenizer = build_tokenizer(config, out_dir, rank)
    model = _init_model(config, tokenizer)
    model.to(device)
    network = model.network
    ddp_network: torch.nn.Module = network
    if world > 1:
        ddp_network = torch.nn.parallel.DistributedDataParallel(
            network, device_ids=[device.index] if device.type == "cuda" else None)
    specaugment_settings = specaugment_config(config.specaugment)
    specaugment = SpecAugment(specaugment_settings).to(device) if specaugment_settings else None

    specs = dataset_specs(config)
    augmenters = [_augmenter(e.augment) for e in config.data.train]

    normalize = tokenizer.normalizer

    # One optimizer step per batch; the schedule length is estimated from the first epoch.
    first_epoch = mix_datasets(specs, 0, config.run.seed)
    steps_per_epoch = len(_sampler(config, first_epoch, 0, 0, world, rank))
    total_steps = config.optim.max_steps or steps_per_epoch * config.optim.epochs
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.optim.lr,
                                  betas=config.optim.betas, weight_decay=config.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config.optim, total_steps))
    progress: dict[str, Any] = {"epoch": 0, "batch": 0, "best_wer": None, "history": [],
                                "audio_seconds": 0.0, "train_seconds": 0.0}
    step = 0
    if checkpoint is not None:
        progress = load_checkpoint(checkpoint, network, optimizer, scheduler)
        step = int(json.loads((checkpoint / "state.json").read_text())["step"])
        if rank == 0:
            log.info("resumed from %s (epoch %d, batch %d)", checkpoint, progress["epoch"], progress["batch"])

    autocast_dtype, scaler = _precision(config, device)
    metrics_path = out_dir / "metrics.jsonl"

    while progress["epoch"] < config.optim.epochs and step < total_steps:
        epoch = progress["epoch"]
        items = mix_datasets(specs, epoch, config.run.seed)
        dataset = SpeechDataset(items, encode=tokenizer.encode, normalize=normalize,
                                augmenters=augmenters, seed=config.run.seed)
        loader, epoch_batches = _loader(config, dataset, items, epoch, progress["batch"], world,
                                        rank, device)
        network.train()
        model.featurizer.train()
        bar = _progress_bar(epoch_batches, progress["batch"], epoch,
                            enabled=config.run.progress and rank == 0)
        window = {"loss": 0.0, "n": 0, "audio": 0.0, "start": time.time()}
        for batch in loader:
            if batch is None:
                progress["batch"] += 1
                continue
            batch = batch.to(device)
            started = time.time()
            loss = _batch_loss(model, ddp_network, specaugment, batch, autocast_dtype, world)
            _optimizer_step(loss, network, optimizer, scheduler, scaler, config.optim.grad_clip)
            step += 1
            progress["batch"] += 1
            seconds = float(batch.audio_lengths.sum()) / model.sample_rate
            progress["audio_seconds"] += seconds
            progress["train_seconds"] += time.time() - started
            window["loss"] += loss.item()
            window["n"] += 1
            window["audio"] += seconds
            if bar is not None:
                bar.update(1)
                speed = window["audio"] / max(1e-9, time.time() - window["start"])
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}",
                                audio=f"{speed:.0f}x")
            if step % config.run.log_every == 0 and rank == 0:
                window = _log_window(window, step, epoch, scheduler.get_last_lr()[0], metrics_path,
                                     quiet=bar is not None)
            if step % config.run.checkpoint_every == 0 and rank == 0:
                save_checkpoint(out_dir, step, network, optimizer, scheduler, progress,
                                config.run.keep_checkpoints)
            if on_step is not None:
                on_step(step)
            if step >= total_steps:
                break
        if bar is not None:
            bar.close()
        if progress["batch"] < epoch_batches:  # stopped by max_steps inside the epoch
            break
        progress["epoch"] += 1
        progress["batch"] = 0
        if rank == 0 and progress["epoch"] % config.run.epochs_per_eval == 0:
            _end_of_epoch(config, model, progress, step, out_dir, metrics_path)
            save_checkpoint(out_dir, step, network, optimizer, scheduler, progress,
                            config.run.keep_checkpoints)
        if world > 1:
            torch.distributed.barrier()

    final = out_dir / "model"
    if rank == 0:
        model.save(final, training=_training_metadata(config, progress, step))
        (out_dir / "DONE").write_text(str(step))
    if world > 1:
        torch.distributed.barrier()
    return final


def _log_window(window: dict[str, Any], step: int, epoch: int, lr: float, metrics_path: Path,
                quiet: bool) -> dict[str, Any]:
    """Write the training record of the steps since the last one; returns a new, empty window."""
    elapsed = max(1e-9, time.time() - window["start"])
    record = {"kind": "train", "step": step, "epoch": epoch,
              "loss": window["loss"] / window["n"], "lr": lr,
              "steps_per_second": window["n"] / elapsed,
              "audio_seconds_per_second": window["audio"] / elapsed}
    _append_jsonl(metrics_path, record)
    if not quiet:
        log.info("step %d epoch %d loss %.3f %.1fx real time", step, epoch,
                 record["loss"], record["audio_seconds_per_second"])
    return {"loss": 0.0, "n": 0, "audio": 0.0, "start": time.time()}


def _setup_device(config: TrainConfig) -> tuple[int, int, torch.device]:
    """(world size, rank, device) of this process; joins the process group under torchrun."""
    world, rank, local_rank = _distributed()
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if config.run.device.startswith("cuda") or (
            config.run.device == "auto" and torch.cuda.is_available()) else "gloo"
        torch.distributed.init_process_group(backend)
    device = _pick_device(config.run.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    return world, rank, device


def _precision(config: TrainConfig, device: torch.device) -> tuple[torch.dtype | None, Any]:
    """(autocast dtype or None for fp32, gradient scaler for fp16 on CUDA or None)."""
    precision = config.run.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" and device.type == "cuda" else None
    return autocast_dtype, scaler


def _loader(config: TrainConfig, dataset: Any, items: list, epoch: int, start_batch: int,
            world: int, rank: int, device: torch.device) -> tuple[Any, int]:
    """The epoch's DataLoader (from `start_batch` on) and the number of batches in the epoch."""
    dataset.set_epoch(epoch)
    sampler = _sampler(config, items, epoch, start_batch, world, rank)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate,
        num_workers=config.data.num_workers, persistent_workers=False,
        # A generator of its own keeps the global RNG (dropout) untouched by the loader, so a
        # resumed run draws the same random numbers as an uninterrupted one.
        generator=torch.Generator().manual_seed(config.run.seed + epoch),
        pin_memory=device.type == "cuda")
    return loader, len(sampler) + sampler.start_batch


def _batch_loss(model: Any, ddp_network: torch.nn.Module, specaugment: Any, batch: Any,
                autocast_dtype: torch.dtype | None, world: int) -> torch.Tensor:
    """The batch's loss: CTC, or RNN-T (+ CTC) for transducers, averaged over the global batch."""
    device = batch.audio.device
    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        with torch.autocast(device.type, enabled=False):
            features, frame_lengths = model.featurizer(batch.audio, batch.audio_lengths)
            if specaugment is not None:
                features = specaugment(features, frame_lengths)
        if model.is_transducer:  # RNN-T (+ CTC) loss per utterance
            return _global_mean(ddp_network(features, frame_lengths, batch.tokens,
                                            batch.token_lengths), world)
        log_probs, out_lengths = ddp_network(features, frame_lengths)
    return _ctc_loss(log_probs, out_lengths, batch, world)


def _optimizer_step(loss: torch.Tensor, network: torch.nn.Module, optimizer: Any, scheduler: Any,
                    scaler: Any, grad_clip: float) -> None:
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    torch.nn.utils.clip_grad_norm_(network.parameters(), grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()


def _ctc_loss(log_probs: torch.Tensor, out_lengths: torch.Tensor, batch: Any,
              world: int) -> torch.Tensor:
    """CTC loss per utterance divided by its target length, averaged over the global batch.

    With several processes each holds part of the global batch; DDP averages gradients over
    processes, so the local sum is scaled by world / global batch size to give the same
    gradients as one process with the whole batch.
    """
    per_utterance = F.ctc_loss(log_probs.float().transpose(0, 1), batch.tokens, out_lengths,
                               batch.token_lengths, blank=0, reduction="none", zero_infinity=True)
    per_utterance = per_utterance / batch.token_lengths.clamp(min=1).to(per_utterance.dtype)
    return _global_mean(per_utterance, world)


def _global_mean(per_utterance: torch.Tensor, world: int) -> torch.Tensor:
    """The mean of per-utterance losses over the global batch (see `_ctc_loss`)."""
    if world == 1:
        return per_utterance.mean()
    size = torch.tensor([float(len(per_utterance))], device=per_utterance.device)
    torch.distributed.all_reduce(size)
    return per_utterance.sum() * world / size


def _sampler(config: TrainConfig, items: list, epoch: int, start_batch: int, world: int,
             rank: int):

    return BucketBatchSampler([u for u, _ in items], config.data.max_batch_seconds,
                              max_batch_size=config.data.max_batch_size,
                              sortagrad=config.data.sortagrad, seed=config.run.seed,
                              num_replicas=world, rank=rank, split_batches=True, epoch=epoch,
                              start_batch=start_batch)


def _augmenter(settings: dict[str, Any] | None):
    if not settings:
        return None

    return build_augmenter(AugmentConfig.from_dict(settings))


def _progress_bar(total: int, initial: int, epoch: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=f"epoch {epoch}", unit="batch",
                dynamic_ncols=True, file=sys.stderr)


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _training_metadata(config: TrainConfig, progress: dict[str, Any], step: int) -> dict[str, Any]:
    return {"steps": step, "epochs": progress["epoch"], "audio_seconds": progress["audio_seconds"],
            "train_seconds": progress["train_seconds"], "best_dev_wer": progress["best_wer"],
            "datasets": [e.manifest for e in config.data.train],
            "config": config.to_dict()}


def _end_of_epoch(config: TrainConfig, model: Any, progress: dict[str, Any], step: int,
                  out_dir: Path, metrics_path: Path) -> None:
    """Evaluate on the dev sets, keep the best model, write metrics and the plot."""
    record: dict[str, Any] = {"kind": "epoch", "epoch": progress["epoch"] - 1, "step": step}
    if config.data.dev:

        model.eval()
        result = evaluate_manifests(model, config.data.dev, limit=config.data.dev_max_utterances)
        model.network.train()
        model.featurizer.train()
        record.update({"dev_wer": result.wer, "dev_cer": result.cer})
        log.info("epoch %d: dev WER %.2f%% CER %.2f%%", record["epoch"], 100 * result.wer, 100 * result.cer)
        if progress["best_wer"] is None or result.wer < progress["best_wer"]:
            progress["best_wer"] = result.wer
            model.save(out_dir / "best", training=_training_metadata(config, progress, step))
    model.save(out_dir / "model", training=_training_metadata(config, progress, step))
    _append_jsonl(metrics_path, record)
    plot_metrics(metrics_path, out_dir / "metrics.png")


def read_metrics(path: Path) -> Iterator[dict[str, Any]]:
    """The records of metrics.jsonl; a line cut short by a killed run is skipped."""
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line) if line.strip() else None
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                yield record


def plot_metrics(metrics_path: Path, png: Path) -> None:
    """Train loss per step and dev WER/CER per epoch, as a PNG (skipped without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    records = list(read_metrics(metrics_path))
    train_records = [r for r in records if r["kind"] == "train"]
    epochs = [r for r in records if r["kind"] == "epoch" and "dev_wer" in r]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot([r["step"] for r in train_records], [r["loss"] for r in train_records])
    ax1.set_xlabel("step")
    ax1.set_ylabel("train CTC loss")
    ax1.set_yscale("log")
    if epochs:
        ax2.plot([r["epoch"] for r in epochs], [100 * r["dev_wer"] for r in epochs], "o-", label="WER")
        ax2.plot([r["epoch"] for r in epochs], [100 * r["dev_cer"] for r in epochs], "s-", label="CER")
        ax2.legend()
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("dev error rate (%)")
    fig.tight_layout()
    tmp = png.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, png)




GLOBAL_STATS_FILE = "global_stats.json"


def measure_global_stats(config: TrainConfig, max_utterances: int = 2000) -> dict[str, list[float]]:
    """Mean and standard deviation per mel bin of the training audio (no augmentation).

    Over a random sample (seeded by `run.seed`) of at most `max_utterances` of the first epoch's
    weighted mixture, each utterance featurised alone as at inference. An utterance that cannot be
    read is logged and skipped. Returns {"global_mean": [...], "global_std": [...]}.
    """

    items = mix_datasets(dataset_specs(config), 0, config.run.seed)
    rng = np.random.default_rng([config.run.seed, 0x5747])
    chosen = rng.choice(len(items), size=min(max_utterances, len(items)), replace=False)
    featurizer = LogMel(FeatureConfig.from_dict({**config.features, "normalize": "none",
                                                 "global_mean": None, "global_std": None}))
    featurizer.eval()
    total = torch.zeros(featurizer.config.n_mels, dtype=torch.float64)
    square = torch.zeros_like(total)
    frames = 0
    for index in sorted(chosen.tolist()):
        utterance = items[index][0]
        try:
            audio = torch.from_numpy(load_utterance(utterance, featurizer.config.sample_rate))
        except AudioError as error:
            log.warning("global statistics: skipped %s", error)
            continue
        with torch.no_grad():
            x = featurizer(audio[None], torch.tensor([len(audio)]))[0][0].to(torch.float64)
        total += x.sum(0)
        square += x.square().sum(0)
        frames += len(x)
    if not frames:
        raise ConfigError("features.normalize = 'global': no training audio could be read to "
                          "measure the statistics")
    mean = total / frames
    std = (square / frames - mean.square()).clamp(min=0).sqrt() + STD_EPSILON
    log.info("global feature statistics from %d utterances (%d frames)", len(chosen), frames)
    return {"global_mean": mean.tolist(), "global_std": std.tolist()}


def dataset_specs(config: TrainConfig) -> list[Any]:
    """The training mixture's `harken.training.data.DatasetSpec`s, the run's max_duration filled in."""

    return [DatasetSpec(manifest=e.manifest, weight=e.weight, augment=e.augment,
                        min_duration=e.min_duration,
                        max_duration=e.max_duration or config.data.max_duration)
            for e in config.data.train]


def _init_model_stats(config: TrainConfig) -> dict[str, list[float]] | None:
    """The global statistics of the `init_from` model, when it has them for these features.

    A fine-tuned network keeps the input scale it learned: statistics measured afresh on another
    mixture would shift every input at the first step.
    """
    if not config.model.init_from:
        return None

    source = load_model(config.model.init_from).featurizer.config
    n_mels = FeatureConfig.from_dict({**config.features, "normalize": "none"}).n_mels
    if source.normalize != "global" or source.global_mean is None or source.n_mels != n_mels:
        return None
    log.info("global feature statistics from %s (fine-tuning keeps them)", config.model.init_from)
    return {"global_mean": [float(v) for v in source.global_mean],
            "global_std": [float(v) for v in source.global_std]}


def _with_global_stats(config: TrainConfig, out_dir: Path, rank: int) -> TrainConfig:
    """The config with measured global statistics, kept in `out_dir` so that a resume reuses them."""
    path = out_dir / GLOBAL_STATS_FILE
    if rank == 0 and not path.exists():
        stats = _init_model_stats(config) or measure_global_stats(config)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(stats))
        os.replace(tmp, path)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    try:
        stats = json.loads(path.read_text())
        stats = {key: [float(v) for v in stats[key]] for key in ("global_mean", "global_std")}
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ConfigError(f"{path}: unreadable global feature statistics ({error}); delete the "
                          "file to measure them again") from None
    return dataclasses.replace(config, features={**config.features, **stats})
