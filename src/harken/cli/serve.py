"""`harken serve`: the HTTP/WebSocket server."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from harken.errors import require
from harken.serving.config import API_KEY_ENV, DEFAULT_HOST, DEFAULT_PORT, ServerConfig, default_db_path
from harken.cli.common import add_decode_args, add_model_args, decode_overrides, resolve_backend
from harken.model import load_model


def register(sub: Any) -> None:
    """Add `harken serve` to the command line."""

    defaults = ServerConfig(db=":memory:")
    p = sub.add_parser("serve", help="speech recognition server (REST, WebSocket, jobs, web page)",
                       description="Serve a model over HTTP: OpenAI-compatible transcription, "
                       "WebSocket streaming, persistent jobs, metrics and a live-caption page "
                       "(docs/server.md). Needs pip install 'harken[server]'.")
    add_model_args(p)
    add_decode_args(p)
    net = p.add_argument_group("network")
    net.add_argument("--host", default=DEFAULT_HOST,
                     help=f"address to bind (default: {DEFAULT_HOST}; 0.0.0.0 exposes the server)")
    net.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"(default: {DEFAULT_PORT})")
    net.add_argument("--api-key", default=os.environ.get(API_KEY_ENV),
                     help=f"require 'Authorization: Bearer KEY' on every endpoint but /health "
                     f"(default: ${API_KEY_ENV})")
    net.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                     help="allow browser requests from this origin (repeatable; default: none)")
    limits = p.add_argument_group("limits")
    limits.add_argument("--max-upload-mb", type=float, default=defaults.max_upload_bytes / 2**20,
                        help="largest upload (default: %(default)g MiB)")
    limits.add_argument("--max-audio-seconds", type=float, default=defaults.max_audio_seconds,
                        help="longest audio per synchronous request (default: %(default)g)")
    limits.add_argument("--request-timeout", type=float,
                        default=defaults.request_timeout_seconds,
                        help="seconds before a request is answered 504 (default: %(default)g)")
    limits.add_argument("--idle-timeout", type=float, default=defaults.idle_stream_seconds,
                        help="seconds without a message before a stream is closed "
                        "(default: %(default)g)")
    limits.add_argument("--max-streams", type=int, default=defaults.max_streams,
                        help="concurrent streams; more are refused (default: %(default)d)")
    work = p.add_argument_group("inference")
    work.add_argument("--max-batch", type=int, default=defaults.max_batch,
                      help="pieces of audio per model batch, 1 disables batching "
                      "(default: %(default)d)")
    work.add_argument("--max-stream-batch", type=int, default=defaults.max_stream_batch,
                      help="stream network steps per batch, 1 disables batching "
                      "(default: %(default)d)")
    work.add_argument("--max-wait-ms", type=float, default=defaults.max_wait_ms,
                      help="how long a batch waits for more requests (default: %(default)g)")
    work.add_argument("--threads", type=int, default=defaults.threads,
                      help="inference worker threads (default: %(default)d)")
    work.add_argument("--torch-threads", type=int, default=None,
                      help="threads per PyTorch operation (default: PyTorch's choice)")
    work.add_argument("--job-workers", type=int, default=defaults.job_workers,
                      help="jobs transcribed at once; 0 accepts jobs without running them "
                      "(default: %(default)d)")
    work.add_argument("--db", default=None,
                      help=f"SQLite file (or sqlite:/// URL) for jobs (default: {default_db_path()})")
    work.add_argument("--vad", choices=("webrtc", "silero", "energy"), default=defaults.vad,
                      help="detector for stream endpointing (default: %(default)s)")
    work.add_argument("--silence-ms", type=float, default=defaults.silence_ms,
                      help="trailing silence that ends an utterance (default: %(default)g)")
    p.set_defaults(func=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    # the server's batching runs the network with torch: imported when serving, not for --help
    from harken.serving.app import bind_socket, create_app, log

    uvicorn = require("uvicorn", "server")
    require("fastapi", "server")
    if args.torch_threads is not None:
        import torch

        torch.set_num_threads(args.torch_threads)
    sock = bind_socket(args.host, args.port)  # a port in use fails now, before the model loads
    overrides = decode_overrides(args)
    config = ServerConfig(
        api_key=args.api_key or None, max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_audio_seconds=args.max_audio_seconds, request_timeout_seconds=args.request_timeout,
        idle_stream_seconds=args.idle_timeout, max_streams=args.max_streams,
        max_batch=args.max_batch, max_stream_batch=args.max_stream_batch,
        max_wait_ms=args.max_wait_ms, threads=args.threads,
        job_workers=args.job_workers, db=args.db or default_db_path(),
        cors_origins=tuple(args.cors_origin), vad=args.vad, silence_ms=args.silence_ms,
        model_name=Path(args.model).stem if args.model else "en-small",
        decode_options=overrides)
    model = load_model(args.model, device=args.device,
                       backend=resolve_backend(args.model, args.backend))
    app = create_app(model, config)
    if args.host not in ("127.0.0.1", "localhost", "::1") and config.api_key is None:
        log.warning("serving on %s without an API key: anyone who can reach it can use it",
                    args.host)
    sock.listen(2048)  # only now: while the model loaded, connections were refused, not held
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if ":" in args.host else args.host
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           ws_max_size=16 << 20))
    print(f"harken: serving {config.model_name} on http://{host}:{port} "
          f"(jobs in {config.db})", flush=True)  # the socket is bound: clients can connect
    with sock:
        server.run(sockets=[sock])
    return 0
