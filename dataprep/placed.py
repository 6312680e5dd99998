"""Where every sample goes, on disk between pack, the shard writer and the tables (`_work/placed/`).

After pack, the shard writer needs each split's samples in shard order (their token ranges and published ids)
and the tables need, per table row, its first published id and its number of samples, and per sample (piece)
its chunk, its tokens and where the writer put it. Held in memory they were ~100 bytes a piece at the peak of
the write phase (the layout's arrays and the writer's placement); here they are fixed-width files, written a
block at a time from the layout right after pack, and read back the way the writer and the tables go through
them:

    rows.bin         per table row: first_id int64, count int64      read in blocks (samples.parquet); single
                                                                     ids by pread (duplicates, quarantine)
    samples.bin      per piece, in sample_id order: sample_id int64,  read in blocks: samples.parquet takes the
                     chunk, num_tokens int32                          pieces of a block of table rows, which are
                                                                      consecutive
    copies.bin       per copy piece (datasets[].weight > 1): copy_row, repeat_of int64
    <split>.rows     per shard row of the split, and one past the     the shard writer reads a batch of rows,
                     last: first (into <split>.order) int64,         then their samples, in order
                     tokens int64
    <split>.order    per sample in shard order: piece, sample_id,
                     start (spill offset) int64, length,
                     mask_first int32
    placement/NNNNN  where the writer put each piece: piece int64,    appended in shard order, one file per
                     trainable, shard, shard_row, row_offset int32    bucket of `bucket` consecutive pieces;
                                                                      samples.parquet reads a bucket at a time

Packed rows take their samples from all over the dataset, so the writer's placement arrives scattered by
piece: held by piece it was 16 bytes a piece to the end of the shards; bucketed, it is sorted back one bucket
at a time. Everything is read with pread, not a memory map: a mapped page counts in RSS from its first touch to
the map's end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dataprep.layout import Layout
from dataprep.pack import Rows
from dataprep.table import Matrix, pread_into

ROW = np.dtype([("first_id", "<i8"), ("count", "<i8")])
SAMPLE = np.dtype([("sample_id", "<i8"), ("chunk", "<i4"), ("num_tokens", "<i4")])
PLACEMENT = np.dtype([("trainable", "<i4"), ("shard", "<i4"), ("shard_row", "<i4"), ("row_offset", "<i4")])
PIECE = np.dtype(SAMPLE.descr + PLACEMENT.descr)  # what piece_block returns
COPY = np.dtype([("copy_row", "<i8"), ("repeat_of", "<i8")])
SHARD_ROW = np.dtype([("first", "<i8"), ("tokens", "<i8")])
ORDER = np.dtype([("piece", "<i8"), ("sample_id", "<i8"), ("start", "<i8"), ("length", "<i4"),
                  ("mask_first", "<i4")])
PLACED = np.dtype([("piece", "<i8"), *PLACEMENT.descr])
BLOCK = 1 << 16  # records per write
MAX_BUCKETS = 256  # placement files; more pieces make each bucket larger, not the number of open files


@dataclass
class Placed:
    folder: Path
    rows: int  # table rows
    pieces: int  # samples in the shards: originals, then copies
    originals: int
    chunked_rows: int  # kept rows cut into more than one sample
    longest: int  # tokens of the longest original sample
    splits: dict[str, int] = field(default_factory=dict)  # split -> its shard rows, in writing order
    shard_names: list[str] = field(default_factory=list)  # set once the shards are written
    bucket: int = BLOCK  # pieces per placement file
    _open: dict[int, Any] = field(default_factory=dict)  # placement files being appended to
    _cached: tuple[int, np.ndarray] | None = None  # the placement bucket read last

    @classmethod
    def save(cls, folder: Path, layout: Layout) -> Placed:
        """Writes the layout for the shard writer and the tables, so that the caller can drop it before the
        shards are written."""
        folder.mkdir()
        p = layout.pieces
        _write(folder / "rows.bin", ROW, len(layout.count), _first_ids(layout.count))
        _write(folder / "samples.bin", SAMPLE, len(p),
               lambda lo, hi: {"sample_id": layout.sample_ids[lo:hi], "chunk": p.chunk[lo:hi],
                               "num_tokens": p.length[lo:hi]})
        _write(folder / "copies.bin", COPY, len(layout.copy_row),
               lambda lo, hi: {"copy_row": layout.copy_row[lo:hi], "repeat_of": layout.repeat_of[lo:hi]})
        for split, rows in layout.rows.items():
            _write(folder / f"{split}.order", ORDER, len(rows.order),
                   lambda lo, hi, r=rows: _order(layout, r, lo, hi))
            _write(folder / f"{split}.rows", SHARD_ROW, len(rows) + 1,
                   lambda lo, hi, r=rows: _shard_rows(layout, r, lo, hi))
        n = layout.originals
        longest = max((int(p.length[lo:min(lo + BLOCK, n)].max()) for lo in range(0, n, BLOCK)), default=0)
        (folder / "placement").mkdir()
        return cls(folder, len(layout.count), len(p), layout.originals, int(np.count_nonzero(layout.count > 1)),
                   longest, {split: len(rows) for split, rows in layout.rows.items()},
                   bucket=max(BLOCK, -(-len(p) // MAX_BUCKETS)))

    # ---- the shard writer's side (shards.write_split)

    def shard_rows(self, split: str, lo: int, hi: int) -> np.ndarray:
        """Shard rows lo..hi-1 of `split` (hi may be one past the last row: its `first` is the end)."""
        return _read(self.folder / f"{split}.rows", SHARD_ROW, lo, hi)

    def shard_samples(self, split: str, lo: int, hi: int) -> np.ndarray:
        """Samples lo..hi-1 of `split` in shard order (ORDER records)."""
        return _read(self.folder / f"{split}.order", ORDER, lo, hi)

    def place(self, piece: np.ndarray, placement: dict[str, np.ndarray]) -> None:
        """Where the writer put pieces `piece` (PLACEMENT's fields): appended to their buckets' files."""
        records = np.empty(len(piece), PLACED)
        records["piece"] = piece
        for name in PLACEMENT.names:
            records[name] = placement[name]
        bucket = piece // self.bucket
        order = np.argsort(bucket, kind="stable")
        records, bucket = records[order], bucket[order]
        cut = np.flatnonzero(np.diff(bucket)) + 1
        for a, b in zip(np.concatenate([[0], cut]).tolist(), np.concatenate([cut, [len(bucket)]]).tolist(),
                        strict=True):
            if a < b:
                self._bucket_file(int(bucket[a])).write(records[a:b].tobytes())

    def _bucket_file(self, b: int) -> Any:
        if b not in self._open:
            self._open[b] = open(self.folder / "placement" / f"{b:05d}", "ab")  # noqa: SIM115  (close())
        return self._open[b]

    def close(self) -> None:
        """Closes the placement files (the shards are written, or the writer failed)."""
        for f in self._open.values():
            f.close()
        self._open.clear()

    # ---- the tables' side (outputs.py)

    def row_block(self, lo: int, hi: int) -> np.ndarray:
        return _read(self.folder / "rows.bin", ROW, lo, hi)

    def piece_block(self, lo: int, hi: int) -> np.ndarray:
        out = np.empty(max(hi - lo, 0), PIECE)
        part = _read(self.folder / "samples.bin", SAMPLE, lo, hi)
        for name in SAMPLE.names:
            out[name] = part[name]
        for b in range(lo // self.bucket, -(-hi // self.bucket)):
            first = b * self.bucket
            placement = self._placement_bucket(b)
            a, z = max(lo, first), min(hi, first + len(placement))
            for name in PLACEMENT.names:
                out[name][a - lo:z - lo] = placement[name][a - first:z - first]
        return out

    def _placement_bucket(self, b: int) -> np.ndarray:
        """Placement of pieces b * bucket ... by piece (shard -1: not written), from the records the writer
        appended in shard order."""
        if self._cached is not None and self._cached[0] == b:
            return self._cached[1]
        first = b * self.bucket
        out = np.zeros(max(min(self.bucket, self.pieces - first), 0), PLACEMENT)
        out["shard"] = -1
        path = self.folder / "placement" / f"{b:05d}"
        if path.exists():
            records = np.fromfile(path, PLACED)
            at = records["piece"] - first
            for name in PLACEMENT.names:
                out[name][at] = records[name]
        self._cached = (b, out)
        return out

    def copy_block(self, lo: int, hi: int) -> np.ndarray:
        """Copy pieces lo..hi-1, counted from the first copy."""
        return _read(self.folder / "copies.bin", COPY, lo, hi)

    def first_ids(self, rows: np.ndarray) -> np.ndarray:
        """Published id of table rows `rows` (any order; duplicates, quarantined rows: read by pread, merged
        where they follow each other)."""
        if len(rows) == 0:
            return np.zeros(0, np.int64)
        records = Matrix(self.folder / "rows.bin", np.dtype("<i8"), 2, np.zeros(0, np.int64))
        return records.take(np.asarray(rows, np.int64))[:, 0]


def _order(layout: Layout, rows: Rows, lo: int, hi: int) -> dict[str, np.ndarray]:
    piece = rows.order[lo:hi]
    p = layout.pieces
    return {"piece": piece, "sample_id": layout.sample_ids[piece], "start": p.start[piece], "length": p.length[piece],
            "mask_first": p.chunk[piece] >= 0}


def _shard_rows(layout: Layout, rows: Rows, lo: int, hi: int) -> dict[str, np.ndarray]:
    """Rows lo..hi-1 (the last one past the end: the end, no tokens); their pieces' lengths summed a block of
    pieces at a time (a block of shard rows holds ~sequence_len / sample length times as many pieces)."""
    first = rows.bounds[lo:hi]
    n = min(hi, len(rows)) - lo
    tokens = np.zeros(len(first), np.int64)
    p = layout.pieces
    for a in range(int(first[0]), int(rows.bounds[lo + n]) if n > 0 else 0, BLOCK):
        b = min(a + BLOCK, int(rows.bounds[lo + n]))
        piece = rows.order[a:b]
        row = np.searchsorted(first[:n], np.arange(a, b), side="right") - 1
        tokens[:n] += np.bincount(row, weights=p.length[piece], minlength=n).astype(np.int64)
    return {"first": first, "tokens": tokens}


def _first_ids(count: np.ndarray) -> Callable[[int, int], dict[str, np.ndarray]]:
    """rows.bin's fields, blocks lo..hi asked in order: each row's first id is the sum of the counts before it,
    carried from block to block (the layout holds only the counts)."""
    before = [0]

    def block(lo: int, hi: int) -> dict[str, np.ndarray]:
        first = np.cumsum(count[lo:hi], dtype=np.int64)
        first += before[0] - count[lo:hi]
        before[0] = int(first[-1] + count[hi - 1]) if hi > lo else before[0]
        return {"first_id": first, "count": count[lo:hi]}
    return block


def _write(path: Path, dtype: np.dtype, n: int, fields: Callable[[int, int], dict[str, np.ndarray]]) -> None:
    with open(path, "wb") as f:
        for lo in range(0, n, BLOCK):
            hi = min(lo + BLOCK, n)
            block = np.empty(hi - lo, dtype)
            for name, values in fields(lo, hi).items():
                block[name] = values
            f.write(block.tobytes())


def _read(path: Path, dtype: np.dtype, lo: int, hi: int) -> np.ndarray:
    out = np.empty(max(hi - lo, 0), dtype)
    if len(out):
        pread_into(path, out, lo * dtype.itemsize)
    return out
