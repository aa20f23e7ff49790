"""`harken models` / `harken download` against a local HTTP server serving the import fixtures.

The server (http.server in a thread) serves tests/fixtures/import; test catalogues point at it.
No network is needed.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import socket
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import soundfile as sf

from harken.cli import main
from harken.errors import ConfigError, HarkenError
from harken.interop.hub import (CHECKSUMS_FILE, DOWNLOADS_DIR, DownloadError, download, fetch,
                        load_catalogue, model_status)
from harken.interop.import_hf import import_hf
from harken.interop.import_nemo import import_nemo
from harken.modelfile import ASSETS, resolve_model_path
from harken.model import load_model

pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "import"
CLIP = ROOT / "examples" / "fox.wav"
NEMO = "nemo_quartznet_char/model.nemo"
HF = "hf_wav2vec2_base"


class FixtureServer:
    """Serves FIXTURES over http://127.0.0.1:PORT/ with byte ranges (unless `ranges` is off).

    `cut[path] = n`: the next response for path sends its headers and n bytes, then closes.
    `override[path] = bytes`: serve these instead of the file. `headers`: extra headers.
    `log`: (path, Range header) of every request."""

    def __init__(self) -> None:
        self.ranges = True
        self.cut: dict[str, int] = {}
        self.override: dict[str, bytes] = {}
        self.headers: dict[str, str] = {}
        self.log: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.lstrip("/")
                server.log.append((path, self.headers.get("Range")))
                file = FIXTURES / path
                if path in server.override:
                    data = server.override[path]
                elif file.is_file():
                    data = file.read_bytes()
                else:
                    self.send_error(404)
                    return
                start, status = 0, 200
                match = re.match(r"bytes=(\d+)-$", self.headers.get("Range") or "")
                if server.ranges and match:
                    start, status = int(match.group(1)), 206
                    if start >= len(data):
                        self.send_error(416)
                        return
                body = data[start:]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", '"v1"')
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                for key, value in server.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if path in server.cut:
                    body = body[: server.cut.pop(path)]
                    self.close_connection = True
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server() -> Iterator[FixtureServer]:
    s = FixtureServer()
    yield s
    s.close()


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HARKEN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "models"


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    wave, _ = sf.read(CLIP, dtype="float32")
    return wave


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def catalogue(tmp_path: Path, *entries: dict[str, Any]) -> Path:
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps({"format": 1, "models": list(entries)}))
    return path


def nemo_entry(url: str, **extra: Any) -> dict[str, Any]:
    return {"name": "tiny-quartznet", "kind": "nemo", "url": url + NEMO,
            "license": "CC-BY-4.0", **extra}


def hf_entry(url: str, files: list[Any]) -> dict[str, Any]:
    return {"name": "tiny-w2v", "kind": "hf", "url": f"{url}{HF}/", "files": files,
            "license": "Apache-2.0", "wer": {"test-clean": 3.4, "test-other": 8.6},
            "wer_source": "https://example.org/card"}


def test_nemo_download_imports_and_loads_by_name(tmp_path: Path, server: FixtureServer,
                                                 cache: Path, audio: np.ndarray) -> None:
    cat = catalogue(tmp_path, nemo_entry(server.url, sha256=sha(FIXTURES / NEMO)))
    path = download("tiny-quartznet", catalogue=cat)
    assert path == cache / "tiny-quartznet"
    assert not (cache / DOWNLOADS_DIR / "tiny-quartznet").exists()  # source removed
    downloaded = load_model("tiny-quartznet")
    direct = import_nemo(FIXTURES / NEMO)
    assert np.array_equal(downloaded.log_probs([audio])[0], direct.log_probs([audio])[0])
    text = downloaded.transcribe(audio, vad=None, greedy=True).text
    assert text == direct.transcribe(audio, vad=None, greedy=True).text and text
    # A second call finds the model and fetches nothing.
    requests = len(server.log)
    assert download("tiny-quartznet", catalogue=cat) == path
    assert len(server.log) == requests


def test_hf_download_tries_alternatives_and_skips_optional_files(
        tmp_path: Path, server: FixtureServer, cache: Path, audio: np.ndarray) -> None:
    files = ["config.json", "vocab.json", "preprocessor_config.json",
             ["tokenizer_config.json", None], ["special_tokens_map.json", None],
             ["pytorch_model.bin", "model.safetensors"]]
    download("tiny-w2v", catalogue=catalogue(tmp_path, hf_entry(server.url, files)))
    fetched = [p for p, _ in server.log]
    assert f"{HF}/pytorch_model.bin" in fetched and f"{HF}/model.safetensors" in fetched
    assert f"{HF}/special_tokens_map.json" in fetched  # absent, optional: skipped
    got = load_model("tiny-w2v").transcribe(audio, vad=None, greedy=True).text
    assert got == import_hf(FIXTURES / HF).transcribe(audio, vad=None, greedy=True).text
    recorded = json.loads((cache / CHECKSUMS_FILE).read_text())["tiny-w2v"]
    assert recorded["model.safetensors"] == sha(FIXTURES / HF / "model.safetensors")
    assert "special_tokens_map.json" not in recorded


def test_first_download_records_the_checksum_and_later_ones_must_match(
        tmp_path: Path, server: FixtureServer, cache: Path) -> None:
    cat = catalogue(tmp_path, nemo_entry(server.url))  # no checksum known
    download("tiny-quartznet", catalogue=cat)
    recorded = json.loads((cache / CHECKSUMS_FILE).read_text())
    assert recorded == {"tiny-quartznet": {"model.nemo": sha(FIXTURES / NEMO)}}
    changed = bytearray((FIXTURES / NEMO).read_bytes())
    changed[-1] ^= 1
    server.override[NEMO] = bytes(changed)
    with pytest.raises(DownloadError, match=r"SHA-256 mismatch: got [0-9a-f]{64}, expected "
                       + sha(FIXTURES / NEMO) + r".*recorded when model.nemo of tiny-quartznet"):
        download("tiny-quartznet", catalogue=cat, force=True)
    assert not list((cache / DOWNLOADS_DIR).rglob("*.part"))  # the bad bytes are gone
    assert load_model("tiny-quartznet")  # the earlier model is untouched


def test_pinned_and_server_stated_checksums_are_checked(tmp_path: Path, server: FixtureServer,
                                                        cache: Path) -> None:
    cat = catalogue(tmp_path, nemo_entry(server.url))
    with pytest.raises(DownloadError, match="SHA-256 mismatch: got .*, expected " + "0" * 64):
        download("tiny-quartznet", catalogue=cat, sha256="0" * 64)
    with pytest.raises(ConfigError, match="expected 64 hex digits"):
        download("tiny-quartznet", catalogue=cat, sha256="abc")
    server.headers["X-Linked-Etag"] = '"' + "1" * 64 + '"'
    with pytest.raises(DownloadError, match="stated by the server " + "1" * 64):
        download("tiny-quartznet", catalogue=cat)
    assert not (cache / "tiny-quartznet").exists() and not (cache / CHECKSUMS_FILE).exists()
    server.headers["X-Linked-Etag"] = sha(FIXTURES / NEMO)
    download("tiny-quartznet", catalogue=cat)
    assert (cache / "tiny-quartznet" / "config.json").is_file()


@pytest.mark.parametrize("ranges", [True, False])
def test_an_interrupted_download_resumes(tmp_path: Path, server: FixtureServer, cache: Path,
                                         ranges: bool) -> None:
    server.ranges = ranges
    cat = catalogue(tmp_path, nemo_entry(server.url, sha256=sha(FIXTURES / NEMO)))
    server.cut[NEMO] = 100_000
    with pytest.raises(DownloadError, match=r"cut off after 100000 of 225280 bytes; run it "
                                            r"again to resume"):
        download("tiny-quartznet", catalogue=cat)
    part = cache / DOWNLOADS_DIR / "tiny-quartznet" / "model.nemo.part"
    assert part.stat().st_size == 100_000
    assert model_status("tiny-quartznet", cache) == "partial"
    download("tiny-quartznet", catalogue=cat)
    assert server.log[-1] == (NEMO, "bytes=100000-")  # asked for the rest only
    assert not part.exists() and (cache / "tiny-quartznet" / "config.json").is_file()


def test_resume_fetches_the_file_sha_checked_across_both_parts(tmp_path: Path,
                                                               server: FixtureServer) -> None:
    dest = tmp_path / "x.nemo"
    server.cut[NEMO] = 7
    with pytest.raises(DownloadError, match="cut off"):
        fetch(server.url + NEMO, dest)
    assert fetch(server.url + NEMO, dest) == sha(FIXTURES / NEMO)
    assert dest.read_bytes() == (FIXTURES / NEMO).read_bytes()


def test_missing_files_and_unreachable_servers_are_clear(tmp_path: Path, server: FixtureServer,
                                                         cache: Path) -> None:
    missing = dict(nemo_entry(server.url), url=server.url + "nope/model.nemo")
    with pytest.raises(DownloadError, match=re.escape(server.url) + r"nope/model.nemo: HTTP 404"):
        download("tiny-quartznet", catalogue=catalogue(tmp_path, missing))
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    with pytest.raises(DownloadError) as info:
        download("tiny-quartznet", catalogue=catalogue(tmp_path, nemo_entry(url)))
    message = str(info.value)
    assert f"{url}{NEMO}: cannot connect" in message and "refused" in message.lower()
    assert "download " + url + NEMO + " on another machine" in message
    assert f"harken import nemo model.nemo {cache / 'tiny-quartznet'}\n" in message
    assert model_status("tiny-quartznet", cache) == ""  # nothing partial was left behind
    hf = hf_entry(url, ["config.json", ["model.safetensors", "pytorch_model.bin"],
                        ["tokenizer_config.json", None]])
    with pytest.raises(DownloadError, match=r"download config.json, model.safetensors or "
                       r"pytorch_model.bin, tokenizer_config.json \(if present\) from "):
        download("tiny-w2v", catalogue=catalogue(tmp_path, hf))


def test_only_https_except_this_machine(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="refusing to download over http"):
        fetch("http://example.org/model.nemo", tmp_path / "m.nemo")
    with pytest.raises(DownloadError, match="refusing to download over ftp"):
        fetch("ftp://example.org/model.nemo", tmp_path / "m.nemo")
    assert not list(tmp_path.iterdir())


def test_unknown_names(tmp_path: Path, server: FixtureServer, cache: Path) -> None:
    cat = catalogue(tmp_path, nemo_entry(server.url))
    with pytest.raises(HarkenError, match=r"'nope' is not in the model catalogue \(known: "
                                          r"tiny-quartznet\)"):
        download("nope", catalogue=cat)
    with pytest.raises(HarkenError, match="`harken models` lists models to download"):
        load_model("tiny-quartznet")


@pytest.mark.parametrize("change, message", [
    ({"url": None}, "'url' must be a non-empty string"),
    ({"kind": "onnx"}, r"kind 'onnx' is not one of \['nemo', 'hf'\]"),
    ({"name": "../evil"}, "the name may hold only letters"),
    ({"url": "https://x.org/model.tar"}, "a nemo url must name a .nemo file"),
    ({"url": "file:///etc/model.nemo"}, "is not an http\\(s\\) URL"),
    ({"sha256": "12ab"}, "sha256 must be null, 64 lowercase hex digits"),
    ({"wer": {"test-clean": 2.5}}, "a published WER needs its wer_source"),
    ({"licence": "MIT"}, r"unknown keys \['licence'\]"),
    ({"files": ["a"]}, "a nemo entry is one file"),
])
def test_bad_catalogue_entries_are_named(tmp_path: Path, change: dict[str, Any],
                                         message: str) -> None:
    entry = {k: v for k, v in {**nemo_entry("https://x.org/"), **change}.items() if v is not None}
    with pytest.raises(ConfigError, match=r"models\[0\].*" + message):
        load_catalogue(catalogue(tmp_path, entry))


@pytest.mark.parametrize("files, message", [
    (None, "an hf entry needs 'files'"),
    (["../config.json"], "must be a plain file name"),
    ([[None, "vocab.json"]], "null \\(optional\\) may only come last"),
])
def test_bad_hf_entries_are_named(tmp_path: Path, files: Any, message: str) -> None:
    entry = {k: v for k, v in hf_entry("https://x.org/", files).items() if v is not None}
    with pytest.raises(ConfigError, match=message):
        load_catalogue(catalogue(tmp_path, entry))


def test_duplicate_names_and_unreadable_catalogues(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="bad.json: the model catalogue is not valid JSON"):
        load_catalogue(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="appears twice"):
        load_catalogue(catalogue(tmp_path, nemo_entry("https://x.org/"),
                                 nemo_entry("https://y.org/")))


def test_the_shipped_catalogue() -> None:
    entries = load_catalogue()
    assert {"stt_en_citrinet_256", "stt_en_citrinet_512", "stt_en_citrinet_1024",
            "stt_en_citrinet_1024_gamma_0_25", "stt_en_quartznet15x5",
            "stt_en_conformer_ctc_small", "stt_en_conformer_ctc_medium",
            "stt_en_conformer_ctc_large", "wav2vec2-base-960h", "wav2vec2-large-960h-lv60-self",
            "hubert-large-ls960-ft"} <= set(entries)
    for entry in entries.values():
        assert entry.url.startswith("https://")
        assert entry.license == ("CC-BY-4.0" if entry.kind == "nemo" else "Apache-2.0")
        if any(v is not None for v in entry.wer.values()):
            assert entry.wer_source and entry.wer_source.startswith("https://")
    assert entries["wav2vec2-base-960h"].wer == {"test-clean": 3.4, "test-other": 8.6}
    assert entries["wav2vec2-base-960h"].file_url("vocab.json").endswith("/vocab.json")


def test_cli_models_and_download(tmp_path: Path, server: FixtureServer, cache: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    cat = catalogue(tmp_path, nemo_entry(server.url, params="0.03M"),
                    hf_entry(server.url, ["config.json"]))
    assert main(["models", "--catalogue", str(cat)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert re.match(r"tiny-quartznet +nemo +0.03M +- +CC-BY-4.0 +- +-$", lines[1])
    assert lines[2].strip() == server.url + NEMO
    assert re.match(r"tiny-w2v +hf +- +- +Apache-2.0 +3.4/8.6 +-$", lines[3])
    assert main(["download", "tiny-quartznet", "--catalogue", str(cat)]) == 0
    out = capsys.readouterr()
    assert "tiny-quartznet: ready at" in out.out and "--model tiny-quartznet" in out.out
    assert "225280" not in out.err and "0.2 / 0.2 MB (100%)" in out.err
    main(["models", "--catalogue", str(cat), "--json"])
    listed = json.loads(capsys.readouterr().out)
    assert [e["status"] for e in listed] == ["ready", ""]
    assert main(["download", "nope", "--catalogue", str(cat)]) == 1
    assert "not in the model catalogue" in capsys.readouterr().err
    other = tmp_path / "elsewhere"
    assert main(["download", "tiny-quartznet", "--catalogue", str(cat), "--dir", str(other),
                 "--keep-source"]) == 0
    assert (other / DOWNLOADS_DIR / "tiny-quartznet" / "model.nemo").is_file()
    assert f"--model {other / 'tiny-quartznet'}" in capsys.readouterr().out


def test_bundled_names_keep_priority(cache: Path) -> None:
    (cache / "en-small").mkdir(parents=True)
    (cache / "en-small" / "config.json").write_text("{}")
    assert resolve_model_path("en-small").parent == ASSETS
