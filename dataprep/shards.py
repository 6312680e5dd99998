"""Token spill and shard writing.

Kept rows' ids and labels are appended to two flat int32 files as they are produced (TokenSpill), so
memory does not grow with the dataset; the writer then reads the samples back as token ranges (SpillReader, pread)
and writes Arrow IPC shards (schemas/shard.py) of at most `SHARD_TOKENS` tokens each.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute
import pyarrow.ipc as ipc

from schemas.shard import IGNORE_INDEX, SHARD_SCHEMA

SHARD_TOKENS = 1 << 23  # ~8M tokens: ~100 MB per shard file (ids, labels, positions)
BATCH_ROWS = 1024  # record batch size inside a shard
ROWS_BLOCK = 1 << 16  # shard rows whose token counts are read at a time, to find the shards' ends


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


# The keys of a manifest's shard entry the loader reads, with their types (bool is an int to Python: refused)
SHARD_KEYS: dict[str, type] = {"file": str, "split": str, "rows": int, "tokens": int}


def _is(value: Any, kind: type) -> bool:
    return isinstance(value, kind) and not isinstance(value, bool)


def manifest_problem(manifest: dict[str, Any]) -> str | None:
    """What is wrong with the shape of the manifest's shards, accounting, stats and datasets, or None. A manifest
    is data (copied, edited, half-written by another tool): a missing key or a string where a count belongs must
    be one line naming the field (the cache check rebuilds, the trainer refuses), not a KeyError deep inside."""
    shards = manifest.get("shards")
    if not isinstance(shards, list):
        return f"'shards' is a {type(shards).__name__}, not a list"
    files: set[str] = set()
    for i, info in enumerate(shards):
        if not isinstance(info, dict):
            return f"shards[{i}] is a {type(info).__name__}, not an object"
        for key, kind in SHARD_KEYS.items():
            if not _is(info.get(key), kind):
                return f"shards[{i}].{key} is {info.get(key)!r}, not a {kind.__name__}"
        if "bytes" in info and not _is(info["bytes"], int):
            return f"shards[{i}].bytes is {info['bytes']!r}, not an int"
        if info["file"] in files:  # the same rows twice would train twice as often, silently
            return f"shards[{i}].file {info['file']!r} is listed twice"
        files.add(info["file"])
    for key in ("accounting", "stats"):
        if not isinstance(manifest.get(key), dict):
            return f"'{key}' is not an object"
    config = manifest.get("config")
    datasets = config.get("datasets") if isinstance(config, dict) else None
    if not isinstance(datasets, list) or not all(isinstance(d, dict) and _is(d.get("path"), str) for d in datasets):
        return "config.datasets is not a list of datasets with a path"
    return None


class TokenSpill:
    """Kept rows' input_ids and labels, appended to two flat int32 files; the sample table keeps each row's
    offset, so nothing per row is held here."""

    def __init__(self, folder: Path):
        self.ids_path, self.labels_path = folder / "ids.bin", folder / "labels.bin"
        self._ids = open(self.ids_path, "wb")  # noqa: SIM115  (closed in finish())
        self._labels = open(self.labels_path, "wb")  # noqa: SIM115
        self.total = 0

    def add(self, ids: np.ndarray, labels: np.ndarray) -> int:
        """Appends one row; returns the offset of its first token."""
        self._ids.write(ids.tobytes())
        self._labels.write(labels.tobytes())
        start, self.total = self.total, self.total + len(ids)
        return start

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids memmap, labels memmap)."""
        self._ids.close()
        self._labels.close()
        if not self.total:
            return np.zeros(0, np.int32), np.zeros(0, np.int32)
        return (np.memmap(self.ids_path, dtype=np.int32, mode="r", shape=(self.total,)),
                np.memmap(self.labels_path, dtype=np.int32, mode="r", shape=(self.total,)))


