"""Punctuation and capitalisation restoration: a small word tagger over normalised transcripts.

A `Punctuator` reads the words a recogniser outputs ("please call stella and ask her") and
predicts for each word its casing (`CASES`: lower, first letter upper, all capitals) and the
punctuation that follows it (`PUNCTUATION`: none , . ? ! : ; and a dash). Words are embedded
from a word vocabulary plus hashed character trigrams (so unseen words and any alphabet work),
read by a two-layer bidirectional LSTM, and classified by two linear heads.

A punctuator is one safetensors file: the weights (float16) and, in its metadata, the
`PunctuatorConfig` and the vocabulary as JSON. `train_punctuator` trains one from written
text (`harken punctuator train TEXT --out FILE`), with the checkpoints of `harken.train`, and
then `calibrate`s the biases of "no mark" and of the comma on the dev text.

Training text: one sentence a line, optionally ``group<TAB>sentence`` (a group is a book or a
dialogue; consecutive sentences of a group are joined into training windows). Groups are held
out for dev and test by a hash of their name (`split_of`), so the same text always splits the
same way.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import re
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from harken.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

CASES = ("lower", "upper", "allcaps")
PUNCTUATION = ("", ",", ".", "?", "!", ":", ";", "-")
SENTENCE_END = frozenset(".?!")
PUNCTUATOR_FORMAT = "harken-punctuator"
PUNCTUATOR_VERSION = 1
# Held-out groups: crc32(group) % SPLIT_MODULUS == 0 is test, == 1 is dev, the rest train.
SPLIT_MODULUS = 20
# Inference reads long word sequences in windows of WINDOW words that overlap by CONTEXT on
# each side; only each window's middle is kept.
WINDOW = 96
CONTEXT = 16
_PAD = 0
_DASHES_RE = re.compile(r"\s*(?:--+|\u2014|\u2013|\u2015)\s*")
_PUNCT_PRIORITY = "?!.:;,-"  # the label of a run of trailing marks: the first of these in it


@dataclass(frozen=True)
class PunctuatorConfig:
    """A punctuator's sizes and its language; saved in the model file's metadata."""

    language: str = "en"
    vocab_size: int = 12000  # words with an embedding of their own (most frequent first)
    hash_buckets: int = 8192  # character-trigram buckets
    max_ngrams: int = 20  # trigrams kept per word (plus one bucket for the whole word)
    dim: int = 80
    hidden: int = 128
    layers: int = 2
    dropout: float = 0.1
    # Added to the punctuation logits before the choice (one per PUNCTUATION class, or empty
    # for none): set by `calibrate` on dev text, trading marks' precision against recall.
    punct_bias: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "punct_bias", tuple(float(b) for b in self.punct_bias))
        if self.punct_bias and len(self.punct_bias) != len(PUNCTUATION):
            raise ConfigError(f"punctuator punct_bias: expected {len(PUNCTUATION)} numbers (one "
                              f"per class {PUNCTUATION}), got {len(self.punct_bias)}")
        for name in ("vocab_size", "hash_buckets", "max_ngrams", "dim", "hidden", "layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"punctuator {name}: expected a positive integer, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"punctuator dropout: expected 0 <= dropout < 1, got {self.dropout}")

    @classmethod
    def from_dict(cls, data: Any, source: object = "punctuator") -> "PunctuatorConfig":
        if not isinstance(data, dict) or set(data) - set(cls.__dataclass_fields__):
            raise ModelError(f"{source}: punctuator config must be a table of "
                             f"{sorted(cls.__dataclass_fields__)}, got {data!r}")
        return cls(**data)


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


# ---------------------------------------------------------------------------------------------
# Labels: written text -> (normalised word, casing, punctuation after it)
# ---------------------------------------------------------------------------------------------

def casing_of(token: str) -> int:
    """The casing class of a written word: 0 lower, 1 first letter upper, 2 all capitals."""
    letters = [c for c in token if c.isalpha()]
    if not letters or not any(c.isupper() for c in letters):
        return 0
    cased = [c for c in letters if c.isupper() or c.islower()]
    if len(cased) > 1 and all(c.isupper() for c in cased):
        return 2
    return 1 if letters[0].isupper() else 0


def _punctuation_of(marks: str) -> int:
    if "\u2014" in marks or "--" in marks:
        marks = marks.replace("\u2014", "-")
    for mark in _PUNCT_PRIORITY:
        if mark in marks:
            return PUNCTUATION.index(mark)
    return 0


def label_sentence(sentence: str, normalize: Callable[[str], str]
                   ) -> list[tuple[str, int, int]]:
    """(normalised word, casing, punctuation) for each spoken word of a written sentence.

    "Call Stella, please." -> [("call", 1, 0), ("stella", 1, 1), ("please", 0, 2)]. A token
    that normalises to several words ("21" -> "twenty one") gives its casing to each and its
    punctuation to the last; marks standing alone (a dash) attach to the word before.
    """
    labelled: list[tuple[str, int, int]] = []
    for token in _DASHES_RE.sub(" \u2014 ", sentence).split():
        start = next((i for i, c in enumerate(token) if c.isalnum()), None)
        if start is None:  # marks only: they follow the previous word
            if labelled and labelled[-1][2] == 0:
                word, case, _ = labelled[-1]
                labelled[-1] = (word, case, _punctuation_of(token))
            continue
        end = max(i for i, c in enumerate(token) if c.isalnum()) + 1
        core, trailing = token[start:end], token[end:]
        words = normalize(token).split()  # the whole token: "$21," -> "twenty one dollars"
        if not words:
            continue
        case = casing_of(core)
        labelled.extend((w, case, 0) for w in words)
        labelled[-1] = (words[-1], case, _punctuation_of(trailing))
    return labelled


def split_of(group: str) -> str:
    """"test", "dev" or "train": where a group (book, dialogue) of training text belongs."""
    bucket = zlib.crc32(group.encode("utf-8")) % SPLIT_MODULUS
    return "test" if bucket == 0 else "dev" if bucket == 1 else "train"


def read_groups(paths: Iterable[str | Path]) -> Iterator[tuple[str, str]]:
    """(group, sentence) pairs from text files (.gz ok): ``group<TAB>sentence`` lines, or plain
    lines, which form groups of 1000 consecutive lines named after the file."""
    import gzip

    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such text file")
        opener = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rt", encoding="utf-8") as f:  # type: ignore[operator]
                for number, line in enumerate(f):
                    group, tab, sentence = line.rstrip("\n").partition("\t")
                    if not tab:
                        group, sentence = f"{path.name}:{number // 1000}", group
                    if sentence.strip():
                        yield group, sentence
        except (UnicodeDecodeError, OSError, EOFError) as exc:
            raise ConfigError(f"{path}: cannot read it as UTF-8 text ({exc})") from exc


# ---------------------------------------------------------------------------------------------
# Word features
# ---------------------------------------------------------------------------------------------

class Vocabulary:
    """Word -> (vocabulary id, hashed trigram ids); id 0 is the unknown word / padding."""

    def __init__(self, words: Sequence[str], config: PunctuatorConfig) -> None:
        self.words = list(words)[: config.vocab_size]
        self.config = config
        self._ids = {w: i + 1 for i, w in enumerate(self.words)}
        self._cache: dict[str, tuple[int, list[int]]] = {}

    def features(self, word: str) -> tuple[int, list[int]]:
        cached = self._cache.get(word)
        if cached is None:
            marked = f"<{word}>"
            grams = [marked[i: i + 3] for i in range(max(1, len(marked) - 2))]
            buckets = self.config.hash_buckets
            ids = [zlib.crc32(g.encode("utf-8")) % buckets + 1
                   for g in grams[: self.config.max_ngrams]]
            ids.append(zlib.crc32(b"w:" + word.encode("utf-8")) % buckets + 1)
            cached = (self._ids.get(word, 0), ids)
            if len(self._cache) < 500_000:
                self._cache[word] = cached
        return cached

    def encode(self, batch: Sequence[Sequence[str]]) -> tuple[Any, Any, Any]:
        """(word ids (B, T), trigram ids (B, T, K), lengths (B,)) as int64 tensors."""
        import torch

        longest = max((len(words) for words in batch), default=0)
        k = self.config.max_ngrams + 1
        word_ids = np.zeros((len(batch), max(1, longest)), np.int64)
        gram_ids = np.zeros((len(batch), max(1, longest), k), np.int64)
        for row, words in enumerate(batch):
            for col, word in enumerate(words):
                wid, grams = self.features(word)
                word_ids[row, col] = wid
                gram_ids[row, col, : len(grams)] = grams
        lengths = torch.tensor([len(w) for w in batch], dtype=torch.long)
        return torch.from_numpy(word_ids), torch.from_numpy(gram_ids), lengths


def _network(config: PunctuatorConfig) -> Any:
    import torch
    from torch import nn

    class PunctuatorNet(nn.Module):
        """forward(word_ids (B, T), gram_ids (B, T, K), lengths (B,)) ->
        (case logits (B, T, len(CASES)), punctuation logits (B, T, len(PUNCTUATION)))."""

        def __init__(self) -> None:
            super().__init__()
            self.words = nn.Embedding(config.vocab_size + 1, config.dim, padding_idx=_PAD)
            self.grams = nn.Embedding(config.hash_buckets + 1, config.dim, padding_idx=_PAD)
            self.dropout = nn.Dropout(config.dropout)
            self.lstm = nn.LSTM(config.dim, config.hidden, num_layers=config.layers,
                                batch_first=True, bidirectional=True,
                                dropout=config.dropout if config.layers > 1 else 0.0)
            self.case = nn.Linear(2 * config.hidden, len(CASES))
            self.punct = nn.Linear(2 * config.hidden, len(PUNCTUATION))

        def forward(self, word_ids: torch.Tensor, gram_ids: torch.Tensor,
                    lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            counts = (gram_ids != _PAD).sum(-1, keepdim=True).clamp(min=1)
            x = self.words(word_ids) + self.grams(gram_ids).sum(2) / counts  # (B, T, D)
            x = self.dropout(x)
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu().clamp(min=1),
                                                       batch_first=True, enforce_sorted=False)
            y, _ = self.lstm(packed)
            y, _ = nn.utils.rnn.pad_packed_sequence(y, batch_first=True,
                                                    total_length=x.shape[1])
            y = self.dropout(y)  # (B, T, 2H)
            return self.case(y), self.punct(y)

    return PunctuatorNet()


# ---------------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------------

def apply_casing(word: str, case: int) -> str:
    if case == 2:
        return word.upper()
    if case == 1:
        return word[:1].upper() + word[1:]
    return word


class Punctuator:
    """Restores casing and punctuation of normalised words. Load one with `load_punctuator`."""

    def __init__(self, config: PunctuatorConfig, vocabulary: Vocabulary, network: Any,
                 path: Path | None = None) -> None:
        self.config = config
        self.vocabulary = vocabulary
        self.network = network.eval()
        self.path = path

    def tag(self, words: Sequence[str]) -> list[tuple[int, int]]:
        """(casing, punctuation) class indices per word, as the network predicts them."""
        import torch

        words = list(words)
        if not words:
            return []
        step = WINDOW - 2 * CONTEXT
        spans = [(max(0, s - CONTEXT), min(len(words), s + step + CONTEXT), s,
                  min(len(words), s + step)) for s in range(0, len(words), step)]
        batch = [words[a:b] for a, b, _, _ in spans]
        with torch.inference_mode():
            case_logits, punct_logits = self.network(*self.vocabulary.encode(batch))
        if self.config.punct_bias:
            punct_logits = punct_logits + torch.tensor(self.config.punct_bias)
        cases = case_logits.argmax(-1).tolist()
        puncts = punct_logits.argmax(-1).tolist()
        tags: list[tuple[int, int]] = []
        for row, (a, _, keep_from, keep_to) in enumerate(spans):
            for i in range(keep_from - a, keep_to - a):
                tags.append((cases[row][i], puncts[row][i]))
        return tags

    def punctuation_logits(self, words: Sequence[str]) -> np.ndarray:
        """(words, len(PUNCTUATION)) punctuation logits of one window, without the bias."""
        import torch

        with torch.inference_mode():
            _, punct_logits = self.network(*self.vocabulary.encode([list(words)]))
        return punct_logits[0, : len(words)].numpy()

    def tags(self, words: Sequence[str], final: bool = True) -> list[tuple[int, int]]:
        """`tag` with the rules of written text applied (see `sentence_rules`)."""
        return sentence_rules(self.tag(words), final)

    def restore(self, words: Sequence[str], final: bool = True) -> list[str]:
        """The written form of each word: cased, with its punctuation appended.

        The first word and each word after . ? ! start with a capital; with `final`, the last
        word ends a sentence (a period unless it already ends with . ? !).
        """
        tags = self.tag(words)
        return written_forms(words, tags, final=final)

    def __call__(self, text: str) -> str:
        """'please call stella' -> 'Please call Stella.'"""
        return " ".join(self.restore(text.split()))


def sentence_rules(tags: Sequence[tuple[int, int]], final: bool = True
                   ) -> list[tuple[int, int]]:
    """Tags with the first word and each word after . ? ! capitalised and, with `final`, a
    sentence end after the last word (a period unless it has . ? !)."""
    out: list[tuple[int, int]] = []
    sentence_start = True
    period = PUNCTUATION.index(".")
    for index, (case, punct) in enumerate(tags):
        if sentence_start and case == 0:
            case = 1
        if final and index == len(tags) - 1 and PUNCTUATION[punct] not in SENTENCE_END:
            punct = period
        out.append((case, punct))
        sentence_start = PUNCTUATION[punct] in SENTENCE_END
    return out


def sentence_marks(words: Sequence[str], tags: Sequence[tuple[int, int]], final: bool = True
                   ) -> tuple[list[str], list[str]]:
    """(cased words, punctuation after each) from tags, with `sentence_rules` applied."""
    ruled = sentence_rules(tags, final)
    return ([apply_casing(w, case) for w, (case, _) in zip(words, ruled)],
            [PUNCTUATION[punct] for _, punct in ruled])


def written_forms(words: Sequence[str], tags: Sequence[tuple[int, int]],
                  final: bool = True) -> list[str]:
    """Words with casing and punctuation applied, sentence starts capitalised."""
    cased, marks = sentence_marks(words, tags, final)
    return [w + m for w, m in zip(cased, marks)]


def rule_baseline(words: Sequence[str]) -> list[tuple[int, int]]:
    """The rule baseline: capital first word, a period after the last, nothing else."""
    return [(1 if i == 0 else 0, 2 if i == len(words) - 1 else 0) for i in range(len(words))]


def save_punctuator(network: Any, config: PunctuatorConfig, vocabulary: Vocabulary,
                    path: str | Path, training: dict[str, Any] | None = None) -> Path:
    """Write a punctuator file: float16 weights with config and vocabulary in its metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().half().contiguous() for k, v in network.state_dict().items()}
    metadata = {"format": PUNCTUATOR_FORMAT, "version": str(PUNCTUATOR_VERSION),
                "config": json.dumps(asdict(config)), "vocabulary": json.dumps(vocabulary.words),
                "training": json.dumps(training or {})}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.chmod(0o644)
    tmp.replace(path)
    return path


