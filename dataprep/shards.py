"""Token spill and shard writing.

Kept samples' ids and labels are appended to two flat int32 files as they are produced (TokenSpill), so
memory does not grow with the dataset; packing then reads them back by sample through np.memmap and writes
Arrow IPC shards (schemas/shard.py) of at most `SHARD_TOKENS` tokens each.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute
import pyarrow.ipc as ipc

from schemas.shard import IGNORE_INDEX, SHARD_SCHEMA

SHARD_TOKENS = 1 << 23  # ~8M tokens: ~100 MB per shard file (ids, labels, positions)
BATCH_ROWS = 1024  # record batch size inside a shard
REPEAT_TOKENS = 1 << 22  # TokenSpill.repeat copies about this many tokens (16 MiB of ids) per write


class ShardPathError(ValueError):
    """A shard name in a manifest that points outside its prepared directory."""


def shard_path(prepared: Path, name: str) -> Path:
    """`prepared / name` for a shard name read from a manifest. Readers join names through here: a manifest is
    data (copied, downloaded, edited), and an absolute name, '..' or a symlink must not make `query`, `inspect`
    or `report` open a file outside the directory they were given."""
    relative = Path(name)
    if not name or relative.is_absolute() or ".." in relative.parts:
        raise ShardPathError(f"{prepared}/manifest.json: shard {name!r} is not a path inside the directory; "
                             "the manifest was edited or is corrupt: prepare the directory again")
    path = prepared / relative
    if not path.resolve().is_relative_to(prepared.resolve()):
        raise ShardPathError(f"{path}: the shard is a link to {path.resolve()}, outside {prepared}; "
                             "prepare the directory again")
    return path


class TokenSpill:
    def __init__(self, folder: Path):
        self.ids_path, self.labels_path = folder / "ids.bin", folder / "labels.bin"
        self._ids = open(self.ids_path, "wb")  # noqa: SIM115  (closed in finish())
        self._labels = open(self.labels_path, "wb")  # noqa: SIM115
        self.offsets = [0]
        self.sample_ids: list[int] = []

    def add(self, sample_id: int, ids: np.ndarray, labels: np.ndarray) -> None:
        self._ids.write(ids.tobytes())
        self._labels.write(labels.tobytes())
        self.offsets.append(self.offsets[-1] + len(ids))
        self.sample_ids.append(sample_id)

    def repeat(self, entries: np.ndarray, sample_ids: np.ndarray) -> None:
        """Append copies of entries already added (`entries` index them, in add order) as new samples
        `sample_ids`: weighted mixing's repeats (mix.py). Read back from the files in pieces of about
        REPEAT_TOKENS tokens, so memory does not grow with the copies."""
        self._ids.flush()
        self._labels.flush()
        total = self.offsets[-1]
        if total == 0 or len(entries) == 0:
            return
        ids = np.memmap(self.ids_path, dtype=np.int32, mode="r", shape=(total,))
        labels = np.memmap(self.labels_path, dtype=np.int32, mode="r", shape=(total,))
        offsets = np.asarray(self.offsets, dtype=np.int64)
        starts, ends = offsets[entries], offsets[entries + 1]
        copied = np.cumsum(ends - starts)
        cut = np.searchsorted(copied, np.arange(REPEAT_TOKENS, int(copied[-1]), REPEAT_TOKENS), side="right")
        for part in np.split(np.arange(len(entries)), cut):
            if len(part) == 0:
                continue
            flat = np.concatenate([np.arange(starts[i], ends[i]) for i in part.tolist()])
            self._ids.write(np.ascontiguousarray(ids[flat]).tobytes())
            self._labels.write(np.ascontiguousarray(labels[flat]).tobytes())
            self.offsets.extend((self.offsets[-1] + np.cumsum(ends[part] - starts[part])).tolist())
            self.sample_ids.extend(sample_ids[part].tolist())
        del ids, labels

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(sample_ids, offsets, ids memmap, labels memmap)."""
        self._ids.close()
        self._labels.close()
        total = self.offsets[-1]
        ids = np.memmap(self.ids_path, dtype=np.int32, mode="r", shape=(total,)) if total else np.zeros(0, np.int32)
        labels = (np.memmap(self.labels_path, dtype=np.int32, mode="r", shape=(total,)) if total
                  else np.zeros(0, np.int32))
        return np.asarray(self.sample_ids, dtype=np.int64), np.asarray(self.offsets, dtype=np.int64), ids, labels


