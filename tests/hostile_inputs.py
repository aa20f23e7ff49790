"""A corpus of broken and hostile inputs for every place input enters harken.

Each `Case` writes one input into a folder and says what must happen: an error of a given type
whose message names the input and matches `reason`, or a correct result checked by `check`.
`tests/test_hostile.py` runs the corpus through `load_audio`, `load_model`, manifest and config
parsing, `harken transcribe`, `harken evaluate` and `harken train`; `scripts/fuzz.py` reuses the
builders as seeds. Everything is generated: the corpus needs no data files and no network.

Surfaces: "audio" (`load_audio`), "model" (`load_model`), "manifest" (`read_manifest`),
"config" (`train.load_config`), "text" (`text.read_texts`).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import soundfile as sf

from harken.errors import AudioError, ConfigError, ManifestError, ModelError

RATE = 16000
SECONDS = 0.5
# The good signal: a 440 Hz tone at half scale, quantised to 16 bits.
TONE = np.round(0.5 * np.sin(2 * np.pi * 440 * np.arange(int(RATE * SECONDS)) / RATE) * 32767)
TONE16 = TONE.astype(np.int16)
PWNED = "PWNED"  # the file a pickle payload creates when it runs: it must never appear


@dataclass(frozen=True)
class Case:
    """One hostile input. `error` None means the input is valid and `check(result, path)` holds."""

    name: str
    surface: str
    build: Callable[[Path], Path]
    error: type[Exception] | None = None
    reason: str = ""  # regular expression the error message must match
    check: Callable[[Any, Path], None] | None = None
    names_input: bool = True  # the message must contain the input's path

    @property
    def id(self) -> str:
        return f"{self.surface}-{self.name}"


# ---------------------------------------------------------------------------------------------
# Audio
# ---------------------------------------------------------------------------------------------

def encode(samples: np.ndarray, rate: int = RATE, fmt: str = "WAV", subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def riff(data: bytes, *, tag: int = 1, channels: int = 1, rate: int = RATE, bits: int = 16,
         data_size: int | None = None, block_align: int | None = None) -> bytes:
    """A hand-made RIFF/WAVE file: a 16-byte 'fmt ' chunk and a 'data' chunk."""
    align = channels * bits // 8 if block_align is None else block_align
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits)
    size = len(data) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size)
    return b"RIFF" + struct.pack("<I", min(0xFFFFFFFF, len(body) + size)) + body + data


def _writer(name: str, data: bytes | Callable[[], bytes]) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data() if callable(data) else data)
        return path
    return build


def _expect_array(expected: Callable[[], np.ndarray], atol: float = 0.0) -> Callable[[Any, Path], None]:
    def check(result: np.ndarray, path: Path) -> None:
        want = expected()
        assert result.dtype == np.float32 and result.ndim == 1, (result.dtype, result.shape)
        assert result.shape == want.shape, (result.shape, want.shape)
        np.testing.assert_allclose(result, want, rtol=0, atol=atol)
    return check


def _expect_length(samples: int, peak: float | None = None) -> Callable[[Any, Path], None]:
    def check(result: np.ndarray, path: Path) -> None:
        assert result.dtype == np.float32 and result.ndim == 1
        assert abs(len(result) - samples) <= 2, (len(result), samples)
        assert np.isfinite(result).all()
        if peak is not None:
            assert abs(float(np.abs(result).max()) - peak) < 0.05, float(np.abs(result).max())
    return check


def _tone_float() -> np.ndarray:
    return (TONE16 / 32768).astype(np.float32)


def _truncated(fmt: str, subtype: str, keep: float) -> Callable[[], bytes]:
    def data() -> bytes:
        noise = np.random.default_rng(0).uniform(-0.5, 0.5, RATE * 2).astype(np.float32)
        whole = encode(noise, RATE, fmt, subtype)
        return whole[: int(len(whole) * keep)]
    return data


def _sparse_silence(name: str, hours: float) -> Callable[[Path], Path]:
    """A real WAV file of `hours` of 16 kHz silence, written sparsely (a few KB on disk)."""
    def build(folder: Path) -> Path:
        path = folder / name
        size = int(RATE * 3600 * hours) * 2
        with open(path, "wb") as f:
            f.write(riff(b"", data_size=size))
            f.truncate(44 + size)
        return path
    return build


def _special(name: str, make: Callable[[Path], None]) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / name
        make(path)
        return path
    return build


def _random(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


TEN_HOURS = int(10 * 3600 * RATE)


def audio_cases() -> list[Case]:
    tone = TONE16
    square = np.where(np.sin(2 * np.pi * 100 * np.arange(RATE) / RATE) >= 0, 32767, -32768)
    nan = np.full(RATE // 10, np.nan, dtype=np.float32)
    inf = np.concatenate([np.zeros(100, np.float32), [np.inf], np.zeros(100, np.float32)])
    wide = np.tile(tone[:, None], (1, 64))
    wide[:, 1::2] = 0  # 64 channels: every other one silent, so the mix is half the tone
    huge_float = np.full(RATE // 10, 1e30, dtype=np.float32)
    e = AudioError
    return [
        Case("empty", "audio", _writer("empty.wav", b""), e, r"empty file \(0 bytes\)"),
        Case("zero-samples", "audio", _writer("zero.wav", riff(b"")), e, "no audio samples"),
        Case("header-only", "audio", _writer("header.wav", riff(b"", data_size=RATE * 2)), e,
             "truncated: the header declares 16000 frames but only 0"),
        Case("truncated-wav", "audio", _writer("cut.wav", lambda: encode(tone)[:4000]), e,
             "truncated: the header declares 8000 frames but only 1978"),
        Case("truncated-flac", "audio", _writer("cut.flac", _truncated("FLAC", "PCM_16", 0.5)),
             e, "truncated or corrupt FLAC data"),
        Case("truncated-ogg", "audio", _writer("cut.ogg", _truncated("OGG", "VORBIS", 0.5)),
             e, "truncated or corrupt OGG data|no audio samples"),
        *([Case("truncated-mp3", "audio",
                _writer("cut.mp3", _truncated("MP3", "MPEG_LAYER_III", 0.5)), e, "truncated")]
          if "MP3" in sf.available_formats() else []),
        Case("flac-named-wav", "audio", _writer("flac.wav", lambda: encode(tone, fmt="FLAC")),
             check=_expect_array(_tone_float)),
        Case("wav-named-mp3", "audio", _writer("wav.mp3", lambda: encode(tone)),
             check=_expect_array(_tone_float)),
        Case("wav-named-txt", "audio", _writer("wav.txt", lambda: encode(tone)),
             check=_expect_array(_tone_float)),
        Case("random-bytes", "audio", _writer("random.wav", _random(5000)), e,
             "not an audio file, or an unknown audio format"),
        Case("random-bytes-no-extension", "audio", _writer("random", _random(70000, 1)), e,
             "not an audio file"),
        Case("text-file", "audio", _writer("notes.wav", b"hello, this is a text file\n" * 20), e,
             r"not an audio file \(it looks like text\)"),
        Case("html-as-mp3", "audio", _writer("page.mp3", b"<html><body>404</body></html>\n"), e,
             "looks like text"),
        Case("huge-claimed-length", "audio",
             _writer("huge.wav", lambda: riff(tone.tobytes(), data_size=0x7FFEFFFE)), e,
             "truncated: the header declares"),
        Case("ten-hours-claimed-one-second-present", "audio",
             _writer("claims10h.wav", lambda: riff(tone.tobytes(), data_size=TEN_HOURS * 2)), e,
             f"the header declares {TEN_HOURS} frames"),
        Case("rate-0hz", "audio", _writer("rate0.wav", lambda: riff(tone.tobytes(), rate=0)), e,
             "unsupported sample rate 0 Hz"),
        Case("rate-10mhz", "audio",
             _writer("rate10m.wav", lambda: riff(tone.tobytes(), rate=10_000_000)), e,
             "unsupported sample rate 10000000 Hz"),
        Case("rate-7999hz", "audio", _writer("rate7999.wav", lambda: encode(tone, 7999)), e,
             "unsupported sample rate 7999 Hz"),
        Case("rate-8khz", "audio", _writer("rate8k.wav", lambda: encode(tone, 8000)),
             check=_expect_length(2 * len(tone), peak=0.5)),
        Case("rate-192khz", "audio", _writer("rate192k.wav", lambda: encode(tone, 192000)),
             check=_expect_length(len(tone) // 12)),
        Case("channels-64", "audio", _writer("ch64.wav", lambda: encode(wide)),
             check=_expect_array(lambda: _tone_float() / 2, atol=1e-7)),
        Case("channels-0", "audio",
             _writer("ch0.wav", lambda: riff(tone.tobytes(), channels=0, block_align=2)), e,
             "channel|not an audio file|corrupt"),
        Case("block-align-0", "audio",  # libsndfile derives the frame size from the channels
             _writer("align0.wav", lambda: riff(tone.tobytes(), block_align=0)),
             check=_expect_array(_tone_float)),
        Case("nan-float", "audio", _writer("nan.wav", lambda: encode(nan, subtype="FLOAT")), e,
             "NaN or infinite"),
        Case("inf-float", "audio", _writer("inf.wav", lambda: encode(inf, subtype="FLOAT")), e,
             "NaN or infinite"),
        Case("huge-float-values", "audio",
             _writer("loud.wav", lambda: encode(huge_float, subtype="FLOAT")),
             check=_expect_array(lambda: huge_float)),
        Case("dc-only", "audio",
             _writer("dc.wav", lambda: encode(np.full(RATE, 16384, np.int16))),
             check=_expect_array(lambda: np.full(RATE, 0.5, np.float32))),
        Case("clipped-square", "audio",
             _writer("square.wav", lambda: encode(square.astype(np.int16))),
             check=_expect_array(lambda: (square / 32768).astype(np.float32))),
        Case("one-sample", "audio", _writer("one.wav", lambda: encode(np.array([1000], np.int16))),
             check=_expect_array(lambda: np.array([1000 / 32768], np.float32))),
        Case("one-sample-44khz", "audio",
             _writer("one44k.wav", lambda: encode(np.array([1000], np.int16), 44100)),
             error=e, reason=r"too short: 1 sample\(s\) at 44100 Hz give no samples"),
        Case("ten-hours-of-silence", "audio", _sparse_silence("silence10h.wav", 10.0),
             check=None),  # loading it is measured by test_ten_hours_of_silence
        Case("mulaw", "audio", _writer("ulaw.wav", lambda: encode(tone, subtype="ULAW")),
             check=_expect_array(_tone_float, atol=0.02)),
        Case("unsupported-codec-tag", "audio",
             _writer("tag.wav", lambda: riff(_random(4000), tag=0x1234)), e,
             "unsupported codec|not an audio file|corrupt"),
        Case("fake-flac-magic", "audio", _writer("fake.flac", b"fLaC" + _random(3000, 2)), e,
             "corrupt FLAC data|not an audio file"),
        Case("fake-ogg-magic", "audio", _writer("fake.ogg", b"OggS" + _random(3000, 3)), e,
             "corrupt OGG data|not an audio file"),
        Case("fake-id3-tag", "audio", _writer("fake.mp3", b"ID3\x04\x00\x00\x00\x00\x00\x10"
                                              + _random(3000, 4)), e,
             "corrupt MP3 data|not an audio file|no audio stream"),
        Case("riff-chunk-sizes-lie", "audio",
             _writer("chunks.wav", lambda: b"RIFF\xff\xff\xff\xffWAVEjunk\xff\xff\xff\x7f"
                     + _random(500, 5)), e, "not an audio file|corrupt|unsupported"),
        Case("directory", "audio", _special("folder.wav", lambda p: p.mkdir()), e,
             "is a directory"),
        Case("fifo", "audio", _special("pipe.wav", lambda p: os.mkfifo(p)), e,
             "not a regular file"),
        Case("symlink-to-dev-zero", "audio",
             _special("zero-device.wav", lambda p: p.symlink_to("/dev/zero")), e,
             "not a regular file"),
        Case("dangling-symlink", "audio",
             _special("dangling.wav", lambda p: p.symlink_to(p.parent / "nowhere.wav")), e,
             "file not found"),
        Case("non-utf8-file-name", "audio",
             _special(os.fsdecode(b"caf\xe9-\xff.wav"), lambda p: p.write_bytes(encode(tone))),
             check=_expect_array(_tone_float)),
        Case("newline-in-file-name", "audio", _writer("two\nlines.wav", lambda: encode(tone)),
             check=_expect_array(_tone_float)),
    ]


def _fail(value: object) -> None:
    raise AssertionError(f"unexpected result {value!r}")


# ---------------------------------------------------------------------------------------------
# Model files
# ---------------------------------------------------------------------------------------------

class Payload:
    """Unpickling this object runs code that creates `folder/PWNED`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __reduce__(self) -> tuple[Any, ...]:
        code = f"open({str(self.folder / PWNED)!r}, 'w').write('pickle payload ran')"
        return (exec, (code,))


