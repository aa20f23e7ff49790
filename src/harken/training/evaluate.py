"""Evaluation: word and character error rates (jiwer) and real-time factor on manifests."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from harken.errors import HarkenError
from harken.text import reference_normalizer
from harken.training.manifests import load_utterance, read_manifest

# Utterances are transcribed in groups of this many to batch the network.
GROUP_SIZE = 16


@dataclass
class EvalResult:
    """Scores of one evaluation. Rates are fractions (0.1 = 10%)."""

    n: int
    audio_seconds: float
    wer: float
    cer: float
    substitutions: int
    deletions: int
    insertions: int
    reference_words: int
    rtf: float
    failed: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (f"{self.n} utterances, {self.audio_seconds / 3600:.2f} h: WER {100 * self.wer:.2f}% "
                f"(S {self.substitutions} D {self.deletions} I {self.insertions} of "
                f"{self.reference_words} words), CER {100 * self.cer:.2f}%, RTF {self.rtf:.4f}"
                + (f", {len(self.failed)} failed" if self.failed else ""))


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float | int]:
    """WER, CER and edit counts over whole corpora (errors summed, not averaged per utterance)."""
    import jiwer

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    pairs = [(r, h) for r, h in zip(references, hypotheses) if r.strip()]
    if not pairs:
        return {"wer": 0.0, "cer": 0.0, "substitutions": 0, "deletions": 0, "insertions": 0,
                "reference_words": 0}
    refs = [r for r, _ in pairs]
    # A whitespace-only hypothesis counts as empty: all of its reference's words are deletions.
    hyps = [h if h.strip() else "" for _, h in pairs]
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    return {"wer": words.wer, "cer": chars.cer, "substitutions": words.substitutions,
            "deletions": words.deletions, "insertions": words.insertions,
            "reference_words": sum(len(r.split()) for r in refs)}


def evaluate_manifests(model: Any, manifests: Sequence[str | Path], options: Any = None,
                       limit: int | None = None, hyps_out: str | Path | None = None,
                       language: str | None = None, progress: bool = False) -> EvalResult:
    """Transcribe every utterance of the manifests and score against their transcripts.

    References are normalised with `TextNormalizer(language)`, by default with the normaliser
    the model's tokenizer was trained with (English for models that do not say).

    An utterance whose audio cannot be read is listed in `failed` and left out of the scores.
    """

    normalize = reference_normalizer(model, language)
    utterances = [u for m in manifests for u in read_manifest(m)]
    if limit is not None:
        utterances = utterances[:limit]
    references: list[str] = []
    hypotheses: list[str] = []
    failed: list[dict[str, str]] = []
    audio_seconds = 0.0
    compute_seconds = 0.0
    out = open(hyps_out, "w", encoding="utf-8") if hyps_out else None
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(utterances), unit="utt", desc="evaluate")
    try:
        for start in range(0, len(utterances), GROUP_SIZE):
            group = utterances[start: start + GROUP_SIZE]
            waves, kept = [], []
            for u in group:
                try:
                    waves.append(load_utterance(u, model.sample_rate))
                except HarkenError as exc:
                    failed.append({"id": u.id, "audio": str(u.audio), "error": str(exc)})
                    continue
                kept.append(u)
            began = time.perf_counter()
            # scoring compares normalised text: the recognised words, not written text
            transcripts = (model.transcribe_batch(waves, options, **_raw(model))
                           if waves else [])
            compute_seconds += time.perf_counter() - began
            for u, wave, t in zip(kept, waves, transcripts):
                reference = normalize(u.text)
                references.append(reference)
                hypotheses.append(t.text)
                audio_seconds += len(wave) / model.sample_rate
                if out:
                    out.write(json.dumps({"id": u.id, "audio": str(u.audio), "ref": reference,
                                          "hyp": t.text}) + "\n")
            if bar is not None:
                bar.update(len(group))
    finally:
        if out:
            out.close()
        if bar is not None:
            bar.close()
    rates = error_rates(references, hypotheses)
    return EvalResult(n=len(references), audio_seconds=audio_seconds,
                      rtf=compute_seconds / audio_seconds if audio_seconds else 0.0,
                      failed=failed, **rates)  # type: ignore[arg-type]


def _raw(model: Any) -> dict[str, Any]:
    """`written=False` for models that write text (ONNX and other model types may not)."""
    return {"written": False} if getattr(model, "punctuator", None) is not None else {}
