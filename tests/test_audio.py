"""harken.audio: every format, rate and channel count -> 16 kHz mono; errors that name the file."""

from __future__ import annotations

import io
import os
import re
import struct
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from harken import audio
from harken.audio import (
    AUDIO_EXTENSIONS,
    SAMPLE_RATE,
    audio_duration,
    float_to_pcm16,
    is_audio_file,
    load_audio,
    pcm16_to_float,
    pcm_frames,
    resample,
)
from harken.errors import AudioError

FREQ = 440.0  # below every codec's low-pass, even MP3 at 8 kHz
AMP = 0.5
SECONDS = 0.5

HAS_MP3 = "MP3" in sf.available_formats()
HAS_OPUS = "OPUS" in sf.available_subtypes("OGG")
try:
    import av
except ImportError:  # the optional extra
    av = None

# (format, subtype, extension, lossy, channel limit, rates the codec accepts or None for any)
CODECS = {
    "wav-u8": ("WAV", "PCM_U8", ".wav", False, None, None),
    "wav-16": ("WAV", "PCM_16", ".wav", False, None, None),
    "wav-24": ("WAV", "PCM_24", ".wav", False, None, None),
    "wav-32": ("WAV", "PCM_32", ".wav", False, None, None),
    "wav-float": ("WAV", "FLOAT", ".wav", False, None, None),
    "wav-double": ("WAV", "DOUBLE", ".wav", False, None, None),
    "flac": ("FLAC", "PCM_16", ".flac", False, None, None),
    "vorbis": ("OGG", "VORBIS", ".ogg", True, None, None),
    "opus": ("OGG", "OPUS", ".opus", True, None, {8000, 12000, 16000, 24000, 48000}),
    "mp3": ("MP3", "MPEG_LAYER_III", ".mp3", True, 2, {8000, 16000, 22050, 32000, 44100, 48000}),
}
RATES = (8000, 16000, 22050, 44100, 48000, 96000)


def _missing(codec: str) -> str | None:
    if codec == "mp3" and not HAS_MP3:
        return "this libsndfile build has no MP3"
    if codec == "opus" and not HAS_OPUS:
        return "this libsndfile build has no Opus"
    return None


def _matrix() -> list:
    """Every codec at every rate it accepts in mono, and at 44.1/48 kHz with 2 and 6 channels."""
    cases = []
    for codec, (_, _, _, _, max_channels, rates) in CODECS.items():
        for rate in RATES:
            for channels in (1, 2, 6):
                if channels > 1 and rate not in (44100, 48000):
                    continue
                if (rates and rate not in rates) or (max_channels and channels > max_channels):
                    continue  # the codec cannot store this (MP3: <= 48 kHz, stereo; Opus: 5 rates)
                reason = _missing(codec)
                marks = [pytest.mark.skip(reason=reason)] if reason else []
                name = f"{codec}-{rate}-{channels}ch"
                cases.append(pytest.param(codec, rate, channels, marks=marks, id=name))
    return cases


def channel_gains(channels: int, lossy: bool = False) -> np.ndarray:
    """Channel c carries the sine scaled by (c + 1) / channels, so that mixing must average.

    Vorbis and Opus code 6 channels as 5.1 whose last channel (LFE) keeps only low bass, far
    below 440 Hz: it stays silent for them.
    """
    gains = (np.arange(channels) + 1) / channels
    if lossy and channels == 6:
        gains[5] = 0.0
    return gains


def sine(rate: int, channels: int = 1, seconds: float = SECONDS, lossy: bool = False) -> np.ndarray:
    """(samples, channels) float64 sine at FREQ with `channel_gains`."""
    t = np.arange(round(rate * seconds)) / rate
    return AMP * np.sin(2 * np.pi * FREQ * t)[:, None] * channel_gains(channels, lossy)


def expected_mono(channels: int, lossy: bool = False) -> np.ndarray:
    """What loading `sine(rate, channels)` must give: the channel average, at 16 kHz."""
    return sine(SAMPLE_RATE, 1)[:, 0] * channel_gains(channels, lossy).mean()


def peak_hz(x: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum)) * rate / len(x)


