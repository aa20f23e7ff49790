"""A harken model: network + features + tokenizer, and `load_model`.

`Model.transcribe` (files, bytes, arrays; long audio cut by VAD), `transcribe_batch`,
`iter_segments` (long audio lazily), `stream()` (real time) and `decoder()` share one decoding
path (`harken.decoding`). The file format (config.json + safetensors, ``.harken`` archives, the
bundled registry) is `harken.modelfile`.
A model that ships a punctuator (`harken.written.punctuator`) gives written text.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from harken.audio import SAMPLE_RATE, load_audio
from harken.decoding.types import Segment, Transcript
from harken.decoding.ctc_beam import get_decoder
from harken.decoding.greedy import greedy_decode
from harken.decoding.options import DecodeOptions, resolve_options
from harken.errors import HarkenError, ModelError
from harken.interop.onnx_network import check_backend, load_onnx_network
from harken.modelfile import (ASSETS, CONFIG_FILE, DEFAULT_MODEL, PUNCTUATOR_FILE, WEIGHTS_FILE, ModelConfig,
                              bundled_models, read_config, read_zip_model,
                              resolve_model_path, sha256_file)
from harken.streaming import STREAM_OPTIONS, Stream
from harken.text import CharTokenizer, load_tokenizer, save_tokenizer
from harken.vad import split_speech
from harken.written import write_transcript
from harken.written.punctuator import load_punctuator, save_punctuator

if TYPE_CHECKING:  # imported where used: exported models run without PyTorch
    import torch

# Audio is run through the network in batches of at most this many seconds of (padded) audio.
BATCH_SECONDS = 240.0
# Longer inputs are cut into windows of at most this length at the quietest point near the end.
WINDOW_SECONDS = 30.0
_SEARCH_SECONDS = 5.0




class Model:
    """A speech recogniser: audio in, `Transcript` out.

    Build one with `load_model`; `transcribe` takes a path, bytes, file object or array.
    """

    def __init__(self, config: ModelConfig, network: torch.nn.Module, tokenizer: Any,
                 path: Path | None = None, device: str | torch.device = "cpu") -> None:
        import torch

        # torch: exported models (harken.interop.onnx_runtime) load without it
        from harken.features import FeatureConfig, make_featurizer

        self.config = config
        self.tokenizer = tokenizer
        self.path = path
        self.feature_config = FeatureConfig.from_dict(config.features)
        self.featurizer = make_featurizer(self.feature_config)
        self.network = network
        # Restores punctuation and capitals (harken.written.punctuator); None: transcripts stay raw.
        self.punctuator: Any = None
        self.device = torch.device(device)
        self.to(self.device)
        self.eval()

    # -- basic properties -------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.feature_config.sample_rate

    @property
    def is_transducer(self) -> bool:
        """Whether the network is a transducer (RNN-T): decoded by `harken.decoding.transducer_search`
        over encoder frames rather than by CTC search over log-probabilities."""
        return self.config.architecture == "transducer"

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
        # torch: exported models (harken.interop.onnx_runtime) load without it
        from harken.models.registry import count_parameters

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

    def transcribe(self, audio: Any, options: DecodeOptions | None = None, *, vad: str | None = "auto",
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

        return write_transcript(transcript, self.punctuator)

    def writes(self, written: bool | None) -> bool:
        """Whether results are written text: `written`, or by default when a punctuator is set."""
        return self.punctuator is not None if written is None else bool(written)

    def transcribe_batch(self, sources: Iterable[Any], options: DecodeOptions | None = None, *,
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
        decode = self.decoder(options, **decode_options)
        per_input: list[list[Transcript]] = [[] for _ in waves]
        for (index, offset, _), lp in zip(pieces, log_probs):
            per_input[index].append(decode(lp, offset))
        results = [merge_transcripts(parts, len(w) / self.sample_rate)
                   for parts, w in zip(per_input, waves)]
        if self.writes(written):
            results = [self.write(t) for t in results]
        return results

    def iter_segments(self, audio: Any, options: DecodeOptions | None = None, *, vad: str | None = "auto",
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
        decode = self.decoder(options, **decode_options)
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

    def stream(self, options: DecodeOptions | None = None, **kwargs: Any) -> Stream:
        """A real-time `harken.streaming.Stream`: `feed(audio)`, `partial()`, `finish()`.

        Keyword arguments are decoding options (as for `transcribe`) and the stream settings
        `endpoint`, `window_seconds`, `context_seconds`, `step` (see `harken.streaming.Stream`).
        """
        settings = {k: kwargs.pop(k) for k in list(kwargs) if k in STREAM_OPTIONS}
        if self.is_transducer:
            # transducer search runs its predictor with torch: imported only for transducers
            from harken.decoding.transducer_search import transducer_stream_search

            return Stream(self, search=transducer_stream_search(self, options, kwargs), **settings)
        resolved = self.decode_options(options, **kwargs)
        decoder = get_decoder(self.tokenizer, resolved) if resolved is not None else None
        return Stream(self, decoder=decoder, **settings)

    def decode_options(self, options: DecodeOptions | None = None, **overrides: Any
                       ) -> DecodeOptions | None:
        """The `DecodeOptions` this model uses: its stored defaults, then `options`, then keyword
        overrides (None: greedy); see `harken.decoding.resolve_options`."""
        return resolve_options(self, options, overrides)

    def decoder(self, options: DecodeOptions | None = None, **overrides: Any
                ) -> Callable[[np.ndarray, float], Transcript]:
        """The decode function of these options: (the network's output for one piece of audio,
        its time offset in seconds) -> `Transcript`. Built once (LM, lexicon), used many times."""
        if self.is_transducer:
            # transducer search runs its predictor with torch: imported only for transducers
            from harken.decoding.transducer_search import frame_decoder

            return frame_decoder(self, options, overrides)
        resolved = self.decode_options(options, **overrides)
        if resolved is None:
            return lambda lp, offset: greedy_decode(lp, self.tokenizer, self.frame_seconds, offset)
        decoder = get_decoder(self.tokenizer, resolved)
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





def save_model(model: Model, path: str | os.PathLike, training: dict[str, Any] | None = None,
               dtype: torch.dtype | None = None) -> Path:
    """Write `model` to `path` (a folder, or one zip file when the name ends in ``.harken``).

    `dtype=torch.float16` halves the file; weights are cast back to float32 when loaded.
    The write is atomic: a crash leaves either the old model or the new one.
    """
    from safetensors.torch import save_file

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








def load_model(path_or_name: str | os.PathLike | None = None, device: str = "cpu",
               backend: str = "torch") -> Model:
    """Load a harken model from a folder, a ``.harken`` file or a bundled model's name.

    With no argument, the bundled English model. Every file's SHA-256 is checked against the
    config; a wrong or corrupt file raises `ModelError` naming it. `backend="onnx"` loads a
    folder written by `harken.interop.onnx_export.export_onnx` and runs it with ONNX Runtime
    ("onnx-fp32"/"onnx-int8" pick a variant; docs/export.md).
    """
    if backend != "torch":
        check_backend(backend)
    path = resolve_model_path(path_or_name)
    if path.is_dir():
        model = _load_folder(path, path, device, backend)
    else:
        with tempfile.TemporaryDirectory(prefix="harken-model-") as tmp:
            read_zip_model(path, Path(tmp))
            model = _load_folder(Path(tmp), path, device, backend)
    entry = bundled_models().get(DEFAULT_MODEL if path_or_name is None else str(path_or_name))
    if model.punctuator is None and entry and isinstance(entry.get("punctuator"), dict):

        shipped = entry["punctuator"]
        model.punctuator = load_punctuator(ASSETS / shipped["file"], shipped["sha256"])
    return model


def _load_folder(folder: Path, origin: Path, device: str, backend: str = "torch") -> Model:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    # torch: exported models (harken.interop.onnx_runtime) load without it
    from harken.features import FeatureConfig
    # torch: exported models (harken.interop.onnx_runtime) load without it
    from harken.models.registry import build_model, config_from_dict

    config = read_config(folder, origin, backend)
    if backend != "torch":
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

    punctuator = load_punctuator(folder / PUNCTUATOR_FILE)
    punctuator.path = origin
    return punctuator




def new_model(architecture: str, size: str = "tiny", tokenizer: Any = None,
              features: dict[str, Any] | None = None, **overrides: Any) -> Model:
    """A freshly initialised model (for training) with the given architecture and size."""
    # torch: exported models (harken.interop.onnx_runtime) load without it
    from harken.features import FeatureConfig
    # torch: exported models (harken.interop.onnx_runtime) load without it
    from harken.models.registry import build_model, model_config

    tokenizer = tokenizer or CharTokenizer()
    feature_config = FeatureConfig.from_dict(features or {})
    network_config = model_config(architecture, size, **overrides)
    network = build_model(architecture, network_config, feature_config.n_mels, tokenizer.vocab_size)
    config = ModelConfig(architecture=architecture, size=size, network=network_config.to_dict(),
                         features=feature_config.to_dict(), tokenizer=tokenizer.to_config())
    return Model(config, network, tokenizer)


__all__ = ["Model", "ModelConfig", "load_model", "new_model", "save_model", "split_long_audio"]
