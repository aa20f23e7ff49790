"""Model loading never runs code: only safetensors, JSON and SentencePiece files are read, and
the importers read PyTorch checkpoints with `weights_only=True` and YAML with `safe_load`.

See docs/security.md for what is promised.
"""

from __future__ import annotations

import ast
import io
import pickle
import sys
import tarfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

import hostile_inputs as hostile
from harken.errors import ModelError
from harken.model import load_model
from harken.modelfile import sha256_file

SOURCE = Path(__file__).parents[1] / "src" / "harken"
_watching: list[str] = []  # audit events seen while `no_unpickling` is active


def _audit(event: str, args: tuple) -> None:
    if _watching and event == "pickle.find_class":
        _watching.append(f"{event} {args!r:.120}")


sys.addaudithook(_audit)  # audit hooks cannot be removed: it only records while a test watches


@contextmanager
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail when the block unpickles anything: Python's pickle resolving a global (an audit
    event raised by every unpickler, C or Python) or the pickle and torch load functions being
    called. (`exec`, `compile` and `marshal.loads` events are not watched: imports and `typing`
    raise them for harken's own code; the source audit shows no file content reaches them.)"""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a pickle loader was called while loading a model")

    for module, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(module, name, refuse)
    _watching[:] = ["watching"]
    try:
        yield
    finally:
        seen, _watching[:] = _watching[1:], []
    assert not seen, f"unpickling while loading a model: {seen}"


def pickle_laden_model(folder: Path) -> Path:
    """A valid model folder beside pickles of every common name, listed with true checksums."""
    model = hostile.good_model(folder)
    hostile._pickle_extras(model)
    buffer = io.BytesIO()
    torch.save({"payload": hostile.Payload(folder)}, buffer)
    (model / "model.ckpt").write_bytes(buffer.getvalue())
    return model


def test_model_folder_and_file_load_without_unpickling(tmp_path, monkeypatch) -> None:
    model = pickle_laden_model(tmp_path)
    single = load_model(model).save(tmp_path / "plain.harken")
    audio = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1
    with no_unpickling(monkeypatch):
        loaded = load_model(model)
        again = load_model(single)
        np.testing.assert_array_equal(loaded.log_probs([audio])[0], again.log_probs([audio])[0])
    assert not (tmp_path / hostile.PWNED).exists()


@pytest.mark.parametrize("make", [hostile._pickle_weights, hostile._torch_weights])
def test_pickled_weights_are_refused_unread(tmp_path, monkeypatch, make) -> None:
    model = hostile.good_model(tmp_path)
    make(model)
    hostile._relist(model)  # even with a matching checksum
    with no_unpickling(monkeypatch), pytest.raises(ModelError, match="not a readable safetensors"):
        load_model(model)
    assert not (tmp_path / hostile.PWNED).exists()


def _nemo(path: Path, config: bytes, weights: bytes) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in (("./model_config.yaml", config), ("./model_weights.ckpt", weights)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_nemo_checkpoint_with_a_pickle_payload_is_refused(tmp_path) -> None:
    pytest.importorskip("yaml")
    from harken.interop.import_nemo import read_nemo_archive

    buffer = io.BytesIO()
    torch.save({"payload": hostile.Payload(tmp_path)}, buffer)
    nemo = _nemo(tmp_path / "evil.nemo", b"sample_rate: 16000\n", buffer.getvalue())
    with pytest.raises(ModelError, match="model_weights.ckpt is not a tensors-only checkpoint"):
        read_nemo_archive(nemo)
    yaml_payload = b"!!python/object/apply:os.system ['touch " + str(tmp_path / hostile.PWNED).encode() + b"']\n"
    torch_ok = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, torch_ok)
    nemo = _nemo(tmp_path / "evil-yaml.nemo", yaml_payload, torch_ok.getvalue())
    with pytest.raises(ModelError, match="model_config.yaml is not valid YAML"):
        read_nemo_archive(nemo)
    assert not (tmp_path / hostile.PWNED).exists()


def test_hf_pytorch_bin_with_a_pickle_payload_is_refused(tmp_path) -> None:
    from harken.interop.import_hf import _read_weights

    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps(hostile.Payload(tmp_path)))
    with pytest.raises(ModelError, match="not a tensors-only checkpoint"):
        _read_weights(tmp_path)
    assert not (tmp_path / hostile.PWNED).exists()


UNSAFE_CALLS = {
    ("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("marshal", "loads"),
    ("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"), ("dill", "load"),
    ("joblib", "load"), ("shelve", "open"), ("cloudpickle", "load"),
}


def test_the_source_has_no_unsafe_deserialisation() -> None:
    """Every `torch.load` passes weights_only=True; no pickle/marshal/unsafe YAML loaders, no
    `np.load(allow_pickle=True)`, no eval/exec anywhere in the package."""
    problems = []
    for path in sorted(SOURCE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = (func.value.id, func.attr) if (isinstance(func, ast.Attribute)
                                                  and isinstance(func.value, ast.Name)) else None
            keywords = {k.arg: k.value for k in node.keywords}
            where = f"{path.name}:{node.lineno}"
            if name == ("torch", "load"):
                flag = keywords.get("weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    problems.append(f"{where}: torch.load without weights_only=True")
            elif name in UNSAFE_CALLS:
                problems.append(f"{where}: {'.'.join(name)}")
            elif name == ("np", "load") and "allow_pickle" in keywords:
                problems.append(f"{where}: np.load(allow_pickle=...)")
            elif isinstance(func, ast.Name) and func.id in ("eval", "exec"):
                problems.append(f"{where}: {func.id}()")
    assert not problems, problems


def test_audit_hook_sees_unpickling(monkeypatch) -> None:
    """The guard itself works: unpickling a global inside it is caught."""
    data = pickle.dumps(sha256_file)
    with pytest.raises(AssertionError, match="pickle.find_class"):
        with no_unpickling(monkeypatch):
            monkeypatch.undo()  # pickle.loads usable again: only the audit event can catch it
            pickle.loads(data)
