"""Training CTC models: typed config (TOML -> dataclasses), the loop, checkpoints, resume, DDP.

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
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from harken.errors import ConfigError

log = logging.getLogger("harken.training.loop")

CHECKPOINT_DIR = "checkpoints"
LATEST_FILE = "latest"
CHECKSUMS_FILE = "checksums.json"
CHECKPOINT_FILES = ("model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json")


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelSection:
    architecture: str = "deepspeech2"
    size: str = "small"
    overrides: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None  # fine-tune from an existing harken model


@dataclass(frozen=True)
class TokenizerSection:
    kind: str = "char"  # "char" or "sentencepiece"
    vocab_size: int = 128
    model_type: str = "unigram"
    alphabet: str = " abcdefghijklmnopqrstuvwxyz'"  # "auto": every character of the training text
    text: list[str] = field(default_factory=list)  # files to train SentencePiece on (default: train manifests)
    min_char_count: int = 1  # alphabet = "auto": characters seen fewer times are left out
    character_coverage: float = 1.0  # SentencePiece; 0.9995 for scripts with thousands of characters


@dataclass(frozen=True)
class DatasetEntry:
    manifest: str
    weight: float = 1.0
    augment: dict[str, Any] | None = None
    min_duration: float | None = None
    max_duration: float | None = None


@dataclass(frozen=True)
class DataSection:
    train: list[DatasetEntry] = field(default_factory=list)
    dev: list[str] = field(default_factory=list)
    max_batch_seconds: float = 160.0
    max_batch_size: int = 64
    max_duration: float = 20.0
    num_workers: int = 2
    sortagrad: bool = True
    dev_max_utterances: int | None = None
    language: str = "en"  # transcript normaliser (harken.text.TextNormalizer)
    lowercase: bool = True  # languages other than English: lowercase transcripts
    keep_punctuation: str = ""  # languages other than English: punctuation kept in transcripts


@dataclass(frozen=True)
class OptimSection:
    lr: float = 1e-3
    weight_decay: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 500
    schedule: str = "cosine"  # "cosine", "noam" or "constant"
    min_lr_ratio: float = 0.05
    grad_clip: float = 5.0
    epochs: int = 50
    max_steps: int | None = None


@dataclass(frozen=True)
class RunSection:
    out_dir: str = "runs/exp"
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:N"
    precision: str = "auto"  # "auto" (bf16 autocast on CUDA), "fp32", "bf16", "fp16"
    checkpoint_every: int = 500
    epochs_per_eval: int = 1  # dev evaluation, model/best export and a checkpoint every N epochs
    keep_checkpoints: int = 2
    log_every: int = 20
    threads: int | None = None
    progress: bool = True


@dataclass(frozen=True)
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    tokenizer: TokenizerSection = field(default_factory=TokenizerSection)
    features: dict[str, Any] = field(default_factory=dict)
    specaugment: dict[str, Any] = field(default_factory=dict)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    run: RunSection = field(default_factory=RunSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from a dict, checking keys and value types with readable errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"[{where}] must be a table, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(where + '.' + k if where else k for k in unknown)}"
                          f"; valid keys{' in [' + where + ']' if where else ''}: {', '.join(fields)}")
    values = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        kind = fields[name].type
        values[name] = _convert(kind, value, key)
    return cls(**values)


_SECTIONS = {"model": ModelSection, "tokenizer": TokenizerSection, "data": DataSection,
             "optim": OptimSection, "run": RunSection}


def _convert(kind: str, value: Any, key: str) -> Any:
    kind = str(kind)
    if value is None:
        if "None" in kind:
            return None
        raise ConfigError(f"{key}: a value is required")
    if kind.startswith("list[DatasetEntry]"):
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list of datasets ({{manifest = ..., weight = ...}})")
        return [_build(DatasetEntry, {"manifest": v} if isinstance(v, str) else v, key)
                for v in value]
    if kind.startswith("list[str]"):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
        return list(value)
    if kind.startswith("tuple[float"):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, (int, float)) for v in value):
            raise ConfigError(f"{key}: expected a list of numbers, got {value!r}")
        return tuple(float(v) for v in value)
    if kind.startswith("dict"):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return dict(value)
    if kind.startswith("bool"):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if kind.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if kind.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if kind.startswith("str"):
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Parse a training configuration (the TOML document as a dict) and validate it."""
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}; valid sections: "
                          f"{[f.name for f in dataclasses.fields(TrainConfig)]}")
    sections = {name: _build(cls, data.get(name, {}), name) for name, cls in _SECTIONS.items()}
    for name in ("features", "specaugment"):
        if not isinstance(data.get(name, {}), dict):
            raise ConfigError(f"[{name}] must be a table")
    config = TrainConfig(features=dict(data.get("features", {})),
                         specaugment=dict(data.get("specaugment", {})), **sections)
    validate(config)
    return config


