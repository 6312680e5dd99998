"""LSH banding and clustering over MinHash signatures (dataprep/minhash.py): candidate pairs, verified pairs,
union-find clusters, one kept sample per cluster. numpy only, on plain arrays or signatures read from disk.

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

Memory does not grow with the rows (issue 10: 1M rows prepare in the memory of 100k). The signatures are read
once, a block of rows at a time; each row's key in every band (its `rows` values of the band, mixed with the
band's number) goes with the row's position to one of up to MAX_PARTITIONS spill files, chosen by the key's top
bits, so equal keys meet in the same file. Each file is then read and sorted on its own (a few MB), and its
buckets of equal keys give the candidate pairs. What is held for all rows is one byte a row (has_text); what
grows is the candidate pairs, which are as many as the near duplicates, not the rows.

Clusters: verified pairs are edges; connected components (union-find, vectorised: each root hooks under the
smallest root an edge gives it, then paths are compressed, until no edge joins two roots) make transitive
duplicates one cluster (A~B and B~C put A, B, C together even when A≁C). One sample per cluster is kept by the
`keep` rule; every other one points at it. Everything is ordered by row position, so the result depends only on
the signatures and their order, never on how many workers computed them or how the rows were partitioned.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from dataprep import minhash
from dataprep.minhash import Signatures, has_text, similarity, source

# A bucket of more near-identical samples than this compares each with its WINDOW predecessors (in sample
# order) instead of all k(k-1)/2 pairs: chains still join them into one cluster, at O(k·WINDOW) cost.
WINDOW = 64
# (false positive, false negative) weights of the S-curve areas (see the module docstring).
LSH_WEIGHTS = (0.1, 0.9)
# Band keys per spill file when sorted: 12 bytes each on disk, ~40 in memory while sorted (~10 MB).
PARTITION_KEYS = 1 << 18
MAX_PARTITIONS = 256  # open files while the keys are spilled; past 256 x PARTITION_KEYS keys a file holds more
_ENTRY = np.dtype([("key", "<u8"), ("row", "<u4")])

Keep = Literal["first", "longest", "most_trained"]


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
    """One uint64 key per row for band `band`: the band's number and its `rows` values mixed, so that keys of
    different bands differ too (a collision only adds a candidate pair, which verification then rejects)."""
    key = np.full(len(sigs), 0x9E3779B97F4A7C15 ^ band, dtype=np.uint64)
    for c in range(band * rows, (band + 1) * rows):
        key ^= sigs[:, c].astype(np.uint64)
        key *= np.uint64(0xFF51AFD7ED558CCD)
        key ^= key >> np.uint64(29)
    return key


def bucket_pairs(keys: np.ndarray, window: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j), i < j, of positions with equal keys: every pair of a bucket of up to window+1 positions, and
    in larger buckets each position with its `window` predecessors (positions in index order)."""
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


@dataclass
class Banded:
    """One pass over the signatures: the candidate pairs (unique, sorted by (i, j)) and which rows have text."""

    i: np.ndarray
    j: np.ndarray
    text: np.ndarray  # bool per row: has_text


def band(sigs: np.ndarray | Signatures, bands: int, rows: int, spill: Path | None = None) -> Banded:
    """Candidate pairs: rows sharing all values of at least one band. The signatures are read once, a block at a
    time; the band keys wait in spill files under `spill` (a temporary folder, removed after) partitioned by
    their top bits, and each file is bucketed on its own (see the module docstring)."""
    src = source(sigs)
    n = len(src)
    if n >= 1 << 32:
        raise ValueError(f"near-dedup handles up to 2^32 - 1 samples, not {n:,}")
    parts = 1
    while parts < MAX_PARTITIONS and parts * PARTITION_KEYS < n * bands:
        parts *= 2
    shift = np.uint64(64 - parts.bit_length() + 1) if parts > 1 else None
    text = np.empty(n, dtype=bool)
    found: list[np.ndarray] = []
    with tempfile.TemporaryDirectory(prefix="lsh-", dir=spill) as folder:
        paths = [Path(folder) / f"{p}.keys" for p in range(parts)]
        files = [open(path, "wb") for path in paths]  # noqa: SIM115 (closed in the finally below)
        try:
            step = minhash.BLOCK
            for lo in range(0, n, step):
                block = src.block(lo, min(lo + step, n))
                text[lo:lo + len(block)] = has_text(block)
                entries = np.empty((bands, len(block)), dtype=_ENTRY)
                entries["row"] = np.arange(lo, lo + len(block), dtype=np.uint32)
                for b in range(bands):
                    entries["key"][b] = band_keys(block, b, rows)
                del block
                entries = entries.reshape(-1)  # band by band, rows ascending in each
                if shift is None:
                    entries.tofile(files[0])
                    continue
                part = (entries["key"] >> shift).astype(np.intp)
                order = np.argsort(part, kind="stable")  # keeps each band's rows ascending within a file
                bounds = np.searchsorted(part[order], np.arange(parts + 1))
                entries = entries[order]
                for p in range(parts):
                    if bounds[p + 1] > bounds[p]:
                        entries[bounds[p]:bounds[p + 1]].tofile(files[p])
        finally:
            for f in files:
                f.close()
        for path in paths:
            entries = np.fromfile(path, dtype=_ENTRY)
            path.unlink()
            # equal keys are one band's (keys of different bands differ), its rows ascending: so are i, j
            i, j = bucket_pairs(entries["key"])
            row = entries["row"].astype(np.int64)
            del entries
            found.append(_unique(row[i] * n + row[j]))
    pair = _unique(np.concatenate(found)) if found else np.empty(0, np.int64)
    return Banded(pair // n, pair % n, text)


def candidate_pairs(sigs: np.ndarray | Signatures, bands: int, rows: int,
                    spill: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Unique pairs (i, j), i < j, sharing at least one band, sorted."""
    banded = band(sigs, bands, rows, spill)
    return banded.i, banded.j


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
                    rank: np.ndarray | Callable[[np.ndarray], np.ndarray], spill: Path | None = None) -> Clusters:
    """Cluster rows whose signatures are estimated >= threshold similar (directly or through a chain), and keep
    the row of lowest rank in each. `rank` is keep_order's over all rows, or a function giving it for some rows
    (ranks comparable among those rows: keep_order over just them), so that nothing per row is built for rows
    without a near duplicate. Rows without text (has_text) never join a cluster. `sigs` is an array or
    Signatures read from disk; `spill` is where band keys wait (a temporary folder by default)."""
    sigs = source(sigs)
    banded = band(sigs, bands, rows, spill)
    ci, cj = banded.i, banded.j
    sim = similarity(sigs, ci, cj)
    ok = (sim >= np.float32(threshold)) & banded.text[ci] & banded.text[cj]
    vi, vj = ci[ok], cj[ok]
    empty = Clusters(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32), np.empty(0, np.int64),
                     len(ci), len(vi))
    if len(vi) == 0:
        return empty
    nodes = _unique(np.concatenate([vi, vj]))  # only rows with an edge
    local = np.searchsorted(nodes, np.concatenate([vi, vj]))
    root = components(local[: len(vi)], local[len(vi):], len(nodes))
    node_rank = rank[nodes] if isinstance(rank, np.ndarray) else rank(nodes)
    # the kept member of each component: lowest rank
    order = np.lexsort((node_rank, root))
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