def write(path: Path, data: np.ndarray, rate: int, codec: str) -> Path:
    fmt, subtype, *_ = CODECS[codec]
    sf.write(path, data, rate, format=fmt, subtype=subtype)
    return path


def encoded(codec: str, rate: int = 16000, seconds: float = 1.0) -> bytes:
    fmt, subtype, *_ = CODECS[codec]
    buffer = io.BytesIO()
    sf.write(buffer, sine(rate, 1, seconds), rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def wav_header(rate: int = 16000, channels: int = 1, bits: int = 16, tag: int = 1,
               data: bytes = b"", data_size: int | None = None) -> bytes:  # fmt: skip
    """A canonical 44-byte RIFF/WAVE header (+ data), written by hand to state anything."""
    size = len(data) if data_size is None else data_size
    align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits)
    riff = (36 + size) & 0xFFFFFFFF
    return b"RIFF" + struct.pack("<I", riff) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + (
        b"data" + struct.pack("<I", size) + data
    )


PCM = (sine(16000)[:, 0] * 32767).astype("<i2").tobytes()  # 0.5 s at 16 kHz
SUPPORTED = "supported: 8000..192000 Hz"  # every rate error says the rate and the range


# --- formats, rates, channels -----------------------------------------------------------------


@pytest.mark.parametrize(("codec", "rate", "channels"), _matrix())
def test_format_matrix(tmp_path: Path, codec: str, rate: int, channels: int) -> None:
    _, _, ext, lossy, _, _ = CODECS[codec]
    path = write(tmp_path / f"sine{ext}", sine(rate, channels, lossy=lossy), rate, codec)
    y = load_audio(path)
    want = expected_mono(channels, lossy)
    assert y.dtype == np.float32 and y.ndim == 1
    # Length: within 1% of 0.5 s at 16 kHz (lossy codecs included: libsndfile trims their delay).
    assert abs(len(y) - len(want)) <= 0.01 * len(want)
    # Frequency: FFT peak within 4 Hz (bins are 2 Hz wide for 0.5 s).
    assert abs(peak_hz(y) - FREQ) <= 4
    # Level: the channel average. RMS within 1% lossless, 15% lossy (codecs reshape the level).
    rms, want_rms = np.sqrt(np.mean(y**2)), np.sqrt(np.mean(want**2))
    assert abs(rms - want_rms) <= (0.15 if lossy else 0.01) * want_rms
    if not lossy:
        # Sample by sample against the ideal 16 kHz sine, 5 ms from the edges (resampler edges):
        # 8-bit steps are 1/128 and resampled quantisation noise peaks near two steps; with 16
        # bits or more what is left is resampling error.
        n, edge = min(len(y), len(want)), SAMPLE_RATE // 200
        err = np.abs(y[edge : n - edge] - want[edge : n - edge]).max()
        assert err <= (2 / 128 if codec == "wav-u8" else 1e-3)


def write_av(
    path: Path, container: str, codec: str, rate: int, channels: int, seconds: float
) -> Path:
    """Encode `sine` with FFmpeg through PyAV."""
    data = sine(rate, channels, seconds).T.astype(np.float32)  # planar: (channels, samples)
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="stereo" if channels == 2 else "mono")
        size = stream.codec_context.frame_size or 1024
        for start in range(0, data.shape[1], size):
            chunk = np.ascontiguousarray(data[:, start : start + size])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=stream.layout.name)
            frame.sample_rate, frame.pts = rate, start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


needs_av = pytest.mark.skipif(av is None, reason="PyAV (the av extra) is not installed")
AV_CASES = [("mp4", "aac", ".m4a", 44100, 2), ("webm", "libopus", ".webm", 48000, 1)]


