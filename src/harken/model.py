"""A harken model: network + features + tokenizer, its file format, and `load_model`.

A model is a folder (or the same files in one uncompressed zip, ``*.harken``) holding

- ``config.json``: format version, architecture, size, network/feature/tokenizer settings,
  decoding defaults, training metadata, and the SHA-256 of every other file;
- ``weights.safetensors``: the network's weights (never pickle: loading a pickle runs code);
- ``tokenizer.model`` for SentencePiece models (character tokenizers live in the config);
- ``punctuator.safetensors`` when the model ships a punctuator (`harken.punctuator`): its
  transcripts are then written text (`harken.written`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np

from harken.audio import SAMPLE_RATE, load_audio
from harken.decoding import Segment, Transcript, greedy_decode
from harken.errors import HarkenError, ModelError

if TYPE_CHECKING:  # imported where used: exported models run without PyTorch
    import torch

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
PUNCTUATOR_FILE = "punctuator.safetensors"
ASSETS = Path(__file__).parent / "assets"
# Bundled models: {name: {"file": ..., "sha256": ...}}, written by the packaging recipe.
REGISTRY_FILE = ASSETS / "models.json"
DEFAULT_MODEL = "en-small"
# Limits when reading a single-file (zip) model: no member may claim more than this.
MAX_MEMBER_BYTES = 2 << 30
MAX_MEMBERS = 64  # a model has a handful of files; thousands of entries only cost time
# Audio is run through the network in batches of at most this many seconds of (padded) audio.
BATCH_SECONDS = 240.0
# Longer inputs are cut into windows of at most this length at the quietest point near the end.
WINDOW_SECONDS = 30.0
_SEARCH_SECONDS = 5.0


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
    # Exported models (harken.export): format, files and variants; empty for PyTorch weights.
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


class Model:
    """A speech recogniser: audio in, `Transcript` out.

    Build one with `load_model`; `transcribe` takes a path, bytes, file object or array.
    """

    def __init__(self, config: ModelConfig, network: torch.nn.Module, tokenizer: Any,
                 path: Path | None = None, device: str | torch.device = "cpu") -> None:
        import torch

        from harken.features import FeatureConfig, make_featurizer

        self.config = config
        self.tokenizer = tokenizer
        self.path = path
        self.feature_config = FeatureConfig.from_dict(config.features)
        self.featurizer = make_featurizer(self.feature_config)
        self.network = network
        # Restores punctuation and capitals (harken.punctuator); None: transcripts stay raw.
        self.punctuator: Any = None
        self.device = torch.device(device)
        self.to(self.device)
        self.eval()

    # -- basic properties -------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.feature_config.sample_rate

    @property
    def frame_seconds(self) -> float:
        """Seconds between two output frames of the network."""
        return self.feature_config.hop_length * self.network.subsampling / self.sample_rate

    def to(self, device: str | torch.device) -> "Model":
        import torch

        self.device = torch.device(device)
        self.network.to(self.device)
        self.featurizer.to(self.device)
        return self

    def eval(self) -> "Model":
        self.network.eval()
        self.featurizer.eval()
        return self

    def __repr__(self) -> str:
        from harken.models import count_parameters

        return (f"Model({self.config.architecture}/{self.config.size}, "
                f"{count_parameters(self.network) / 1e6:.1f}M parameters, "
                f"vocab {self.tokenizer.vocab_size}, path={str(self.path) if self.path else None})")

    # -- inference ----------------------------------------------------------------------------
    def log_probs(self, audios: Sequence[np.ndarray]) -> list[np.ndarray]:
        """(time, vocab) CTC log-probabilities for each 16 kHz float32 waveform.

        Inputs are sorted by length and run in batches of at most `BATCH_SECONDS` of padded audio.
        """
        order = sorted(range(len(audios)), key=lambda i: len(audios[i]))
        results: list[np.ndarray | None] = [None] * len(audios)
        batch: list[int] = []
        for i in order:
            longest = max(len(audios[i]), 1)
            if batch and longest * (len(batch) + 1) > BATCH_SECONDS * self.sample_rate:
                self._run_batch(audios, batch, results)
                batch = []
            batch.append(i)
        if batch:
            self._run_batch(audios, batch, results)
        return results  # type: ignore[return-value]

    def _run_batch(self, audios: Sequence[np.ndarray], batch: list[int],
                   results: list[np.ndarray | None]) -> None:
        import torch

        lengths = torch.tensor([len(audios[i]) for i in batch], dtype=torch.long)
        padded = torch.zeros(len(batch), int(lengths.max()), dtype=torch.float32)
        for row, i in enumerate(batch):
            padded[row, : len(audios[i])] = torch.from_numpy(np.asarray(audios[i], np.float32))
        with torch.inference_mode():
            features, frame_lengths = self.featurizer(padded.to(self.device),
                                                      lengths.to(self.device))
            log_probs, out_lengths = self.network(features, frame_lengths)
        log_probs = log_probs.float().cpu().numpy()
        for row, i in enumerate(batch):
            results[i] = log_probs[row, : int(out_lengths[row])]

    def transcribe(self, audio: Any, options: Any = None, *, vad: str | None = "auto",
                   written: bool | None = None, **decode_options: Any) -> Transcript:
        """Transcribe one input (path, bytes, file object, float32 array at 16 kHz or (array, rate)).

        `options` is a `harken.decoding.DecodeOptions` (or keyword arguments for one); with
        neither, greedy decoding is used. Inputs longer than `WINDOW_SECONDS` are cut into
        speech segments by `vad` ("auto", "webrtc", "silero", "energy"; None: cut at quiet
        points, keeping everything), see `split_long_audio`.

        With a punctuator (`self.punctuator`), the transcript is written text ("I paid $21.")
        unless `written=False`, which gives the normalised text as recognised ("i paid twenty
        one dollars"); see `write`.
        """
        return self.transcribe_batch([audio], options, vad=vad, written=written,
                                     **decode_options)[0]

    def write(self, transcript: Transcript) -> Transcript:
        """`transcript` as written text with this model's punctuator (unchanged without one):
        `text` and segment texts punctuated, cased and with written numbers, each word's
        `written` set and its times kept, the recognised text in `raw_text`."""
        if self.punctuator is None:
            return transcript
        from harken.written import write_transcript

        return write_transcript(transcript, self.punctuator)

    def writes(self, written: bool | None) -> bool:
        """Whether results are written text: `written`, or by default when a punctuator is set."""
        return self.punctuator is not None if written is None else bool(written)

    def transcribe_batch(self, sources: Iterable[Any], options: Any = None, *,
                         vad: str | None = "auto", written: bool | None = None,
                         **decode_options: Any) -> list[Transcript]:
        """Transcribe many inputs, batching the network; results keep the input order.

        A source that cannot be read raises `AudioError` naming it; use
        `harken.transcribe.transcribe_files` to report bad files and go on.
        """
        waves = [load_audio(s, self.sample_rate) for s in sources]
        pieces: list[tuple[int, float, np.ndarray]] = []
        for index, wave in enumerate(waves):
            for offset, window in split_long_audio(wave, self.sample_rate, vad=vad):
                pieces.append((index, offset, window))
        log_probs = self.log_probs([p[2] for p in pieces])
        decode = self._decoder(options, decode_options)
        per_input: list[list[Transcript]] = [[] for _ in waves]
        for (index, offset, _), lp in zip(pieces, log_probs):
            per_input[index].append(decode(lp, offset))
        results = [merge_transcripts(parts, len(w) / self.sample_rate)
                   for parts, w in zip(per_input, waves)]
        if self.writes(written):
            results = [self.write(t) for t in results]
        return results

    def iter_segments(self, audio: Any, options: Any = None, *, vad: str | None = "auto",
                      batch_seconds: float = 60.0, written: bool | None = None,
                      **decode_options: Any) -> Iterator[Segment]:
        """Transcribe one input lazily: yield its `Segment`s (absolute times) in order.

        The audio is cut into speech segments by `vad` as in `transcribe`; they are run through
        the network `batch_seconds` of audio at a time and decoded, so the first segments arrive
        after seconds even for hours of audio, and only one batch's features and
        log-probabilities are alive at any moment. Joining the yielded segments gives the same
        words as `transcribe` with the same options. Written text (see `transcribe`) is made
        for each speech segment's words.
        """
        wave = load_audio(audio, self.sample_rate)
        decode = self._decoder(options, decode_options)
        if self.writes(written):
            raw = decode
            decode = lambda lp, offset: self.write(raw(lp, offset))  # noqa: E731
        group: list[tuple[float, np.ndarray]] = []
        queued = 0
        for offset, piece in split_long_audio(wave, self.sample_rate, vad=vad):
            group.append((offset, piece))
            queued += len(piece)
            if queued >= batch_seconds * self.sample_rate:
                yield from self._decode_pieces(group, decode)
                group, queued = [], 0
        if group:
            yield from self._decode_pieces(group, decode)

    def _decode_pieces(self, pieces: list[tuple[float, np.ndarray]], decode: Any
                       ) -> Iterator[Segment]:
        log_probs = self.log_probs([piece for _, piece in pieces])
        for (offset, _), lp in zip(pieces, log_probs):
            yield from decode(lp, offset).segments

    def stream(self, options: Any = None, **kwargs: Any) -> Any:
        """A real-time `harken.streaming.Stream`: `feed(audio)`, `partial()`, `finish()`.

        Keyword arguments are decoding options (as for `transcribe`) and the stream settings
        `endpoint`, `window_seconds`, `context_seconds` (see `harken.streaming.Stream`).
        """
        from harken.streaming import Stream

        if getattr(self.network, "is_transducer", False):
            from harken.transducer_decoding import transducer_stream

            return transducer_stream(self, options, **kwargs)
        return Stream(self, options, **kwargs)

    def decode_options(self, options: Any = None, **overrides: Any) -> Any:
        """The `DecodeOptions` this model uses: its stored defaults, then `options`/overrides."""
        from harken import decoding

        if not hasattr(decoding, "DecodeOptions"):
            return None
        return decoding.resolve_options(self, options, overrides)  # type: ignore[attr-defined]

    def _decoder(self, options: Any, overrides: dict[str, Any]):
        from harken import decoding

        if getattr(self.network, "is_transducer", False):
            from harken.transducer_decoding import frame_decoder

            return frame_decoder(self, options, overrides)
        resolved = self.decode_options(options, **overrides)
        if resolved is None:
            return lambda lp, offset: greedy_decode(lp, self.tokenizer, self.frame_seconds, offset)
        decoder = decoding.get_decoder(self.tokenizer, resolved)  # type: ignore[attr-defined]
        return lambda lp, offset: decoder.decode(lp, self.frame_seconds, time_offset=offset)

    # -- saving ----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, training: dict[str, Any] | None = None,
             dtype: torch.dtype | None = None) -> Path:
        """Write the model as a folder, or as one file when `path` ends in ``.harken``."""
        return save_model(self, path, training, dtype)


def split_long_audio(audio: np.ndarray, sample_rate: int = SAMPLE_RATE,
                     window_seconds: float = WINDOW_SECONDS,
                     vad: str | None = None) -> list[tuple[float, np.ndarray]]:
    """Cut audio longer than `window_seconds` at the quietest 100 ms near each window's end.

    Returns (offset in seconds, piece) pairs covering the input without overlap. With `vad`
    ("auto", "webrtc", "silero", "energy"), long audio is cut into the speech segments that
    `harken.vad.split_speech` finds instead: the silence between them is skipped.
    """
    window = int(window_seconds * sample_rate)
    if len(audio) <= window:
        return [(0.0, audio)]
    if vad is not None:
        from harken.vad import split_speech

        return split_speech(audio, sample_rate, window_seconds, method=vad)
    hop = sample_rate // 10
    pieces: list[tuple[float, np.ndarray]] = []
    start = 0
    while len(audio) - start > window:
        search_from = start + window - int(_SEARCH_SECONDS * sample_rate)
        region = audio[search_from: start + window]
        n = len(region) // hop
        energy = (region[: n * hop].reshape(n, hop) ** 2).sum(axis=1)
        cut = search_from + int(np.argmin(energy)) * hop + hop // 2
        pieces.append((start / sample_rate, audio[start:cut]))
        start = cut
    pieces.append((start / sample_rate, audio[start:]))
    return pieces


def merge_transcripts(parts: list[Transcript], duration: float) -> Transcript:
    """Join the transcripts of consecutive windows of one input."""
    if len(parts) == 1:
        parts[0].duration = duration
        return parts[0]
    words = [w for p in parts for w in p.words]
    segments = [s for p in parts for s in p.segments]
    text = " ".join(p.text for p in parts if p.text)
    return Transcript(text=text, words=words, segments=segments,
                      score=sum(p.score for p in parts), duration=duration)


# ---------------------------------------------------------------------------------------------
# Model files
# ---------------------------------------------------------------------------------------------

def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_model(model: Model, path: str | os.PathLike, training: dict[str, Any] | None = None,
               dtype: torch.dtype | None = None) -> Path:
    """Write `model` to `path` (a folder, or one zip file when the name ends in ``.harken``).

    `dtype=torch.float16` halves the file; weights are cast back to float32 when loaded.
    The write is atomic: a crash leaves either the old model or the new one.
    """
    from safetensors.torch import save_file

    from harken.text import save_tokenizer

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        folder = Path(tmp) / "model"
        folder.mkdir()
        state = {k: v.detach().cpu().contiguous() for k, v in model.network.state_dict().items()}
        if dtype is not None:
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
        tokenizer_config = save_tokenizer(model.tokenizer, folder)
        if getattr(model, "punctuator", None) is not None:
            from harken.punctuator import save_punctuator

            punctuator = model.punctuator
            save_punctuator(punctuator.network, punctuator.config, punctuator.vocabulary,
                            folder / PUNCTUATOR_FILE)
        files = {p.name: sha256_file(p) for p in sorted(folder.iterdir())}
        config = ModelConfig(
            architecture=model.config.architecture, size=model.config.size,
            network=model.config.network, features=model.config.features,
            tokenizer=tokenizer_config, decoding=model.config.decoding,
            training=training if training is not None else model.config.training,
            files=files)
        (folder / CONFIG_FILE).write_text(json.dumps(asdict(config), indent=2) + "\n")
        if path.suffix == ".harken":
            staged = Path(tmp) / "model.harken"
            with zipfile.ZipFile(staged, "w", zipfile.ZIP_STORED) as zf:
                for member in sorted(folder.iterdir()):
                    zf.write(member, member.name)
            os.replace(staged, path)
        else:
            if path.exists():
                old = Path(tmp) / "old"
                os.replace(path, old)
            os.replace(folder, path)
    model.path = path
    return path


def _read_zip_model(path: Path, target: Path) -> None:
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
        from harken.hub import downloaded_model_path

        downloaded = downloaded_model_path(name)  # made by `harken download NAME`
        if downloaded is not None:
            return downloaded
        known = ", ".join(bundled) or "none installed"
        raise ModelError(f"{path}: no such model file or folder (bundled models: {known}; "
                         "`harken models` lists models to download)")
    return path


def load_model(path_or_name: str | os.PathLike | None = None, device: str = "cpu",
               backend: str = "torch") -> Model:
    """Load a harken model from a folder, a ``.harken`` file or a bundled model's name.

    With no argument, the bundled English model. Every file's SHA-256 is checked against the
    config; a wrong or corrupt file raises `ModelError` naming it. `backend="onnx"` loads a
    folder written by `harken.export.export_onnx` and runs it with ONNX Runtime
    ("onnx-fp32"/"onnx-int8" pick a variant; docs/export.md).
    """
    if backend != "torch":
        from harken.export import check_backend

        check_backend(backend)
    path = resolve_model_path(path_or_name)
    if path.is_dir():
        model = _load_folder(path, path, device, backend)
    else:
        with tempfile.TemporaryDirectory(prefix="harken-model-") as tmp:
            _read_zip_model(path, Path(tmp))
            model = _load_folder(Path(tmp), path, device, backend)
    entry = bundled_models().get(DEFAULT_MODEL if path_or_name is None else str(path_or_name))
    if model.punctuator is None and entry and isinstance(entry.get("punctuator"), dict):
        from harken.punctuator import load_punctuator

        shipped = entry["punctuator"]
        model.punctuator = load_punctuator(ASSETS / shipped["file"], shipped["sha256"])
    return model


def _load_folder(folder: Path, origin: Path, device: str, backend: str = "torch") -> Model:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from harken.features import FeatureConfig
    from harken.models import build_model, config_from_dict
    from harken.text import load_tokenizer

    config = read_config(folder, origin, backend)
    if backend != "torch":
        from harken.export import load_onnx_network

        network = load_onnx_network(config, folder, origin, backend, device)
        model = Model(config, network, load_tokenizer(config.tokenizer, folder),  # type: ignore[arg-type]
                      path=origin, device=device)
        model.punctuator = _folder_punctuator(folder, config, origin)
        return model
    try:
        tokenizer = load_tokenizer(config.tokenizer, folder)
        network = build_model(config.architecture,
                              config_from_dict(config.architecture, config.network),
                              input_dim=FeatureConfig.from_dict(config.features).feature_dim,
                              vocab_size=tokenizer.vocab_size)
        state = load_file(str(folder / WEIGHTS_FILE))
        network.load_state_dict(state, strict=True)
    except HarkenError:
        raise
    except SafetensorError as exc:
        raise ModelError(f"{origin}: {WEIGHTS_FILE} is not a readable safetensors file "
                         f"({exc})") from exc
    except (RuntimeError, ValueError, KeyError, TypeError, OSError) as exc:
        raise ModelError(f"{origin}: weights do not match the configuration ({exc})") from exc
    model = Model(config, network, tokenizer, path=origin, device=device)
    model.punctuator = _folder_punctuator(folder, config, origin)
    return model


def _folder_punctuator(folder: Path, config: ModelConfig, origin: Path) -> Any:
    """The punctuator a model folder ships (its SHA-256 was checked with the other files);
    its `path` names the model it came from."""
    if PUNCTUATOR_FILE not in config.files:
        return None
    from harken.punctuator import load_punctuator

    punctuator = load_punctuator(folder / PUNCTUATOR_FILE)
    punctuator.path = origin
    return punctuator


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
                             "it with backend='onnx'")
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


def new_model(architecture: str, size: str = "tiny", tokenizer: Any = None,
              features: dict[str, Any] | None = None, **overrides: Any) -> Model:
    """A freshly initialised model (for training) with the given architecture and size."""
    from harken.features import FeatureConfig
    from harken.models import build_model, model_config
    from harken.text import CharTokenizer

    tokenizer = tokenizer or CharTokenizer()
    feature_config = FeatureConfig.from_dict(features or {})
    network_config = model_config(architecture, size, **overrides)
    network = build_model(architecture, network_config, feature_config.n_mels, tokenizer.vocab_size)
    config = ModelConfig(architecture=architecture, size=size, network=network_config.to_dict(),
                         features=feature_config.to_dict(), tokenizer=tokenizer.to_config())
    return Model(config, network, tokenizer)


__all__ = ["Model", "ModelConfig", "load_model", "new_model", "save_model", "split_long_audio"]
