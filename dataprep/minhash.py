"""MinHash near-duplicate detection on plain arrays: shingles, signatures, LSH banding, union-find clusters.

numpy only (no Polars, no I/O), so each step is tested on arrays; dataprep/near_dedup.py runs it as a stage,
over signatures it reads from disk (`Signatures`: blocks of rows for banding, the rows of a chunk of pairs for
verification), so that memory does not grow by num_perm x 4 bytes a row.

    text ─normalise─> words ─ngram─> shingles ─hash32─> h ─fmix32─> (a_k·h + b_k) mod 2^32 ─min─> sig[k]

Signatures are datasketch's MinHash (>= 2.0, its default `affine32` scheme) with one change, the 32-bit hash
of a shingle: datasketch's default (the first 4 bytes of its SHA-1) costs ~1.5 µs a shingle in Python, more
than everything else together, so the shingle's UTF-8 bytes are hashed instead as a polynomial mod 2^64
(`hash32`), computed for a whole batch at once from prefix sums over one byte buffer (~0.1 µs a shingle).
Everything after it is datasketch's: MurmurHash3's fmix32 pre-mix, then h -> a_k·h + b_k in uint32 (the
wraparound is the mod 2^32; a_k odd makes it a bijection) with a_k, b_k drawn from numpy's RandomState(seed)
as datasketch draws them. tests/dataprep/test_minhash.py checks both halves: `signatures` equals
`datasketch.MinHash(num_perm, seed=1, hashfunc=hash32).hashvalues` bit for bit, and its Jaccard estimates
agree with those of datasketch's default SHA-1 MinHash and with exact Jaccard. The share of equal positions
of two signatures estimates the Jaccard similarity of the two shingle sets (standard error
sqrt(J(1-J)/num_perm): 0.035 at J=0.8 with 128 permutations).

LSH banding: the num_perm positions are cut into `bands` bands of `rows` positions; two samples are candidates
when all `rows` values of at least one band are equal. For a pair of Jaccard similarity s that happens with
probability

    P(candidate | s) = 1 - (1 - s^rows)^bands                                   (the S-curve)

(bands, rows) minimise, as datasketch's `_optimal_param` does, the weighted area above the curve left of the
threshold (false positives, ∫0^t P ds) plus the area below it right of the threshold (false negatives,
∫t^1 1-P ds), over bands·rows <= num_perm. Both integrands are polynomials in s of degree rows·bands <= num_perm,
so Gauss-Legendre quadrature with num_perm/2+1 nodes is exact (scipy's quad, which datasketch uses, is not
needed). Candidates are verified (estimated Jaccard >= threshold), so a false positive of the bands costs one
signature comparison while a false negative loses a duplicate for good: the stage weighs them LSH_WEIGHTS.

Clusters: verified pairs are edges; connected components (union-find, vectorised: each root hooks under the
smallest root an edge gives it, then paths are compressed, until no edge joins two roots) make transitive
duplicates one cluster (A~B and B~C put A, B, C together even when A≁C). One sample per cluster is kept by the
`keep` rule; every other one points at it. Everything is ordered by row position, so the result depends only on
the signatures and their order, never on how many workers computed them.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

SEED = 1  # datasketch.MinHash's default seed
MAX_HASH = np.uint32(0xFFFFFFFF)  # a position no shingle reached: every position of an empty text
IMPLEMENTATION = ("numpy MinHash: datasketch affine32 permutations (fmix32, a*h+b mod 2^32, RandomState seed 1) "
                  "over hash32, a polynomial hash of the shingle bytes mod 2^64")
# A bucket of more near-identical samples than this compares each with its WINDOW predecessors (in sample
# order) instead of all k(k-1)/2 pairs: chains still join them into one cluster, at O(k·WINDOW) cost.
WINDOW = 64
# (false positive, false negative) weights of the S-curve areas (see the module docstring).
LSH_WEIGHTS = (0.1, 0.9)
PAIR_CHUNK = 1 << 14  # candidate pairs verified per step: 2 x 16k x num_perm x 4 bytes = 16 MB at 128
BLOCK = 1 << 14  # signature rows read per step while banding: 8 MB at num_perm 128

Keep = Literal["first", "longest", "most_trained"]


# ---- text -> shingles -> signatures


def normalise(text: str) -> str:
    """The text's words, Unicode NFC and case-folded, joined by one space (any whitespace run is a word break,
    so case and line-break changes do not make a copy look different)."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def shingles(text: str, ngram: int) -> list[str]:
    """Word n-grams of the normalised text, joined by one space. A text of `ngram` words or fewer is one
    shingle (all its words); an empty text has none. (Reference for `signatures`, which never builds them.)"""
    words = normalise(text).split(" ")
    if words == [""]:
        return []
    if len(words) <= ngram:
        return [" ".join(words)]
    return [" ".join(words[i:i + ngram]) for i in range(len(words) - ngram + 1)]