@needs_av
@pytest.mark.parametrize(("container", "codec", "ext", "rate", "channels"), AV_CASES)
def test_pyav_formats(
    tmp_path: Path, container: str, codec: str, ext: str, rate: int, channels: int
) -> None:
    path = write_av(tmp_path / f"sine{ext}", container, codec, rate, channels, seconds=1.0)
    for source in (path, path.read_bytes()):
        y = load_audio(source)
        # AAC and Opus add encoder delay and padding (up to ~50 ms): length within 1.0..1.1 s.
        assert SAMPLE_RATE <= len(y) <= 1.1 * SAMPLE_RATE
        assert abs(peak_hz(y) - FREQ) <= 2  # 1 Hz bins
        want_rms = AMP * channel_gains(channels).mean() / np.sqrt(2)
        assert abs(np.sqrt(np.mean(y[2000:-2000] ** 2)) - want_rms) <= 0.15 * want_rms
    assert abs(audio_duration(path) - 1.0) <= 0.1
    # A cut MP4 has lost its index (at the end); a cut WebM decodes short of its stated length.
    with pytest.raises(AudioError, match="truncated") as err:
        load_audio(path.read_bytes()[: path.stat().st_size // 2])
    assert err.value.reason.startswith("truncated")


@needs_av
@pytest.mark.parametrize(("container", "codec", "ext", "rate", "channels"), AV_CASES)
def test_pyav_short_clips_are_not_called_truncated(
    tmp_path: Path, container: str, codec: str, ext: str, rate: int, channels: int
) -> None:
    # Encoder delay and padding make a container's stated length exceed what decodes.
    for seconds in (0.02, 0.1, 0.33):
        path = write_av(tmp_path / f"short{ext}", container, codec, rate, channels, seconds)
        assert abs(len(load_audio(path)) / SAMPLE_RATE - seconds) <= 0.05


@needs_av
def test_vbr_mp3_without_a_length_header_loads_to_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if "libmp3lame" not in av.codecs_available:
        pytest.skip("this FFmpeg build has no MP3 encoder")
    # 1 s of noise then 4 s of silence, VBR, no Xing header: libsndfile guesses the length from
    # the first (expensive) frames, about 1 s, and would stop reading there.
    rate, path = 44100, tmp_path / "vbr.mp3"
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, rate)
    x = np.concatenate([noise, np.zeros(4 * rate)]).astype(np.float32)[None]
    with av.open(str(path), "w", format="mp3", options={"write_xing": "0"}) as out:
        stream = out.add_stream("libmp3lame", rate=rate, layout="mono")
        stream.codec_context.qscale = 2
        stream.codec_context.flags |= 2  # AV_CODEC_FLAG_QSCALE: VBR
        for start in range(0, x.shape[1], 1152):
            frame = av.AudioFrame.from_ndarray(x[:, start : start + 1152].copy(), "fltp", "mono")
            frame.sample_rate, frame.pts = rate, start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    assert sf.info(path).frames < 2 * rate  # the guess
    assert abs(len(load_audio(path)) / SAMPLE_RATE - 5) <= 0.05
    assert abs(audio_duration(path) - 5) <= 0.05
    monkeypatch.setitem(sys.modules, "av", None)  # libsndfile only: short, but not "truncated"
    assert len(load_audio(path)) > 0


# --- sources ----------------------------------------------------------------------------------


def test_every_source_kind_gives_the_same_audio(tmp_path: Path) -> None:
    rate = 44100
    pcm = (sine(rate, 2) * 32767).astype(np.int16)
    path = tmp_path / "stereo.wav"
    sf.write(path, pcm, rate, subtype="PCM_16")
    reference = load_audio(str(path))
    data = path.read_bytes()
    with open(path, "rb") as handle:
        from_handle = load_audio(handle)
    sources = [path, data, bytearray(data), memoryview(data), io.BytesIO(data)]
    results = [load_audio(s) for s in sources] + [from_handle]
    # int16 arrays are scaled by 1/32768 exactly as libsndfile scales 16-bit PCM.
    results += [load_audio(pcm, source_rate=rate), load_audio((pcm, rate))]
    results += [load_audio(pcm.astype(np.float32) / 32768, source_rate=rate)]
    for y in results:
        np.testing.assert_array_equal(y, reference)
    assert len(reference) == round(SECONDS * SAMPLE_RATE)


def test_arrays_scale_mix_and_resample() -> None:
    x = sine(16000)[:, 0]
    np.testing.assert_allclose(load_audio(x.astype(np.float64)), x, atol=1e-7)  # 16 kHz: kept
    assert load_audio(np.array([2**30, -(2**31)], dtype=np.int32)).tolist() == [0.5, -1.0]
    assert load_audio(np.array([16384, -32768], dtype=np.int16)).tolist() == [0.5, -1.0]
    stereo = np.stack([x, np.zeros_like(x)], axis=1)  # (samples, channels): averaged
    np.testing.assert_allclose(load_audio(stereo), x / 2, atol=1e-7)
    y = load_audio(sine(48000)[:, 0], source_rate=48000)
    assert len(y) == round(SECONDS * SAMPLE_RATE) and abs(peak_hz(y) - FREQ) <= 4
    assert len(load_audio(x, 8000, source_rate=16000)) == len(x) // 2
    x32 = x.astype(np.float32)
    assert load_audio(x32) is not x32  # never the caller's buffer


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        (np.zeros(0, np.float32), "no audio samples"),
        (np.array([0.0, np.nan], np.float32), "NaN"),
        (np.array([0.0, np.inf]), "infinite"),
        (np.zeros(10, np.uint8), "unsupported sample type uint8"),
        (np.zeros((2, 2, 2), np.float32), "expected (samples,) or (samples, channels)"),
        ((np.zeros(1600, np.float32), 4000), f"unsupported sample rate 4000 Hz ({SUPPORTED})"),
    ],
)
def test_bad_arrays(source: object, reason: str) -> None:
    with pytest.raises(AudioError) as err:
        load_audio(source)  # type: ignore[arg-type]
    assert str(err.value).startswith("<array shape (") and reason in err.value.reason