_template: dict[str, bytes] = {}


def good_model(folder: Path) -> Path:
    """A valid tiny (untrained, seeded) harken model folder."""
    if not _template:
        import torch

        from harken.model import new_model

        torch.manual_seed(0)
        saved = new_model("deepspeech2", "tiny").save(folder / ".template")
        _template.update({p.name: p.read_bytes() for p in saved.iterdir()})
    path = folder / "model"
    path.mkdir()
    for name, data in _template.items():
        (path / name).write_bytes(data)
    return path


def _relist(model: Path) -> None:
    """Recompute config.json's checksums after a file was swapped: only the content is hostile."""
    from harken.modelfile import sha256_file

    config = json.loads((model / "config.json").read_text())
    config["files"] = {name: sha256_file(model / name) for name in config["files"]}
    (model / "config.json").write_text(json.dumps(config))


def _zip(name: str, members: Callable[[Path], list[tuple[zipfile.ZipInfo | str, bytes]]],
         ) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / name
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
            for info, data in members(folder):
                zf.writestr(info, data)
        return path
    return build


def _good_members(folder: Path) -> list[tuple[zipfile.ZipInfo | str, bytes]]:
    model = good_model(folder)
    return [(p.name, p.read_bytes()) for p in sorted(model.iterdir())]


