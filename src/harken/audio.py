"""Audio input: any file, bytes or array -> float32 mono at `SAMPLE_RATE`; resampling; PCM frames.

soundfile (libsndfile) reads WAV, FLAC, OGG Vorbis/Opus, MP3, AIFF and friends; PyAV (the `av`
extra) reads what libsndfile cannot (m4a/aac, webm, mp4, ...). Every failure is an `AudioError`
that names the input and the reason.
"""

from __future__ import annotations

import importlib.util
import io
import itertools
import os
import stat
import struct
from collections.abc import Iterator
from types import ModuleType
from typing import Any, BinaryIO, NamedTuple, Union

import numpy as np
import soundfile as sf
import soxr

from harken.errors import AudioError

SAMPLE_RATE = 16000  # what every harken model hears
MIN_SAMPLE_RATE = 8000  # telephone
MAX_SAMPLE_RATE = 192000  # studio
# soxr "HQ" (20-bit precision, ~120 dB stopband) is far below 16-bit quantisation noise (96 dB)
# and is librosa's default; "VHQ" costs more CPU for no visible change in log-mel features.
RESAMPLE_QUALITY = "HQ"
# load_audio holds its result in memory (24 h at 16 kHz is 5.5 GB of float32). A tiny compressed
# file can decode to days of audio: longer input is refused instead of exhausting memory.
MAX_DURATION_S = 24 * 3600
# A header declaring more audio than can be decoded means truncated data; the slack tolerates
# encoders whose declared length is slightly off.
TRUNCATION_TOLERANCE = 0.01
_AV_LENGTH_SLACK_S = 0.1  # and, for PyAV's container lengths, encoder delay and padding

SOUNDFILE_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au",
     ".snd", ".caf", ".w64", ".rf64", ".sph", ".nist"}
)  # fmt: skip
AV_EXTENSIONS = frozenset(
    {".m4a", ".aac", ".mp4", ".webm", ".mka", ".mkv", ".mov", ".wma", ".amr", ".3gp", ".ac3"}
)
AUDIO_EXTENSIONS = SOUNDFILE_EXTENSIONS | AV_EXTENSIONS
"""Lowercased extensions harken treats as audio when given a directory (PyAV reads the AV ones)."""

Encoded = Union[str, os.PathLike[str], bytes, bytearray, memoryview, BinaryIO]
AudioSource = Union[Encoded, np.ndarray, tuple[np.ndarray, int]]

_BLOCK_FRAMES = 1 << 16  # frames decoded at a time: memory follows the data, never the header
_HEAD_BYTES = 1 << 16  # bytes read to find a WAV header's 'fmt ' and 'data' chunks
_WAV_UNKNOWN_SIZE = 0x7FFF0000  # 'data' sizes from here up are "unknown length" (streamed WAV)
_WAV_LINEAR_TAGS = frozenset({0x0001, 0x0003, 0x0006, 0x0007, 0xFFFE})  # PCM, float, A/mu-law
# libsndfile's "supported file format but file is malformed": the one failure to open after which
# PyAV gets no try (FFmpeg would decode what is left of a cut file without a word).
_SF_MALFORMED = 3
_MAGIC = (
    (0, b"RIFF", "WAV"), (0, b"RF64", "WAV"), (0, b"fLaC", "FLAC"), (0, b"OggS", "OGG"),
    (0, b"ID3", "MP3"), (0, b"FORM", "AIFF"), (0, b"caff", "CAF"), (4, b"ftyp", "MP4/M4A"),
    (0, b"\x1aE\xdf\xa3", "Matroska/WebM"), (0, b"\xff\xfb", "MP3"), (0, b"\xff\xf3", "MP3"),
    (0, b"\xff\xe3", "MP3"),
)  # fmt: skip


def is_audio_file(path: str | os.PathLike[str]) -> bool:
    """Whether `path` has one of `AUDIO_EXTENSIONS` (by name only; the content is not read)."""
    return os.path.splitext(os.fspath(path))[1].lower() in AUDIO_EXTENSIONS


