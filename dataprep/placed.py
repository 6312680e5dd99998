"""Where every sample went, on disk between the shard writer and the tables (`_work/placed/`).

Once the shards are written, the tables (samples.parquet, duplicates.parquet, quarantine.parquet) need, per
table row, its first published id and its number of samples, and per sample (piece) its chunk, its tokens and
where the writer put it. Held in memory to the end they were ~90 bytes a row (the layout's arrays and the
writer's placement), on top of the peak of the tables' own block loop; here they are three fixed-width files,
written a block at a time from the layout, and read back the way the tables go through them:

    rows.bin    per table row: first_id int64, count int64       read in blocks (samples.parquet); single ids
                                                                 by pread (duplicates, quarantine)
    pieces.bin  per piece, in sample_id order: sample_id int64,  read in blocks: samples.parquet takes the
                chunk, num_tokens, trainable, shard, shard_row,  pieces of a block of table rows, which are
                row_offset int32                                 consecutive
    copies.bin  per copy piece (datasets[].weight > 1): copy_row, repeat_of int64

Read with pread, not a memory map: a mapped page counts in RSS from its first touch to the map's end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataprep.layout import Layout
from dataprep.shards import Placement
from dataprep.table import Matrix, pread_into

ROW = np.dtype([("first_id", "<i8"), ("count", "<i8")])
PIECE = np.dtype([("sample_id", "<i8"), ("chunk", "<i4"), ("num_tokens", "<i4"), ("trainable", "<i4"),
                  ("shard", "<i4"), ("shard_row", "<i4"), ("row_offset", "<i4")])
COPY = np.dtype([("copy_row", "<i8"), ("repeat_of", "<i8")])
BLOCK = 1 << 16  # records per write


@dataclass
class Placed:
    folder: Path
    rows: int  # table rows
    pieces: int  # samples in the shards: originals, then copies
    originals: int
    shard_names: list[str]
    chunked_rows: int  # kept rows cut into more than one sample
    longest: int  # tokens of the longest original sample

    @classmethod
    def save(cls, folder: Path, layout: Layout, placement: Placement) -> Placed:
        """Writes the layout and the placement; the caller then drops both."""
        folder.mkdir()
        p = layout.pieces
        with open(folder / "rows.bin", "wb") as f:
            for lo in range(0, len(layout.count), BLOCK):
                block = np.empty(min(BLOCK, len(layout.count) - lo), ROW)
                block["first_id"], block["count"] = layout.first_id[lo:lo + BLOCK], layout.count[lo:lo + BLOCK]
                f.write(block.tobytes())
        with open(folder / "pieces.bin", "wb") as f:
            for lo in range(0, len(p), BLOCK):
                block = np.empty(min(BLOCK, len(p) - lo), PIECE)
                block["sample_id"], block["chunk"] = layout.sample_ids[lo:lo + BLOCK], p.chunk[lo:lo + BLOCK]
                block["num_tokens"] = p.end[lo:lo + BLOCK] - p.start[lo:lo + BLOCK]
                for name in ("trainable", "shard", "shard_row", "row_offset"):
                    block[name] = getattr(placement, name)[lo:lo + BLOCK]
                f.write(block.tobytes())
        with open(folder / "copies.bin", "wb") as f:
            block = np.empty(len(layout.copy_row), COPY)
            block["copy_row"], block["repeat_of"] = layout.copy_row, layout.repeat_of
            f.write(block.tobytes())
        lengths = p.end[:layout.originals] - p.start[:layout.originals]
        return cls(folder, len(layout.count), len(p), layout.originals, list(placement.names),
                   int(np.count_nonzero(layout.count > 1)), int(lengths.max()) if len(lengths) else 0)

    def row_block(self, lo: int, hi: int) -> np.ndarray:
        return _read(self.folder / "rows.bin", ROW, lo, hi)

    def piece_block(self, lo: int, hi: int) -> np.ndarray:
        return _read(self.folder / "pieces.bin", PIECE, lo, hi)

    def copy_block(self, lo: int, hi: int) -> np.ndarray:
        """Copy pieces lo..hi-1, counted from the first copy."""
        return _read(self.folder / "copies.bin", COPY, lo, hi)

    def first_ids(self, rows: np.ndarray) -> np.ndarray:
        """Published id of table rows `rows` (any order; a few per call: duplicates, quarantined rows)."""
        if len(rows) == 0:
            return np.zeros(0, np.int64)
        records = Matrix(self.folder / "rows.bin", np.dtype("<i8"), 2, np.zeros(0, np.int64))
        return records.take(np.asarray(rows, np.int64))[:, 0]


def _read(path: Path, dtype: np.dtype, lo: int, hi: int) -> np.ndarray:
    out = np.empty(max(hi - lo, 0), dtype)
    if len(out):
        pread_into(path, out, lo * dtype.itemsize)
    return out