def _symlink_member(folder: Path) -> list[tuple[zipfile.ZipInfo | str, bytes]]:
    info = zipfile.ZipInfo("weights.safetensors")
    info.external_attr = (0o120777 << 16)  # a symbolic link to /etc/passwd
    members = [m for m in _good_members(folder) if m[0] != "weights.safetensors"]
    return members + [(info, b"/etc/passwd")]


def _bomb(folder: Path) -> list[tuple[zipfile.ZipInfo | str, bytes]]:
    """A deflated member that expands to 64 MiB of zeros (~64 KB in the archive)."""
    info = zipfile.ZipInfo("weights.safetensors")
    info.compress_type = zipfile.ZIP_DEFLATED
    return [(info, bytes(1 << 26))]


def _lying_size(name: str) -> Callable[[Path], Path]:
    """A stored member whose central directory claims 3 GiB."""
    def build(folder: Path) -> Path:
        path = _zip(name, _good_members)(folder)
        data = bytearray(path.read_bytes())
        start = data.rfind(b"PK\x01\x02")  # the last central-directory entry
        struct.pack_into("<I", data, start + 24, 3 << 30)  # its uncompressed size
        path.write_bytes(bytes(data))
        return path
    return build


def _model_with(change: Callable[[Path], None], relist: bool = False) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        model = good_model(folder)
        change(model)
        if relist:
            _relist(model)
        return model
    return build