def load_punctuator(path: str | Path, expected_sha256: str | None = None) -> Punctuator:
    """Load a punctuator file; `ModelError` naming it when it is not one or is damaged."""
    import torch
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such punctuator file")
    if expected_sha256 is not None:
        from harken.model import sha256_file

        if sha256_file(path) != expected_sha256:
            raise ModelError(f"{path}: the punctuator is corrupt (SHA-256 mismatch); reinstall "
                             "harken or retrain it")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k).float() for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable safetensors file ({exc})") from exc
    if metadata.get("format") != PUNCTUATOR_FORMAT:
        raise ModelError(f"{path}: not a harken punctuator (metadata format "
                         f"{metadata.get('format')!r})")
    if int(metadata.get("version", "0")) > PUNCTUATOR_VERSION:
        raise ModelError(f"{path}: punctuator format {metadata.get('version')} is newer than "
                         f"this harken understands ({PUNCTUATOR_VERSION}); upgrade harken")
    try:
        config = PunctuatorConfig.from_dict(json.loads(metadata["config"]), path)
        words = json.loads(metadata["vocabulary"])
        network = _network(config)
        network.load_state_dict(tensors, strict=True)
    except (KeyError, json.JSONDecodeError, RuntimeError, TypeError, ConfigError) as exc:
        raise ModelError(f"{path}: punctuator weights or metadata are damaged ({exc})") from exc
    return Punctuator(config, Vocabulary(words, config), network, path)


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

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

    Checkpoints go to ``<out>.run/checkpoints`` (see `harken.train.save_checkpoint`); with
    `resume`, training continues from the latest one. Training stops after
    `options.max_steps` steps or `options.max_minutes` minutes, whichever comes first.
    """
    import torch

    from harken.text import TextNormalizer
    from harken.train import (OptimSection, latest_checkpoint, load_checkpoint, lr_lambda,
                              save_checkpoint)

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
    network = _network(config)
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
    from harken.text import TextNormalizer

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


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def register_punctuator_commands(sub: Any) -> None:
    """`harken punctuator train|calibrate|apply|attach`."""
    parser = sub.add_parser("punctuator", help="train or apply a punctuation and casing model")
    commands = parser.add_subparsers(title="punctuator commands", metavar="COMMAND")
    t = commands.add_parser("train", help="train a punctuator on written text",
                            description="Train a punctuator on cased, punctuated text: one "
                                        "sentence a line, or group<TAB>sentence (groups are held "
                                        "out for dev/test by a hash of their name).")
    t.add_argument("texts", nargs="+", type=Path, help="text files (.gz ok)")
    t.add_argument("--out", type=Path, required=True, help="output punctuator file (.safetensors)")
    t.add_argument("--language", default="en", help="the normaliser's language (default: en)")
    t.add_argument("--max-minutes", type=float, default=TrainOptions.max_minutes)
    t.add_argument("--max-steps", type=int, default=TrainOptions.max_steps)
    t.add_argument("--threads", type=int, default=TrainOptions.threads)
    t.add_argument("--vocab-size", type=int, default=PunctuatorConfig.vocab_size)
    t.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    t.set_defaults(func=_run_train)
    a = commands.add_parser("apply", help="punctuate normalised text read from stdin or --text")
    a.add_argument("punctuator", type=Path, help="punctuator file")
    a.add_argument("--text", default=None, help="text to punctuate (default: stdin lines)")
    a.set_defaults(func=_run_apply)
    s = commands.add_parser("attach", help="write a copy of a model that ships a punctuator",
                            description="Write MODEL with PUNCTUATOR inside it: its transcripts "
                                        "are then written text by default (--raw for raw).")
    s.add_argument("model", help="model folder, .harken file or bundled model name")
    s.add_argument("punctuator", type=Path, help="punctuator file")
    s.add_argument("--out", type=Path, required=True, help="output model (folder or .harken)")
    s.set_defaults(func=_run_attach)
    c = commands.add_parser("calibrate", help="tune a punctuator's mark biases on dev text",
                            description="Choose the biases of 'no mark' and of the comma that "
                                        "maximise the marks' F1 on the dev groups of TEXT "
                                        "(training does this at its end).")
    c.add_argument("punctuator", type=Path, help="punctuator file")
    c.add_argument("texts", nargs="+", type=Path, help="text files (.gz ok)")
    c.add_argument("--out", type=Path, default=None, help="output file (default: in place)")
    c.set_defaults(func=_run_calibrate)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def _run_train(args: Any) -> int:
    config = PunctuatorConfig(language=args.language, vocab_size=args.vocab_size)
    options = TrainOptions(max_minutes=args.max_minutes, max_steps=args.max_steps,
                           threads=args.threads)
    path = train_punctuator(args.texts, args.out, config, options, resume=args.resume)
    print(f"wrote {path}")
    return 0


def _run_calibrate(args: Any) -> int:
    path = calibrate_file(args.punctuator, args.texts, args.out)
    print(f"wrote {path} (punctuation biases {load_punctuator(path).config.punct_bias[:2]})")
    return 0


def _run_attach(args: Any) -> int:
    from harken.model import load_model

    model = load_model(args.model)
    model.punctuator = load_punctuator(args.punctuator)
    print(f"wrote {model.save(args.out)}")
    return 0


def _run_apply(args: Any) -> int:
    import sys

    punctuator = load_punctuator(args.punctuator)
    lines = [args.text] if args.text is not None else sys.stdin
    for line in lines:
        print(punctuator(line.strip()))
    return 0
