"""harken vs PocketSphinx on the same manifests: WER, CER and real-time factor, side by side.

Runs harken's model greedily and with its language model (when it has one), and PocketSphinx
with its bundled en-us model, on every utterance of each manifest, in one run.

Usage: python benchmarks/accuracy.py MANIFEST... [--model M] [--limit N] [--no-pocketsphinx]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

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


def run_harken(model, waves: list[np.ndarray], options) -> tuple[list[str], float]:
    began = time.perf_counter()
    results = model.transcribe_batch(waves, options, written=False)  # normalised text
    return [r.text for r in results], time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifests", nargs="+")
    parser.add_argument("--model", default=None)
    parser.add_argument("--limit", type=int, default=None, help="first N utterances per manifest")
    parser.add_argument("--no-pocketsphinx", action="store_true")
    args = parser.parse_args()
    model = load_model(args.model)
    systems = {"harken greedy": GREEDY}
    if model.config.decoding.get("lm"):
        systems["harken + LM"] = model.decode_options()
    print(f"{'manifest':28s} {'system':16s} {'WER %':>7s} {'CER %':>7s} {'RTF':>8s} {'WER/peer':>9s} {'RTF/peer':>9s}")
    for manifest in args.manifests:
        utterances = read_manifest(manifest)[: args.limit]
        waves = [load_audio(u.audio) for u in utterances]
        refs = [normalize_text(u.text) for u in utterances]
        seconds = sum(len(w) for w in waves) / 16000
        rows = {}
        if not args.no_pocketsphinx:
            hyps, spent = run_pocketsphinx(waves)
            rows["pocketsphinx"] = (error_rates(refs, hyps), spent / seconds)
        for name, options in systems.items():
            hyps, spent = run_harken(model, waves, options)
            rows[name] = (error_rates(refs, hyps), spent / seconds)
        peer = rows.get("pocketsphinx")
        for name, (rates, rtf) in rows.items():
            ratio_wer = f"{rates['wer'] / peer[0]['wer']:.2f}" if peer and peer[0]["wer"] else "-"
            ratio_rtf = f"{rtf / peer[1]:.3f}" if peer and peer[1] else "-"
            print(f"{str(manifest)[-28:]:28s} {name:16s} {100 * rates['wer']:7.2f} "
                  f"{100 * rates['cer']:7.2f} {rtf:8.4f} {ratio_wer:>9s} {ratio_rtf:>9s}", flush=True)


if __name__ == "__main__":
    main()