def load_audio(
    source: AudioSource, sample_rate: int = SAMPLE_RATE, *, source_rate: int | None = None
) -> np.ndarray:
    """Load audio as a 1-D float32 mono array at `sample_rate` (16 kHz by default).

    `source` is a path, the bytes of an encoded file, a binary file object (read to the end), a
    numpy array of samples at `source_rate` (default: `sample_rate`), or a tuple `(array, rate)`.
    Arrays are `(samples,)` or `(samples, channels)`; int16 is scaled by 1/32768, int32 by
    1/2**31, floats are kept. Channels are averaged; 8 to 192 kHz is resampled with soxr.

    Raises `AudioError` (naming the source and the reason) for a missing, empty, unreadable,
    truncated or corrupt input, an unsupported codec or sample rate, no samples, or NaN/inf.
    """
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise ValueError(f"sample_rate must be {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE}: {sample_rate}")
    if isinstance(source, tuple):
        if len(source) != 2 or source_rate is not None:
            raise ValueError("a tuple source is (array, rate); give the rate only once")
        array = np.asarray(source[0])
        return _load_array(array, array, int(source[1]), sample_rate)
    if isinstance(source, np.ndarray):
        rate = sample_rate if source_rate is None else source_rate
        return _load_array(source, source, rate, sample_rate)
    if source_rate is not None:
        raise ValueError("source_rate is only for arrays: an encoded file states its own rate")
    if isinstance(source, os.PathLike):
        source = os.fspath(source)  # messages name the whole path, not only the file name
    file, size = _open_input(source)
    head = _read_head(source, file)
    try:
        sound = sf.SoundFile(_reopen(file))
    except sf.LibsndfileError as exc:
        return _load_av(source, file, head, sample_rate, exc)
    declared = sound.frames
    if sound.format == "MP3" and not _mp3_states_length(head):
        # libsndfile guesses this length from the first frame's bitrate and stops reading there:
        # a VBR file could lose most of its audio. FFmpeg reads to the end.
        declared = 0
        if importlib.util.find_spec("av") is not None:
            sound.close()
            return _load_av(source, file, head, sample_rate, None)
    with sound:
        _check_truncation(source, sound.frames, _wav_declared_frames(head, size))
        sink = _Sink(source, sound.samplerate, sample_rate)
        try:
            while len(block := sound.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)):
                sink.add(block)
        except sf.SoundFileError as exc:
            detail = str(getattr(exc, "error_string", exc)).removeprefix("Error : ").rstrip(".")
            reason = f"truncated or corrupt {_kind(head) or 'audio'} data ({detail})"
            raise AudioError(source, reason) from exc
    _check_truncation(source, sink.frames, declared)
    return sink.finish()


def audio_duration(path: str | os.PathLike[str]) -> float:
    """Duration of an audio file in seconds, from its header when the format states it.

    Raises `AudioError` for the bad files `load_audio` rejects, as far as the header shows them.
    """
    path = os.fspath(path)
    file, size = _open_input(path)
    head = _read_head(path, file)
    try:
        info = sf.info(_reopen(file))
    except sf.LibsndfileError as exc:
        return _av_duration(path, file, head, exc)
    _check_rate(path, info.samplerate)
    _check_truncation(path, info.frames, _wav_declared_frames(head, size))
    if info.frames == 0:
        raise AudioError(path, "no audio samples (zero-length audio)")
    if info.format == "MP3" and not _mp3_states_length(head):  # a guess: decode and count
        return len(load_audio(path)) / SAMPLE_RATE
    return info.frames / info.samplerate


