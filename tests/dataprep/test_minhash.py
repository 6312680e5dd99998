"""dataprep/minhash.py on plain arrays: signatures equal datasketch's, Jaccard estimates agree with its default
SHA-1 MinHash and with exact Jaccard, LSH parameters equal datasketch's optimum, planted duplicates found,
clusters transitive, keep rules, big buckets, empty texts, batch independence.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/dataprep/test_minhash.py -q
"""

from __future__ import annotations

import random
import unicodedata

import numpy as np
import pytest
from datasketch import MinHash
from datasketch.lsh import _optimal_param

from dataprep import lsh
from dataprep import minhash as mh

TEXTS = [
    "The quick brown fox jumps over the lazy dog, again and again and again.",
    "héllo Wörld",  # non-ASCII bytes
    "",
    "  \n\t ",  # whitespace only: no words
    "one",
    "a b c d e",  # exactly ngram words
    "Straße STRASSE straße  \n x",  # case folding: ß -> ss
    "日本語 の テキスト も 単語 に 分け られる か な",
    "x " * 300,  # repeated shingles
]


def _words(rng: random.Random, k: int) -> list[str]:
    return [f"w{rng.randrange(100_000)}" for _ in range(k)]


def _exact(a: str, b: str, n: int) -> float:
    sa, sb = set(mh.shingles(a, n)), set(mh.shingles(b, n))
    return len(sa & sb) / len(sa | sb)


@pytest.mark.parametrize(("num_perm", "ngram"), [(128, 5), (64, 1), (256, 3)])
def test_signatures_equal_datasketch(num_perm: int, ngram: int) -> None:
    sigs = mh.signatures(TEXTS, num_perm, ngram)
    for text, sig in zip(TEXTS, sigs, strict=True):
        ref = MinHash(num_perm=num_perm, seed=1, hashfunc=mh.hash32)
        ref.update_batch([s.encode() for s in mh.shingles(text, ngram)])
        assert ref.hashvalues.dtype == sig.dtype == np.uint32
        assert np.array_equal(ref.hashvalues, sig), text


def test_vectorised_shingle_hashes_equal_the_reference() -> None:
    hashes, counts = mh.shingle_hashes(TEXTS, 5)
    assert hashes.tolist() == [mh.hash32(s.encode()) for t in TEXTS for s in mh.shingles(t, 5)]
    assert counts.tolist() == [len(mh.shingles(t, 5)) for t in TEXTS]
    assert counts[2] == counts[3] == 0 and counts[4] == counts[5] == 1


def test_estimates_agree_with_datasketch_sha1_and_exact_jaccard() -> None:
    """The hash differs from datasketch's default (SHA-1), so signatures differ; the estimates must not."""
    rng = random.Random(0)
    num_perm, n = 256, 5
    ours, theirs, exact = [], [], []
    for _ in range(60):
        base = _words(rng, rng.randint(50, 200))
        other = list(base)
        for _ in range(rng.randint(0, 12)):
            other[rng.randrange(len(other))] = f"x{rng.randrange(1000)}"
        a, b = " ".join(base), " ".join(other)
        sig = mh.signatures([a, b], num_perm, n)
        ours.append(float(mh.similarity(sig, np.array([0]), np.array([1]))[0]))
        ma, mb = MinHash(num_perm=num_perm), MinHash(num_perm=num_perm)
        ma.update_batch([s.encode() for s in mh.shingles(a, n)])
        mb.update_batch([s.encode() for s in mh.shingles(b, n)])
        theirs.append(ma.jaccard(mb))
        exact.append(_exact(a, b, n))
    ours_, theirs_, exact_ = np.array(ours), np.array(theirs), np.array(exact)
    assert exact_.min() < 0.5 < 0.9 < exact_.max()  # the pairs span the range
    assert np.abs(ours_ - exact_).mean() < 0.025  # standard error at 256 permutations: <= 0.031
    assert np.abs(ours_ - theirs_).mean() < 0.035
    assert abs((ours_ - exact_).mean()) < 0.01  # unbiased
    assert np.abs(ours_ - exact_).max() < 0.12


def test_normalisation_folds_case_whitespace_and_nfc() -> None:
    text = "Café au lait\nis  GOOD\tfor   you, said the barista to the customer"
    variants = [text, text.upper(), text.replace(" ", "\n"), unicodedata.normalize("NFD", text), f"  {text}  "]
    sigs = mh.signatures(variants, 128, 5)
    assert all(np.array_equal(sigs[0], s) for s in sigs[1:])
    assert not np.array_equal(sigs[0], mh.signatures([text + " more"], 128, 5)[0])


@pytest.mark.parametrize("weights", [(0.5, 0.5), (0.1, 0.9), (0.3, 0.7)])
def test_lsh_params_equal_datasketch_optimum(weights: tuple[float, float]) -> None:
    for threshold in (0.5, 0.8, 0.9):  # datasketch's scipy integration takes ~0.2 s a call at 128
        for num_perm in (32, 128):
            assert lsh.optimal_params(threshold, num_perm, *weights) == _optimal_param(threshold, num_perm, *weights)


def test_stage_params_are_the_recorded_ones() -> None:
    assert lsh.optimal_params(0.8, 128) == (9, 13)  # datasketch MinHashLSH(threshold=0.8)'s default
    assert lsh.lsh_params(0.8, 128) == _optimal_param(0.8, 128, *lsh.LSH_WEIGHTS) == (14, 9)