class SpillReader:
    """Reads token ranges of the spill with pread, not through a memory map: packed rows take samples from all
    over the spill, and every page a map touches (with the kernel's fault-around, 64 KB per touch) would count
    in this process's RSS until the map is gone (a 1M-row run: the whole ~300 MB spill)."""

    def __init__(self, ids_path: Path, labels_path: Path):
        self.paths = (ids_path, labels_path)

    def gather(self, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, labels) of the token ranges [start, end), back to back; adjacent ranges are read at once."""
        lengths = end - start
        total = int(lengths.sum())
        out = (np.empty(total, np.int32), np.empty(total, np.int32))
        if total == 0:
            return out
        cut = np.flatnonzero(start[1:] != end[:-1]) + 1  # runs of ranges that follow each other in the spill
        first, last = np.concatenate([[0], cut]), np.concatenate([cut, [len(start)]]) - 1
        run_start, run_end = start[first], end[last]
        at = np.concatenate([[0], np.cumsum(run_end - run_start)])
        for path, array in zip(self.paths, out, strict=True):
            view = memoryview(array).cast("B")
            fd = os.open(path, os.O_RDONLY)
            try:
                for a, b, o in zip(run_start.tolist(), run_end.tolist(), at.tolist(), strict=False):
                    n = (b - a) * 4
                    if os.preadv(fd, [view[o * 4:o * 4 + n]], a * 4) != n:
                        raise OSError(f"{path}: the token spill is shorter than expected (was it modified?)")
            finally:
                os.close(fd)
        return out


@dataclass
class ShardInfo:
    file: str
    split: str
    rows: int
    tokens: int
    trainable: int
    sha256: str
    bytes: int  # file size: checked on every cache hit and by train/data.py (sha256 only with --verify)


class SplitPlan(Protocol):
    """What the writer follows and where it records the placement (placed.Placed): read a block at a time."""

    splits: dict[str, int]  # split -> its shard rows

    def shard_rows(self, split: str, lo: int, hi: int) -> np.ndarray: ...  # first, tokens (placed.SHARD_ROW)
    def shard_samples(self, split: str, lo: int, hi: int) -> np.ndarray: ...  # placed.ORDER records
    def place(self, piece: np.ndarray, placement: dict[str, np.ndarray]) -> None: ...


def write_split(out_dir: Path, split: str, plan: SplitPlan, spill: SpillReader, first_shard: int) -> list[ShardInfo]:
    """Shards `<split>-NNNNN.arrow` of the split's shard rows, read from `plan` a batch at a time, their samples'
    tokens from the spill; tells `plan` where each sample went (shard numbers from `first_shard`). A sample's
    `mask_first`: it is a piece of a split row, whose first label is set to -100 here (the first token of every
    sample is never a target)."""
    shards: list[ShardInfo] = []
    for start, end, tokens in _shards(plan, split):
        name = f"{split}-{len(shards):05d}.arrow"
        trainable = 0
        with ipc.new_file(out_dir / name, SHARD_SCHEMA) as writer:
            for b in range(start, end, BATCH_ROWS):
                b_end = min(b + BATCH_ROWS, end)
                first = plan.shard_rows(split, b, b_end + 1)["first"]
                samples = plan.shard_samples(split, int(first[0]), int(first[-1]))
                batch = _batch(samples, first - first[0], b - start, first_shard + len(shards), spill, plan)
                writer.write_batch(batch)
                trainable += int(pa.compute.sum(batch.column("num_trainable")).as_py())
        shards.append(ShardInfo(f"shards/{name}", split, end - start, tokens, trainable,
                                sha256_file(out_dir / name), (out_dir / name).stat().st_size))
    return shards


def _shards(plan: SplitPlan, split: str) -> Iterator[tuple[int, int, int]]:
    """(first row, end row, tokens) of each shard: rows in order, each shard at most SHARD_TOKENS tokens (or one
    row), its rows' tokens read a block at a time."""
    n = plan.splits[split]
    start, tokens = 0, 0
    for lo in range(0, n, ROWS_BLOCK):
        for i, t in enumerate(plan.shard_rows(split, lo, min(lo + ROWS_BLOCK, n))["tokens"].tolist(), start=lo):
            if i > start and tokens + t > SHARD_TOKENS:
                yield start, i, tokens
                start, tokens = i, 0
            tokens += t
    if n:
        yield start, n, tokens


def _batch(samples: np.ndarray, first: np.ndarray, first_row: int, shard_index: int, spill: SpillReader,
           plan: SplitPlan) -> pa.RecordBatch:
    """Shard rows whose samples are `samples[first[r]:first[r + 1]]` (placed.ORDER records, in shard order)."""
    n_rows = len(first) - 1
    per_row = np.diff(first)
    seg_start, seg_len = samples["start"], samples["length"].astype(np.int64)
    bounds = np.concatenate([[0], np.cumsum(seg_len)])  # sample boundaries in this batch's flat arrays
    row_offsets = bounds[first]  # token offset of each row
    ids, row_labels = spill.gather(seg_start, seg_start + seg_len)
    positions = np.arange(len(ids)) - np.repeat(bounds[:-1], seg_len)
    # cu_seqlens of row r: the sample boundaries from its first sample to its end, relative to its start.
    cu = np.concatenate([bounds[first[r]:first[r + 1] + 1] - row_offsets[r] for r in range(n_rows)])
    cu_offsets = first + np.arange(n_rows + 1)
    row_labels[bounds[:-1][samples["mask_first"] != 0]] = IGNORE_INDEX
    trained_tokens = row_labels != IGNORE_INDEX
    trained = np.add.reduceat(trained_tokens, row_offsets[:-1]) if len(ids) else per_row * 0
    plan.place(samples["piece"], {
        "shard": np.full(len(samples), shard_index, np.int32),
        "shard_row": first_row + np.repeat(np.arange(n_rows), per_row),
        "row_offset": bounds[:-1] - np.repeat(row_offsets[:-1], per_row),
        "trainable": np.add.reduceat(trained_tokens, bounds[:-1]) if len(ids) else np.zeros(len(samples), np.int32),
    })

    def lists(values: np.ndarray, offs: np.ndarray, kind: pa.DataType) -> pa.ListArray:
        return pa.ListArray.from_arrays(pa.array(offs.astype(np.int32)), pa.array(values, kind))

    return pa.RecordBatch.from_arrays([
        lists(ids, row_offsets, pa.int32()),
        lists(row_labels, row_offsets, pa.int32()),
        lists(positions.astype(np.int32), row_offsets, pa.int32()),
        lists(cu.astype(np.int32), cu_offsets, pa.int32()),
        lists(samples["sample_id"], first, pa.int64()),
        pa.array(np.diff(row_offsets).astype(np.int32), pa.int32()),
        pa.array(trained.astype(np.int32), pa.int32()),
    ], schema=SHARD_SCHEMA)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
