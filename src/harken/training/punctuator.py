"""Training punctuators (`harken.written.punctuator`) on cased, punctuated text: labelled text
streams, the training loop with the training checkpoints and schedules, dev-text calibration
of the mark biases, and per-class scores."""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from harken.errors import ConfigError
from harken.text import TextNormalizer
from harken.written.punctuator import (CASES, PUNCTUATION, Punctuator, PunctuatorConfig, Vocabulary,
                                       build_network, label_sentence, load_punctuator, read_groups,
                                       save_punctuator, split_of)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOptions:
    """How `train_punctuator` runs: a bounded time or step budget, checkpoints, threads."""

    max_minutes: float = 30.0
    max_steps: int = 20000
    batch_size: int = 32
    min_words: int = 8
    max_words: int = 64
    lr: float = 2e-3
    warmup_steps: int = 300
    checkpoint_every: int = 500
    dev_windows: int = 1000
    threads: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.min_words <= self.max_words:
            raise ConfigError(f"min_words/max_words: expected 1 <= {self.min_words} <= "
                              f"{self.max_words}")
        for name in ("max_steps", "batch_size", "checkpoint_every", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: expected a positive integer, got {getattr(self, name)}")
        if self.max_minutes <= 0:
            raise ConfigError(f"max_minutes: expected a positive number, got {self.max_minutes}")


@dataclass
class TagScores:
    """Counts for per-class precision/recall/F1 of punctuation and casing accuracy."""

    punct_tp: list[int] = field(default_factory=lambda: [0] * len(PUNCTUATION))
    punct_fp: list[int] = field(default_factory=lambda: [0] * len(PUNCTUATION))
    punct_fn: list[int] = field(default_factory=lambda: [0] * len(PUNCTUATION))
    case_correct: int = 0
    case_confusion: list[list[int]] = field(
        default_factory=lambda: [[0] * len(CASES) for _ in CASES])
    words: int = 0

    def add(self, reference: Sequence[tuple[int, int]], predicted: Sequence[tuple[int, int]]
            ) -> None:
        for (ref_case, ref_punct), (case, punct) in zip(reference, predicted):
            self.words += 1
            self.case_correct += ref_case == case
            self.case_confusion[ref_case][case] += 1
            if ref_punct == punct:
                self.punct_tp[punct] += 1
            else:
                self.punct_fp[punct] += 1
                self.punct_fn[ref_punct] += 1

    def punctuation(self) -> dict[str, dict[str, float]]:
        """{mark: {precision, recall, f1, support}} for each mark (not the empty class)."""
        table = {}
        for i, mark in enumerate(PUNCTUATION[1:], 1):
            tp, fp, fn = self.punct_tp[i], self.punct_fp[i], self.punct_fn[i]
            p = tp / (tp + fp) if tp + fp else 0.0
            r = tp / (tp + fn) if tp + fn else 0.0
            table[mark] = {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
                           "support": tp + fn}
        return table

    def casing_accuracy(self) -> float:
        return self.case_correct / self.words if self.words else 0.0

    def capitalised_f1(self) -> float:
        """F1 of 'this word starts with a capital' (upper or all capitals)."""
        c = self.case_confusion
        tp = sum(c[r][p] for r in (1, 2) for p in (1, 2))
        fp = c[0][1] + c[0][2]
        fn = c[1][0] + c[2][0]
        return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


class LabelledText:
    """The labelled words of many groups joined: word strings, casing, punctuation, and where
    each sentence starts (index arrays)."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self.cases: list[int] = []
        self.puncts: list[int] = []
        self.starts: list[int] = []
        self.ends: list[int] = []  # one past each sentence's last word

    def add(self, labelled: list[tuple[str, int, int]]) -> None:
        if not labelled:
            return
        self.starts.append(len(self.words))
        for word, case, punct in labelled:
            self.words.append(word)
            self.cases.append(case)
            self.puncts.append(punct)
        self.ends.append(len(self.words))

    def freeze(self) -> None:
        self.case_array = np.asarray(self.cases, np.int64)
        self.punct_array = np.asarray(self.puncts, np.int64)
        self.start_array = np.asarray(self.starts, np.int64)
        self.end_array = np.asarray(self.ends, np.int64)

    def window(self, rng: random.Random, options: TrainOptions) -> tuple[int, int]:
        """A training window: starting at a sentence start half of the time (else anywhere),
        ending at a sentence end half of the time (else after a random number of words)."""
        n = len(self.words)
        length = rng.randint(options.min_words, options.max_words)
        if rng.random() < 0.5:
            start = int(self.start_array[rng.randrange(len(self.start_array))])
        else:
            start = rng.randrange(max(1, n - options.min_words))
        end = min(n, start + length)
        if rng.random() < 0.5:  # cut at the last sentence end inside the window, if any
            inside = np.searchsorted(self.end_array, end, side="right") - 1
            if inside >= 0 and self.end_array[inside] > start:
                end = int(self.end_array[inside])
        return start, end


def load_training_text(paths: Iterable[str | Path], normalize: Callable[[str], str],
                       splits: Sequence[str] = ("train", "dev", "test")) -> dict[str, LabelledText]:
    """The labelled word streams of the splits asked for (see `split_of`)."""
    streams = {name: LabelledText() for name in splits}
    cache: dict[str, str] = {}

    def cached_normalize(text: str) -> str:
        hit = cache.get(text)
        if hit is None:
            hit = normalize(text)
            if len(cache) < 1_000_000:
                cache[text] = hit
        return hit

    for group, sentence in read_groups(paths):
        stream = streams.get(split_of(group))
        if stream is not None:
            stream.add(label_sentence(sentence, cached_normalize))
    for stream in streams.values():
        stream.freeze()
    return streams


def _batch(stream: LabelledText, spans: Sequence[tuple[int, int]], vocabulary: Vocabulary
           ) -> tuple[tuple[Any, Any, Any], Any, Any]:
    import torch

    inputs = vocabulary.encode([stream.words[a:b] for a, b in spans])
    longest = inputs[0].shape[1]
    cases = torch.full((len(spans), longest), -100, dtype=torch.long)
    puncts = torch.full((len(spans), longest), -100, dtype=torch.long)
    for row, (a, b) in enumerate(spans):
        cases[row, : b - a] = torch.from_numpy(stream.case_array[a:b])
        puncts[row, : b - a] = torch.from_numpy(stream.punct_array[a:b])
    return inputs, cases, puncts


def evaluate_stream(punctuator_tag: Callable[[list[str]], list[tuple[int, int]]],
                    stream: LabelledText, spans: Sequence[tuple[int, int]]) -> TagScores:
    """Score a tagger (words -> (casing, punctuation) per word) on windows of a stream."""
    scores = TagScores()
    for a, b in spans:
        reference = list(zip(stream.cases[a:b], stream.puncts[a:b]))
        scores.add(reference, punctuator_tag(stream.words[a:b]))
    return scores


def passages(stream: LabelledText, count: int, seed: int = 0, most: int = 3) -> list[tuple[int, int]]:
    """`count` evaluation spans of 1 to `most` consecutive whole sentences, fixed by `seed`."""
    rng = random.Random(seed)
    spans = []
    n = len(stream.starts)
    for _ in range(min(count, n)):
        first = rng.randrange(n)
        last = min(n - 1, first + rng.randint(1, most) - 1)
        spans.append((stream.starts[first], stream.ends[last]))
    return spans


def train_punctuator(texts: Sequence[str | Path], out: str | Path,
                     config: PunctuatorConfig = PunctuatorConfig(),
                     options: TrainOptions = TrainOptions(), resume: bool = False) -> Path:
    """Train a punctuator on written text and write it to `out` (a safetensors file).

    Checkpoints go to ``<out>.run/checkpoints`` (see `harken.training.checkpoints.save_checkpoint`); with
    `resume`, training continues from the latest one. Training stops after
    `options.max_steps` steps or `options.max_minutes` minutes, whichever comes first.
    """
    import torch

    # torch: only when training (`harken punctuator --help` and its option defaults need none)
    from harken.training.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
    from harken.training.config import OptimSection, lr_lambda

    out = Path(out)
    run_dir = out.with_name(out.name + ".run")
    torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    rng = random.Random(options.seed)
    normalize = TextNormalizer(config.language)
    began = time.monotonic()
    streams = load_training_text(texts, normalize, ("train", "dev"))
    train_stream, dev_stream = streams["train"], streams["dev"]
    if len(train_stream.words) < options.max_words:
        raise ConfigError(f"{', '.join(map(str, texts))}: only {len(train_stream.words)} words "
                          "of training text; a punctuator needs thousands")
    if not dev_stream.words:  # small texts: hold out the end of the training stream
        dev_stream = train_stream
    log.info("punctuator text: %d train words, %d dev words (%.0f s)", len(train_stream.words),
             len(dev_stream.words), time.monotonic() - began)
    vocab_file = run_dir / "vocabulary.json"
    if resume and vocab_file.is_file():
        words = json.loads(vocab_file.read_text(encoding="utf-8"))
    else:
        from collections import Counter

        counts = Counter(train_stream.words)
        words = [w for w, c in counts.most_common(config.vocab_size) if c >= 2]
        run_dir.mkdir(parents=True, exist_ok=True)
        vocab_file.write_text(json.dumps(words), encoding="utf-8")
        (run_dir / "config.json").write_text(json.dumps(
            {"punctuator": asdict(config), "options": asdict(options),
             "texts": [str(t) for t in texts]}, indent=1), encoding="utf-8")
    vocabulary = Vocabulary(words, config)
    network = build_network(config)
    optimizer = torch.optim.AdamW(network.parameters(), lr=options.lr, weight_decay=1e-4)
    schedule = OptimSection(lr=options.lr, warmup_steps=options.warmup_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                  lr_lambda(schedule, options.max_steps))
    step, progress = 0, {"elapsed_s": 0.0, "dev": []}
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if checkpoint is not None:
        progress = load_checkpoint(checkpoint, network, optimizer, scheduler)
        step = int(json.loads((checkpoint / "state.json").read_text())["step"])
        rng.seed(options.seed + step)
        log.info("resumed from %s (step %d)", checkpoint, step)
    dev_spans = passages(dev_stream, options.dev_windows, seed=options.seed)
    started = time.monotonic() - float(progress.get("elapsed_s", 0.0))
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-100)
    network.train()
    while step < options.max_steps and time.monotonic() - started < options.max_minutes * 60:
        spans = [train_stream.window(rng, options) for _ in range(options.batch_size)]
        inputs, cases, puncts = _batch(train_stream, spans, vocabulary)
        case_logits, punct_logits = network(*inputs)
        loss = (loss_fn(case_logits.reshape(-1, len(CASES)), cases.reshape(-1))
                + loss_fn(punct_logits.reshape(-1, len(PUNCTUATION)), puncts.reshape(-1)))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 5.0)
        optimizer.step()
        scheduler.step()
        step += 1
        if step % 50 == 0:
            log.info("step %d loss %.4f lr %.2e (%.0f s)", step, loss.item(),
                     scheduler.get_last_lr()[0], time.monotonic() - started)
        if step % options.checkpoint_every == 0:
            progress = _checkpoint_progress(network, vocabulary, config, dev_stream, dev_spans,
                                            progress, step, time.monotonic() - started)
            save_checkpoint(run_dir, step, network, optimizer, scheduler, progress, keep=2)
            network.train()
    progress = _checkpoint_progress(network, vocabulary, config, dev_stream, dev_spans,
                                    progress, step, time.monotonic() - started)
    save_checkpoint(run_dir, step, network, optimizer, scheduler, progress, keep=2)
    network.eval()
    bias = calibrate(Punctuator(config, vocabulary, network), dev_stream, dev_spans)
    config = dataclasses.replace(config, punct_bias=bias)
    training = {"steps": step, "texts": [Path(t).name for t in texts],
                "train_words": len(train_stream.words), "dev": progress["dev"][-1]}
    return save_punctuator(network, config, Vocabulary(words, config), out, training)


def calibrate(punctuator: Punctuator, stream: LabelledText, spans: Sequence[tuple[int, int]]
              ) -> tuple[float, ...]:
    """Punctuation biases that maximise the micro-F1 of the marks on `spans` of `stream`.

    A grid over two numbers: the bias of "no mark" (against marks put where none belongs)
    and the bias of the comma (the mark a small model most often leaves out)."""
    logits = np.concatenate([punctuator.punctuation_logits(stream.words[a:b]) for a, b in spans])
    reference = np.concatenate([stream.punct_array[a:b] for a, b in spans])
    best, best_f1 = (0.0, 0.0), -1.0
    for none_bias in np.arange(-1.0, 3.01, 0.25):
        for comma_bias in np.arange(-1.0, 2.01, 0.25):
            bias = np.zeros(len(PUNCTUATION))
            bias[0], bias[1] = none_bias, comma_bias
            predicted = (logits + bias).argmax(-1)
            marked = predicted != 0
            tp = int(((predicted == reference) & marked).sum())
            f1 = 2 * tp / max(1, int(marked.sum()) + int((reference != 0).sum()))
            if f1 > best_f1 + 1e-9:
                best, best_f1 = (float(none_bias), float(comma_bias)), f1
    log.info("calibrated: no-mark bias %.2f, comma bias %.2f (mark F1 %.4f)", *best, best_f1)
    return (best[0], best[1]) + (0.0,) * (len(PUNCTUATION) - 2)


def calibrate_file(path: str | Path, texts: Sequence[str | Path], out: str | Path | None = None,
                   passages_count: int = 3000) -> Path:
    """Calibrate a punctuator file on the dev groups of `texts`; writes `out` (default: itself)."""
    from dataclasses import replace

    punctuator = load_punctuator(path)
    plain = replace(punctuator.config, punct_bias=())
    punctuator = Punctuator(plain, Vocabulary(punctuator.vocabulary.words, plain),
                            punctuator.network)

    streams = load_training_text(texts, TextNormalizer(plain.language), ("dev", "train"))
    dev = streams["dev"]
    if not dev.words:  # small texts: as in training, the training groups stand in
        log.warning("%s: no dev groups; calibrating on the training groups",
                    ", ".join(map(str, texts)))
        dev = streams["train"]
    if not dev.words:
        raise ConfigError(f"{', '.join(map(str, texts))}: no text to calibrate on")
    bias = calibrate(punctuator, dev, passages(dev, passages_count, seed=2))
    config = replace(plain, punct_bias=bias)
    training = {**training_of(path), "calibrated_on": [Path(t).name for t in texts]}
    return save_punctuator(punctuator.network, config, Vocabulary(punctuator.vocabulary.words,
                                                                  config), out or path, training)


def training_of(path: str | Path) -> dict[str, Any]:
    """The training metadata stored in a punctuator file ({} when it has none)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads((f.metadata() or {}).get("training", "{}"))


def _checkpoint_progress(network: Any, vocabulary: Vocabulary, config: PunctuatorConfig,
                         dev: LabelledText, spans: Sequence[tuple[int, int]],
                         progress: dict[str, Any], step: int, elapsed: float) -> dict[str, Any]:
    network.eval()
    punctuator = Punctuator(config, vocabulary, network)
    scores = evaluate_stream(punctuator.tag, dev, spans)
    table = scores.punctuation()
    record = {"step": step, "casing_accuracy": round(scores.casing_accuracy(), 4),
              **{f"f1{mark}": round(v["f1"], 4) for mark, v in table.items() if mark in ",.?"}}
    log.info("dev at step %d: %s", step, record)
    return {"elapsed_s": elapsed, "dev": [*progress.get("dev", []), record]}