def resample(audio: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Resample float audio `(samples,)` or `(samples, channels)` with soxr; identity when equal."""
    if orig_rate <= 0 or new_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_rate} -> {new_rate}")
    audio = np.asarray(audio, dtype=np.float32)
    if orig_rate == new_rate:
        return audio
    return soxr.resample(audio, orig_rate, new_rate, quality=RESAMPLE_QUALITY)


def pcm16_to_float(data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """16-bit little-endian PCM (bytes or a 1-D int16 array) -> float32 in [-1, 1)."""
    return _as_int16(data).astype(np.float32) / np.float32(32768)


def float_to_pcm16(audio: np.ndarray) -> bytes:
    """Float audio -> 16-bit little-endian PCM bytes (x 32768, rounded, clipped to [-1, 1])."""
    scaled = np.rint(np.asarray(audio, dtype=np.float64) * 32768)
    return np.clip(scaled, -32768, 32767).astype("<i2").tobytes()


def pcm_frames(
    audio: np.ndarray | bytes | bytearray | memoryview,
    frame_ms: int = 30,
    sample_rate: int = SAMPLE_RATE,
    *,
    pad_last: bool = False,
) -> Iterator[bytes]:
    """Split mono audio into 16-bit little-endian PCM frames of exactly `frame_ms` milliseconds.

    `audio` is a float array, an int16 array or PCM bytes. WebRTC VAD takes 10, 20 or 30 ms frames.
    A final partial frame is dropped, or zero-padded to a whole frame when `pad_last` is true.
    """
    if frame_ms <= 0 or (frame_ms * sample_rate) % 1000:
        raise ValueError(f"{frame_ms} ms at {sample_rate} Hz is not a whole number of samples")
    if isinstance(audio, np.ndarray) and audio.dtype.kind == "f":
        if audio.ndim != 1:
            raise AudioError(audio, "expected mono audio (a 1-D array)")
        pcm = float_to_pcm16(audio)
    else:
        pcm = _as_int16(audio).tobytes()
    return _split(pcm, 2 * frame_ms * sample_rate // 1000, pad_last)


def _split(pcm: bytes, frame_bytes: int, pad_last: bool) -> Iterator[bytes]:
    whole = len(pcm) - len(pcm) % frame_bytes
    for start in range(0, whole, frame_bytes):
        yield pcm[start : start + frame_bytes]
    if pad_last and whole < len(pcm):
        yield pcm[whole:].ljust(frame_bytes, b"\0")


def _as_int16(data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    if isinstance(data, np.ndarray):
        if data.dtype != np.int16 or data.ndim != 1:
            raise AudioError(data, f"expected float or 1-D int16 samples, got {data.dtype}")
        return data.astype("<i2", copy=False)
    if len(data) % 2:
        raise AudioError(data, "odd number of bytes: 16-bit PCM has 2 bytes per sample")
    return np.frombuffer(data, dtype="<i2")


class _Sink:
    """Collects decoded blocks: mixes them to mono, checks the values, resamples as it goes."""

    def __init__(self, source: object, rate: int, target_rate: int) -> None:
        _check_rate(source, rate)
        self.source, self.rate, self.frames = source, rate, 0
        self.parts: list[np.ndarray] = []
        self.stream = None
        if rate != target_rate:
            self.stream = soxr.ResampleStream(rate, target_rate, 1, quality=RESAMPLE_QUALITY)

    def add(self, block: np.ndarray) -> None:
        """`block` is `(frames, channels)` float32."""
        mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
        if not np.isfinite(mono).all():
            raise AudioError(self.source, "contains NaN or infinite sample values")
        self.frames += len(mono)
        if self.frames > MAX_DURATION_S * self.rate:
            hours = f"{MAX_DURATION_S / 3600:g}"
            raise AudioError(self.source, f"longer than {hours} hours, the most load_audio reads")
        self.parts.append(mono if self.stream is None else self.stream.resample_chunk(mono))

    def finish(self) -> np.ndarray:
        if self.frames == 0:
            raise AudioError(self.source, "no audio samples (zero-length audio)")
        if self.stream is not None:
            self.parts.append(self.stream.resample_chunk(np.zeros(0, np.float32), last=True))
        audio = np.ascontiguousarray(np.concatenate(self.parts), dtype=np.float32)
        if len(audio) == 0:  # e.g. one sample at 44.1 kHz is less than one at 16 kHz
            reason = f"too short: {self.frames} sample(s) at {self.rate} Hz give no samples"
            raise AudioError(self.source, f"{reason} at the target rate")
        return audio


def _load_array(source: object, array: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    scale = {np.dtype(np.int16): 1 / 32768, np.dtype(np.int32): 1 / 2**31}.get(array.dtype)
    if scale is None and array.dtype.kind != "f":
        raise AudioError(source, f"unsupported sample type {array.dtype} (use float, int16, int32)")
    if array.ndim not in (1, 2) or (array.ndim == 2 and array.shape[1] == 0):
        raise AudioError(source, f"expected (samples,) or (samples, channels), got {array.shape}")
    block = (array[:, None] if array.ndim == 1 else array).astype(np.float32)
    if scale is not None:
        block *= np.float32(scale)
    sink = _Sink(source, rate, target_rate)
    if len(block):
        sink.add(block)
    return sink.finish()


def _check_rate(source: object, rate: int) -> None:
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        supported = f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz"
        raise AudioError(source, f"unsupported sample rate {rate} Hz (supported: {supported})")


def _check_truncation(source: object, frames: int, declared: int, slack: int = 0) -> None:
    if frames < declared * (1 - TRUNCATION_TOLERANCE) - slack:
        reason = f"truncated: the header declares {declared} frames but only {frames} are present"
        raise AudioError(source, reason)


def _open_input(source: object) -> tuple[str | bytes, int]:
    """A checked path, or the bytes of the input; and its size in bytes."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            info = os.stat(path)
        except FileNotFoundError as exc:
            raise AudioError(source, "file not found") from exc
        except OSError as exc:
            raise AudioError(source, f"cannot read the file ({exc.strerror})") from exc
        if stat.S_ISDIR(info.st_mode):
            raise AudioError(source, "is a directory, not an audio file")
        if not stat.S_ISREG(info.st_mode):  # a FIFO or a device may block or never end
            raise AudioError(source, "not a regular file")
        if info.st_size == 0:
            raise AudioError(source, "empty file (0 bytes)")
        return path, info.st_size
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "read"):
        data = source.read()
        if not isinstance(data, bytes):
            raise AudioError(source, "a file object must be opened in binary mode ('rb')")
    else:
        raise TypeError(f"cannot load audio from {type(source).__name__}")
    if not data:
        raise AudioError(source, "empty file (0 bytes)")
    return data, len(data)