def validate(config: TrainConfig) -> None:
    from harken.features import FeatureConfig
    from harken.models.registry import model_config

    if not config.data.train:
        raise ConfigError("data.train: give at least one training manifest")
    if config.tokenizer.kind not in ("char", "sentencepiece"):
        raise ConfigError(f"tokenizer.kind: expected 'char' or 'sentencepiece', got {config.tokenizer.kind!r}")
    text_normalizer(config)  # checks the language settings
    if config.tokenizer.min_char_count < 1:
        raise ConfigError("tokenizer.min_char_count: must be >= 1")
    if not 0.0 < config.tokenizer.character_coverage <= 1.0:
        raise ConfigError("tokenizer.character_coverage: must be in (0, 1]")
    if config.optim.schedule not in ("cosine", "noam", "constant"):
        raise ConfigError(f"optim.schedule: expected cosine, noam or constant, got {config.optim.schedule!r}")
    if config.optim.lr <= 0:
        raise ConfigError(f"optim.lr: must be positive, got {config.optim.lr}")
    if config.run.precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ConfigError(f"run.precision: expected auto, fp32, bf16 or fp16, got {config.run.precision!r}")
    if config.data.max_batch_seconds <= 0:
        raise ConfigError("data.max_batch_seconds: must be positive")
    for entry in config.data.train:
        if entry.weight <= 0:
            raise ConfigError(f"data.train: weight of {entry.manifest} must be positive")
    features = dict(config.features)
    if needs_global_stats(features):  # training measures them; check everything else now
        features["normalize"] = "none"
    FeatureConfig.from_dict(features).validate()
    specaugment_config(config.specaugment)
    model_config(config.model.architecture, config.model.size, **config.model.overrides)


def needs_global_stats(features: dict[str, Any]) -> bool:
    """True for `normalize = "global"` without `global_mean`/`global_std`: training measures them."""
    return (features.get("normalize") == "global"
            and features.get("global_mean") is None and features.get("global_std") is None)


GLOBAL_STATS_FILE = "global_stats.json"


def measure_global_stats(config: TrainConfig, max_utterances: int = 2000) -> dict[str, list[float]]:
    """Mean and standard deviation per mel bin of the training audio (no augmentation).

    Over a random sample (seeded by `run.seed`) of at most `max_utterances` of the first epoch's
    weighted mixture, each utterance featurised alone as at inference. An utterance that cannot be
    read is logged and skipped. Returns {"global_mean": [...], "global_std": [...]}.
    """
    from harken.training.data import load_utterance, mix_datasets
    from harken.errors import AudioError
    from harken.features import STD_EPSILON, FeatureConfig, LogMel

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
    from harken.training.data import DatasetSpec

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
    from harken.features import FeatureConfig
    from harken.model import load_model

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


