"""Punctuation and capitalisation restoration: a small word tagger over normalised transcripts.

A `Punctuator` reads the words a recogniser outputs ("please call stella and ask her") and
predicts for each word its casing (`CASES`: lower, first letter upper, all capitals) and the
punctuation that follows it (`PUNCTUATION`: none , . ? ! : ; and a dash). Words are embedded
from a word vocabulary plus hashed character trigrams (so unseen words and any alphabet work),
read by a two-layer bidirectional LSTM, and classified by two linear heads.

A punctuator is one safetensors file: the weights (float16) and, in its metadata, the
`PunctuatorConfig` and the vocabulary as JSON. `train_punctuator` trains one from written
text (`harken punctuator train TEXT --out FILE`), with the checkpoints of `harken.training.loop`, and
then `calibrate`s the biases of "no mark" and of the comma on the dev text.

Training text: one sentence a line, optionally ``group<TAB>sentence`` (a group is a book or a
dialogue; consecutive sentences of a group are joined into training windows). Groups are held
out for dev and test by a hash of their name (`split_of`), so the same text always splits the
same way.
"""

from __future__ import annotations

import json
import logging
import re
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from harken.errors import ConfigError, ModelError
from harken.modelfile import sha256_file

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


def build_network(config: PunctuatorConfig) -> Any:
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
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such punctuator file")
    if expected_sha256 is not None:

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
        network = build_network(config)
        network.load_state_dict(tensors, strict=True)
    except (KeyError, json.JSONDecodeError, RuntimeError, TypeError, ConfigError) as exc:
        raise ModelError(f"{path}: punctuator weights or metadata are damaged ({exc})") from exc
    return Punctuator(config, Vocabulary(words, config), network, path)


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------



# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------





















# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------









