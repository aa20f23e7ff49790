"""NIST SPHERE audio (TIMIT, AN4, WSJ, Switchboard): header, PCM reader and writer.

libsndfile (and so `harken.audio.load_audio`) reads uncompressed SPHERE files itself: PCM of 1 to 4
bytes in either byte order, mu-law and A-law. Files of the LDC corpora distributed with
"shorten" compression (`sample_coding -s26 pcm,embedded-shorten-v2.00`) it cannot read; the
header tells them apart, so an importer converts those (with sph2pipe) and uses the others as
they are. `read_sphere` decodes uncompressed files without libsndfile, for headers it refuses.

A header is ASCII: "NIST_1A", its size in bytes (1024 in practice), then one field a line as
`name -i 16000` (integer), `-r 1.5` (real) or `-sN text` (string of N bytes), up to "end_head".
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from harken.errors import AudioError

SPHERE_MAGIC = b"NIST_1A"
HEADER_BYTES = 1024  # the size every corpus uses; larger headers are read too
_COMPRESSIONS = ("shorten", "wavpack", "shortpack")


@dataclass(frozen=True)
class SphereHeader:
    """The fields of a SPHERE header (`fields`) and the size of the header in bytes."""

    size: int
    fields: dict[str, int | float | str]

    def _get(self, name: str, default: int | str) -> int | str:
        value = self.fields.get(name, default)
        return value if isinstance(value, (int, str)) else default

    @property
    def sample_rate(self) -> int:
        return int(self._get("sample_rate", 0))

    @property
    def channels(self) -> int:
        return int(self._get("channel_count", 1))

    @property
    def sample_width(self) -> int:
        """Bytes per sample (of one channel)."""
        return int(self._get("sample_n_bytes", 2))

    @property
    def coding(self) -> str:
        """`sample_coding`, "pcm" when the header does not say (TIMIT's headers do not)."""
        return str(self._get("sample_coding", "pcm")).lower()

    @property
    def byte_order(self) -> str:
        """"little" ("01"), "big" ("10"), or "none" for 1-byte samples ("1")."""
        order = str(self._get("sample_byte_format", "01"))
        return {"01": "little", "10": "big", "1": "none"}.get(order, order)

    @property
    def sample_count(self) -> int:
        """Samples per channel (`sample_count`), -1 when the header does not say."""
        return int(self._get("sample_count", -1))

    @property
    def compressed(self) -> bool:
        """Whether the samples are compressed (shorten, wavpack): libsndfile cannot read them."""
        return any(name in self.coding for name in _COMPRESSIONS)


def is_sphere(path: str | os.PathLike[str]) -> bool:
    """Whether the file starts with the SPHERE magic "NIST_1A"."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(SPHERE_MAGIC)) == SPHERE_MAGIC
    except OSError:
        return False


def read_sphere_header(path: str | os.PathLike[str]) -> SphereHeader:
    """Parse the header of a SPHERE file. Raises `AudioError` for a file that is not SPHERE."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(HEADER_BYTES)
            if not head.startswith(SPHERE_MAGIC + b"\n"):
                raise AudioError(path, "not a NIST SPHERE file (no NIST_1A header)")
            lines = head.split(b"\n")
            try:
                size = int(lines[1])
            except (IndexError, ValueError):
                raise AudioError(path, "SPHERE header without its size on line 2") from None
            if size > len(head):
                head += handle.read(size - len(head))
    except OSError as exc:
        raise AudioError(path, f"cannot read ({exc.strerror or exc})") from exc
    fields: dict[str, int | float | str] = {}
    for raw in head[:size].split(b"\n")[2:]:
        line = raw.decode("latin-1").rstrip("\r")
        if line.strip() == "end_head":
            return SphereHeader(size, fields)
        parts = line.split(None, 2)
        if len(parts) == 3:
            name, kind, value = parts
            fields[name] = _field_value(path, name, kind, value)
    raise AudioError(path, "SPHERE header without end_head")


def _field_value(path: str, name: str, kind: str, value: str) -> int | float | str:
    try:
        if kind == "-i":
            return int(value)
        if kind == "-r":
            return float(value)
    except ValueError:
        raise AudioError(path, f"SPHERE header field {name}: {value!r} is not a {kind} number")
    if kind.startswith("-s"):
        return value.rstrip()
    raise AudioError(path, f"SPHERE header field {name}: unknown type {kind!r}")


def read_sphere(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """Decode an uncompressed SPHERE file: float32 samples (frames, channels) and the rate.

    Reads PCM of 1, 2 or 4 bytes in either byte order and mu-law. Raises `AudioError` for
    compressed or truncated files and other codings.
    """
    path = os.fspath(path)
    header = read_sphere_header(path)
    if header.compressed:
        raise AudioError(path, f"SPHERE samples are compressed ({header.coding}); convert the "
                         "file with sph2pipe (e.g. sph2pipe -f wav in.sph out.wav)")
    with open(path, "rb") as handle:
        handle.seek(header.size)
        data = handle.read()
    width, channels = header.sample_width, header.channels
    if header.sample_rate <= 0 or channels <= 0:
        raise AudioError(path, f"SPHERE header states sample_rate {header.sample_rate} and "
                         f"channel_count {channels}")
    frames = len(data) // (width * channels)
    if header.sample_count >= 0:
        if frames < header.sample_count:
            raise AudioError(path, f"truncated SPHERE data: {frames} of {header.sample_count} "
                             "samples")
        frames = header.sample_count
    data = data[: frames * width * channels]
    if header.coding.startswith(("ulaw", "mu-law")):
        samples = _ulaw_decode(np.frombuffer(data, dtype=np.uint8))
    elif header.coding.startswith("pcm") and width in (1, 2, 4):
        endian = ">" if header.byte_order == "big" else "<"
        ints = np.frombuffer(data, dtype=f"{endian}i{width}")
        samples = ints.astype(np.float32) / np.float32(2 ** (8 * width - 1))
    else:
        raise AudioError(path, f"unsupported SPHERE coding {header.coding!r} with "
                         f"{width}-byte samples")
    return samples.reshape(frames, channels), header.sample_rate


def write_sphere(
    path: str | os.PathLike[str],
    samples: np.ndarray,
    sample_rate: int,
    *,
    byte_order: str = "little",
    fields: dict[str, int | float | str] | None = None,
) -> None:
    """Write 16-bit PCM samples ((frames,) or (frames, channels), int16) as SPHERE.

    `fields` are written first, in order (e.g. TIMIT's `database_id`), then the sample fields.
    """
    samples = np.asarray(samples)
    if samples.dtype != np.int16:
        raise ValueError(f"write_sphere takes int16 samples, got {samples.dtype}")
    frames = samples.reshape(len(samples), -1)
    described: dict[str, int | float | str] = dict(fields or {})
    described.update(channel_count=frames.shape[1], sample_count=frames.shape[0],
                     sample_rate=sample_rate, sample_n_bytes=2, sample_sig_bits=16,
                     sample_byte_format="01" if byte_order == "little" else "10")
    lines = [SPHERE_MAGIC.decode(), f"{HEADER_BYTES:7d}"]
    for name, value in described.items():
        if isinstance(value, int):
            lines.append(f"{name} -i {value}")
        elif isinstance(value, float):
            lines.append(f"{name} -r {value}")
        else:
            lines.append(f"{name} -s{len(value)} {value}")
    lines.append("end_head\n")
    header = "\n".join(lines).encode("ascii")
    if len(header) > HEADER_BYTES:
        raise ValueError(f"SPHERE header of {len(header)} bytes does not fit in {HEADER_BYTES}")
    dtype = "<i2" if byte_order == "little" else ">i2"
    with open(path, "wb") as handle:
        handle.write(header.ljust(HEADER_BYTES, b" "))
        handle.write(frames.astype(dtype).tobytes())


def _ulaw_decode(codes: np.ndarray) -> np.ndarray:
    """G.711 mu-law bytes -> float32 in [-1, 1)."""
    codes = ~codes.astype(np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return (np.where(sign, -magnitude, magnitude) / 32768.0).astype(np.float32)
