"""The model file format: `ModelConfig` (config.json), checksums, ``.harken`` archives, the
bundled models' registry and where downloaded models live.

A model is a folder (or the same files in one uncompressed zip, ``*.harken``) holding

- ``config.json``: format version, architecture, size, network/feature/tokenizer settings,
  decoding defaults, training metadata, and the SHA-256 of every other file;
- ``weights.safetensors``: the network's weights (never pickle: loading a pickle runs code);
- ``tokenizer.model`` for SentencePiece models (character tokenizers live in the config).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harken.decoding.lm import info_path
from harken.errors import ModelError

if TYPE_CHECKING:
    from harken.model import Model


FORMAT_VERSION = 1


CONFIG_FILE = "config.json"


WEIGHTS_FILE = "weights.safetensors"
PUNCTUATOR_FILE = "punctuator.safetensors"  # when the model ships one (written text)


ASSETS = Path(__file__).parent / "assets"


# Bundled models: {name: {"file": ..., "sha256": ...}}, written by the packaging recipe.
REGISTRY_FILE = ASSETS / "models.json"


DEFAULT_MODEL = "en-small"


# Limits when reading a single-file (zip) model: no member may claim more than this.
MAX_MEMBER_BYTES = 2 << 30


MAX_MEMBERS = 64  # a model has a handful of files; thousands of entries only cost time


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; saved as config.json beside the weights."""

    architecture: str
    size: str
    network: dict[str, Any]
    features: dict[str, Any]
    tokenizer: dict[str, Any]
    decoding: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    # Exported models (harken.interop.onnx_export): format, files and variants; empty for PyTorch weights.
    export: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: object = "config.json") -> "ModelConfig":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelError(f"{source}: unknown keys {unknown} (expected some of {sorted(known)})")
        missing = [k for k in ("architecture", "network", "features", "tokenizer") if k not in data]
        if missing:
            raise ModelError(f"{source}: missing keys {missing}")
        version = data.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ModelError(f"{source}: model format version {version!r} is newer than this "
                             f"harken understands ({FORMAT_VERSION}); upgrade harken")
        return cls(**{"size": "custom", **data})


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_zip_model(path: Path, target: Path) -> None:
    """Extract a single-file model safely: flat names only, no links, no duplicates, at most
    `MAX_MEMBERS` members, sizes checked against the archive's own size before reading."""
    if not path.is_file():  # a FIFO or a device would block or never end
        raise ModelError(f"{path}: not a harken model file (not a regular file)")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(f"{path}: not a harken model file ({exc})") from exc
    with zf:
        members = zf.infolist()
        if len(members) > MAX_MEMBERS:
            raise ModelError(f"{path}: {len(members)} archive members; a model file holds at "
                             f"most {MAX_MEMBERS}")
        names = [info.filename for info in members]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ModelError(f"{path}: archive members {repeated} appear more than once")
        # Stored members cannot hold more than the archive: a larger claim is a lie.
        room = path.stat().st_size
        for info in members:
            name = info.filename
            if "/" in name or "\\" in name or name in ("", ".", "..") or name.startswith("."):
                raise ModelError(f"{path}: refusing archive member {name!r} (only plain file "
                                 "names are allowed in a model file)")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise ModelError(f"{path}: refusing archive member {name!r} (a symbolic link)")
            room -= info.file_size
            if (info.file_size > MAX_MEMBER_BYTES or info.compress_type != zipfile.ZIP_STORED
                    or room < 0):
                raise ModelError(f"{path}: member {name!r} is compressed or too large "
                                 f"({info.file_size} bytes); model files are stored uncompressed")
            with zf.open(info) as src, open(target / name, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def bundled_models() -> dict[str, dict[str, str]]:
    """The models shipped inside the package: name -> {"file", "sha256"}."""
    if not REGISTRY_FILE.is_file():
        return {}
    return json.loads(REGISTRY_FILE.read_text(encoding="utf-8"))


def resolve_model_path(path_or_name: str | os.PathLike | None) -> Path:
    """A model path from a path, a bundled model's name (None: the default model) or the name
    of a model fetched with `harken download` (bundled names and existing paths come first).

    A bundled model's file is checked against the SHA-256 recorded when it was packaged.
    """
    name = DEFAULT_MODEL if path_or_name is None else str(path_or_name)
    bundled = bundled_models()
    if name in bundled:
        path = ASSETS / bundled[name]["file"]
        if not path.is_file():
            raise ModelError(f"the bundled model {name!r} is not installed at {path}; reinstall "
                             "harken or pass a model path")
        if sha256_file(path) != bundled[name]["sha256"]:
            raise ModelError(f"{path}: the bundled model {name!r} is corrupt (SHA-256 mismatch); "
                             "reinstall harken")
        return path
    path = Path(name).expanduser()
    if not path.exists():
        downloaded = downloaded_model_path(name)  # made by `harken download NAME`
        if downloaded is not None:
            return downloaded
        known = ", ".join(bundled) or "none installed"
        raise ModelError(f"{path}: no such model file or folder (bundled models: {known}; "
                         "`harken models` lists models to download)")
    return path


def read_config(folder: Path, origin: object, backend: str = "torch") -> ModelConfig:
    """The `ModelConfig` of the model folder `folder` (`origin` names it in errors), after
    checking the SHA-256 of every file it lists; `ModelError` for anything wrong."""
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise ModelError(f"{origin}: not a harken model ({CONFIG_FILE} is missing)")
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelError(f"{origin}: {CONFIG_FILE} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{origin}: {CONFIG_FILE} must hold a JSON object")
    config = ModelConfig.from_dict(data, source=f"{origin}/{CONFIG_FILE}")
    if backend == "torch" and WEIGHTS_FILE not in config.files:
        if config.export:
            raise ModelError(f"{origin}: an exported {config.export.get('format')} model; load "
                             "it with backend='onnx' (on the command line: --backend onnx)")
        raise ModelError(f"{origin}: {CONFIG_FILE} lists no checksum for {WEIGHTS_FILE}")
    for name, expected in config.files.items():
        member = folder / name
        if Path(name).name != name or not member.is_file():
            raise ModelError(f"{origin}: file {name!r} listed in {CONFIG_FILE} is missing")
        actual = sha256_file(member)
        if actual != expected:
            raise ModelError(f"{origin}: {name} is corrupt or was changed (SHA-256 {actual[:12]}... "
                             f"expected {expected[:12]}...)")
    return config


CACHE_ENV = "HARKEN_CACHE"


NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def models_dir() -> Path:
    """Where downloaded models live: ``$HARKEN_CACHE/models``, else ``~/.cache/harken/models``
    (``$XDG_CACHE_HOME/harken/models`` when that is set)."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "harken")
    return Path(root).expanduser() / "models"


def downloaded_model_path(name: str, folder: str | os.PathLike[str] | None = None
                          ) -> Path | None:
    """The model folder `harken download NAME` made, or None."""
    if not NAME_PATTERN.match(name):
        return None
    path = (Path(folder) if folder is not None else models_dir()) / name
    return path if (path / CONFIG_FILE).is_file() else None


LM_INFO_SUFFIX = ".lm.json"  # LM metadata beside an LM copied into an export (not checksummed)


def carry_language_model(model: Model, folder: Path) -> dict[str, Any]:
    """Copy the LM of `model`'s decoding defaults into the export `folder`; returns the
    decoding defaults that refer to the copy.

    A model's stored defaults name their LM relative to the model's file or folder (the bundled
    ``en-small.harken`` has ``en-small.bin`` beside it), so an export in another folder could
    not find it. The LM (and its ``.lm.json`` metadata, tuned weights included) is copied next
    to the exported network, and the defaults (beam width, weights) are kept as they are: the
    export decodes exactly like the original. An LM the original cannot find either is left
    as it is named (`harken transcribe` reports it, as it does for the original).
    """

    decoding = dict(model.config.decoding or {})
    lm = decoding.get("lm")
    if not lm or model.path is None:
        return decoding
    source = Path(lm)
    if not source.is_absolute():
        origin = Path(model.path)
        source = (origin if origin.is_dir() else origin.parent) / source
    if not source.is_file():
        logging.getLogger(__name__).warning("%s: the LM of the decoding defaults, %s, does not "
                                            "exist; the export names it unchanged", model.path,
                                            source)
        return decoding
    target = folder / source.name
    shutil.copyfile(source, target)
    if info_path(source).is_file():
        shutil.copyfile(info_path(source), info_path(target))
    decoding["lm"] = target.name
    return decoding