def _pickle_weights(model: Path) -> None:
    (model / "weights.safetensors").write_bytes(pickle.dumps(Payload(model.parent)))


def _torch_weights(model: Path) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save({"payload": Payload(model.parent)}, buffer)
    (model / "weights.safetensors").write_bytes(buffer.getvalue())


def _pickle_extras(model: Path) -> None:
    for name in ("model.pt", "pytorch_model.bin", "weights.ckpt", "tokenizer.pkl", "state.npy"):
        (model / name).write_bytes(pickle.dumps(Payload(model.parent)))
    config = json.loads((model / "config.json").read_text())
    config["files"].update({name: "" for name in ("model.pt", "tokenizer.pkl")})
    (model / "config.json").write_text(json.dumps(config))
    _relist(model)  # listed with their true checksums: they pass every check but are never read


def _set_config(**changes: Any) -> Callable[[Path], None]:
    def change(model: Path) -> None:
        config = json.loads((model / "config.json").read_text())
        config.update(changes)
        (model / "config.json").write_text(json.dumps(config))
    return change


def _safetensors_huge_header(model: Path) -> None:
    (model / "weights.safetensors").write_bytes(struct.pack("<Q", 1 << 60) + b"{}")


def _loads_and_transcribes(model: Any, path: Path) -> None:
    assert not (path.parent / PWNED).exists(), "a pickle payload ran"
    assert model.tokenizer.vocab_size == 29
    model.transcribe(np.zeros(RATE, np.float32))


