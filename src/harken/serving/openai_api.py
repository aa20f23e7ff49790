"""What the OpenAI-compatible endpoints of `harken serve` add to plain transcription.

- `prompt` is context, as in Whisper: clients send ordinary sentences ("The following is a
  clear reading of a sentence from a novel."). Only its rare words (outside the language's
  `COMMON_WORDS`: names, terms) are boosted, by `PROMPT_WORD_BOOST` nats each; common words
  get nothing, so such a prompt changes nothing. Explicit hotwords (`phrase:boost`, harken's
  own syntax) go in the form field `hotwords`.
- `language`: the model's language (any region, "en-GB") or none; anything else is a 400.
- `stream=true`: Server-Sent Events, OpenAI's `transcript.text.delta` events as pieces of the
  audio are decoded (speech segments, in order), then `transcript.text.done` with the text.
- `POST /v1/audio/translations`: into English, which for an English model is its transcript;
  a model of another language answers 400.
- `GET /v1/models/{id}`: the served model (404 for any other id).
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any, AsyncIterator

from harken.text import language_code
from harken.model import split_long_audio
from harken.modelfile import ASSETS
from harken.decoding.hotwords import DEFAULT_BOOST, parse_hotword
from harken.serving.limits import check_hotwords
from harken.serving.uploads import RequestError, load_upload

# Boost (nats) of each rare word of a prompt: enough to pull a name the acoustics half support
# into the result, too little to insert it where nothing like it was said.
PROMPT_WORD_BOOST = 3.0
# At most this many rare words of a prompt are boosted (the first ones).
PROMPT_MAX_WORDS = 20
# Word lists per language code: words outside them are rare.
COMMON_WORDS = {"en": "common_words_en.txt"}
_WORD = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)*")


@functools.lru_cache(maxsize=4)
def common_words(language: str) -> frozenset[str]:
    """The common words of a language (empty for a language without a list)."""
    name = COMMON_WORDS.get(language_code(language))
    if name is None:
        return frozenset()
    lines = (ASSETS / name).read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def prompt_bias(prompt: str | None, normalizer: Any) -> dict[str, float]:
    """Hotwords from a Whisper-style `prompt`: its rare words, `PROMPT_WORD_BOOST` each.

    `normalizer` is the model's transcript normaliser (`tokenizer.normalizer`); its language
    chooses the word list. A language without a list boosts nothing (the prompt is ignored).
    """
    if not prompt or not prompt.strip():
        return {}
    language = getattr(normalizer, "language", "en")
    common = common_words(language)
    if not common:
        return {}
    rare: dict[str, float] = {}
    for raw in _WORD.findall(prompt):
        for word in normalizer(raw).split():
            if word not in common and len(word) > 1:
                rare.setdefault(word, PROMPT_WORD_BOOST)
        if len(rare) >= PROMPT_MAX_WORDS:
            break
    return dict(list(rare.items())[:PROMPT_MAX_WORDS])


def model_language(model: Any) -> str:
    """The language code of a model's transcripts ("en")."""
    normalizer = getattr(getattr(model, "tokenizer", None), "normalizer", None)
    return language_code(getattr(normalizer, "language", "en"))


def check_language(language: str | None, model: Any) -> str:
    """The `language` of a request, checked against the model's (ValueError naming both)."""
    spoken = model_language(model)
    if language is None or not str(language).strip():
        return spoken
    if language_code(str(language).strip()) != spoken:
        raise ValueError(f"language {language!r}: this model transcribes {spoken!r} only")
    return str(language).strip()


def model_card(model: Any, name: str, created: int) -> dict[str, Any]:
    """The OpenAI `model` object of the served model."""
    return {"id": name, "object": "model", "created": created, "owned_by": "harken",
            "architecture": model.config.architecture, "size": model.config.size,
            "sample_rate": model.sample_rate, "language": model_language(model),
            "streaming": getattr(model.network, "streamable", False)}


def sse(event: dict[str, Any]) -> bytes:
    """One Server-Sent Event carrying `event` as JSON."""
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


async def text_events(pieces: AsyncIterator[str]) -> AsyncIterator[bytes]:
    """`transcript.text.delta` per decoded piece with text, then `transcript.text.done`."""
    text = ""
    async for piece in pieces:
        piece = piece.strip()
        if not piece:
            continue
        delta = piece if not text else " " + piece
        text += delta
        yield sse({"type": "transcript.text.delta", "delta": delta})
    yield sse({"type": "transcript.text.done", "text": text})


def stream_requested(value: Any) -> bool:
    """The form field `stream` ("true"/"false", as the SDK sends it)."""
    if value is None:
        return False
    text = str(value).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0", ""):
        return False
    raise ValueError(f"stream must be true or false, got {value!r}")


