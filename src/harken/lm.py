"""n-gram language models for beam search: building ARPA files from text, and their metadata.

`build_lm` normalises text exactly as transcripts are normalised, turns it into the LM's units
and estimates an interpolated modified Kneser-Ney model:

- with KenLM's `lmplz` (and `build_binary` for the fast binary format) when they are found in
  `$HARKEN_KENLM_BIN` or on PATH; `scripts/build_kenlm.sh` builds them from the `kenlm` source
  package;
- otherwise with the built-in estimator `estimate_kneser_ney`, which follows lmplz (Chen &
  Goodman's modified Kneser-Ney: three discounts per order from the count-of-counts of the
  adjusted counts, interpolation down to a uniform distribution) and writes an ARPA file that
  KenLM loads.

Units:

- "word": one LM word per word; the LM for lexicon decoding.
- "char": one LM word per character, and `WORD_BOUNDARY` ("|") between words: "the cat" ->
  "t h e | c a t". Lexicon-free decoding maps a character tokenizer's space token to "|".
- "token": the tokenizer's pieces ("▁the ▁ca t"), for lexicon-free decoding with SentencePiece.

Next to the ARPA file goes `<name>.lm.json` (`LMInfo`): the unit, the order and, once
`harken lm tune` has run, the tuned `lm_weight`/`word_score` that decoding uses as defaults.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from harken.errors import ConfigError, DependencyError, HarkenError

WORD_BOUNDARY = "|"  # between the words of a character LM's sentences
UNITS = ("word", "char", "token")
KENLM_BIN_ENV = "HARKEN_KENLM_BIN"
INFO_SUFFIX = ".lm.json"
LM_SUFFIXES = (".arpa", ".bin", ".binary", ".klm", ".lm")
ESTIMATORS = ("auto", "lmplz", "builtin")
# lmplz's --discount_fallback values, used when the count-of-counts give no valid discounts.
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)
MAX_ORDER = 6  # scripts/build_kenlm.sh builds KenLM with KENLM_MAX_ORDER=6

UNK, BOS, EOS = "<unk>", "<s>", "</s>"
_UNK_ID, _BOS_ID, _EOS_ID = 0, 1, 2


@dataclass(frozen=True)
class LMFiles:
    """What `build_lm` wrote: the ARPA file, the KenLM binary (None without build_binary) and
    the metadata file."""

    arpa: Path
    binary: Path | None
    info: Path

    @property
    def best(self) -> Path:
        """The file to decode with: the binary when there is one (loads in milliseconds)."""
        return self.binary or self.arpa


@dataclass(frozen=True)
class LMInfo:
    """An LM's metadata (`<name>.lm.json`): what its words are and its tuned weights."""

    unit: str = "word"
    order: int = 0
    word_boundary: str = WORD_BOUNDARY
    arpa: str | None = None  # file names, relative to the metadata file
    binary: str | None = None
    lm_weight: float | None = None  # tuned values (`harken lm tune`), decoding's defaults
    word_score: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


def info_path(lm: str | os.PathLike[str]) -> Path:
    """`<name>.lm.json` beside an LM file `<name>.arpa` / `<name>.bin` / ... or stem."""
    return _stem(Path(lm)).with_name(_stem(Path(lm)).name + INFO_SUFFIX)


def read_lm_info(lm: str | os.PathLike[str]) -> LMInfo:
    """The metadata of the LM file `lm`.

    From `<name>.lm.json` when present; otherwise guessed from the ARPA file's unigrams (an LM
    made elsewhere): single characters mean "char", SentencePiece pieces "token", else "word".
    """
    path = info_path(lm)
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            known = {f.name for f in dataclasses.fields(LMInfo)}
            info = LMInfo(**{k: v for k, v in data.items() if k in known})
        except (json.JSONDecodeError, TypeError) as exc:
            raise ConfigError(f"{path}: not a valid LM metadata file ({exc})") from exc
        if info.unit not in UNITS:
            raise ConfigError(f"{path}: unit must be one of {UNITS}, got {info.unit!r}")
        return info
    arpa = find_arpa(lm)
    if arpa is None:
        return LMInfo(unit="word")
    words = [w for w in arpa_unigrams(arpa) if w not in (UNK, BOS, EOS)]
    if words and all(len(w) == 1 for w in words):
        unit = "char"
    elif words and sum(w.startswith("\u2581") for w in words) > len(words) // 2:
        unit = "token"
    else:
        unit = "word"
    return LMInfo(unit=unit, arpa=arpa.name)