def model_cases() -> list[Case]:
    m = ModelError
    return [
        Case("traversal-member", "model", _zip("up.harken", lambda f: [("../config.json", b"{}")]),
             m, "refusing archive member '../config.json'"),
        Case("absolute-member", "model", _zip("abs.harken", lambda f: [("/tmp/evil", b"x")]),
             m, "refusing archive member"),
        Case("backslash-member", "model",
             _zip("bs.harken", lambda f: [("..\\..\\evil.json", b"x")]), m,
             "refusing archive member"),
        Case("hidden-member", "model", _zip("hidden.harken", lambda f: [(".bashrc", b"x")]), m,
             "refusing archive member '.bashrc'"),
        Case("symlink-member", "model", _zip("link.harken", _symlink_member), m,
             "symbolic link|refusing archive member"),
        Case("deflate-bomb", "model", _zip("bomb.harken", _bomb), m,
             "compressed or too large"),
        Case("member-claims-3gib", "model", _lying_size("big.harken"), m,
             "compressed or too large|not a harken model file"),
        Case("too-many-members", "model",
             _zip("many.harken", lambda f: [(f"f{i:05d}", b"") for i in range(5000)]), m,
             "members"),
        Case("duplicate-members", "model",
             _zip("dup.harken", lambda f: _good_members(f) + [("config.json", b"{}")]), m,
             "more than once|duplicate"),
        Case("truncated-archive", "model",
             lambda f: _writer("cut.harken", _zip("whole.harken", _good_members)(f)
                               .read_bytes()[:3000])(f), m, "not a harken model file"),
        Case("random-bytes-archive", "model", _writer("random.harken", _random(4000, 6)), m,
             "not a harken model file"),
        Case("archive-is-fifo", "model", _special("pipe.harken", lambda p: os.mkfifo(p)), m,
             "not a regular file|not a harken model"),
        Case("config-not-json", "model",
             _model_with(lambda p: (p / "config.json").write_text("{architecture: ")), m,
             "config.json is not valid JSON"),
        Case("config-not-utf8", "model",
             _model_with(lambda p: (p / "config.json").write_bytes(b'{"a": "\xff\xfe"}')), m,
             "config.json is not valid JSON"),
        Case("config-is-array", "model",
             _model_with(lambda p: (p / "config.json").write_text("[1, 2]")), m,
             "must hold a JSON object"),
        Case("config-deeply-nested", "model",
             _model_with(lambda p: (p / "config.json").write_text("[" * 100_000 + "]" * 100_000)),
             m, "config.json"),
        Case("config-newer-format", "model", _model_with(_set_config(format_version=99)), m,
             "format version 99 is newer"),
        Case("config-lists-outside-file", "model",
             _model_with(_set_config(files={"../../etc/passwd": "0" * 64,
                                            "weights.safetensors": "0" * 64})), m,
             r"'../../etc/passwd' listed in config.json is missing"),
        Case("weights-swapped", "model",
             _model_with(lambda p: (p / "weights.safetensors").write_bytes(_random(3000, 7))), m,
             "weights.safetensors is corrupt or was changed"),
        Case("weights-are-pickle", "model", _model_with(_pickle_weights, relist=True), m,
             "weights"),
        Case("weights-are-torch-save", "model", _model_with(_torch_weights, relist=True), m,
             "weights"),
        Case("safetensors-huge-header", "model",
             _model_with(_safetensors_huge_header, relist=True), m, "weights"),
        Case("pickle-files-beside-the-weights", "model", _model_with(_pickle_extras),
             check=_loads_and_transcribes),
        Case("weights-symlink-to-etc-passwd", "model",
             _model_with(lambda p: ((p / "weights.safetensors").unlink(),
                                    (p / "weights.safetensors").symlink_to("/etc/passwd"))), m,
             "weights.safetensors is corrupt or was changed"),
        Case("config-symlink-to-dev-zero", "model",
             _model_with(lambda p: ((p / "config.json").unlink(),
                                    (p / "config.json").symlink_to("/dev/zero"))), m,
             "config.json is missing"),
        Case("tokenizer-file-outside-the-model", "model",
             _model_with(_set_config(tokenizer={"kind": "sentencepiece", "file": "../x.model"})),
             ConfigError, "file must be a file name inside the model folder", names_input=False),
        Case("sentencepiece-file-garbage", "model", _sentencepiece_garbage, m,
             "SentencePiece|tokenizer"),
    ]