def _reopen(file: str | bytes, reader: str = "soundfile") -> str | bytes | BinaryIO:
    """What a decoder opens: the bytes as a file object, or the path. A path that is not valid
    UTF-8 (undecodable bytes kept as surrogates) goes to libsndfile as bytes and to FFmpeg as an
    open file, since both would otherwise fail to encode it."""
    if isinstance(file, bytes):
        return io.BytesIO(file)
    try:
        file.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(file) if reader == "soundfile" else open(file, "rb")
    return file


def _read_head(source: object, file: str | bytes) -> bytes:
    if isinstance(file, bytes):
        return file[:_HEAD_BYTES]
    try:
        with open(file, "rb") as handle:
            return handle.read(_HEAD_BYTES)
    except OSError as exc:
        raise AudioError(source, f"cannot read the file ({exc.strerror})") from exc


class _WavHeader(NamedTuple):
    tag: int
    channels: int
    rate: int
    block_align: int
    data_offset: int  # -1 when the 'data' chunk is not within the head
    data_size: int


def _wav_header(head: bytes) -> _WavHeader | None:
    """The 'fmt ' and 'data' fields of a RIFF/WAVE header, read by hand to explain libsndfile."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, fmt = 12, None
    while pos + 8 <= len(head):
        chunk, size = head[pos : pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        if chunk == b"fmt " and pos + 22 <= len(head):
            tag, channels, rate, _, block_align = struct.unpack_from("<HHIIH", head, pos + 8)
            fmt = (tag, channels, rate, block_align)
        elif chunk == b"data":
            return _WavHeader(*fmt, pos + 8, size) if fmt else None
        pos += 8 + size + (size & 1)
    return _WavHeader(*fmt, -1, 0) if fmt else None


def _wav_declared_frames(head: bytes, size: int) -> int:
    """Frames a linear WAV's 'data' chunk declares beyond the end of the file, else 0.

    libsndfile quietly shortens such a chunk to what is present; this is how truncation shows.
    """
    wav = _wav_header(head)
    if wav is None or wav.tag not in _WAV_LINEAR_TAGS or not wav.block_align or wav.data_offset < 0:
        return 0
    if wav.data_size >= _WAV_UNKNOWN_SIZE or wav.data_offset + wav.data_size <= size:
        return 0
    return wav.data_size // wav.block_align


def _mp3_states_length(head: bytes) -> bool:
    """Whether an MP3's first frame is a Xing/Info/VBRI header stating the length."""
    start = 0
    if head[:3] == b"ID3":  # skip the ID3v2 tag: 10 bytes + a 28-bit "syncsafe" size
        start = 10 + sum((b & 0x7F) << (21 - 7 * i) for i, b in enumerate(head[6:10]))
    first = head[start : start + 256]
    return any(tag in first for tag in (b"Xing", b"Info", b"VBRI"))


def _kind(head: bytes) -> str | None:
    """The container a file's first bytes announce, if any."""
    for offset, magic, kind in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return kind
    return None