def test_bad_arguments() -> None:
    x = np.zeros(160, np.float32)
    with pytest.raises(ValueError, match="rate only once"):
        load_audio((x, 16000), source_rate=16000)
    with pytest.raises(ValueError, match="only for arrays"):
        load_audio(b"RIFF", source_rate=16000)
    with pytest.raises(ValueError, match="sample_rate must be"):
        load_audio(x, 4000)
    with pytest.raises(TypeError, match="int"):
        load_audio(123)  # type: ignore[arg-type]
    with pytest.raises(AudioError, match="binary mode"):
        load_audio(io.StringIO("RIFF"))  # type: ignore[arg-type]


def test_resample() -> None:
    x = sine(48000)[:, 0].astype(np.float32)
    np.testing.assert_array_equal(resample(x, 48000, 48000), x)
    y = resample(x, 48000, 16000)
    assert y.dtype == np.float32 and len(y) == len(x) // 3 and abs(peak_hz(y) - FREQ) <= 4
    np.testing.assert_allclose(y[100:-100], sine(16000)[100:-100, 0], atol=1e-3)
    with pytest.raises(ValueError, match="positive"):
        resample(x, 0, 16000)


# --- errors name the file and the reason ------------------------------------------------------


def _truncated(codec: str) -> bytes:
    data = encoded(codec)
    return data[: len(data) // 2]


# case: (bytes of the file, extension, the reason the message must give)
ERROR_CASES = {
    "empty": (lambda: b"", ".wav", "empty file (0 bytes)"),
    "random bytes": (lambda: np.random.default_rng(0).bytes(4096), ".wav", "not an audio file"),
    "text as .wav": (lambda: b"words\n" * 40, ".wav", "not an audio file (it looks like text)"),
    "truncated wav": (lambda: _truncated("wav-16"), ".wav", "truncated: the header declares 16000"),
    "truncated flac": (lambda: _truncated("flac"), ".flac", "truncated or corrupt FLAC data"),
    "truncated ogg": (lambda: _truncated("vorbis"), ".ogg", "truncated or corrupt OGG data"),
    "truncated mp3": (lambda: _truncated("mp3"), ".mp3", "truncated: the header declares 16000"),
    "header-only wav": (lambda: wav_header(), ".wav", "no audio samples"),
    "nan": (lambda: _float_wav(np.nan), ".wav", "contains NaN or infinite sample values"),
    "inf": (lambda: _float_wav(-np.inf), ".wav", "contains NaN or infinite sample values"),
    "rate 4000": (lambda: wav_header(rate=4000, data=PCM), ".wav", f"rate 4000 Hz ({SUPPORTED})"),
    "rate 0": (lambda: wav_header(rate=0, data=PCM), ".wav", f"rate 0 Hz ({SUPPORTED})"),
    "zero channels": (lambda: wav_header(channels=0, data=PCM), ".wav", "declares zero channels"),
    "unknown codec": (lambda: wav_header(tag=0x1234, data=PCM), ".wav", "unsupported codec (WAV"),
}


def _float_wav(bad: float) -> bytes:
    x = sine(16000)[:, 0].astype(np.float32)
    x[100] = bad
    buffer = io.BytesIO()
    sf.write(buffer, x, 16000, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_files(tmp_path: Path, case: str) -> None:
    make, ext, reason = ERROR_CASES[case]
    if case == "truncated mp3" and not HAS_MP3:
        pytest.skip("this libsndfile build has no MP3")
    path = tmp_path / f"bad file{ext}"
    path.write_bytes(make())
    with pytest.raises(AudioError) as err:
        load_audio(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and reason in message
    assert err.value.source == str(path) and reason in err.value.reason
    if path.stat().st_size:  # the same reason for the bytes, which are named by their size
        with pytest.raises(AudioError, match=f"^<{path.stat().st_size} bytes>: "):
            load_audio(path.read_bytes())


def test_paths_that_are_not_audio_files(tmp_path: Path) -> None:
    cases = {tmp_path / "missing.wav": "file not found", tmp_path: "is a directory"}
    if hasattr(os, "mkfifo"):  # reading a FIFO could block forever
        os.mkfifo(tmp_path / "pipe.wav")
        cases[tmp_path / "pipe.wav"] = "not a regular file"
    for path, reason in cases.items():
        for load in (load_audio, audio_duration):
            for source in (path, str(path)):
                with pytest.raises(AudioError, match=f"^{re.escape(str(path))}: {reason}"):
                    load(source)


def test_errors_chain_the_library_error(tmp_path: Path) -> None:
    path = tmp_path / "x.flac"
    path.write_bytes(_truncated("flac"))
    with pytest.raises(AudioError) as err:
        load_audio(path)
    assert isinstance(err.value.__cause__, sf.LibsndfileError)
    assert isinstance(err.value, ValueError)  # callers catching ValueError still work


def test_without_pyav_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
    with pytest.raises(AudioError, match=r"not an audio file.*pip install 'harken\[av\]'"):
        load_audio(np.random.default_rng(1).bytes(4096))
    with pytest.raises(AudioError, match=r"truncated or corrupt MP4/M4A data.*harken\[av\]"):
        load_audio(b"\0\0\0\x20ftypM4A " + bytes(64))
    with pytest.raises(AudioError, match=r"unsupported codec \(WAV format tag 0x1234\);.*av\]"):
        load_audio(wav_header(tag=0x1234, data=PCM))


def test_huge_declared_length_reads_only_what_is_there() -> None:
    # A 2 GB 'data' chunk or 2**36 FLAC samples in the header, 0.5-1 s in the file: decoding
    # goes block by block, so memory follows the data, and the shortfall is reported.
    flac = bytearray(encoded("flac"))
    flac[21:26] = (flac[21] | 0x0F).to_bytes(1, "big") + b"\xff" * 4  # STREAMINFO total samples
    cases = {wav_header(data=PCM, data_size=2_000_000_000): "truncated", bytes(flac): "truncated"}
    for data, reason in cases.items():
        tracemalloc.start()
        try:
            with pytest.raises(AudioError, match=reason):
                load_audio(data)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 20e6


def test_streamed_wav_with_unknown_length_loads() -> None:
    # Recorders writing to a pipe put 0xFFFFFFFF (or 0x7FFFFFFF) in the 'data' size.
    for size in (0xFFFFFFFF, 0x7FFFFFFF):
        y = load_audio(wav_header(data=PCM, data_size=size))
        assert len(y) == len(PCM) // 2


def test_duration_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audio, "MAX_DURATION_S", 0.25)
    with pytest.raises(AudioError, match="longer than"):
        load_audio(encoded("flac", seconds=1.0))


# --- duration, extensions ---------------------------------------------------------------------


def test_audio_duration(tmp_path: Path) -> None:
    for codec, rate in (("wav-16", 44100), ("flac", 22050), ("vorbis", 48000)):
        path = write(tmp_path / f"a{CODECS[codec][2]}", sine(rate, 2, seconds=1.25), rate, codec)
        assert audio_duration(path) == pytest.approx(1.25, abs=1e-3)
    bad = {
        "truncated.wav": (_truncated("wav-16"), "truncated"),
        "header.wav": (wav_header(), "no audio samples"),
        "rate.wav": (wav_header(rate=4000, data=PCM), "unsupported sample rate 4000 Hz"),
        "empty.flac": (b"", "empty file"),
        "text.mp3": (b"hello\n" * 100, "not an audio file"),
    }
    for name, (data, reason) in bad.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(AudioError, match=f"^{re.escape(str(tmp_path / name))}: {reason}"):
            audio_duration(tmp_path / name)


def test_audio_extensions() -> None:
    assert all(ext == ext.lower() and ext.startswith(".") for ext in AUDIO_EXTENSIONS)
    assert {".wav", ".flac", ".ogg", ".opus", ".mp3", ".m4a", ".webm"} <= AUDIO_EXTENSIONS
    assert is_audio_file("a/B.WAV") and is_audio_file(Path("x.m4a"))
    assert not any(map(is_audio_file, ["notes.txt", "wav", "x.wav.json", "dir/"]))


# --- PCM frames -------------------------------------------------------------------------------


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
@pytest.mark.parametrize("rate", [8000, 16000, 32000, 48000])
def test_pcm_frames_sizes_and_count(frame_ms: int, rate: int) -> None:
    x = sine(rate, seconds=1.005)[:, 0]  # not a whole number of frames
    samples = frame_ms * rate // 1000
    frames = list(pcm_frames(x, frame_ms, rate))
    assert len(frames) == len(x) // samples
    assert all(isinstance(f, bytes) and len(f) == 2 * samples for f in frames)
    padded = list(pcm_frames(x, frame_ms, rate, pad_last=True))
    assert len(padded) == len(frames) + 1 and len(padded[-1]) == 2 * samples
    tail = len(x) - len(frames) * samples
    assert padded[-1][2 * tail :] == bytes(2 * (samples - tail))
    assert b"".join(padded)[: 2 * len(x)] == float_to_pcm16(x)


def test_pcm_frames_inputs_agree() -> None:
    x = sine(16000)[:, 0]
    pcm = float_to_pcm16(x)
    as_int16 = np.frombuffer(pcm, dtype="<i2")
    from_float = list(pcm_frames(x))
    for other in (pcm, as_int16, bytearray(pcm), memoryview(pcm)):
        assert list(pcm_frames(other)) == from_float
    assert len(from_float) == 16  # 0.5 s is 16 2/3 frames of 30 ms
    assert list(pcm_frames(pcm, pad_last=True))[:16] == from_float
    assert list(pcm_frames(b"")) == [] and list(pcm_frames(b"", pad_last=True)) == []


def test_pcm_frames_bad_input() -> None:
    with pytest.raises(ValueError, match="whole number of samples"):
        pcm_frames(np.zeros(100), 7, 22050)  # raised at the call, not on first iteration
    with pytest.raises(ValueError, match="whole number"):
        pcm_frames(np.zeros(100), 0)
    with pytest.raises(AudioError, match="odd number of bytes"):
        pcm_frames(b"\0\0\0")
    with pytest.raises(AudioError, match="got int32"):
        pcm_frames(np.zeros(10, np.int32))
    with pytest.raises(AudioError, match="mono"):
        pcm_frames(np.zeros((10, 2)))


@settings(max_examples=200, deadline=None)
@given(arrays(np.float32, st.integers(0, 2000), elements=st.floats(-1, 1, width=32)))
def test_pcm16_round_trip(x: np.ndarray) -> None:
    y = pcm16_to_float(float_to_pcm16(x))
    assert y.dtype == np.float32 and len(y) == len(x)
    assert np.all(np.abs(y - x) <= 1 / 32768)


def test_pcm16_exact_and_clipped() -> None:
    ints = np.array([-32768, -1, 0, 1, 32767], dtype=np.int16)
    assert float_to_pcm16(pcm16_to_float(ints)) == ints.astype("<i2").tobytes()
    assert pcm16_to_float(ints.tobytes()).tolist() == (ints / 32768).tolist()
    clipped = np.frombuffer(float_to_pcm16(np.array([2.0, -2.0, 1.0, -1.0])), "<i2")
    assert clipped.tolist() == [32767, -32768, 32767, -32768]