def permutations(num_perm: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """(a, b), uint32 each: datasketch's affine32 permutation parameters (MinHash._init_permutations)."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer (a bijection), elementwise on uint32; overflow wraps, as intended."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def _fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def hash32(data: bytes) -> int:
    """The shingle hash, one shingle at a time (the reference `signatures` is tested against, and the `hashfunc`
    that makes datasketch.MinHash compute the same signatures): the bytes as a polynomial in _BASE mod 2^64,
    mixed with the length and folded to 32 bits."""
    h = 0
    for k, byte in enumerate(data):
        h = (h + byte * pow(_BASE, k, 1 << 64)) % (1 << 64)
    mixed = _fmix64(np.array([h ^ (len(data) * _LENGTH % (1 << 64))], dtype=np.uint64))
    return int(mixed[0] >> np.uint64(32))


_BASE = 0x100000001B3  # FNV-1's 64-bit prime: odd, so invertible mod 2^64
_BASE_INV = pow(_BASE, -1, 1 << 64)
_LENGTH = 0x9E3779B97F4A7C15  # mixes the length in, so that trailing zero bytes still change the hash


_POWERS: dict[int, np.ndarray] = {}  # base -> its powers so far (grown by doubling; two bases)


def _powers(base: int, n: int) -> np.ndarray:
    """base^0 .. base^(n-1) mod 2^64."""
    have = _POWERS.get(base)
    if have is None or len(have) < n:
        size = max(n, 2 * len(have) if have is not None else 1 << 16)
        have = np.full(size, base, dtype=np.uint64)
        have[0] = 1
        _POWERS[base] = have = np.multiply.accumulate(have)  # wraps mod 2^64, as intended
    return have[:n]


def shingle_hashes(texts: list[str], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """(hash32 of every shingle of every text, in order; shingles per text). Vectorised: the normalised texts
    are one byte buffer, each shingle a byte span of it, and a span's polynomial hash comes from prefix sums,
    (prefix[end] - prefix[start]) x base^-start, so no shingle string is ever built."""
    buf = np.frombuffer("\n".join(map(normalise, texts)).encode("utf-8"), dtype=np.uint8)
    breaks = np.flatnonzero((buf == 0x20) | (buf == 0x0A))  # after normalise: word and text separators only
    seg_start = np.concatenate([[0], breaks + 1])
    seg_end = np.concatenate([breaks, [len(buf)]])
    seg_text = np.concatenate([[0], np.cumsum(buf[breaks] == 0x0A)])  # text of each segment
    words = seg_end > seg_start  # an empty segment is an empty text
    seg_start, seg_end, seg_text = seg_start[words], seg_end[words], seg_text[words]
    per_text = np.bincount(seg_text, minlength=len(texts))
    first = np.concatenate([[0], np.cumsum(per_text)[:-1]])[seg_text]  # first word of each word's text
    count = per_text[seg_text]
    local = np.arange(len(seg_start)) - first
    starts = np.flatnonzero(local <= np.maximum(count - ngram, 0))  # words that begin a shingle
    ends = starts + np.minimum(count[starts], ngram) - 1
    lo, hi = seg_start[starts], seg_end[ends]
    prefix = np.zeros(len(buf) + 1, dtype=np.uint64)
    np.cumsum(buf.astype(np.uint64) * _powers(_BASE, len(buf)), out=prefix[1:])
    h = (prefix[hi] - prefix[lo]) * _powers(_BASE_INV, len(buf) + 1)[lo]
    h = _fmix64(h ^ ((hi - lo).astype(np.uint64) * np.uint64(_LENGTH)))
    return (h >> np.uint64(32)).astype(np.uint32), np.bincount(seg_text[starts], minlength=len(texts))


def signatures(texts: list[str], num_perm: int, ngram: int, seed: int = SEED) -> np.ndarray:
    """One signature per text, shape (len(texts), num_perm), uint32: datasketch.MinHash(num_perm, seed,
    hashfunc=hash32) over the text's shingles. A text without words gets MAX_HASH in every position
    (datasketch's empty MinHash); `has_text` tells them apart. Vectorised over the batch: per permutation one
    multiply-add over all shingles and one segmented min."""
    h, counts = shingle_hashes(texts, ngram)
    out = np.full((len(texts), num_perm), MAX_HASH, dtype=np.uint32)
    present = np.flatnonzero(counts)
    if len(present) == 0:
        return out
    h = fmix32(h)
    starts = np.concatenate([[0], np.cumsum(counts[present])[:-1]])
    a, b = permutations(num_perm, seed)
    by_perm = np.empty((num_perm, len(present)), dtype=np.uint32)
    permuted = np.empty_like(h)
    for k in range(num_perm):
        # one contiguous vector per permutation: ~4x faster than a (shingles, num_perm) block
        np.multiply(h, a[k], out=permuted)
        permuted += b[k]
        np.minimum.reduceat(permuted, starts, out=by_perm[k])
    out[present] = by_perm.T
    return out


class Signatures(Protocol):
    """Rows of a (n, num_perm) uint32 signature matrix that need not be in memory (near_dedup.py reads them from
    disk): whole blocks of consecutive rows, or any rows."""

    def __len__(self) -> int: ...

    def block(self, lo: int, hi: int) -> np.ndarray: ...

    def take(self, rows: np.ndarray) -> np.ndarray: ...


@dataclass
class InMemory:
    """Signatures held as one array."""

    sigs: np.ndarray

    def __len__(self) -> int:
        return len(self.sigs)

    def block(self, lo: int, hi: int) -> np.ndarray:
        return self.sigs[lo:hi]

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.sigs[rows]


def _source(sigs: np.ndarray | Signatures) -> Signatures:
    return InMemory(sigs) if isinstance(sigs, np.ndarray) else sigs


def _blocks(src: Signatures) -> Iterator[np.ndarray]:
    for lo in range(0, len(src), BLOCK):
        yield src.block(lo, min(lo + BLOCK, len(src)))


def has_text(sigs: np.ndarray) -> np.ndarray:
    """Rows whose text had at least one shingle (an all-MAX_HASH signature cannot come from real shingles in
    practice: every one of num_perm independent minima would have to be 2^32-1)."""
    return ~(sigs == MAX_HASH).all(axis=1)


def similarity(sigs: np.ndarray | Signatures, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Estimated Jaccard similarity of rows i[k] and j[k]: the share of equal positions (float32)."""
    src = _source(sigs)
    out = np.empty(len(i), dtype=np.float32)
    for start in range(0, len(i), PAIR_CHUNK):
        stop = start + PAIR_CHUNK
        out[start:stop] = (src.take(i[start:stop]) == src.take(j[start:stop])).mean(axis=1)
    return out


# ---- LSH parameters


def optimal_params(threshold: float, num_perm: int, false_positive_weight: float = 0.5,
                   false_negative_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimising the weighted false-positive + false-negative area of the S-curve (see the module
    docstring); equal to datasketch.lsh._optimal_param(threshold, num_perm, false_positive_weight,
    false_negative_weight)."""
    pairs = np.array([(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)], dtype=np.float64)
    bands, rows = pairs[:, :1], pairs[:, 1:]
    nodes, weights = np.polynomial.legendre.leggauss(num_perm // 2 + 1)

    def integral(lo: float, hi: float, false_negative: bool) -> np.ndarray:
        s = (hi - lo) / 2 * nodes + (hi + lo) / 2
        miss = (1 - s[None, :] ** rows) ** bands  # 1 - P(candidate | s)
        return ((miss if false_negative else 1 - miss) * weights).sum(axis=1) * (hi - lo) / 2

    error = (false_positive_weight * integral(0.0, threshold, False)
             + false_negative_weight * integral(threshold, 1.0, True))
    b, r = pairs[int(np.argmin(error))]  # argmin takes the first minimum: datasketch's loop order (b, then r)
    return int(b), int(r)


def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) the stage uses: optimal_params with LSH_WEIGHTS."""
    return optimal_params(threshold, num_perm, *LSH_WEIGHTS)


# ---- banding -> candidate pairs


def band_keys(sigs: np.ndarray, band: int, rows: int) -> np.ndarray:
    """One uint64 key per row for band `band`: its `rows` values mixed (a collision only adds a candidate pair,
    which verification then rejects)."""
    key = np.full(len(sigs), 0x9E3779B97F4A7C15, dtype=np.uint64)
    for c in range(band * rows, (band + 1) * rows):
        key ^= sigs[:, c].astype(np.uint64)
        key *= np.uint64(0xFF51AFD7ED558CCD)
        key ^= key >> np.uint64(29)
    return key


def bucket_pairs(keys: np.ndarray, window: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j), i < j, of rows with equal keys: every pair of a bucket of up to window+1 rows, and in larger
    buckets each row with its `window` predecessors (rows in index order)."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    same_as_next = sorted_keys[1:] == sorted_keys[:-1]
    in_bucket = np.zeros(len(keys), dtype=bool)
    in_bucket[:-1] |= same_as_next
    in_bucket[1:] |= same_as_next
    order, sorted_keys = order[in_bucket], sorted_keys[in_bucket]
    firsts, seconds = [], []
    for d in range(1, window + 1):
        same = sorted_keys[d:] == sorted_keys[:-d]
        if not same.any():
            break
        firsts.append(order[:-d][same])
        seconds.append(order[d:][same])
    if not firsts:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    i, j = np.concatenate(firsts).astype(np.int64), np.concatenate(seconds).astype(np.int64)
    return np.minimum(i, j), np.maximum(i, j)


def candidate_pairs(sigs: np.ndarray | Signatures, bands: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Unique pairs (i, j), i < j, sharing at least one band, sorted. One band at a time, its keys computed a
    block of rows at a time: 8 bytes a row are held, not the signatures."""
    src = _source(sigs)
    found = []
    n = np.int64(len(src))
    for band in range(bands):
        keys = np.concatenate([np.empty(0, np.uint64), *(band_keys(b, band, rows) for b in _blocks(src))])
        i, j = bucket_pairs(keys)
        found.append(_unique(i * n + j))  # per band, so duplicates across bands never pile up
    pair = _unique(np.concatenate(found)) if found else np.empty(0, np.int64)
    return pair // n, pair % n


def _unique(x: np.ndarray) -> np.ndarray:
    """Sorted distinct values. (np.unique of numpy 2.3 hashes int64 and is ~30x slower on these pair keys.)"""
    x = np.sort(x)
    if len(x) == 0:
        return x
    keep = np.empty(len(x), dtype=bool)
    keep[0] = True
    np.not_equal(x[1:], x[:-1], out=keep[1:])
    return x[keep]


# ---- clusters


def components(i: np.ndarray, j: np.ndarray, n: int) -> np.ndarray:
    """Union-find over edges (i, j) of n nodes: the smallest node of each node's component."""
    parent = np.arange(n, dtype=np.int64)
    while True:
        ri, rj = parent[i], parent[j]
        joins = ri != rj
        if not joins.any():
            return parent
        lo, hi = np.minimum(ri[joins], rj[joins]), np.maximum(ri[joins], rj[joins])
        np.minimum.at(parent, hi, lo)  # hook each root under the smallest root an edge gives it
        while True:  # compress: every node points at its root
            grand = parent[parent]
            if (grand == parent).all():
                break
            parent = grand


@dataclass
class Clusters:
    """The removed rows of a near-dedup pass, as row positions into the arrays it was given (ascending)."""

    removed: np.ndarray  # int64: rows removed as near duplicates
    kept: np.ndarray  # int64: for each removed row, the row kept in its cluster
    similarity: np.ndarray  # float32: estimated Jaccard of the removed row to the kept one
    cluster_size: np.ndarray  # int64: members of the cluster (kept one included)
    pairs_candidate: int = 0  # pairs sharing a band
    pairs_verified: int = 0  # of those, pairs with estimated Jaccard >= threshold


def keep_order(keep: Keep, sample_ids: np.ndarray, num_tokens: np.ndarray, num_trainable: np.ndarray) -> np.ndarray:
    """A rank per row, lower = preferred by `keep`: first = lowest sample_id; longest = most num_tokens;
    most_trained = most num_trainable; ties go to the lowest sample_id."""
    score = {"first": np.zeros(len(sample_ids)), "longest": num_tokens, "most_trained": num_trainable}[keep]
    order = np.lexsort((sample_ids, -np.asarray(score, dtype=np.int64)))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def near_duplicates(sigs: np.ndarray | Signatures, threshold: float, bands: int, rows: int,
                    rank: np.ndarray) -> Clusters:
    """Cluster rows whose signatures are estimated >= threshold similar (directly or through a chain), and keep
    the row of lowest `rank` (keep_order) in each. Rows without text (has_text) never join a cluster. `sigs` is
    an array or Signatures read from disk (a block of rows, or the rows of a chunk of pairs, at a time)."""
    sigs = _source(sigs)
    ci, cj = candidate_pairs(sigs, bands, rows)
    sim = similarity(sigs, ci, cj)
    text = np.concatenate([np.empty(0, bool), *(has_text(b) for b in _blocks(sigs))])
    ok = (sim >= np.float32(threshold)) & text[ci] & text[cj]
    vi, vj = ci[ok], cj[ok]
    empty = Clusters(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32), np.empty(0, np.int64),
                     len(ci), len(vi))
    if len(vi) == 0:
        return empty
    nodes = _unique(np.concatenate([vi, vj]))  # only rows with an edge
    local = np.searchsorted(nodes, np.concatenate([vi, vj]))
    root = components(local[: len(vi)], local[len(vi):], len(nodes))
    # the kept member of each component: lowest rank
    order = np.lexsort((rank[nodes], root))
    first = np.ones(len(order), dtype=bool)
    first[1:] = root[order][1:] != root[order][:-1]
    keeper_of_root = np.empty(len(nodes), dtype=np.int64)
    keeper_of_root[root[order][first]] = nodes[order][first]
    size_of_root = np.bincount(root, minlength=len(nodes))
    kept_row = keeper_of_root[root]
    removed_mask = nodes != kept_row
    removed, kept = nodes[removed_mask], kept_row[removed_mask]
    return Clusters(removed, kept, similarity(sigs, removed, kept), size_of_root[root][removed_mask],
                    len(ci), len(vi))
