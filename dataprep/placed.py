"""Where every sample went, on disk between the shard writer and the tables (`_work/placed/`).

Once the shards are written, the tables (samples.parquet, duplicates.parquet, quarantine.parquet) need, per
table row, its first published id and its number of samples, and per sample (piece) its chunk, its tokens and
where the writer put it. Held in memory to the end they were ~90 bytes a row (the layout's arrays and the
writer's placement), on top of the peak of the tables' own block loop; here they are three fixed-width files,
written a block at a time from the layout, and read back the way the tables go through them:

    rows.bin       per table row: first_id int64, count int64     read in blocks (samples.parquet); single
                                                                  ids by pread (duplicates, quarantine)
    samples.bin    per piece, in sample_id order: sample_id int64, read in blocks: samples.parquet takes the
                   chunk, num_tokens int32                         pieces of a block of table rows, which are
    placement.bin  per piece: trainable, shard, shard_row,         consecutive
                   row_offset int32 (the shard writer's)
    copies.bin     per copy piece (datasets[].weight > 1): copy_row, repeat_of int64

The first three (Placed.save) are written before the shards, so the writer runs without them in memory;
placement.bin after (add_placement).

Read with pread, not a memory map: a mapped page counts in RSS from its first touch to the map's end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dataprep.layout import Layout
from dataprep.shards import Placement
from dataprep.table import Matrix, pread_into

ROW = np.dtype([("first_id", "<i8"), ("count", "<i8")])
SAMPLE = np.dtype([("sample_id", "<i8"), ("chunk", "<i4"), ("num_tokens", "<i4")])
PLACEMENT = np.dtype([("trainable", "<i4"), ("shard", "<i4"), ("shard_row", "<i4"), ("row_offset", "<i4")])
PIECE = np.dtype(SAMPLE.descr + PLACEMENT.descr)  # what piece_block returns
COPY = np.dtype([("copy_row", "<i8"), ("repeat_of", "<i8")])
BLOCK = 1 << 16  # records per write


@dataclass
class Placed:
    folder: Path
    rows: int  # table rows
    pieces: int  # samples in the shards: originals, then copies
    originals: int
    chunked_rows: int  # kept rows cut into more than one sample
    longest: int  # tokens of the longest original sample
    shard_names: list[str] = field(default_factory=list)

    @classmethod
    def save(cls, folder: Path, layout: Layout) -> Placed:
        """Writes what the tables need of the layout and the shard writer does not (first ids, counts, chunks,
        copies), before the shards are written, so that the caller can drop those arrays first."""
        folder.mkdir()
        p = layout.pieces
        _write(folder / "rows.bin", ROW, len(layout.count),
               lambda lo, hi: {"first_id": layout.first_id[lo:hi], "count": layout.count[lo:hi]})
        _write(folder / "samples.bin", SAMPLE, len(p),
               lambda lo, hi: {"sample_id": layout.sample_ids[lo:hi], "chunk": p.chunk[lo:hi],
                               "num_tokens": p.end[lo:hi] - p.start[lo:hi]})
        _write(folder / "copies.bin", COPY, len(layout.copy_row),
               lambda lo, hi: {"copy_row": layout.copy_row[lo:hi], "repeat_of": layout.repeat_of[lo:hi]})
        n = layout.originals
        longest = max((int((p.end[lo:min(lo + BLOCK, n)] - p.start[lo:min(lo + BLOCK, n)]).max())
                       for lo in range(0, n, BLOCK)), default=0)
        return cls(folder, len(layout.count), len(p), layout.originals, int(np.count_nonzero(layout.count > 1)),
                   longest)

    def add_placement(self, placement: Placement) -> None:
        """Writes where the shard writer put each sample; the caller then drops `placement`."""
        _write(self.folder / "placement.bin", PLACEMENT, self.pieces,
               lambda lo, hi: {name: getattr(placement, name)[lo:hi] for name in PLACEMENT.names})
        self.shard_names = list(placement.names)

    def row_block(self, lo: int, hi: int) -> np.ndarray:
        return _read(self.folder / "rows.bin", ROW, lo, hi)

    def piece_block(self, lo: int, hi: int) -> np.ndarray:
        out = np.empty(max(hi - lo, 0), PIECE)
        for path, dtype in ((self.folder / "samples.bin", SAMPLE), (self.folder / "placement.bin", PLACEMENT)):
            part = _read(path, dtype, lo, hi)
            for name in dtype.names:
                out[name] = part[name]
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