def specaugment_config(settings: dict[str, Any]):
    """The [specaugment] table as a `SpecAugmentConfig`, or None when `enabled = false`."""
    from harken.features import SpecAugmentConfig

    settings = dict(settings)
    if settings.pop("enabled", True) is False:
        return None
    return SpecAugmentConfig.from_dict(settings)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`optim.lr=3e-4` -> (["optim", "lr"], 3e-4); values are parsed as TOML when they can be."""
    from harken.errors import tomllib

    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. optim.lr=3e-4")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def load_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> TrainConfig:
    """Read a TOML training config and apply `--set KEY=VALUE` overrides."""
    from harken.errors import tomllib

    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: no such config file") from exc
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config ({exc.strerror or exc})") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
        except RecursionError as exc:
            raise ConfigError(f"{path}: not valid TOML (nested too deeply)") from exc
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: {k} is not a table")
        node[keys[-1]] = value
    return config_from_dict(data)


# ---------------------------------------------------------------------------------------------
# Checkpoints (safetensors + JSON, never pickle)
# ---------------------------------------------------------------------------------------------

def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            name = f"{index}.{key}"
            if torch.is_tensor(value):
                tensors[name] = value.detach().cpu().contiguous()
            else:
                scalars[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _sync(path: Path) -> None:
    """Flush a file's or a folder's contents to the disk (a folder: its entries, e.g. a rename)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    from harken.model import sha256_file

    return sha256_file(path)


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every random generator training may draw from: torch (CPU, CUDA), numpy's global one and
    Python's `random`; tensors for safetensors and the scalars for JSON."""
    import random

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, python_state, python_gauss = random.getstate()
    tensors = {"torch": torch.get_rng_state(),
               "numpy": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
               "python": torch.tensor(python_state, dtype=torch.int64)}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state()
    scalars = {"numpy": [kind, int(pos), int(has_gauss), float(gauss)],
               "python": [version, python_gauss]}
    return tensors, scalars


def _set_rng_state(tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
    import random

    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"])
    if "numpy" in tensors and "numpy" in scalars:  # checkpoints before these were saved lack them
        kind, pos, has_gauss, gauss = scalars["numpy"]
        np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss,
                             gauss))
        version, python_gauss = scalars["python"]
        random.setstate((version, tuple(tensors["python"].tolist()), python_gauss))


