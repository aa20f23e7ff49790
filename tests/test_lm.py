"""Language model building: the built-in Kneser-Ney estimator against the formula and lmplz."""

from __future__ import annotations

import gzip
import itertools
import math
import random
from pathlib import Path

import numpy as np
import pytest

kenlm = pytest.importorskip("kenlm")

from harken.decoding import lm as hlm  # noqa: E402
from harken.errors import ConfigError, DependencyError  # noqa: E402

SHARED_TEXT = Path(__file__).resolve().parents[2] / "shared" / "text" / "corpus.txt.gz"

# Chosen so that every discount comes from the count-of-counts (no fallback):
#   bigram counts: <s> c 2, <s> a 1, <s> d 3, a c 1, a </s> 1, c c 2, c </s> 4, d a 1, d c 1,
#                  d </s> 1  ->  t1..t4 = 6, 2, 1, 1
#   unigram adjusted counts (distinct left words): c 4 (<s> a c d), </s> 3 (a c d), a 2 (<s> d),
#                  d 1 (<s>)  ->  t1..t4 = 1, 1, 1, 1
TINY = ["c", "a c", "c c c", "d a", "d", "d c"]


def read_arpa(path: Path) -> dict[str, tuple[float, float | None]]:
    entries: dict[str, tuple[float, float | None]] = {}
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            entries[parts[1]] = (float(parts[0]), float(parts[2]) if len(parts) > 2 else None)
    return entries


def test_kneser_ney_matches_the_formula_by_hand(tmp_path: Path) -> None:
    arpa = tmp_path / "tiny.arpa"
    stats = hlm.estimate_kneser_ney((s.split() for s in TINY), 2, arpa)
    assert stats["sentences"] == 6 and stats["ngrams_1"] == 6 and stats["ngrams_2"] == 10
    got = read_arpa(arpa)

    # Discounts, Chen & Goodman eq. 26: Y = t1 / (t1 + 2 t2), Dk = k - (k + 1) Y t(k+1) / tk.
    y1 = 1 / (1 + 2 * 1)
    d1 = {1: 1 - 2 * y1 * 1 / 1, 2: 2 - 3 * y1 * 1 / 1, 3: 3 - 4 * y1 * 1 / 1}  # 1/3, 1, 5/3
    y2 = 6 / (6 + 2 * 2)
    d2 = {1: 1 - 2 * y2 * 2 / 6, 2: 2 - 3 * y2 * 1 / 2, 3: 3 - 4 * y2 * 1 / 1}  # 0.6, 1.1, 0.6
    assert d2[1] == pytest.approx(0.6) and d2[2] == pytest.approx(1.1)

    # Unigrams: adjusted counts over their sum (10), interpolated with the uniform
    # distribution over <unk> </s> a c d.
    gamma0 = (d1[1] + d1[2] + 2 * d1[3]) / 10  # d: 1, a: 2, </s>: 3, c: 4 (3+)
    p1 = {"c": (4 - d1[3]) / 10 + gamma0 / 5, "a": (2 - d1[2]) / 10 + gamma0 / 5,
          "d": (1 - d1[1]) / 10 + gamma0 / 5, "</s>": (3 - d1[3]) / 10 + gamma0 / 5,
          "<unk>": gamma0 / 5}
    assert sum(p1.values()) == pytest.approx(1.0)
    for word, p in p1.items():
        assert got[word][0] == pytest.approx(math.log10(p), abs=2e-6), word

    # Bigrams after "c": c </s> (4), c c (2); after <s>: <s> c (2), <s> a (1), <s> d (3).
    gamma_c = (d2[2] + d2[3]) / 6
    p_end_c = (4 - d2[3]) / 6 + gamma_c * p1["</s>"]
    p_c_c = (2 - d2[2]) / 6 + gamma_c * p1["c"]
    gamma_s = (d2[1] + d2[2] + d2[3]) / 6
    p_c_s = (2 - d2[2]) / 6 + gamma_s * p1["c"]
    p_d_s = (3 - d2[3]) / 6 + gamma_s * p1["d"]
    assert got["c </s>"][0] == pytest.approx(math.log10(p_end_c), abs=2e-6)
    assert got["c c"][0] == pytest.approx(math.log10(p_c_c), abs=2e-6)
    assert got["<s> d"][0] == pytest.approx(math.log10(p_d_s), abs=2e-6)
    assert got["c"][1] == pytest.approx(math.log10(gamma_c), abs=2e-6)  # backoff = gamma
    assert got["<s>"][1] == pytest.approx(math.log10(gamma_s), abs=2e-6)

    # KenLM loads the file and scores a sentence with these probabilities, backing off for
    # the unseen "c a".
    model = kenlm.Model(str(arpa))
    assert model.score("c c", bos=True, eos=True) == pytest.approx(
        math.log10(p_c_s * p_c_c * p_end_c), abs=1e-5)
    assert model.score("c a", bos=True, eos=False) == pytest.approx(
        math.log10(p_c_s * gamma_c * p1["a"]), abs=1e-5)


