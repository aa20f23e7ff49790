"""Training configuration: the TOML file parsed into typed sections (model, tokenizer, data,
optim, run, features, specaugment, augment), checked with messages that name the key, and
`--set key=value` overrides."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from harken.errors import ConfigError, tomllib
from harken.features import FeatureConfig, SpecAugmentConfig
from harken.models.registry import model_config
from harken.text import TextNormalizer

log = logging.getLogger(__name__)


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


def specaugment_config(settings: dict[str, Any]):
    """The [specaugment] table as a `SpecAugmentConfig`, or None when `enabled = false`."""

    settings = dict(settings)
    if settings.pop("enabled", True) is False:
        return None
    return SpecAugmentConfig.from_dict(settings)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`optim.lr=3e-4` -> (["optim", "lr"], 3e-4); values are parsed as TOML when they can be."""

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


def text_normalizer(config: TrainConfig):
    """The run's transcript normaliser (`harken.text.TextNormalizer`) from [data]."""

    return TextNormalizer(config.data.language, config.data.lowercase,
                          config.data.keep_punctuation)


def needs_global_stats(features: dict[str, Any]) -> bool:
    """True for `normalize = "global"` without `global_mean`/`global_std`: training measures them."""
    return (features.get("normalize") == "global"
            and features.get("global_mean") is None and features.get("global_std") is None)


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
