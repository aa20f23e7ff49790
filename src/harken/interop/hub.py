"""Known public CTC checkpoints: `harken models` lists them, `harken download NAME` fetches one.

    harken models                                  name, size, licence, published WER, status
    harken download stt_en_conformer_ctc_large     fetch, verify, `harken import`, ready by name

The catalogue (assets/catalogue.json) names each checkpoint's download URL, licence and the
LibriSpeech WERs its publisher reports. A download streams to ``FILE.part`` (resumed with an
HTTP Range request when interrupted), is checked against a SHA-256, then converted by
`harken.interop.import_nemo` / `harken.interop.import_hf` into an ordinary harken model in the cache
(``$HARKEN_CACHE/models/NAME``, default ``~/.cache/harken/models``), where
`harken.model.load_model(NAME)` finds it.

Checksums: a catalogue entry, `--sha256`, or a SHA-256 that the server states (Hugging Face's
``X-Linked-Etag``) is checked. Where none is known, the SHA-256 of the first download is
recorded in ``checksums.json`` in the cache and later downloads of that name must match it:
trust on first use, which detects a changed file but cannot prove the first one genuine.
Only https URLs are fetched (plain http only from this machine, or with `allow_http`).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from harken.errors import ConfigError, HarkenError
from harken.modelfile import ASSETS, NAME_PATTERN, downloaded_model_path, models_dir, sha256_file
from harken.version import __version__

CATALOGUE_FILE = ASSETS / "catalogue.json"
CHECKSUMS_FILE = "checksums.json"  # name -> {file: sha256} recorded on first download
DOWNLOADS_DIR = ".downloads"  # sources being fetched, under the models folder
KINDS = ("nemo", "hf")
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
CHUNK_BYTES = 1 << 20
TIMEOUT_SECONDS = 60.0
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

Progress = Callable[[str, int, "int | None"], None]  # (file, bytes so far, total or None)


class DownloadError(HarkenError):
    """A file could not be fetched or failed its checksum; the message names the URL.
    `unreachable`: the server could not be reached at all (offline, refused, DNS)."""

    def __init__(self, message: str, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


@dataclass(frozen=True)
class Checkpoint:
    """One catalogue entry. `files`: for "nemo" the archive's name; for "hf" the files of the
    repository, each a tuple of alternatives tried in order (None last: the file is optional)."""

    name: str
    kind: str
    description: str
    url: str
    files: tuple[tuple[str | None, ...], ...]
    card: str
    license: str
    params: str | None
    size_mb: float | None
    wer: dict[str, float | None]
    wer_source: str | None
    sha256: dict[str, str]

    def file_url(self, file: str) -> str:
        return self.url if self.kind == "nemo" else self.url + urllib.parse.quote(file)


# -- the catalogue ---------------------------------------------------------------------------

def load_catalogue(path: str | os.PathLike[str] | None = None) -> dict[str, Checkpoint]:
    """The checkpoints of a catalogue file (default: the one shipped with harken), by name.

    Raises `ConfigError` naming the entry and the key for anything malformed."""
    path = Path(path) if path is not None else CATALOGUE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the model catalogue ({exc})") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: the model catalogue is not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise ConfigError(f"{path}: expected an object with a \"models\" list")
    catalogue: dict[str, Checkpoint] = {}
    for index, entry in enumerate(data["models"]):
        checkpoint = _checkpoint(entry, f"{path}: models[{index}]")
        if checkpoint.name in catalogue:
            raise ConfigError(f"{path}: models[{index}]: the name {checkpoint.name!r} appears "
                              "twice")
        catalogue[checkpoint.name] = checkpoint
    return catalogue


def _checkpoint(entry: Any, where: str) -> Checkpoint:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected an object, got {type(entry).__name__}")
    known = {"name", "kind", "description", "url", "files", "card", "license", "params",
             "size_mb", "wer", "wer_source", "sha256"}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown} (expected some of {sorted(known)})")
    for key in ("name", "kind", "url", "license"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise ConfigError(f"{where}: {key!r} must be a non-empty string")
    name, kind, url = entry["name"], entry["kind"], entry["url"]
    where = f"{where} ({name})"
    if not NAME_PATTERN.match(name):
        raise ConfigError(f"{where}: the name may hold only letters, digits, '.', '_' and '-'")
    if kind not in KINDS:
        raise ConfigError(f"{where}: kind {kind!r} is not one of {list(KINDS)}")
    if urllib.parse.urlsplit(url).scheme not in ("https", "http"):
        raise ConfigError(f"{where}: url {url!r} is not an http(s) URL")
    if kind == "nemo":
        if "files" in entry:
            raise ConfigError(f"{where}: a nemo entry is one file: give its url, not 'files'")
        files: tuple[tuple[str | None, ...], ...] = ((_plain_name(url, where),),)
    else:
        if not url.endswith("/"):
            raise ConfigError(f"{where}: an hf url is the folder the files are in; it must end "
                              "with '/'")
        files = _hf_files(entry.get("files"), where)
    sha = entry.get("sha256")
    names = {f for alternatives in files for f in alternatives if f}
    if sha is None:
        sha = {}
    elif isinstance(sha, str) and kind == "nemo":
        sha = {files[0][0]: sha}
    if not isinstance(sha, dict) or not all(
            isinstance(v, str) and _SHA256.match(v) and k in names for k, v in sha.items()):
        raise ConfigError(f"{where}: sha256 must be null, 64 lowercase hex digits (nemo) or "
                          "an object mapping the entry's files to them")
    wer = entry.get("wer") or {}
    if not isinstance(wer, dict) or not all(
            isinstance(v, (int, float, type(None))) for v in wer.values()):
        raise ConfigError(f"{where}: wer must be null or an object of numbers, e.g. "
                          "{\"test-clean\": 2.2, \"test-other\": 4.3}")
    if any(v is not None for v in wer.values()) and not entry.get("wer_source"):
        raise ConfigError(f"{where}: a published WER needs its wer_source (the page it is from)")
    size = entry.get("size_mb")
    if size is not None and (not isinstance(size, (int, float)) or size <= 0):
        raise ConfigError(f"{where}: size_mb must be null or a positive number")
    return Checkpoint(name=name, kind=kind, description=str(entry.get("description", "")),
                      url=url, files=files, card=str(entry.get("card") or ""),
                      license=entry["license"], params=entry.get("params"), size_mb=size,
                      wer=dict(wer), wer_source=entry.get("wer_source"), sha256=dict(sha))


def _plain_name(url: str, where: str) -> str:
    name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    if not name.endswith(".nemo"):
        raise ConfigError(f"{where}: a nemo url must name a .nemo file, got {url!r}")
    return _check_file_name(name, where)


def _check_file_name(name: Any, where: str) -> str:
    if (not isinstance(name, str) or not name or "/" in name or "\\" in name
            or name.startswith(".")):
        raise ConfigError(f"{where}: file {name!r} must be a plain file name")
    return name


def _hf_files(files: Any, where: str) -> tuple[tuple[str | None, ...], ...]:
    if not isinstance(files, list) or not files:
        raise ConfigError(f"{where}: an hf entry needs 'files', a list of file names (or lists "
                          "of alternatives)")
    result = []
    for item in files:
        alternatives = item if isinstance(item, list) else [item]
        if not alternatives or None in alternatives[:-1]:
            raise ConfigError(f"{where}: in {item!r}, null (optional) may only come last")
        result.append(tuple(a if a is None else _check_file_name(a, where)
                            for a in alternatives))
    return tuple(result)


# -- the cache -------------------------------------------------------------------------------





def model_status(name: str, folder: Path) -> str:
    """"ready" (downloaded and imported), "partial" (an interrupted download) or ""."""
    if downloaded_model_path(name, folder):
        return "ready"
    source = folder / DOWNLOADS_DIR / name
    return "partial" if source.is_dir() and any(source.glob("*.part")) else ""


def _read_checksums(folder: Path) -> dict[str, dict[str, str]]:
    path = folder / CHECKSUMS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HarkenError(f"{path}: unreadable ({exc}); it holds the checksums of earlier "
                          "downloads: fix or delete it") from exc
    return data if isinstance(data, dict) else {}


def _record_checksums(folder: Path, name: str, sums: dict[str, str]) -> None:
    recorded = _read_checksums(folder)
    recorded.setdefault(name, {}).update(sums)
    staged = folder / f".{CHECKSUMS_FILE}.tmp"
    staged.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(staged, folder / CHECKSUMS_FILE)


# -- fetching one file -----------------------------------------------------------------------

def check_url(url: str, allow_http: bool = False) -> None:
    """`DownloadError` unless `url` is https, or http to this machine (or `allow_http`)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http"
                                   and (allow_http or parts.hostname in LOCAL_HOSTS)):
        return
    raise DownloadError(f"{url}: refusing to download over {parts.scheme or 'this scheme'}: "
                        "only https is used (plain http only with --allow-http)")


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects to allowed URLs only, keeping a SHA-256 that a hop states."""

    def __init__(self, allow_http: bool) -> None:
        self.allow_http = allow_http
        self.stated_sha256: str | None = None

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        check_url(newurl, self.allow_http)
        self.stated_sha256 = self.stated_sha256 or _stated_sha256(headers)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _stated_sha256(headers: Any) -> str | None:
    """The SHA-256 a server states for a file (Hugging Face: X-Linked-Etag / ETag of LFS files)."""
    for key in ("X-Linked-Etag", "ETag"):
        value = (headers.get(key) or "").strip()
        value = value[2:] if value.startswith("W/") else value
        value = value.strip('"').lower()
        if _SHA256.match(value):
            return value
    return None


def fetch(url: str, dest: Path, expected_sha256: str | None = None, *, allow_http: bool = False,
          progress: Progress | None = None, timeout: float = TIMEOUT_SECONDS) -> str:
    """Download `url` to `dest` and return its SHA-256.

    The bytes go to ``dest.part`` first; if that exists (an interrupted download), only the
    rest is asked for with an HTTP Range request (If-Range guards against a changed file; a
    server that ignores ranges sends the whole file again). The result must match
    `expected_sha256` and any SHA-256 the server states, else `DownloadError` and the partial
    file is deleted. Missing files, refused connections and cut-off transfers raise
    `DownloadError` naming the URL (a cut-off transfer keeps its ``.part`` for the next try).
    """
    check_url(url, allow_http)
    part = dest.with_name(dest.name + ".part")
    validator_file = dest.with_name(dest.name + ".part.validator")
    dest.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": _user_agent()})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
        if validator_file.is_file():
            request.add_header("If-Range", validator_file.read_text(encoding="utf-8").strip())
    redirects = _Redirects(allow_http)
    opener = urllib.request.build_opener(redirects)
    try:
        response = opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the partial file does not fit the server's: start over
            part.unlink()
            return fetch(url, dest, expected_sha256, allow_http=allow_http, progress=progress,
                         timeout=timeout)
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"{url}: cannot connect ({reason})", unreachable=True) from exc
    with response:
        if response.status == 206 and _range_start(response.headers) != offset:
            part.unlink()  # not the range asked for: start over
            return fetch(url, dest, expected_sha256, allow_http=allow_http, progress=progress,
                         timeout=timeout)
        stated = _stated_sha256(response.headers) or redirects.stated_sha256
        total = _content_length(response.headers)
        digest = hashlib.sha256()
        if response.status == 206:
            total = _range_total(response.headers)
            with open(part, "rb") as existing:
                for block in iter(lambda: existing.read(CHUNK_BYTES), b""):
                    digest.update(block)
            mode = "ab"
        else:
            offset, mode = 0, "wb"
            validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
            if validator and not validator.startswith("W/"):
                validator_file.write_text(validator, encoding="utf-8")
            else:
                validator_file.unlink(missing_ok=True)
        done = offset
        with open(part, mode) as out:
            try:
                for block in iter(lambda: response.read(CHUNK_BYTES), b""):
                    out.write(block)
                    digest.update(block)
                    done += len(block)
                    if progress is not None:
                        progress(dest.name, done, total)
            except (OSError, http.client.HTTPException) as exc:
                raise DownloadError(f"{url}: the download was cut off after {done} bytes "
                                    f"({exc}); run it again to resume") from exc
    if total is not None and done < total:
        raise DownloadError(f"{url}: the download was cut off after {done} of {total} bytes; "
                            "run it again to resume")
    actual = digest.hexdigest()
    for label, wanted in (("expected", expected_sha256), ("stated by the server", stated)):
        if wanted and wanted.lower() != actual:
            part.unlink(missing_ok=True)
            validator_file.unlink(missing_ok=True)
            raise DownloadError(f"{url}: SHA-256 mismatch: got {actual}, {label} {wanted.lower()}"
                                "; the file was deleted")
    os.replace(part, dest)
    validator_file.unlink(missing_ok=True)
    return actual


def _user_agent() -> str:
    return f"harken/{__version__}"


def _content_length(headers: Any) -> int | None:
    value = headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def _range_start(headers: Any) -> int | None:
    match = re.match(r"bytes (\d+)-\d+/", headers.get("Content-Range") or "")
    return int(match.group(1)) if match else None


def _range_total(headers: Any) -> int | None:
    match = re.match(r"bytes \d+-\d+/(\d+)", headers.get("Content-Range") or "")
    return int(match.group(1)) if match else None


# -- downloading a checkpoint ----------------------------------------------------------------

def download(name: str, folder: str | os.PathLike[str] | None = None, *,
             catalogue: str | os.PathLike[str] | dict[str, Checkpoint] | None = None,
             sha256: str | None = None, allow_http: bool = False, force: bool = False,
             keep_source: bool = False, progress: Progress | None = None) -> Path:
    """Fetch the catalogue's checkpoint `name`, verify it, import it; return the model folder.

    `folder` defaults to `models_dir()`. `sha256` pins the file of a single-file (nemo)
    entry. An already downloaded model is returned as it is unless `force`. The fetched
    source is deleted after the import unless `keep_source`.
    """
    entries = catalogue if isinstance(catalogue, dict) else load_catalogue(catalogue)
    if name not in entries:
        raise HarkenError(f"{name!r} is not in the model catalogue (known: "
                          f"{', '.join(sorted(entries))}); `harken models` lists them")
    entry = entries[name]
    folder = Path(folder) if folder is not None else models_dir()
    target = folder / name
    if not force and downloaded_model_path(name, folder):
        return target
    if sha256 is not None:
        if entry.kind != "nemo":
            raise ConfigError(f"--sha256 pins a single file; {name} has {len(entry.files)}: "
                              "put their checksums in a catalogue instead")
        if not _SHA256.match(sha256.lower()):
            raise ConfigError(f"--sha256 {sha256!r}: expected 64 hex digits")
    if entry.kind == "nemo":
        # importing a checkpoint needs torch; listing and downloading do not
        from harken.interop.import_nemo import yaml_module

        yaml_module()  # fail before a long download when PyYAML is missing
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / DOWNLOADS_DIR / name
    recorded = _read_checksums(folder).get(name, {})
    got: dict[str, str] = {}
    try:
        for alternatives in entry.files:
            file = _fetch_first(entry, alternatives, source, recorded, sha256, allow_http,
                                progress)
            if file is not None:
                got[file] = sha256_file(source / file)
    except DownloadError as exc:
        if exc.unreachable:
            raise DownloadError(f"{exc}\n{_manual_hint(entry, target)}",
                                unreachable=True) from exc
        raise
    new = {f: s for f, s in got.items() if recorded.get(f) != s}
    if new:  # first download of these files (or a pinned checksum): remember for next time
        _record_checksums(folder, name, new)
    _import(entry, source, target)
    if not keep_source:
        shutil.rmtree(source, ignore_errors=True)
    return target


def _fetch_first(entry: Checkpoint, alternatives: tuple[str | None, ...], source: Path,
                 recorded: dict[str, str], pinned: str | None, allow_http: bool,
                 progress: Progress | None) -> str | None:
    """Fetch the first of `alternatives` the server has; None when all are missing and the
    last alternative is None (an optional file)."""
    for file in alternatives:
        if file is None:
            return None
        expected = (pinned.lower() if pinned else None) or entry.sha256.get(file) \
            or recorded.get(file)
        dest = source / file
        if dest.is_file() and expected and sha256_file(dest) == expected:
            return file  # fetched earlier (--keep-source) and still intact
        try:
            fetch(entry.file_url(file), dest, expected, allow_http=allow_http, progress=progress)
            return file
        except DownloadError as exc:
            if ("SHA-256 mismatch" in str(exc) and not pinned and file not in entry.sha256
                    and expected is not None):
                raise DownloadError(f"{exc}. The expected checksum was recorded when {file} of "
                                    f"{entry.name} was first downloaded; if its publisher has "
                                    f"changed it, remove that record from {CHECKSUMS_FILE} in "
                                    "the models folder") from exc
            if "HTTP 404" not in str(exc) or file == alternatives[-1]:
                raise
    return None


def _import(entry: Checkpoint, source: Path, target: Path) -> None:
    if entry.kind == "nemo":
        # importing a checkpoint needs torch; listing and downloading do not
        from harken.interop.import_nemo import import_nemo

        import_nemo(source / entry.files[0][0], target)
    else:
        # importing a checkpoint needs torch; listing and downloading do not
        from harken.interop.import_hf import import_hf

        import_hf(source, target)


def _manual_hint(entry: Checkpoint, target: Path) -> str:
    if entry.kind == "nemo":
        what, how = entry.url, f"harken import nemo {entry.files[0][0]} {target}"
    else:
        files = ", ".join(" or ".join(f for f in a if f) + (" (if present)" if None in a else "")
                          for a in entry.files)
        what = f"{files} from {entry.url}"
        how = f"harken import hf FOLDER {target}"
    return (f"Without network access here, download {what} on another machine, copy it here "
            f"and convert it with\n  {how}\nafter which --model {entry.name} finds it.")


# -- the command line ------------------------------------------------------------------------