def test_planted_duplicates_found_and_unrelated_texts_not() -> None:
    rng = random.Random(1)
    texts, family = [], []
    for f in range(300):
        base = _words(rng, rng.randint(100, 200))
        texts.append(" ".join(base))
        family.append(f)
        if f % 3 == 0:  # a near copy: one word changed, a capital, line breaks (Jaccard >= 0.9)
            near = list(base)
            near[rng.randrange(len(near))] = "changed"
            near[0] = near[0].upper()
            texts.append("\n".join(near))
            family.append(f)
        if f % 3 == 1:  # a distant one: the second half rewritten (Jaccard < 0.4)
            texts.append(" ".join(base[: len(base) // 2] + _words(rng, len(base) - len(base) // 2)))
            family.append(-1 - f)  # not a duplicate
    order = list(range(len(texts)))
    rng.shuffle(order)
    texts = [texts[i] for i in order]
    family_ = np.array(family)[order]
    sigs = mh.signatures(texts, 128, 5)
    bands, rows = lsh.lsh_params(0.8, 128)
    c = lsh.near_duplicates(sigs, 0.8, bands, rows, np.arange(len(texts)))
    assert len(c.removed) == 100  # one per near copy
    assert (family_[c.removed] == family_[c.kept]).all()
    assert (c.kept < c.removed).all()  # keep first
    assert (c.similarity >= 0.8).all() and (c.cluster_size == 2).all()
    assert all(_exact(texts[r], texts[k], 5) >= 0.9 for r, k in zip(c.removed, c.kept, strict=True))


def test_clusters_are_transitive() -> None:
    # unigram sets sliding by 12 words: A~B and B~C (Jaccard 0.79), A and C apart (0.61)
    a, b, c = (" ".join(f"t{i}" for i in range(s, s + 100)) for s in (0, 12, 24))
    sigs = mh.signatures([a, b, c, "something else entirely"], 256, 1)
    sim = mh.similarity(sigs, np.array([0, 1, 0]), np.array([1, 2, 2]))
    assert sim[0] >= 0.7 and sim[1] >= 0.7 and sim[2] < 0.7  # the premise, on these very signatures
    bands, rows = lsh.lsh_params(0.7, 256)
    cl = lsh.near_duplicates(sigs, 0.7, bands, rows, np.arange(4))
    assert cl.removed.tolist() == [1, 2] and cl.kept.tolist() == [0, 0] and cl.cluster_size.tolist() == [3, 3]
    assert cl.similarity[1] < 0.7  # C's similarity is to the kept A, below the threshold: joined through B


def test_components_union_find() -> None:
    # chains in either direction, a cycle, an isolated node, and an edge list in random order
    i = np.array([5, 1, 2, 7, 8, 6, 3])
    j = np.array([4, 2, 3, 8, 6, 7, 0])
    root = lsh.components(i, j, 10)
    assert root.tolist() == [0, 0, 0, 0, 4, 4, 6, 6, 6, 9]


@pytest.mark.parametrize(("keep", "expected"), [("first", 10), ("longest", 30), ("most_trained", 20)])
def test_keep_rules(keep: lsh.Keep, expected: int) -> None:
    text = " ".join(f"k{i}" for i in range(60))
    sigs = mh.signatures([text, "other words here", text.upper(), text + " end"], 128, 5)
    sample_ids = np.array([10, 11, 20, 30])
    rank = lsh.keep_order(keep, sample_ids, np.array([50, 9, 50, 70]), np.array([5, 1, 9, 9]))
    cl = lsh.near_duplicates(sigs, 0.8, *lsh.lsh_params(0.8, 128), rank)
    assert set(sample_ids[cl.kept].tolist()) == {expected}
    assert sorted(sample_ids[cl.removed].tolist()) == sorted({10, 20, 30} - {expected})


def test_keep_ties_go_to_the_lowest_sample_id() -> None:
    rank = lsh.keep_order("longest", np.array([7, 3, 5]), np.array([10, 10, 10]), np.zeros(3))
    assert rank.tolist() == [2, 0, 1]
    rank = lsh.keep_order("most_trained", np.array([7, 3, 5]), np.zeros(3), np.array([4, 2, 4]))
    assert rank.tolist() == [1, 2, 0]


def test_big_bucket_is_one_cluster() -> None:
    """300 copies share every band: compared through a window, still one cluster, 299 removed."""
    sigs = np.repeat(mh.signatures([" ".join(f"b{i}" for i in range(40))], 64, 5), 300, axis=0)
    cl = lsh.near_duplicates(sigs, 0.8, *lsh.lsh_params(0.8, 64), np.arange(300))
    assert len(cl.removed) == 299 and set(cl.kept.tolist()) == {0} and (cl.cluster_size == 300).all()
    assert cl.pairs_candidate < 300 * lsh.WINDOW


def test_texts_without_words_never_cluster() -> None:
    sigs = mh.signatures(["", " ", "\n", "real text here"], 64, 5)
    assert mh.has_text(sigs).tolist() == [False, False, False, True]
    cl = lsh.near_duplicates(sigs, 0.8, *lsh.lsh_params(0.8, 64), np.arange(4))
    assert len(cl.removed) == 0


def test_signatures_do_not_depend_on_batching() -> None:
    rng = random.Random(2)
    texts = [" ".join(_words(rng, rng.randint(0, 30))) for _ in range(50)]
    whole = mh.signatures(texts, 64, 3)
    one_by_one = np.concatenate([mh.signatures([t], 64, 3) for t in texts])
    in_sevens = np.concatenate([mh.signatures(texts[i:i + 7], 64, 3) for i in range(0, 50, 7)])
    assert np.array_equal(whole, one_by_one) and np.array_equal(whole, in_sevens)