def _sentencepiece_garbage(folder: Path) -> Path:
    model = good_model(folder)
    (model / "tokenizer.model").write_bytes(_random(2000, 8))
    _set_config(tokenizer={"kind": "sentencepiece", "file": "tokenizer.model"})(model)
    config = json.loads((model / "config.json").read_text())
    config["files"]["tokenizer.model"] = ""
    (model / "config.json").write_text(json.dumps(config))
    _relist(model)
    return model


# ---------------------------------------------------------------------------------------------
# Manifests, configs, text
# ---------------------------------------------------------------------------------------------

def _lines(name: str, *lines: str | bytes) -> Callable[[Path], Path]:
    def data() -> bytes:
        return b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines)
    return _writer(name, data)


GOOD_LINE = json.dumps({"audio": "a.wav", "text": "hello", "duration": 1.0})


def manifest_cases() -> list[Case]:
    e = ManifestError
    return [
        Case("empty", "manifest", _writer("empty.jsonl", b""), e, "holds no utterances"),
        Case("blank-lines", "manifest", _writer("blank.jsonl", b"\n \n\t\n"), e,
             "holds no utterances"),
        Case("not-utf8", "manifest", _lines("latin1.jsonl", GOOD_LINE, b'{"audio": "caf\xe9"}'),
             e, r"line 2: not UTF-8 text \(byte 0xe9 at column 15\)"),
        Case("not-json", "manifest", _lines("bad.jsonl", GOOD_LINE, "{audio: a.wav"), e,
             "line 2: not valid JSON"),
        Case("json-array-line", "manifest", _lines("array.jsonl", "[1, 2, 3]"), e,
             "line 1: expected a JSON object, got list"),
        Case("missing-audio", "manifest", _lines("noaudio.jsonl", '{"text": "hi"}'), e,
             "line 1: missing the audio path"),
        Case("missing-text", "manifest", _lines("notext.jsonl", '{"audio": "a.wav"}'), e,
             'line 1: missing "text"'),
        Case("text-not-string", "manifest", _lines("num.jsonl", '{"audio": "a.wav", "text": 5}'),
             e, '"text" must be a string'),
        Case("duration-nan", "manifest",
             _lines("nan.jsonl", '{"audio": "a.wav", "text": "x", "duration": NaN}'), e,
             '"duration" must be a number of seconds, got nan'),
        Case("duration-infinity", "manifest",
             _lines("inf.jsonl", '{"audio": "a.wav", "text": "x", "duration": Infinity}'), e,
             '"duration" must be a number of seconds, got inf'),
        Case("duration-negative", "manifest",
             _lines("neg.jsonl", '{"audio": "a.wav", "text": "x", "duration": -1}'), e,
             'negative "duration" -1'),
        Case("deeply-nested-json", "manifest", _lines("deep.jsonl", "[" * 200_000), e,
             "line 1: (not valid JSON|nested too deeply)"),
        Case("csv-without-header", "manifest", _lines("no_header.csv", "a.wav,12,hello"), e,
             "expected a DeepSpeech CSV header"),
        Case("csv-wrong-columns", "manifest",
             _lines("cols.csv", "wav_filename,wav_filesize,transcript", "a.wav,hello"), e,
             "line 2"),
        Case("csv-carriage-return", "manifest", _lines("cr.csv", b"wav_filename,transcript",
                                                      b"a.wav,he\rllo"), e,
             r"line 2: not valid CSV \(new-line character seen in unquoted field"),
        Case("binary-garbage", "manifest", _writer("garbage.jsonl", _random(3000, 9)), e,
             "line 1"),
        Case("manifest-is-directory", "manifest", _special("dir.jsonl", lambda p: p.mkdir()), e,
             "cannot read manifest"),
        Case("missing-file", "manifest", lambda f: f / "absent.jsonl", e, "cannot read manifest"),
        Case("byte-order-mark", "manifest", _lines("bom.jsonl", "\ufeff" + GOOD_LINE),
             check=lambda result, path: (len(result) == 1 and result[0].text == "hello"
                                         and result[0].audio == path.parent / "a.wav")
             or _fail(result)),
        Case("ten-megabyte-line", "manifest",
             _lines("long.jsonl", json.dumps({"audio": "a.wav", "text": "a " * 5_000_000})),
             check=lambda result, path: (len(result[0].text) == 10_000_000) or _fail(len(result))),
    ]