def write_lm_info(lm: str | os.PathLike[str], **changes: Any) -> Path:
    """Update (or create) the metadata of the LM file `lm`; returns the metadata file.

    `harken lm tune` stores its result with `write_lm_info(lm, lm_weight=..., word_score=...,
    details={...})`; unknown keys are a `ConfigError`.
    """
    known = {f.name for f in dataclasses.fields(LMInfo)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ConfigError(f"unknown LM metadata keys {unknown}; expected some of {sorted(known)}")
    info = read_lm_info(lm)
    if "details" in changes:
        changes["details"] = {**info.details, **changes["details"]}
    info = dataclasses.replace(info, **changes)
    path = info_path(lm)
    path.write_text(json.dumps(dataclasses.asdict(info), indent=2) + "\n", encoding="utf-8")
    return path


def find_arpa(lm: str | os.PathLike[str]) -> Path | None:
    """The ARPA file of an LM: `lm` itself when it is one, else `<name>.arpa` beside it."""
    path = Path(lm)
    if path.is_file() and _is_arpa(path):
        return path
    info = info_path(path)
    if info.is_file():
        name = json.loads(info.read_text(encoding="utf-8")).get("arpa")
        if name and (info.parent / name).is_file():
            return info.parent / name
    candidate = _stem(path).with_suffix(".arpa")
    return candidate if candidate.is_file() else None


def arpa_unigrams(path: str | os.PathLike[str]) -> list[str]:
    """The words of an ARPA file's 1-gram section (read up to its end only)."""
    words: list[str] = []
    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if line.startswith("\\1-grams:"):
                break
        else:
            raise ConfigError(f"{path}: not an ARPA file (no \\1-grams: section)")
        for line in lines:
            parts = line.split("\t")
            if len(parts) < 2:
                if line.startswith("\\"):
                    break
                continue
            words.append(parts[1].strip())
    return words


def arpa_counts(path: str | os.PathLike[str]) -> list[int]:
    """The number of n-grams of each order, from an ARPA file's \\data\\ header."""
    counts: list[int] = []
    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if line.startswith("ngram "):
                counts.append(int(line.split("=", 1)[1]))
            elif counts and line.startswith("\\"):
                break
    return counts


def _is_arpa(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(64).lstrip().startswith(b"\\data\\")


def _stem(path: Path) -> Path:
    return path.with_suffix("") if path.suffix.lower() in LM_SUFFIXES else path


# --- text -> LM sentences --------------------------------------------------------------------

def iter_texts(texts: Iterable[str] | str | os.PathLike[str]) -> Iterator[str]:
    """Lines of text: strings as they are; paths (str with an existing file, or Path) are read
    with `harken.text.read_texts` (plain text, .gz, JSONL/CSV manifests)."""
    from harken.text import read_texts

    if isinstance(texts, (str, os.PathLike)):
        texts = [texts]  # type: ignore[list-item]
    for item in texts:
        if isinstance(item, os.PathLike) or (isinstance(item, str) and "\n" not in item
                                             and len(item) < 4096 and os.path.isfile(item)):
            yield from read_texts(item)
        else:
            yield from str(item).splitlines()


def lm_sentences(
    texts: Iterable[str] | str | os.PathLike[str],
    unit: str = "word",
    tokenizer: Any = None,
    normalize: bool = True,
    language: str = "en",
) -> Iterator[list[str]]:
    """Each text line as the LM's units (see the module docstring); empty lines are skipped.

    `normalize` applies `harken.text.normalize_text`, the transcripts' normaliser. A "token"
    LM needs the model's `tokenizer`; lines it cannot encode raise ValueError.
    """
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    if unit == "token" and tokenizer is None:
        raise ValueError("unit='token' needs the model's tokenizer (tokenizer=...)")
    normalise = None
    if normalize:
        from harken.text import normalize_text

        normalise = normalize_text
    for line in iter_texts(texts):
        text = normalise(line, language) if normalise else " ".join(line.split())
        if not text:
            continue
        if unit == "word":
            yield text.split()
        elif unit == "char":
            yield list(text.replace(" ", WORD_BOUNDARY))
        else:  # a character tokenizer's space token is the word boundary here too
            yield [WORD_BOUNDARY if tokenizer.tokens[i].isspace() else tokenizer.tokens[i]
                   for i in tokenizer.encode(text)]


# --- building --------------------------------------------------------------------------------

def find_kenlm_tool(name: str) -> Path | None:
    """KenLM's `name` (lmplz, build_binary) in `$HARKEN_KENLM_BIN`, else on PATH."""
    folder = os.environ.get(KENLM_BIN_ENV)
    if folder:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    return Path(found) if found else None


def build_lm(
    texts: Iterable[str] | str | os.PathLike[str],
    order: int,
    out: str | os.PathLike[str],
    *,
    unit: str = "word",
    tokenizer: Any = None,
    prune: Sequence[int] | None = None,
    vocab_size: int | None = None,
    normalize: bool = True,
    language: str = "en",
    estimator: str = "auto",
) -> LMFiles:
    """Build an n-gram LM from text: `<out>.arpa`, `<out>.bin` (with KenLM's build_binary) and
    `<out>.lm.json`.

    `texts`: strings (one sentence per line) or files (plain, .gz, manifests). `prune`: lmplz's
    count thresholds, one per order (the last repeats): n-grams of order i seen at most
    `prune[i-1]` times are dropped, e.g. [0, 0, 1] drops singleton trigrams; unigrams are never
    pruned and the thresholds must not decrease. `vocab_size`: keep only the most frequent
    words (lmplz's --limit_vocab_file: n-grams with other words are dropped, their probability
    mass goes to <unk> and the backoffs). `estimator`: "lmplz", "builtin" or "auto" (lmplz when
    found).
    """
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    if not isinstance(order, int) or not 1 <= order <= MAX_ORDER:
        raise ValueError(f"order must be an integer from 1 to {MAX_ORDER}, got {order!r}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    thresholds = prune_thresholds(prune, order)
    if vocab_size is not None and (not isinstance(vocab_size, int) or vocab_size < 1):
        raise ValueError(f"vocab_size must be a positive integer, got {vocab_size!r}")
    lmplz = find_kenlm_tool("lmplz") if estimator != "builtin" else None
    if estimator == "lmplz" and lmplz is None:
        raise DependencyError(f"lmplz was not found in ${KENLM_BIN_ENV} or on PATH; build it "
                              "with scripts/build_kenlm.sh PREFIX")
    stem = _stem(Path(out))
    stem.parent.mkdir(parents=True, exist_ok=True)
    arpa = stem.with_suffix(".arpa")
    sentences = lm_sentences(texts, unit, tokenizer, normalize, language)
    if lmplz is not None:
        stats = _run_lmplz(lmplz, sentences, order, arpa, thresholds, vocab_size)
    else:
        stats = estimate_kneser_ney(sentences, order, arpa, prune=thresholds,
                                    vocab_size=vocab_size)
    if stats["sentences"] == 0:
        raise ValueError("no text to build a language model from (every line was empty "
                         "after normalisation)")
    binary = None
    build_binary = find_kenlm_tool("build_binary")
    if build_binary is not None:
        binary = stem.with_suffix(".bin")
        _run([str(build_binary), str(arpa), str(binary)], "build_binary")
    info = LMInfo(unit=unit, order=order, arpa=arpa.name,
                  binary=binary.name if binary else None,
                  details={"estimator": "lmplz" if lmplz else "builtin", "prune": thresholds,
                           "vocab_size": vocab_size, "normalized": normalize, **stats})
    if unit == "token":
        info.details["tokens"] = len(tokenizer.tokens)
    path = info_path(arpa)
    path.write_text(json.dumps(dataclasses.asdict(info), indent=2) + "\n", encoding="utf-8")
    return LMFiles(arpa=arpa, binary=binary, info=path)


def prune_thresholds(prune: Sequence[int] | None, order: int) -> list[int]:
    """lmplz's --prune: one count threshold per order, the last repeated; checked."""
    if not prune:
        return [0] * order
    values = [int(v) for v in prune]
    if any(v < 0 for v in values) or values != sorted(values):
        raise ValueError(f"prune thresholds must be non-negative and non-decreasing, got {values}")
    if values[0] != 0:
        raise ValueError(f"unigrams cannot be pruned: the first prune threshold must be 0, "
                         f"got {values}")
    return (values + [values[-1]] * order)[:order]


def _run(command: list[str], name: str, stdin: Any = None) -> None:
    result = subprocess.run(command, stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise HarkenError(f"{name} failed (exit {result.returncode}): "
                          f"{result.stderr.strip()[-2000:]}")


def _run_lmplz(lmplz: Path, sentences: Iterable[list[str]], order: int, arpa: Path,
               thresholds: list[int], vocab_size: int | None) -> dict[str, int]:
    counts: Counter[str] = Counter()
    n_sentences = 0
    with tempfile.TemporaryDirectory(prefix="harken-lm-") as tmp:
        text = Path(tmp) / "text.txt"
        with open(text, "w", encoding="utf-8") as handle:
            for units in sentences:
                handle.write(" ".join(units) + "\n")
                counts.update(units)
                n_sentences += 1
        if n_sentences == 0:
            return {"sentences": 0, "tokens": 0}
        command = [str(lmplz), "-o", str(order), "--arpa", str(arpa), "--text", str(text),
                   "-S", "25%", "-T", tmp, "--discount_fallback"]
        if any(thresholds):
            command += ["--prune", *map(str, thresholds)]
        if vocab_size is not None:
            vocab = Path(tmp) / "vocab.txt"
            vocab.write_text("\n".join(w for w, _ in counts.most_common(vocab_size)) + "\n",
                             encoding="utf-8")
            command += ["--limit_vocab_file", str(vocab)]
        _run(command, "lmplz")
    stats = {"sentences": n_sentences, "tokens": sum(counts.values())}
    stats.update({f"ngrams_{n}": c for n, c in enumerate(arpa_counts(arpa), 1)})
    return stats


# --- the built-in modified Kneser-Ney estimator ----------------------------------------------

@dataclass
class _Order:
    """The n-grams of one order, sorted by (context, word); row j is n-gram j."""

    context: np.ndarray  # index of the (n-1)-gram of the first n-1 words (n >= 2)
    word: np.ndarray  # last word id
    count: np.ndarray  # raw count
    suffix: np.ndarray  # index of the (n-1)-gram of the last n-1 words (n >= 2)
    first: np.ndarray  # first word id (n-grams starting with <s> keep raw counts)


def estimate_kneser_ney(
    sentences: Iterable[Sequence[str]],
    order: int,
    arpa: str | os.PathLike[str],
    *,
    prune: Sequence[int] | None = None,
    vocab_size: int | None = None,
    discount_fallback: Sequence[float] = FALLBACK_DISCOUNTS,
) -> dict[str, int]:
    """Estimate an interpolated modified Kneser-Ney LM and write it as ARPA (log10 values).

    As KenLM's lmplz (Heafield et al. 2013; Chen & Goodman 1998, eq. 26): the highest order
    uses raw counts, lower orders the number of distinct left extensions (n-grams starting with
    <s> keep raw counts); each order has discounts D1, D2, D3+ computed from the count-of-counts
    t1..t4 of its adjusted counts, Y = t1 / (t1 + 2 t2), Dk = k - (k + 1) Y t(k+1) / tk;

        p(w | c) = (a(cw) - D(a(cw))) / sum_x a(cx) + gamma(c) p(w | c')
        gamma(c) = (D1 N1(c.) + D2 N2(c.) + D3 N3+(c.) + pruned mass) / sum_x a(cx)

    and unigrams are interpolated with the uniform distribution over the vocabulary (<unk>
    and </s> included, <s> excluded). gamma(c) is written as c's backoff. Memory and time are
    O(number of n-grams): the counting is vectorised with numpy (each n-gram is the pair
    (index of its (n-1)-gram prefix, last word), so keys fit in int64 at any order).
    Returns {"sentences", "tokens", "ngrams_1", ...}.
    """
    thresholds = prune_thresholds(prune, order)
    vocab: dict[str, int] = {UNK: _UNK_ID, BOS: _BOS_ID, EOS: _EOS_ID}
    chunks: list[np.ndarray] = []
    ids: list[int] = []
    n_sentences = 0
    for units in sentences:
        ids.append(_BOS_ID)
        for u in units:
            i = vocab.get(u)
            if i is None:
                if u in (BOS, EOS):
                    raise ValueError(f"the text contains the reserved LM symbol {u!r}")
                i = vocab[u] = len(vocab)
            ids.append(i)
        ids.append(_EOS_ID)
        n_sentences += 1
        if len(ids) > 1 << 20:
            chunks.append(np.asarray(ids, dtype=np.int64))
            ids = []
    chunks.append(np.asarray(ids, dtype=np.int64))
    stream = np.concatenate(chunks)
    stats = {"sentences": n_sentences, "tokens": int(len(stream) - 2 * n_sentences)}
    if n_sentences == 0:
        return stats
    words = np.array(list(vocab), dtype=object)
    size = len(words)

    # Which words survive --vocab-size (the special symbols always do).
    in_vocab = np.ones(size, dtype=bool)
    unigram_counts = np.bincount(stream, minlength=size)
    if vocab_size is not None and vocab_size < size - 3:
        ranked = np.argsort(-unigram_counts[3:], kind="stable")[:vocab_size] + 3
        in_vocab[3:] = False
        in_vocab[ranked] = True

    orders = _count(stream, order, size)
    adjusted = _adjusted_counts(orders)
    discounts = [_discounts(a, discount_fallback) for a in adjusted]

    # Kept n-grams: raw count above the order's threshold, every word in the vocabulary. With
    # non-decreasing thresholds every kept n-gram's prefix and suffix are kept too.
    kept = [in_vocab.copy()]
    kept[0][_BOS_ID] = True
    for n in range(2, order + 1):
        o = orders[n - 1]
        kept.append((o.count > thresholds[n - 1]) & kept[n - 2][o.context] & in_vocab[o.word])

    probs: list[np.ndarray] = []
    gammas: list[np.ndarray] = []  # gammas[n-1][c]: backoff of the n-gram c as a context
    a1 = adjusted[0]
    d1 = _discount_of(a1, discounts[0])
    denominator = a1.sum()
    gamma0 = (np.where(kept[0], d1, a1).sum()) / denominator
    uniform = 1.0 / (kept[0].sum() - 1)  # <s> excluded
    probs.append(np.where(kept[0], (a1 - d1) / denominator + gamma0 * uniform, 0.0))
    for n in range(2, order + 1):
        o, a = orders[n - 1], adjusted[n - 1]
        d = _discount_of(a, discounts[n - 1])
        contexts = len(probs[-1])
        denominators = np.bincount(o.context, weights=a, minlength=contexts)
        mass = np.bincount(o.context, weights=np.where(kept[n - 1], d, a), minlength=contexts)
        gamma = np.divide(mass, denominators, out=np.ones(contexts), where=denominators > 0)
        gammas.append(gamma)
        probs.append((a - d) / denominators[o.context] + gamma[o.context] * probs[-1][o.suffix])

    # Write the ARPA file.
    counts = [int(k.sum()) for k in kept]
    texts: list[np.ndarray] = []
    with open(arpa, "w", encoding="utf-8") as out:
        out.write("\\data\\\n")
        for n, c in enumerate(counts, 1):
            out.write(f"ngram {n}={c}\n")
        for n in range(1, order + 1):
            o = orders[n - 1]
            rows = np.flatnonzero(kept[n - 1])
            text = np.empty(len(kept[n - 1]), dtype=object)
            if n == 1:
                text[rows] = words[rows]
            else:
                prefixes = texts[-1][o.context[rows]]
                text[rows] = [f"{p} {w}" for p, w in zip(prefixes, words[o.word[rows]])]
            texts.append(text)
            log_probs = np.log10(np.maximum(probs[n - 1][rows], 1e-99))
            if n == 1:
                log_probs[rows == _BOS_ID] = 0.0  # <s> is never predicted (lmplz writes 0)
            out.write(f"\n\\{n}-grams:\n")
            if n < order:
                backoff = np.zeros(len(rows))
                context_gamma = gammas[n - 1][rows]
                last = words[o.word[rows]] if n > 1 else words[rows]
                is_context = (context_gamma < 1.0) & (last != EOS) & (last != UNK)
                backoff[is_context] = np.log10(context_gamma[is_context])
                out.writelines(f"{p:.6f}\t{t}\t{b:.6f}\n" for p, t, b in
                               zip(log_probs.tolist(), text[rows], backoff.tolist()))
            else:
                out.writelines(f"{p:.6f}\t{t}\n" for p, t in zip(log_probs.tolist(), text[rows]))
            if n >= 2:
                texts[-2] = np.empty(0, dtype=object)  # no longer needed
        out.write("\n\\end\\\n")
    stats.update({f"ngrams_{n}": c for n, c in enumerate(counts, 1)})
    return stats


def _count(stream: np.ndarray, order: int, size: int) -> list[_Order]:
    """Count the n-grams of every order within sentences (<s> ... </s>) of the id stream."""
    sentence = np.cumsum(stream == _BOS_ID)
    unigram = stream[stream != _BOS_ID]
    orders = [_Order(context=np.zeros(0, np.int64), word=np.arange(size),
                     count=np.bincount(unigram, minlength=size), suffix=np.zeros(0, np.int64),
                     first=np.arange(size))]
    index = stream  # index[i]: the (n-1)-gram ending at position i (unigrams: the word)
    positions = np.arange(len(stream))
    for n in range(2, order + 1):
        valid = positions[n - 1:][sentence[n - 1:] == sentence[:len(stream) - n + 1]]
        keys = index[valid - 1] * size + stream[valid]
        unique, first_seen, inverse, counts = np.unique(
            keys, return_index=True, return_inverse=True, return_counts=True)
        context = unique // size
        representative = valid[first_seen]
        suffix = index[representative]
        orders.append(_Order(context=context, word=unique % size, count=counts, suffix=suffix,
                             first=orders[-1].first[context]))
        next_index = np.full(len(stream), -1, dtype=np.int64)
        next_index[valid] = inverse.reshape(-1)
        index = next_index
    return orders


def _adjusted_counts(orders: list[_Order]) -> list[np.ndarray]:
    """Kneser-Ney adjusted counts: raw at the highest order and for n-grams starting with <s>,
    else the number of distinct words seen before the n-gram."""
    adjusted = []
    for n, o in enumerate(orders, 1):
        if n == len(orders):
            adjusted.append(o.count.astype(np.float64))
            continue
        extensions = np.bincount(orders[n].suffix, minlength=len(o.count))
        adjusted.append(np.where(o.first == _BOS_ID, o.count, extensions).astype(np.float64))
    adjusted[0][_BOS_ID] = 0.0
    return adjusted


def _discounts(adjusted: np.ndarray, fallback: Sequence[float]) -> tuple[float, float, float]:
    """D1, D2, D3+ from the count-of-counts (Chen & Goodman eq. 26), lmplz's fallback when the
    data give none (tiny or artificial text)."""
    t = [int(np.count_nonzero(adjusted == k)) for k in range(5)]
    if min(t[1:5]) == 0:
        return tuple(fallback)  # type: ignore[return-value]
    y = t[1] / (t[1] + 2 * t[2])
    d = tuple(k - (k + 1) * y * t[k + 1] / t[k] for k in (1, 2, 3))
    if any(not 0 <= dk <= k for k, dk in zip((1, 2, 3), d)):
        return tuple(fallback)  # type: ignore[return-value]
    return d  # type: ignore[return-value]


def _discount_of(adjusted: np.ndarray, discounts: Sequence[float]) -> np.ndarray:
    table = np.array([0.0, *discounts])
    return table[np.minimum(adjusted, 3).astype(np.int64)]


# --- scoring ---------------------------------------------------------------------------------

def perplexity(
    lm: str | os.PathLike[str],
    texts: Iterable[str] | str | os.PathLike[str],
    unit: str | None = None,
    tokenizer: Any = None,
    normalize: bool = True,
) -> float:
    """Perplexity of `lm` (ARPA or KenLM binary) on text, per unit with </s> counted, as
    KenLM's `query` reports it. `unit` defaults to the LM's own (`read_lm_info`)."""
    try:
        import kenlm
    except ImportError as exc:  # a dependency, but a build without it should say so
        raise DependencyError(f"the kenlm module is needed to score text: pip install kenlm "
                              f"({exc})") from exc
    model = kenlm.Model(str(lm))
    unit = unit or read_lm_info(lm).unit
    total, count = 0.0, 0
    for units in lm_sentences(texts, unit, tokenizer, normalize):
        total += model.score(" ".join(units), bos=True, eos=True)
        count += len(units) + 1
    if count == 0:
        raise ValueError("no text to compute a perplexity on")
    return float(10.0 ** (-total / count))


def lm_vocabulary(lm: str | os.PathLike[str]) -> list[str]:
    """The words of an LM, <s>/</s>/<unk> left out: from its ARPA file, else from the word
    list KenLM stores at the end of a binary file."""
    arpa = find_arpa(lm)
    if arpa is not None:
        words = arpa_unigrams(arpa)
    else:
        words = _binary_vocabulary(Path(lm))
    return [w for w in words if w not in (UNK, BOS, EOS)]


def _binary_vocabulary(path: Path) -> list[str]:
    # build_binary appends the vocabulary as NUL-terminated strings, <unk> first.
    import mmap

    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        start = data.rfind(b"<unk>\x00")
        words = data[start:].decode("utf-8", errors="replace").split("\x00")[:-1] \
            if start >= 0 else []
    if not words:
        raise ConfigError(f"{path}: cannot read the word list of this LM (no ARPA file beside "
                          "it and no vocabulary stored in it); pass vocabulary=... or use the "
                          "ARPA file")
    return words


# --- command line ----------------------------------------------------------------------------

def register_lm_commands(subparsers: Any) -> None:
    """Add `harken lm build|tune` to the `harken` command's subparsers."""
    lm = subparsers.add_parser("lm", help="n-gram language models: build, tune")
    sub = lm.add_subparsers(dest="lm_command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("build", help="build an n-gram LM (ARPA, KenLM binary) from text",
                       description="Normalise text as transcripts are normalised and estimate "
                                   "a modified Kneser-Ney LM (KenLM's lmplz when found in "
                                   f"${KENLM_BIN_ENV} or on PATH, else the built-in "
                                   "estimator).")
    p.add_argument("texts", nargs="+", help="text files (one sentence a line, .gz too) or "
                                            "manifests")
    p.add_argument("--order", type=int, default=4, help="n-gram order (default 4)")
    p.add_argument("--out", required=True, help="output name: writes OUT.arpa, OUT.bin "
                                                "(with build_binary) and OUT.lm.json")
    p.add_argument("--unit", choices=UNITS, default="word",
                   help="word (lexicon decoding), char or token (lexicon-free decoding)")
    p.add_argument("--model", "-m", help="model whose tokenizer splits text (--unit token)")
    p.add_argument("--prune", type=int, nargs="+", metavar="COUNT",
                   help="drop n-grams seen at most COUNT times, one per order, e.g. 0 0 1")
    p.add_argument("--vocab-size", type=int, help="keep only the most frequent words")
    p.add_argument("--no-normalize", action="store_true", help="the text is normalised already")
    p.add_argument("--language", default="en", help="normaliser language (default en)")
    p.add_argument("--estimator", choices=ESTIMATORS, default="auto")
    p.set_defaults(func=_run_build)

    p = sub.add_parser("tune", help="choose lm_weight/word_score on a dev manifest",
                       description="Decode a dev set with a grid of LM weights and word scores "
                                   "(the acoustic model runs once) and print the WER of each.")
    p.add_argument("manifests", nargs="+", help="dev manifests (JSONL, CSV)")
    p.add_argument("--model", "-m", default=None, help="model folder, .harken file or name")
    p.add_argument("--device", default="cpu")
    p.add_argument("--lm", required=True, help="the LM (ARPA or KenLM binary)")
    p.add_argument("--lm-weights", type=float, nargs="+", metavar="ALPHA")
    p.add_argument("--word-scores", type=float, nargs="+", metavar="BETA")
    p.add_argument("--beam-widths", type=int, nargs="+", default=[32], metavar="WIDTH")
    p.add_argument("--limit", type=int, help="use only the first N utterances")
    p.add_argument("--workers", type=int, default=1,
                   help="decoding processes (default 1; 0: one per core)")
    p.add_argument("--write", action="store_true",
                   help="store the best values with the LM: decoding's new defaults")
    p.set_defaults(func=_run_tune)


def _run_build(args: Any) -> int:
    import time

    tokenizer = None
    if args.unit == "token":
        if not args.model:
            raise ConfigError("--unit token needs --model (its tokenizer splits the text)")
        from harken.model import load_model

        tokenizer = load_model(args.model).tokenizer
    started = time.perf_counter()
    try:
        files = build_lm(args.texts, args.order, args.out, unit=args.unit, tokenizer=tokenizer,
                         prune=args.prune, vocab_size=args.vocab_size,
                         normalize=not args.no_normalize, language=args.language,
                         estimator=args.estimator)
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigError(f"lm build: {exc}") from exc
    info = read_lm_info(files.arpa)
    counts = ", ".join(f"{info.details[k]:,} {k[-1]}-grams" for k in sorted(info.details)
                       if k.startswith("ngrams_"))
    print(f"{info.details['sentences']:,} sentences, {info.details['tokens']:,} {args.unit}s -> "
          f"{counts} ({info.details['estimator']}, {time.perf_counter() - started:.1f} s)")
    for path in (files.arpa, files.binary, files.info):
        if path is not None:
            print(f"wrote {path}")
    if files.binary is None:
        print("no KenLM binary (build_binary not found): decoding will load the ARPA file, "
              "slower to start; scripts/build_kenlm.sh builds the KenLM tools")
    return 0


def _run_tune(args: Any) -> int:
    from harken.lm_tune import LM_WEIGHTS, WORD_SCORES, tune_lm
    from harken.model import load_model

    model = load_model(args.model, device=args.device)
    result = tune_lm(model, args.manifests, args.lm, lm_weights=args.lm_weights or LM_WEIGHTS,
                     word_scores=args.word_scores or WORD_SCORES, beam_widths=args.beam_widths,
                     limit=args.limit, workers=args.workers or None)
    print(result.table())
    best = result.best
    print(f"\n{result.utterances} utterances: greedy WER {100 * result.greedy_wer:.2f}%, best "
          f"{100 * best.wer:.2f}% with lm_weight {best.lm_weight} word_score {best.word_score} "
          f"beam {best.beam_width}")
    if best.wer > result.greedy_wer:  # the LM makes this model worse on this dev set
        print(f"warning: every setting tried is worse than greedy decoding without the LM "
              f"(best {100 * best.wer:.2f}% vs greedy {100 * result.greedy_wer:.2f}%): the LM "
              "does not suit this model or dev set (another LM, or wider grids); decode with "
              "--no-lm", file=sys.stderr)
        if args.write:
            print(f"harken: not writing {info_path(args.lm)}: these weights would make decoding "
                  "worse than no LM", file=sys.stderr)
            return 1
        return 0
    if args.write:
        path = write_lm_info(args.lm, lm_weight=best.lm_weight, word_score=best.word_score,
                             details={"tuned": {"manifests": [str(m) for m in args.manifests],
                                                "wer": best.wer, "greedy_wer": result.greedy_wer,
                                                "beam_width": best.beam_width,
                                                "utterances": result.utterances}})
        print(f"wrote {path}: decoding uses these values by default")
    return 0