def _parity_text() -> tuple[list[str], list[str]]:
    """~150k words of real (normalised) text when ../shared has it, else Zipf-distributed
    sentences."""
    if SHARED_TEXT.is_file():
        with gzip.open(SHARED_TEXT, "rt", encoding="utf-8") as lines:
            sample = [line.strip() for line in itertools.islice(lines, 0, 200_000, 20)]
        return sample[:9000], sample[9000:]
    rng = random.Random(0)
    words = [f"w{i}" for i in range(3000)]
    weights = [1 / (i + 1) for i in range(len(words))]
    text = [" ".join(rng.choices(words, weights, k=rng.randint(3, 25))) for _ in range(10_000)]
    return text[:9000], text[9000:]


@pytest.mark.skipif(hlm.find_kenlm_tool("lmplz") is None,
                    reason="lmplz not found (scripts/build_kenlm.sh PREFIX; HARKEN_KENLM_BIN)")
@pytest.mark.parametrize("order, prune", [(3, None), (4, [0, 0, 1])])
def test_builtin_perplexity_within_2_percent_of_lmplz(tmp_path: Path, order: int,
                                                      prune: list[int] | None) -> None:
    train, heldout = _parity_text()
    ours = hlm.build_lm(train, order, tmp_path / "builtin", estimator="builtin", prune=prune,
                        normalize=False)
    theirs = hlm.build_lm(train, order, tmp_path / "lmplz", estimator="lmplz", prune=prune,
                          normalize=False)
    assert hlm.arpa_counts(ours.arpa) == hlm.arpa_counts(theirs.arpa)
    ppl_ours = hlm.perplexity(ours.arpa, heldout, normalize=False)
    ppl_theirs = hlm.perplexity(theirs.arpa, heldout, normalize=False)
    assert abs(ppl_ours - ppl_theirs) / ppl_theirs < 0.02


def test_build_normalizes_and_writes_metadata(tmp_path: Path) -> None:
    files = hlm.build_lm(["Hello, World! I have 2 cats.", "", "THE cats"], 2, tmp_path / "lm",
                         estimator="builtin")
    assert files.arpa == tmp_path / "lm.arpa" and files.info == tmp_path / "lm.lm.json"
    words = set(hlm.arpa_unigrams(files.arpa))
    assert {"hello", "world", "i", "have", "two", "cats", "the"} <= words
    info = hlm.read_lm_info(files.best)
    assert (info.unit, info.order, info.details["sentences"]) == ("word", 2, 2)
    assert hlm.lm_vocabulary(files.arpa) == sorted(hlm.lm_vocabulary(files.arpa), key=list(
        hlm.arpa_unigrams(files.arpa)).index)  # ARPA order, specials left out
    assert "<s>" not in hlm.lm_vocabulary(files.arpa)


def test_character_lm_uses_the_word_boundary(tmp_path: Path) -> None:
    files = hlm.build_lm(["the cat", "a dog"], 3, tmp_path / "chars", unit="char",
                         estimator="builtin")
    assert list(hlm.lm_sentences(["the cat"], unit="char")) == [list("the|cat")]
    assert set(hlm.arpa_unigrams(files.arpa)) == set("thecadog|") | {"<s>", "</s>", "<unk>"}
    assert hlm.read_lm_info(files.arpa).unit == "char"
    (tmp_path / "chars.lm.json").unlink()  # an LM made elsewhere: the unit is guessed
    assert hlm.read_lm_info(files.arpa).unit == "char"


def test_token_lm_uses_the_tokenizers_pieces(tmp_path: Path) -> None:
    from harken.text import CharTokenizer

    tokenizer = CharTokenizer()
    units = list(hlm.lm_sentences(["ab c"], unit="token", tokenizer=tokenizer))
    assert units == [["a", "b", hlm.WORD_BOUNDARY, "c"]]
    with pytest.raises(ValueError, match="tokenizer"):
        list(hlm.lm_sentences(["ab"], unit="token"))


