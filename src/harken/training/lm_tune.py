"""Tuning an LM's weights for a model: grid search of alpha (lm_weight) and beta (word_score).

The acoustic model runs once over the dev manifest; every trial only re-decodes its cached
log-probabilities. `harken lm tune ... --write` stores the best values with the LM
(`harken.decoding.lm.write_lm_info`), where `DecodeOptions` finds them as defaults.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from harken.decoding.options import DecodeOptions
from harken.decoding.ctc_beam import get_decoder
from harken.decoding.greedy import greedy_decode
from harken.errors import HarkenError
from harken.model import split_long_audio
from harken.text import reference_normalizer
from harken.training.evaluate import error_rates
from harken.training.manifests import load_utterance, read_manifest

LM_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
WORD_SCORES = (-1.0, 0.0, 1.0, 2.0, 3.0)
# The network runs over at most this many utterances at a time.
GROUP_SIZE = 16

log = logging.getLogger(__name__)


@dataclass
class Trial:
    """One decoding of the dev set: its settings and word error rate."""

    lm_weight: float
    word_score: float
    beam_width: int
    wer: float


@dataclass
class TuneResult:
    """The best trial, greedy decoding's WER for reference, and every trial."""

    best: Trial
    greedy_wer: float
    utterances: int
    audio_seconds: float
    trials: list[Trial] = field(default_factory=list)

    def table(self) -> str:
        """The trials as a text table, best first."""
        lines = [f"{'lm_weight':>9} {'word_score':>10} {'beam':>5} {'WER %':>7}"]
        for t in sorted(self.trials, key=lambda t: t.wer):
            lines.append(f"{t.lm_weight:>9.2f} {t.word_score:>10.2f} {t.beam_width:>5d} "
                         f"{100 * t.wer:>7.2f}")
        return "\n".join(lines)


def cached_log_probs(model: Any, manifests: Sequence[str | os.PathLike[str]],
                     limit: int | None = None, language: str | None = None
                     ) -> tuple[list[list[np.ndarray]], list[str], float]:
    """Run the model once over the manifests: (log-probabilities of each utterance's pieces
    (long audio is cut as `Model.transcribe` cuts it), normalised references, seconds).
    Unreadable audio is logged and skipped. References are normalised as in
    `harken.training.evaluate.evaluate_manifests` (by default, as the model's tokenizer was trained)."""

    if model.is_transducer:
        raise HarkenError("LM tuning searches CTC beam search settings on CTC log-probabilities; "
                          "transducer models decode with their own search (docs/transducer.md)")

    normalize = reference_normalizer(model, language)
    utterances = [u for m in manifests for u in read_manifest(m)]
    if limit is not None:
        utterances = utterances[:limit]
    log_probs: list[list[np.ndarray]] = []
    references: list[str] = []
    seconds = 0.0
    for start in range(0, len(utterances), GROUP_SIZE):
        pieces, owners = [], []
        for utterance in utterances[start:start + GROUP_SIZE]:
            try:
                wave = load_utterance(utterance, model.sample_rate)
            except HarkenError as exc:
                log.warning("skipping %s: %s", utterance.audio, exc)
                continue
            seconds += len(wave) / model.sample_rate
            references.append(normalize(utterance.text))
            log_probs.append([])
            for _, piece in split_long_audio(wave, model.sample_rate):
                pieces.append(piece)
                owners.append(len(log_probs) - 1)
        for owner, lp in zip(owners, model.log_probs(pieces)):
            log_probs[owner].append(lp)
    if not references:
        raise HarkenError("lm tune: no readable utterance in " + ", ".join(map(str, manifests)))
    return log_probs, references, seconds


def tune_lm(
    model: Any,
    manifests: Sequence[str | os.PathLike[str]],
    lm: str | os.PathLike[str],
    *,
    lm_weights: Sequence[float] = LM_WEIGHTS,
    word_scores: Sequence[float] = WORD_SCORES,
    beam_widths: Sequence[int] = (32,),
    options: DecodeOptions | None = None,
    limit: int | None = None,
    workers: int | None = 1,
) -> TuneResult:
    """Decode a dev set with every (lm_weight, word_score, beam_width) and return the lowest
    WER (ties: the smaller beam). `options` sets the other decoding options."""

    base = options or DecodeOptions()
    began = time.perf_counter()
    log_probs, references, seconds = cached_log_probs(model, manifests, limit)
    log.info("acoustic model: %d utterances, %.0f s of audio in %.0f s", len(references),
             seconds, time.perf_counter() - began)
    tokenizer, frame_seconds = model.tokenizer, model.frame_seconds
    pieces = [lp for utterance in log_probs for lp in utterance]
    owners = [i for i, utterance in enumerate(log_probs) for _ in utterance]

    def wer(texts: Sequence[str]) -> float:
        joined: list[list[str]] = [[] for _ in references]
        for owner, text in zip(owners, texts):
            if text:
                joined[owner].append(text)
        return float(error_rates(references, [" ".join(t) for t in joined])["wer"])

    greedy_wer = wer([greedy_decode(lp, tokenizer, frame_seconds).text for lp in pieces])
    trials: list[Trial] = []
    for width in beam_widths:
        decoder = get_decoder(tokenizer, dataclasses.replace(
            base, lm=os.fspath(lm), beam_width=int(width), nbest=1))
        for alpha, beta in itertools.product(lm_weights, word_scores):
            trial = decoder.reweighted(float(alpha), float(beta))
            texts = [t.text for t in trial.decode_batch(pieces, frame_seconds, workers=workers)]
            trials.append(Trial(float(alpha), float(beta), int(width), wer(texts)))
            log.info("lm_weight %.2f word_score %.2f beam %d: WER %.2f%%", alpha, beta, width,
                     100 * trials[-1].wer)
    best = min(trials, key=lambda t: (round(t.wer, 9), t.beam_width))
    return TuneResult(best=best, greedy_wer=greedy_wer, utterances=len(references),
                      audio_seconds=seconds, trials=trials)