def save_checkpoint(out_dir: Path, step: int, network: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler: Any, progress: dict[str, Any],
                    keep: int) -> Path:
    """Write a checkpoint that a kill at any moment leaves whole or absent, then point `latest`
    at it and delete all but the newest `keep`.

    The files go into a temporary folder with their SHA-256 in ``checksums.json``; each file and
    the folder are fsynced before the folder is renamed into place and the rename is fsynced.
    `latest_checkpoint` checks the sums, so a checkpoint damaged later is noticed too.
    """
    from safetensors.torch import save_file

    root = out_dir / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    for stale in root.glob(".tmp-step-*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".tmp-step-{step:08d}"
    tmp.mkdir()
    save_file({k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()},
              str(tmp / "model.safetensors"))
    tensors, meta = _flatten_optimizer(optimizer.state_dict())
    rng, rng_scalars = _rng_state()
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    save_file(rng, str(tmp / "rng.safetensors"))
    state = {"step": step, "progress": progress, "optimizer": meta,
             "scheduler": scheduler.state_dict(), "rng": rng_scalars}
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    sums = {p.name: _sha256(p) for p in sorted(tmp.iterdir())}
    (tmp / CHECKSUMS_FILE).write_text(json.dumps(sums, indent=1))
    for path in tmp.iterdir():
        _sync(path)
    _sync(tmp)
    if final.exists():  # the same step again (e.g. after a resume): move the old one aside
        old = root / f".tmp-step-{step:08d}-old"
        os.replace(final, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(tmp, final)
    latest_tmp = root / f".{LATEST_FILE}.tmp"
    latest_tmp.write_text(final.name)
    _sync(latest_tmp)
    os.replace(latest_tmp, root / LATEST_FILE)
    _sync(root)
    checkpoints = sorted(p for p in root.iterdir() if p.name.startswith("step-"))
    for old in checkpoints[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint folder `path` cannot be used (missing or damaged files), or None."""
    sums_file = path / CHECKSUMS_FILE
    try:
        sums = json.loads(sums_file.read_text()) if sums_file.is_file() else None
        if sums is None:  # written before checksums were kept: the state must at least parse
            json.loads((path / "state.json").read_text())
            return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"unreadable ({exc})"
    missing = sorted(set(CHECKPOINT_FILES) - set(sums))
    if missing:
        return f"{CHECKSUMS_FILE} lists no {', '.join(missing)}"
    for name in CHECKPOINT_FILES:
        try:
            actual = _sha256(path / name)
        except OSError:
            return f"{name} is missing"
        if actual != sums[name]:
            return f"{name} is damaged (SHA-256 mismatch)"
    return None


def average_checkpoints(out_dir: Path, last: int) -> tuple[dict[str, torch.Tensor], list[Path]]:
    """The network weights averaged over the newest `last` usable checkpoints of a run.

    Averaging the weights of the last checkpoints of a run (as NeMo, fairseq and icefall do)
    smooths the noise of the final optimizer steps and usually lowers the WER a little. Floating
    tensors (batch-norm statistics included) are averaged in float64; integer tensors (batch
    counters) come from the newest checkpoint. Returns the state dict and the checkpoints used.
    """
    from safetensors.torch import load_file

    if last < 1:
        raise ConfigError(f"average: the number of checkpoints must be >= 1, got {last}")
    root = out_dir / CHECKPOINT_DIR
    found = sorted(p for p in root.glob("step-*") if p.is_dir()) if root.is_dir() else []
    usable = [p for p in found if checkpoint_problem(p) is None][-last:]
    if not usable:
        raise ConfigError(f"{out_dir}: no usable checkpoints to average")
    total: dict[str, torch.Tensor] = {}
    for path in usable:
        for name, tensor in load_file(str(path / "model.safetensors")).items():
            if tensor.is_floating_point():
                total[name] = total.get(name, 0) + tensor.double()
            else:
                total[name] = tensor
    for name, tensor in total.items():
        if tensor.is_floating_point():
            total[name] = (tensor / len(usable)).float()
    return total, usable


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest usable checkpoint of a run, or None when it has none.

    The one named in ``latest`` comes first; when it is damaged (its files do not match their
    checksums) the next newest is used, with a warning. Raises `ConfigError` when checkpoints
    exist but none is usable.
    """
    root = out_dir / CHECKPOINT_DIR
    if not root.is_dir():
        return None
    candidates = sorted((p for p in root.iterdir() if p.name.startswith("step-") and p.is_dir()),
                        reverse=True)
    pointer = root / LATEST_FILE
    named = root / pointer.read_text().strip() if pointer.is_file() else None
    if named in candidates:
        candidates.remove(named)
        candidates.insert(0, named)
    problems = []
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            if problems:
                log.warning("using checkpoint %s instead: %s", path, "; ".join(problems))
            return path
        problems.append(f"{path} {problem}")
        log.warning("checkpoint %s is not usable: %s", path, problem)
    if problems:
        raise ConfigError(f"{out_dir}: no usable checkpoint ({'; '.join(problems)})")
    return None


def load_checkpoint(path: Path, network: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any) -> dict[str, Any]:
    """Restore weights, optimizer, schedule and random state; returns the run's progress."""
    from safetensors.torch import load_file

    network.load_state_dict(load_file(str(path / "model.safetensors")))
    state = json.loads((path / "state.json").read_text())
    optimizer.load_state_dict(_unflatten_optimizer(load_file(str(path / "optimizer.safetensors")),
                                                   state["optimizer"]))
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(load_file(str(path / "rng.safetensors")), state.get("rng", {}))
    return state["progress"]


# ---------------------------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------------------------

def lr_lambda(optim: OptimSection, total_steps: int):
    warmup = max(1, optim.warmup_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if optim.schedule == "constant":
            return 1.0
        if optim.schedule == "noam":
            return max(optim.min_lr_ratio, math.sqrt(warmup / (step + 1)))
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return optim.min_lr_ratio + (1 - optim.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


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


def text_normalizer(config: TrainConfig):
    """The run's transcript normaliser (`harken.text.TextNormalizer`) from [data]."""
    from harken.text import TextNormalizer

    return TextNormalizer(config.data.language, config.data.lowercase,
                          config.data.keep_punctuation)


def build_tokenizer(config: TrainConfig, out_dir: Path, rank: int):
    """The run's tokenizer: characters (alphabet given, or derived from the training text once
    and kept in the run folder), or SentencePiece trained once (rank 0) and reused."""
    from harken.text import (CharTokenizer, SentencePieceTokenizer, derive_alphabet, read_texts,
                             train_sentencepiece)

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
    from harken.model import load_model, new_model

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
    from harken.training.data import SpeechDataset, collate, mix_datasets
    from harken.features import SpecAugment

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

    precision = config.run.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" and device.type == "cuda" else None
    metrics_path = out_dir / "metrics.jsonl"

    while progress["epoch"] < config.optim.epochs and step < total_steps:
        epoch = progress["epoch"]
        items = mix_datasets(specs, epoch, config.run.seed)
        dataset = SpeechDataset(items, encode=tokenizer.encode, normalize=normalize,
                                augmenters=augmenters, seed=config.run.seed)
        dataset.set_epoch(epoch)
        sampler = _sampler(config, items, epoch, progress["batch"], world, rank)
        epoch_batches = len(sampler) + sampler.start_batch
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=sampler, collate_fn=collate,
            num_workers=config.data.num_workers, persistent_workers=False,
            # A generator of its own keeps the global RNG (dropout) untouched by the loader, so a
            # resumed run draws the same random numbers as an uninterrupted one.
            generator=torch.Generator().manual_seed(config.run.seed + epoch),
            pin_memory=device.type == "cuda")
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
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                with torch.autocast(device.type, enabled=False):
                    features, frame_lengths = model.featurizer(batch.audio, batch.audio_lengths)
                    if specaugment is not None:
                        features = specaugment(features, frame_lengths)
                if getattr(network, "is_transducer", False):  # RNN-T (+ CTC) loss per utterance
                    loss = _global_mean(ddp_network(features, frame_lengths, batch.tokens,
                                                    batch.token_lengths), world)
                else:
                    log_probs, out_lengths = ddp_network(features, frame_lengths)
            if not getattr(network, "is_transducer", False):
                loss = _ctc_loss(log_probs, out_lengths, batch, world)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), config.optim.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
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
                elapsed = max(1e-9, time.time() - window["start"])
                record = {"kind": "train", "step": step, "epoch": epoch,
                          "loss": window["loss"] / window["n"], "lr": scheduler.get_last_lr()[0],
                          "steps_per_second": window["n"] / elapsed,
                          "audio_seconds_per_second": window["audio"] / elapsed}
                _append_jsonl(metrics_path, record)
                if bar is None:
                    log.info("step %d epoch %d loss %.3f %.1fx real time", step, epoch,
                             record["loss"], record["audio_seconds_per_second"])
                window = {"loss": 0.0, "n": 0, "audio": 0.0, "start": time.time()}
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
    from harken.training.data import BucketBatchSampler

    return BucketBatchSampler([u for u, _ in items], config.data.max_batch_seconds,
                              max_batch_size=config.data.max_batch_size,
                              sortagrad=config.data.sortagrad, seed=config.run.seed,
                              num_replicas=world, rank=rank, split_batches=True, epoch=epoch,
                              start_batch=start_batch)


def _augmenter(settings: dict[str, Any] | None):
    if not settings:
        return None
    from harken.training.augment import AugmentConfig, build_augmenter

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
        from harken.training.evaluate import evaluate_manifests

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