async def transcribe_pieces(service: Any, data: bytes, filename: str, overrides: dict[str, Any],
                            max_seconds: float | None) -> AsyncIterator[str]:
    """The text of each speech segment of an upload, in order, as soon as it is decoded
    (`stream=true`); joined, the pieces are the text of `Service.transcribe`."""

    model = service.model
    wave = await service.run_sync(load_upload, data, filename, model.sample_rate)
    seconds = len(wave) / model.sample_rate
    if max_seconds is not None and seconds > max_seconds:
        raise RequestError(413, f"{filename}: audio is {seconds:.1f} s long; this server "
                           f"transcribes at most {max_seconds:g} s per request",
                           "audio_too_long", "file")
    decode = await service.run_sync(functools.partial(model.decoder, None, **overrides))
    pieces = await service.run_sync(functools.partial(split_long_audio, wave, model.sample_rate,
                                                      vad="auto"))
    for offset, piece in pieces:
        log_probs = await service.batcher.log_probs([piece])
        transcript = await service.run_sync(decode, log_probs[0], offset)
        yield transcript.text
    service.metrics.audio_seconds.labels("/v1/audio/transcriptions").inc(seconds)


def form_overrides(form: Any, service: Any) -> dict[str, Any]:
    """Decoding overrides of a request's form: the prompt's rare words, then the explicit
    `hotwords` field."""
    hotwords = prompt_bias(form.get("prompt"), service.model.tokenizer.normalizer)
    hotwords.update(prompt_hotwords(form.get("hotwords")))
    return service.decode_overrides(hotwords)  # type: ignore[no-any-return]


def form_language(form: Any, model: Any) -> str:
    """The form's `language`, checked (a 400 `unsupported_language` otherwise)."""
    try:
        return check_language(form.get("language"), model)
    except ValueError as exc:
        raise RequestError(400, str(exc), "unsupported_language", "language") from None


async def streamed_transcription(service: Any, form: Any, data: bytes, name: str,
                                 overrides: dict[str, Any]) -> Any:
    """The `text/event-stream` answer when the form asks for `stream=true`, else None."""
    from fastapi.responses import StreamingResponse

    try:
        if not stream_requested(form.get("stream")):
            return None
    except ValueError as exc:
        raise RequestError(400, str(exc), "bad_request", "stream") from None
    response_format = form.get("response_format") or "json"
    if response_format not in ("json", "text"):
        raise RequestError(400, f"stream=true gives text events; response_format "
                           f"{response_format!r} cannot be streamed (use json or text)",
                           "bad_request", "response_format")
    pieces = transcribe_pieces(service, data, name, overrides, service.config.max_audio_seconds)
    first = await anext(pieces, None)  # errors in the upload are answered before the stream

    async def all_pieces() -> AsyncIterator[str]:
        if first is not None:
            yield first
            async for piece in pieces:
                yield piece

    return StreamingResponse(text_events(all_pieces()), media_type="text/event-stream")


def openai_routes(service: Any, transcriptions: Any) -> list[tuple[str, Any, list[str]]]:
    """(path, endpoint, methods) of `GET /v1/models/{id}` and `POST /v1/audio/translations`;
    `transcriptions(request, task)` is the transcription endpoint."""
    from fastapi.responses import JSONResponse

    model, name = service.model, service.config.model_name

    async def model_info(request: Any) -> Any:
        model_id = request.path_params["model_id"]
        if model_id != name:
            raise RequestError(404, f"no model {model_id!r}; this server serves {name!r}",
                               "model_not_found", "model")
        return JSONResponse(model_card(model, name, int(service.started)))

    async def translations(request: Any) -> Any:
        spoken = model_language(model)
        if spoken != "en":
            raise RequestError(400, f"translations are into English; this model transcribes "
                               f"{spoken!r} and cannot translate", "translation_unsupported",
                               "model")
        return await transcriptions(request, task="translate")

    return [("/v1/models/{model_id}", model_info, ["GET"]),
            ("/v1/audio/translations", translations, ["POST"])]


__all__ = ["PROMPT_WORD_BOOST", "check_language", "common_words", "model_card", "openai_routes",
           "prompt_bias", "sse", "stream_requested", "text_events", "transcribe_pieces"]


# Boost of a hotword taken from a request's `prompt` (natural log, as `harken --hotword`).
PROMPT_HOTWORD_BOOST = DEFAULT_BOOST  # a hotword sent without a boost


def prompt_hotwords(prompt: str | None) -> dict[str, float]:
    """Explicit hotwords (the form field `hotwords`): phrases separated by commas, semicolons
    or new lines, each optionally ``phrase:boost``; text without separators gives its words."""
    if not prompt or not prompt.strip():
        return {}
    items = [p.strip() for p in re.split(r"[,;\n]", prompt)]
    if len(items) == 1:
        items = prompt.split()
    hotwords: dict[str, float] = {}
    for item in items:
        phrase, value = parse_hotword(item, strict=False)
        phrase = phrase.strip(".!?\"'").lower()
        if phrase:
            hotwords[phrase] = value

    return check_hotwords(hotwords, "hotwords")
