"""Split and pack: kept samples -> a validation split, then rows of at most sequence_len tokens.

Packing is best-fit decreasing: samples sorted by length (longest first, ties by sample id), each put in the
open row with the least room that still fits it, else in a new row. Deterministic, and close to optimal when
there are many short samples. A worked packed row with sequence_len 8, samples 7 (3 tokens) and 9 (4 tokens):

    input_ids     a0 a1 a2 b0 b1 b2 b3
    labels        -100 a1 a2 -100 b1 b2 b3    (prompt tokens would be -100 too)
    position_ids  0  1  2  0  1  2  3
    cu_seqlens    [0, 3, 7]
    sample_ids    [7, 9]

Without packing every sample is its own row, in sample id order.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np


class Rows(NamedTuple):
    """Packed rows as two arrays: row r holds the samples `order[bounds[r]:bounds[r + 1]]`."""

    order: np.ndarray  # indices of samples, row after row
    bounds: np.ndarray  # len(rows) + 1 offsets into `order`

    def __len__(self) -> int:  # type: ignore[override]  (the number of rows, not of fields)
        return len(self.bounds) - 1

    def lists(self) -> list[list[int]]:
        return [self.order[a:b].tolist() for a, b in zip(self.bounds[:-1], self.bounds[1:], strict=True)]


def choose_validation(sample_ids: np.ndarray, val_set_size: float, seed: int) -> np.ndarray:
    """Boolean mask over `sample_ids`: True for the validation split.

    A fraction (< 1) or a count (>= 1) of the samples, those whose hash(seed, sample_id) is smallest: the
    choice depends only on the seed and the ids, not on the order or the number of other rows.
    """
    n = len(sample_ids)
    count = round(val_set_size * n) if val_set_size < 1 else min(int(val_set_size), n)
    mask = np.zeros(n, dtype=bool)
    if count == 0:
        return mask
    keys = np.fromiter(
        (int.from_bytes(hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=8).digest(), "little")
         for _, i in _each(sample_ids)),  # a block of Python ints at a time, not a list of them all
        dtype=np.uint64, count=n)
    mask[np.lexsort((sample_ids, keys))[:count]] = True
    return mask


def pack_best_fit(lengths: np.ndarray, sample_ids: np.ndarray | None, capacity: int) -> Rows:
    """Rows of indices into `lengths`; each row's lengths sum to at most `capacity`. A row's samples are in the
    order they were placed (longest first). `sample_ids` None: the samples are in sample id order already (as
    layout.pack passes them), so a stable sort by length alone gives the same order as sorting by (length,
    sample id), without an array of ids and lexsort's temporaries (~30 bytes a sample at 1M)."""
    if sample_ids is None:
        order = np.argsort(-lengths.astype(np.int32), kind="stable")
    else:
        order = np.lexsort((sample_ids, -lengths.astype(np.int64)))
    row_of = np.empty(len(order), np.int32)  # row of the order[i]-th sample
    n_rows = 0
    # Open rows grouped by remaining room; `rooms` is the sorted list of room values that have rows, so the
    # best fit is one bisect away. Within a room value the oldest row wins (heap of row numbers).
    by_room: dict[int, list[int]] = {}
    rooms: list[int] = []
    for pos, size in _each(lengths, order):
        if size > capacity:
            raise ValueError(f"sample of {size} tokens does not fit sequence_len {capacity}")
        at = bisect.bisect_left(rooms, size)
        if at < len(rooms):
            room = rooms[at]
            row = heapq.heappop(by_room[room])
            if not by_room[room]:
                del by_room[room]
                rooms.pop(at)
        else:
            room, row = capacity, n_rows
            n_rows += 1
        row_of[pos] = row
        left = room - size
        if left > 0:
            if left not in by_room:
                by_room[left] = []
                bisect.insort(rooms, left)
            heapq.heappush(by_room[left], row)
    counts = np.bincount(row_of, minlength=n_rows)
    by_row = np.argsort(row_of, kind="stable")
    del row_of
    np.take(order, by_row, out=by_row, mode="clip")  # in place (element-wise: index i is read before slot i)
    return Rows(by_row, _bounds(counts))


def _each(values: np.ndarray, order: np.ndarray | None = None, block: int = 1 << 16) -> Iterator[tuple[int, int]]:
    """(position, value) as Python ints, a block at a time (`values[order]` when an order is given): no list
    or copy as long as the dataset."""
    for lo in range(0, len(values), block):
        part = values[lo:lo + block] if order is None else values[order[lo:lo + block]]
        yield from enumerate(part.tolist(), start=lo)


def one_per_row(sample_ids: np.ndarray | None, n: int = 0) -> Rows:
    """Every sample its own row, in sample id order (`sample_ids` None: the n samples are in that order)."""
    if sample_ids is None:
        return Rows(np.arange(n), np.arange(n + 1))
    return Rows(np.argsort(sample_ids, kind="stable"), np.arange(len(sample_ids) + 1))


def _bounds(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