def _unreadable(head: bytes, wav: _WavHeader | None) -> str:
    """Why neither libsndfile nor FFmpeg could open a file."""
    if wav is not None:
        return f"unsupported codec (WAV format tag 0x{wav.tag:04x})"
    if kind := _kind(head):
        return f"truncated or corrupt {kind} data"
    if b"\0" not in head[:1024]:
        try:
            head[:1024].decode("utf-8")
            return "not an audio file (it looks like text)"
        except UnicodeDecodeError:
            pass
    return "not an audio file, or an unknown audio format"


def _open_av(
    source: object, file: str | bytes, head: bytes, sf_exc: sf.LibsndfileError | None
) -> tuple[ModuleType, Any]:
    """Open with PyAV what libsndfile could not (`sf_exc`) or should not read: (the av module,
    a container with an audio stream)."""
    wav = _wav_header(head) if sf_exc is not None else None
    if wav is not None:  # a WAV encoding libsndfile lacks; FFmpeg may have it
        _check_rate(source, wav.rate)
        if wav.channels == 0:
            raise AudioError(source, "the WAV header declares zero channels") from sf_exc
    elif sf_exc is not None and sf_exc.code == _SF_MALFORMED:
        raise AudioError(source, f"truncated or corrupt {_kind(head) or 'audio'} data") from sf_exc
    try:
        import av
    except ImportError as exc:
        hint = "soundfile cannot read it and PyAV, which reads more formats, is not installed"
        reason = f"{_unreadable(head, wav)}; {hint}: pip install 'harken[av]'"
        raise AudioError(source, reason) from exc
    try:
        container = av.open(_reopen(file, "av"), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError) as exc:
        raise AudioError(source, _unreadable(head, wav)) from exc
    streams, name = container.streams.audio, container.format.name
    if not streams or streams[0].codec_context is None or not streams[0].codec_context.sample_rate:
        container.close()
        reason = f"no audio stream in this {name} file"
        if streams and streams[0].codec_context is None:  # no decoder for it
            reason = _unreadable(head, wav) if wav else f"unsupported codec in this {name} file"
        elif streams:
            reason = f"truncated or corrupt {_kind(head) or name} data (no sample rate found)"
        raise AudioError(source, reason) from sf_exc
    return av, container


def _load_av(
    source: object,
    file: str | bytes,
    head: bytes,
    target_rate: int,
    sf_exc: sf.LibsndfileError | None,
) -> np.ndarray:
    av, container = _open_av(source, file, head, sf_exc)
    with container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        sink = _Sink(source, rate, target_rate)
        declared = round(_av_seconds(av, container, head) * rate)
        resampler = av.AudioResampler(format="fltp")  # float, planar; layout and rate unchanged
        try:
            for frame in itertools.chain(container.decode(stream), [None]):  # None: flush
                for out in resampler.resample(frame):
                    sink.add(out.to_ndarray().T)
        except av.error.DecoderNotFoundError as exc:
            raise AudioError(source, f"unsupported codec ({stream.codec_context.name})") from exc
        except av.error.FFmpegError as exc:
            reason = f"truncated or corrupt {_kind(head) or 'audio'} data"
            raise AudioError(source, f"{reason} ({getattr(exc, 'strerror', None) or exc})") from exc
    _check_truncation(source, sink.frames, declared, slack=round(_AV_LENGTH_SLACK_S * rate))
    return sink.finish()


def _av_seconds(av: ModuleType, container: Any, head: bytes) -> float:
    """The audio length a container states: the stream's, or the whole file's when audio is all
    it holds (a video track may be longer); 0 when unknown or guessed (MP3 without a header)."""
    if container.format.name == "mp3" and not _mp3_states_length(head):
        return 0.0
    stream = container.streams.audio[0]
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if len(container.streams) == 1 and container.duration:
        return float(container.duration / av.time_base)
    return 0.0


def _av_duration(
    source: object, file: str | bytes, head: bytes, sf_exc: sf.LibsndfileError
) -> float:
    av, container = _open_av(source, file, head, sf_exc)
    with container:
        _check_rate(source, container.streams.audio[0].codec_context.sample_rate)
        seconds = _av_seconds(av, container, head)
    if seconds > 0:
        return seconds
    # No length stated (some streamed containers): decode to count.
    return len(_load_av(source, file, head, SAMPLE_RATE, sf_exc)) / SAMPLE_RATE