@dataclass
class ShardInfo:
    file: str
    split: str
    rows: int
    tokens: int
    trainable: int
    sha256: str
    bytes: int  # file size: checked on every cache hit and by train/data.py (sha256 only with --verify)


@dataclass
class Placement:
    """Where each kept sample went: arrays indexed like the spill (shard -1 = not written)."""

    shard: np.ndarray  # index into `names`
    shard_row: np.ndarray
    row_offset: np.ndarray
    names: list[str]

    @classmethod
    def empty(cls, n: int) -> Placement:
        return cls(np.full(n, -1, np.int32), np.zeros(n, np.int32), np.zeros(n, np.int32), [])


def write_split(out_dir: Path, split: str, rows: list[list[int]], sample_ids: np.ndarray, offsets: np.ndarray,
                ids: np.ndarray, labels: np.ndarray, placement: Placement) -> list[ShardInfo]:
    lengths = np.diff(offsets)
    row_tokens = [int(lengths[row].sum()) for row in rows]
    shards: list[ShardInfo] = []
    start = 0
    while start < len(rows):
        end, tokens = start + 1, row_tokens[start]
        while end < len(rows) and tokens + row_tokens[end] <= SHARD_TOKENS:
            tokens += row_tokens[end]
            end += 1
        name = f"{split}-{len(shards):05d}.arrow"
        placement.names.append(f"shards/{name}")
        shard_index = len(placement.names) - 1
        trainable = 0
        with ipc.new_file(out_dir / name, SHARD_SCHEMA) as writer:
            for b in range(start, end, BATCH_ROWS):
                batch = _batch(rows[b:min(b + BATCH_ROWS, end)], b - start, shard_index, sample_ids, offsets,
                               ids, labels, placement)
                writer.write_batch(batch)
                trainable += int(pa.compute.sum(batch.column("num_trainable")).as_py())
        shards.append(ShardInfo(f"shards/{name}", split, end - start, tokens, trainable,
                                sha256_file(out_dir / name), (out_dir / name).stat().st_size))
        start = end
    return shards


def _batch(rows: list[list[int]], first_row: int, shard_index: int, sample_ids: np.ndarray, offsets: np.ndarray,
           ids: np.ndarray, labels: np.ndarray, placement: Placement) -> pa.RecordBatch:
    order = np.fromiter((i for row in rows for i in row), dtype=np.int64)
    per_row = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
    seg_len = offsets[order + 1] - offsets[order]
    bounds = np.concatenate([[0], np.cumsum(seg_len)])  # sample boundaries in this batch's flat arrays
    first = np.concatenate([[0], np.cumsum(per_row)])  # index into `order` of each row's first sample
    row_offsets = bounds[first]  # token offset of each row
    flat = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in order])
    positions = np.arange(len(flat)) - np.repeat(bounds[:-1], seg_len)
    # cu_seqlens of row r: the sample boundaries from its first sample to its end, relative to its start.
    cu = np.concatenate([bounds[first[r]:first[r + 1] + 1] - row_offsets[r] for r in range(len(rows))])
    cu_offsets = first + np.arange(len(rows) + 1)
    row_labels = labels[flat]
    trained = np.add.reduceat(row_labels != IGNORE_INDEX, row_offsets[:-1]) if len(flat) else per_row * 0

    placement.shard[order] = shard_index
    placement.shard_row[order] = first_row + np.repeat(np.arange(len(rows)), per_row)
    placement.row_offset[order] = bounds[:-1] - np.repeat(row_offsets[:-1], per_row)

    def lists(values: np.ndarray, offs: np.ndarray, kind: pa.DataType) -> pa.ListArray:
        return pa.ListArray.from_arrays(pa.array(offs.astype(np.int32)), pa.array(values, kind))

    return pa.RecordBatch.from_arrays([
        lists(ids[flat], row_offsets, pa.int32()),
        lists(row_labels, row_offsets, pa.int32()),
        lists(positions.astype(np.int32), row_offsets, pa.int32()),
        lists(cu.astype(np.int32), cu_offsets, pa.int32()),
        lists(sample_ids[order], first, pa.int64()),
        pa.array(np.diff(row_offsets).astype(np.int32), pa.int32()),
        pa.array(trained.astype(np.int32), pa.int32()),
    ], schema=SHARD_SCHEMA)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
