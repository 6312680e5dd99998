"""MinHash signatures on plain arrays: normalised text -> shingles -> signatures, and their similarity.

numpy only, so each step is tested on arrays; dataprep/near_dedup.py runs near-dedup as a stage over
signatures it reads from disk (`Signatures`: blocks of rows for banding, the rows of a chunk of pairs for
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

Banding, candidate pairs and clusters over these signatures are dataprep/lsh.py.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Protocol

import numpy as np

SEED = 1  # datasketch.MinHash's default seed
MAX_HASH = np.uint32(0xFFFFFFFF)  # a position no shingle reached: every position of an empty text
IMPLEMENTATION = ("numpy MinHash: datasketch affine32 permutations (fmix32, a*h+b mod 2^32, RandomState seed 1) "
                  "over hash32, a polynomial hash of the shingle bytes mod 2^64")
PAIR_CHUNK = 1 << 12  # candidate pairs verified per step: 2 x 4k x num_perm x 4 bytes = 4 MB at 128
BLOCK = 1 << 13  # signature rows read per step while banding: 4 MB at num_perm 128


# ---- text -> shingles -> signatures


def normalise(text: str) -> str:
    """The text's words, Unicode NFC and case-folded, joined by one space (any whitespace run is a word break,
    so case and line-break changes do not make a copy look different). A script written without spaces (Chinese,
    Japanese, Thai) has one word per run between spaces: no segmenter is applied (README "Near duplicates")."""
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


def source(sigs: np.ndarray | Signatures) -> Signatures:
    return InMemory(sigs) if isinstance(sigs, np.ndarray) else sigs


def has_text(sigs: np.ndarray) -> np.ndarray:
    """Rows whose text had at least one shingle (an all-MAX_HASH signature cannot come from real shingles in
    practice: every one of num_perm independent minima would have to be 2^32-1)."""
    return ~(sigs == MAX_HASH).all(axis=1)


def similarity(sigs: np.ndarray | Signatures, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Estimated Jaccard similarity of rows i[k] and j[k]: the share of equal positions (float32)."""
    src = source(sigs)
    out = np.empty(len(i), dtype=np.float32)
    for start in range(0, len(i), PAIR_CHUNK):
        stop = start + PAIR_CHUNK
        out[start:stop] = (src.take(i[start:stop]) == src.take(j[start:stop])).mean(axis=1)
    return out
