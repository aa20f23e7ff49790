"""Training checkpoints: weights, optimizer and RNG state as safetensors + JSON (never pickle),
written atomically with checksums; finding the latest sound one, resuming, averaging the last few."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harken.errors import ConfigError
from harken.modelfile import sha256_file

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LATEST_FILE = "latest"
CHECKSUMS_FILE = "checksums.json"
CHECKPOINT_FILES = ("model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json")




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