def test_prune_and_vocab_size(tmp_path: Path) -> None:
    text = ["a b c"] * 3 + ["a b d", "e f g"]
    full = read_arpa(hlm.build_lm(text, 3, tmp_path / "full", estimator="builtin").arpa)
    pruned = read_arpa(hlm.build_lm(text, 3, tmp_path / "pruned", prune=[0, 1],
                                    estimator="builtin").arpa)
    assert "a b d" in full and "a b d" not in pruned and "e f" not in pruned  # seen once
    assert "a b c" in pruned and "a b" in pruned and "e" in pruned  # unigrams stay
    small = read_arpa(hlm.build_lm(text, 2, tmp_path / "small", vocab_size=3,
                                   estimator="builtin").arpa)
    assert {w for w in small if " " not in w} == {"a", "b", "c", "<s>", "</s>", "<unk>"}
    assert "b d" not in small
    # The probability mass of what was pruned goes to the backoffs: still a distribution.
    model = kenlm.Model(str(tmp_path / "pruned.arpa"))
    vocabulary = ["a", "b", "c", "d", "e", "f", "g", "</s>", "<unk>"]
    state, out = kenlm.State(), kenlm.State()
    model.BeginSentenceWrite(state)
    model.BaseScore(state, "a", out)
    total = sum(10 ** model.BaseScore(out, w, kenlm.State()) for w in vocabulary)
    assert total == pytest.approx(1.0, abs=1e-4)


def test_build_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="non-decreasing"):
        hlm.build_lm(["a b"], 3, tmp_path / "x", prune=[0, 2, 1])
    with pytest.raises(ValueError, match="unigrams cannot be pruned"):
        hlm.build_lm(["a b"], 3, tmp_path / "x", prune=[1])
    with pytest.raises(ValueError, match="order must be"):
        hlm.build_lm(["a b"], 0, tmp_path / "x")
    with pytest.raises(ValueError, match="unit must be"):
        hlm.build_lm(["a b"], 2, tmp_path / "x", unit="phone")
    with pytest.raises(ValueError, match="no text"):
        hlm.build_lm(["", "!!"], 2, tmp_path / "x", estimator="builtin")
    with pytest.raises(ConfigError, match="unknown LM metadata keys"):
        hlm.write_lm_info(tmp_path / "x.arpa", alpha=1.0)


def test_lmplz_requested_but_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(hlm.KENLM_BIN_ENV, str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DependencyError, match="build_kenlm.sh"):
        hlm.build_lm(["a b"], 2, tmp_path / "x", estimator="lmplz")


def test_reads_files_and_scores_perplexity(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt.gz"
    with gzip.open(corpus, "wt", encoding="utf-8") as handle:
        handle.write("the cat sat\nthe dog sat\n" * 5)
    files = hlm.build_lm(corpus, 2, tmp_path / "lm", estimator="builtin")
    seen = hlm.perplexity(files.arpa, ["the cat sat"])
    unseen = hlm.perplexity(files.arpa, ["sat the the dog"])
    assert 1.0 < seen < unseen


def test_tuned_values_round_trip(tmp_path: Path) -> None:
    files = hlm.build_lm(["a b c"], 2, tmp_path / "lm", estimator="builtin")
    assert hlm.read_lm_info(files.arpa).lm_weight is None
    hlm.write_lm_info(files.arpa, lm_weight=0.8, word_score=-0.5, details={"wer": 0.1})
    info = hlm.read_lm_info(files.arpa)
    assert (info.lm_weight, info.word_score) == (0.8, -0.5)
    assert info.details["wer"] == 0.1 and info.details["estimator"] == "builtin"


@pytest.mark.skipif(hlm.find_kenlm_tool("build_binary") is None,
                    reason="build_binary not found (scripts/build_kenlm.sh PREFIX)")
def test_binary_lm_keeps_its_vocabulary(tmp_path: Path) -> None:
    files = hlm.build_lm(["the cat", "a dog"], 2, tmp_path / "lm")
    assert files.binary is not None and files.best == files.binary
    files.arpa.unlink()
    assert sorted(hlm.lm_vocabulary(files.binary)) == ["a", "cat", "dog", "the"]
    assert np.isfinite(hlm.perplexity(files.binary, ["the dog"]))