def config_cases() -> list[Case]:
    c = ConfigError
    train = '[data]\ntrain = ["train.jsonl"]\n'
    return [
        Case("not-toml", "config", _writer("bad.toml", b"[data\ntrain = "), c, "not valid TOML"),
        Case("not-utf8", "config", _writer("latin1.toml", train.encode() + b"# caf\xe9\n"), c,
             "not valid TOML"),
        Case("empty", "config", _writer("empty.toml", b""), c,
             "data.train: give at least one training manifest", names_input=False),
        Case("directory", "config", _special("dir.toml", lambda p: p.mkdir()), c,
             "cannot read the config|is a directory"),
        Case("missing", "config", lambda f: f / "absent.toml", c, "no such config file"),
        Case("unknown-section", "config", _writer("sec.toml", (train + "[modle]\n").encode()), c,
             r"unknown section\(s\) \['modle'\]", names_input=False),
        Case("wrong-type", "config", _writer("type.toml", (train + '[optim]\nlr = "fast"\n')
                                             .encode()), c, "optim.lr: expected a number",
             names_input=False),
        Case("lr-nan", "config", _writer("nan.toml", (train + "[optim]\nlr = nan\n").encode()), c,
             "optim.lr", names_input=False),
        Case("lr-infinite", "config",
             _writer("inf.toml", (train + "[optim]\nlr = inf\n").encode()), c, "optim.lr",
             names_input=False),
        Case("batch-seconds-nan", "config",
             _writer("bs.toml", (train + "max_batch_seconds = nan\n").encode()), c,
             "data.max_batch_seconds", names_input=False),
        Case("section-is-a-value", "config", _writer("val.toml", b'optim = 3\n' + train.encode()),
             c, r"\[optim\] must be a table", names_input=False),
        Case("deeply-nested-array", "config",
             _writer("deep.toml", (train + "[run]\nx = " + "[" * 5000 + "]" * 5000 + "\n")
                     .encode()), c, "deep|nested|not valid TOML|run.x"),
    ]


def text_cases() -> list[Case]:
    e = ManifestError
    return [
        Case("not-utf8", "text", _writer("latin1.txt", b"hello\ncaf\xe9\n"), e,
             "not UTF-8 text \\(byte 0xe9"),
        Case("not-utf8-jsonl", "text", _writer("latin1.jsonl", b'{"text": "caf\xe9"}\n'), e,
             "not UTF-8 text \\(byte 0xe9"),
        Case("gzip-garbage", "text", _writer("bad.txt.gz", b"\x1f\x8b" + _random(100, 10)), e,
             "cannot read it"),
    ]


def all_cases() -> list[Case]:
    return audio_cases() + model_cases() + manifest_cases() + config_cases() + text_cases()


def build_all(folder: Path) -> dict[str, Path]:
    """Write every case under `folder/<surface>/`; returns {case id: path}."""
    paths = {}
    for case in all_cases():
        where = folder / case.surface / case.name
        where.mkdir(parents=True, exist_ok=True)
        paths[case.id] = case.build(where)
    return paths

