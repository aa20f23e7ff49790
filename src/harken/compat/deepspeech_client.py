"""`deepspeech`: DeepSpeech 0.9.3's command-line client (native_client/python/client.py) on
harken models, so that scripts which shell out to it run unchanged.

    deepspeech --model en-small.pbmm --scorer en-small.scorer --audio talk.wav
    deepspeech --model my-model --audio talk.wav --json --candidate_transcripts 3

The flags are the 0.9.3 client's: --model, --scorer, --audio, --beam_width, --lm_alpha,
--lm_beta, --version, --extended, --json, --candidate_transcripts, --hot_words. The output is
the client's: the transcript on stdout (the characters of the best candidate with
--extended, the candidates' words with start times and durations as JSON with --json),
progress lines on stderr.

`--model` is anything `harken.load_model` takes. A path ending in `.pbmm` or `.tflite` that
does not exist names the harken model of its stem ("en-small.pbmm" -> the bundled en-small, or
"models/x.pbmm" -> models/x.harken or the folder models/x), so DeepSpeech's usual file names
keep working. `--scorer` is a harken LM (ARPA or KenLM binary); a `.scorer` path that does not
exist names the LM of its stem ("en-small.scorer" -> the bundled model's LM, "lm/x.scorer" ->
lm/x.bin or lm/x.arpa). Audio at another sample rate is resampled (the client shells out to
SoX for that; harken resamples itself).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from harken.audio import load_audio
from harken.compat.deepspeech import Model, version
from harken.modelfile import ASSETS, bundled_models

GRAPH_SUFFIXES = (".pbmm", ".pb", ".tflite")
SCORER_SUFFIXES = (".scorer",)


def model_alias(path: str) -> str:
    """A DeepSpeech model file name -> the harken model it names (see the module docstring)."""

    candidate = Path(path)
    if candidate.exists() or candidate.suffix.lower() not in GRAPH_SUFFIXES:
        return path
    stem = candidate.with_suffix("")
    if str(stem) in bundled_models():
        return str(stem)
    for option in (stem.with_suffix(".harken"), stem):
        if option.exists():
            return str(option)
    return path


def scorer_alias(path: str) -> str:
    """A DeepSpeech scorer file name -> the harken LM it names (see the module docstring)."""

    candidate = Path(path)
    if candidate.exists() or candidate.suffix.lower() not in SCORER_SUFFIXES:
        return path
    stem = candidate.with_suffix("")
    bundled = bundled_models().get(str(stem), {})
    lm = bundled.get("lm") if isinstance(bundled, dict) else None
    if isinstance(lm, dict) and lm.get("file"):
        return str(ASSETS / lm["file"])
    for suffix in (".bin", ".arpa", ".arpa.gz"):
        option = Path(str(stem) + suffix)
        if option.exists():
            return str(option)
    return path


def metadata_to_string(metadata: Any) -> str:
    return "".join(token.text for token in metadata.tokens)


def words_from_candidate_transcript(metadata: Any) -> list[dict[str, Any]]:
    """The client's word list: each word's start time and duration from its characters."""
    word, word_list, word_start_time = "", [], 0.0
    for i, token in enumerate(metadata.tokens):
        if token.text != " ":
            if len(word) == 0:
                word_start_time = token.start_time
            word = word + token.text
        if token.text == " " or i == len(metadata.tokens) - 1:
            word_duration = max(token.start_time - word_start_time, 0)
            word_list.append({"word": word, "start_time": round(word_start_time, 4),
                              "duration": round(word_duration, 4)})
            word = ""
    return word_list


def metadata_json_output(metadata: Any) -> str:
    transcripts = [{"confidence": t.confidence, "words": words_from_candidate_transcript(t)}
                   for t in metadata.transcripts]
    return json.dumps({"transcripts": transcripts}, indent=2)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Running DeepSpeech inference (harken).")
    p.add_argument("--model", required=True, help="Path to the model (harken model, name or "
                   "folder; a missing .pbmm names the harken model of its stem)")
    p.add_argument("--scorer", required=False, help="Path to the external scorer file (a "
                   "harken LM; a missing .scorer names the LM of its stem)")
    p.add_argument("--audio", required=True, help="Path to the audio file to run (WAV format)")
    p.add_argument("--beam_width", type=int, help="Beam width for the CTC decoder")
    p.add_argument("--lm_alpha", type=float, help="Language model weight (lm_alpha). If not "
                   "specified, use default from the scorer package.")
    p.add_argument("--lm_beta", type=float, help="Word insertion bonus (lm_beta). If not "
                   "specified, use default from the scorer package.")
    p.add_argument("--version", action="version", version=_version(),
                   help="Print version and exits")
    p.add_argument("--extended", required=False, action="store_true",
                   help="Output string from extended metadata")
    p.add_argument("--json", required=False, action="store_true",
                   help="Output json from metadata with timestamp of each word")
    p.add_argument("--candidate_transcripts", type=int, default=3,
                   help="Number of candidate transcripts to include in JSON output")
    p.add_argument("--hot_words", type=str, help="Hot-words and their boosts.")
    return p


def _version() -> str:
    return f"DeepSpeech {version()} (harken)"


def _read_audio(path: str, sample_rate: int) -> np.ndarray:
    """16-bit samples at `sample_rate` (resampled when the file has another rate)."""
    import soundfile as sf

    info = sf.info(path)
    if info.samplerate != sample_rate:
        print(f"Warning: original sample rate ({info.samplerate}) is different than "
              f"{sample_rate}hz. Resampling might produce erratic speech recognition.",
              file=sys.stderr)
    audio = load_audio(path, sample_rate)
    return (np.clip(audio, -1.0, 1.0 - 1 / 32768) * 32768).astype(np.int16)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the client; the exit status is 0, or 1 with a message on stderr."""

    args = _parser().parse_args(argv)
    try:
        model_path = model_alias(args.model)
        print(f"Loading model from file {args.model}", file=sys.stderr)
        started = time.perf_counter()
        ds = Model(model_path)
        print(f"Loaded model in {time.perf_counter() - started:.3}s.", file=sys.stderr)
        if args.beam_width:
            ds.setBeamWidth(args.beam_width)
        sample_rate = ds.sampleRate()
        if args.scorer:
            print(f"Loading scorer from files {args.scorer}", file=sys.stderr)
            started = time.perf_counter()
            ds.enableExternalScorer(scorer_alias(args.scorer))
            print(f"Loaded scorer in {time.perf_counter() - started:.3}s.", file=sys.stderr)
            if args.lm_alpha and args.lm_beta:
                ds.setScorerAlphaBeta(args.lm_alpha, args.lm_beta)
        if args.hot_words:
            print("Adding hot-words", file=sys.stderr)
            for word_boost in args.hot_words.split(","):
                word, boost = word_boost.split(":")
                ds.addHotWord(word, float(boost))
        audio = _read_audio(args.audio, sample_rate)
        duration = len(audio) / sample_rate
        print("Running inference.", file=sys.stderr)
        started = time.perf_counter()
        if args.extended:
            print(metadata_to_string(ds.sttWithMetadata(audio, 1).transcripts[0]))
        elif args.json:
            print(metadata_json_output(ds.sttWithMetadata(audio, args.candidate_transcripts)))
        else:
            print(ds.stt(audio))
        print(f"Inference took {time.perf_counter() - started:0.3f}s for {duration:0.3f}s "
              "audio file.", file=sys.stderr)
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"deepspeech: {exc}", file=sys.stderr)
        return 1
    return 0


__all__ = ["main", "model_alias", "scorer_alias"]


if __name__ == "__main__":
    sys.exit(main())
