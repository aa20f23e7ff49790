"""`harken listen`: live transcription of the microphone or stdin."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from harken.cli.common import add_decode_args, add_model_args, decode_overrides, load_model_args
from harken.streaming import live_chunks
from harken.vad import EndpointConfig


def register(sub: Any) -> None:
    p = sub.add_parser("listen", help="transcribe the microphone (or stdin) live",
                       description="Transcribe live audio: the microphone (needs sounddevice: "
                                   "pip install harken[mic]) or, with '-', raw 16 kHz mono "
                                   "S16_LE PCM or a WAV stream on stdin, e.g. "
                                   "'arecord -f S16_LE -r 16000 | harken listen -'. Partials are "
                                   "rewritten in place, finished utterances printed on new lines.")
    p.add_argument("source", nargs="?", default=None, help="'-' for stdin (default: microphone)")
    add_model_args(p)
    add_decode_args(p)
    p.add_argument("--vad", choices=("webrtc", "silero", "energy"), default="webrtc",
                   help="detector for endpointing (default: webrtc)")
    p.add_argument("--raw", action="store_true",
                   help="finished utterances as recognised, not as written text")
    p.add_argument("--silence-ms", type=float, default=600.0,
                   help="trailing silence that ends an utterance (default: 600)")
    p.add_argument("--chunk-ms", type=int, default=100, help="audio per read (default: 100)")
    p.set_defaults(func=_run_listen)


def _run_listen(args: argparse.Namespace) -> int:
    model = load_model_args(args)
    finals = (lambda t: t) if args.raw else model.write  # partials stay as recognised
    overrides = decode_overrides(args)
    endpoint = EndpointConfig(silence_ms=args.silence_ms, method=args.vad)
    stream = model.stream(endpoint=endpoint, **overrides)
    chunks = live_chunks(args.source, model.sample_rate, args.chunk_ms)
    interactive = sys.stdout.isatty()
    shown = ""

    def show(text: str, final: bool) -> None:
        nonlocal shown
        if interactive:
            sys.stdout.write("\r\033[K" + text + ("\n" if final else ""))
        elif final and text:
            sys.stdout.write(text + "\n")
        sys.stdout.flush()
        shown = "" if final else text

    try:
        for chunk in chunks:
            for utterance in stream.feed(chunk):
                show(finals(utterance).text, final=True)
            partial = stream.partial().text
            if partial != shown:
                show(partial, final=False)
    except KeyboardInterrupt:
        pass
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    show(finals(stream.finish()).text, final=True)
    return 0
