"""The sample table: what the row pass produced, one row per input row, as fixed-width columns.

The row pass (parse -> format -> render -> tokenize, transform.py) hands each batch's RowResults to
`TableBuilder.add`, which appends them as fixed-width columns to one file per column (`_work/table/`) and the
kept rows' tokens to the spill (two flat int32 files in `_work/`): the row pass holds nothing per row. The
stages then get the columns as numpy arrays over the files, mapped (about 60 bytes a row, resident only while
read: `SampleTable.release`); nothing per row is a Python object.
The stages after it (stage.py) read the table; the runner writes samples.parquet and the accounting from it.

Columns (`table.columns[name]`, index = table row = input order over all datasets):

    sample_id      int64  the table row (0, 1, ...): how stages name samples. The published sample_id
                          (samples.parquet, shards) is renumbered at the end, because a kept completion or
                          pretrain row split at sequence_len takes one id per chunk; the runner maps every id a
                          stage records (kept_sample_id, cluster_id) through that renumbering.
    dataset_index  int32  position in datasets[]
    source         int32  index into Setup.sources (the file, its display name and format)
    source_row     int64  0-based row in that file
    status         uint8  index into STATUSES (kept, quarantined, duplicate, dropped)
    reason         int16  index into `table.reasons` (any string: fixed Reason values and a stage's own, such
                          as `filter:no_refusals`); -1 when none
    content_hash   S16    blake2b-128 of the normalised content (the exact-dedup key) ...
    has_hash       bool   ... when it was computed (rows quarantined while parsing have none)
    num_tokens     int32  -1 when never tokenized
    num_trainable  int32  -1 when never tokenized
    offset         int64  first token of the row in the spill (kept by the row pass), -1 otherwise
    kind           uint8  index into schemas.shard.KINDS (today always 0, "sft")

Extra columns: a RowResult may carry `extra`, a dict of name -> value (a MinHash signature, a role's text,
...). Each name becomes a column stored on disk, only for the rows that had it:

    numpy arrays (same dtype and length in every row: a MinHash signature)
        `_work/extra/<name>.bin`, one fixed-width row per value, back to back, and `<name>.ids`, their table
        rows (int64). Stages read them a block at a time, never as a whole: `view.matrix(name)` (Matrix).
    anything else (text, numbers, lists)
        `_work/extra/<name>.arrow` (Arrow IPC: `sample_id` and `value`; the value's Arrow type is taken from the
        first batch that has it), read as an Arrow array aligned with the view, null where a row had none:
        `view.extra("assistant_text")`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from dataprep.shards import TokenSpill
from schemas.reasons import Status

STATUSES: tuple[Status, ...] = (Status.kept, Status.quarantined, Status.duplicate, Status.dropped)
STATUS_CODE = {s: i for i, s in enumerate(STATUSES)}
KEPT = STATUS_CODE[Status.kept]

_DTYPES: dict[str, Any] = {
    "sample_id": np.int64, "dataset_index": np.int32, "source": np.int32, "source_row": np.int64,
    "status": np.uint8, "reason": np.int16, "content_hash": "S16", "has_hash": np.bool_,
    "num_tokens": np.int32, "num_trainable": np.int32, "offset": np.int64, "kind": np.uint8,
}


@dataclass
class SampleTable:
    columns: dict[str, np.ndarray]
    reasons: list[str]  # reason code -> string
    ids: np.ndarray  # the spill: every kept row's input_ids, back to back (memmap)
    labels: np.ndarray
    extra_dir: Path
    added: set[str] = field(default_factory=set)  # columns stages added (stage.Outcome.columns)
    maps: dict[str, mmap.mmap] = field(default_factory=dict)  # the columns' files, mapped (TableBuilder.finish)

    def __len__(self) -> int:
        return len(self.columns["sample_id"])

    def reason_code(self, reason: str) -> int:
        if reason not in self.reasons:
            self.reasons.append(reason)
        return self.reasons.index(reason)

    def release(self) -> None:
        """Drops the pages of the column files from this process (they stay in the page cache, changes
        included): a mapped page counts in RSS from its first touch until the map is gone, so without this
        every column a stage ever read would stay resident to the end (~60 bytes a row). Also returns the free
        pages of the heap (trim_heap). Called before each stage and after each block the output tables write."""
        for m in self.maps.values():
            m.madvise(mmap.MADV_DONTNEED)
        trim_heap()

    def take(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Column `name` at table rows `rows`, a copy; the column's pages are dropped once read (release)."""
        values = self.columns[name][rows]
        if (m := self.maps.get(name)) is not None:
            m.madvise(mmap.MADV_DONTNEED)
        return values

    def active(self) -> View:
        """The samples still kept: what the next stage receives."""
        self.release()
        return View(self, np.flatnonzero(self.columns["status"] == KEPT))

    def matrix(self, name: str, rows: np.ndarray) -> Matrix:
        """Fixed-width extra column `name` (numpy values) for table rows `rows` (ascending)."""
        meta = self.extra_dir / f"{name}.dtype"
        if not meta.exists():
            raise KeyError(f"no fixed-width extra column {name!r}: no RowResult had a numpy extra[{name!r}]")
        dtype, width = meta.read_text().split()
        return Matrix(self.extra_dir / f"{name}.bin", np.dtype(dtype), int(width),
                      _stored_rows(self.extra_dir / f"{name}.ids", rows))

    def extra(self, name: str, rows: np.ndarray) -> pa.Array:
        """Extra column `name` for table rows `rows` (ascending), null where a row has no value."""
        path = self.extra_dir / f"{name}.arrow"
        if not path.exists() and (self.extra_dir / f"{name}.dtype").exists():  # fixed-width: as lists
            m = self.matrix(name, rows)
            values = m.take(np.maximum(m.at, 0)) if len(rows) else np.zeros((0, m.width), m.dtype)
            lists = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), m.width)
            return pc.if_else(pa.array(m.at >= 0), lists, pa.nulls(len(rows), lists.type))
        if not path.exists():
            raise KeyError(f"no extra column {name!r}: no RowResult had extra[{name!r}]")
        with pa.memory_map(str(path)) as source:
            stored = ipc.open_file(source).read_all()
        ids = stored.column("sample_id").to_numpy()
        at = np.searchsorted(ids, rows)
        found = at < len(ids)
        found[found] = ids[at[found]] == rows[found]
        picked = stored.column("value").take(pa.array(np.where(found, at, 0)))
        return pc.if_else(pa.array(found), picked, pa.nulls(len(rows), picked.type))


_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None)


def trim_heap() -> None:
    """Hands the free pages inside glibc's heap back to the OS (malloc_trim; a no-op without glibc). After
    freeing one large block glibc raises its mmap threshold (up to 32 MB), so the per-sample arrays of the
    stages (8 MB each at 1M rows) come from the heap, and a freed one stays in RSS until the heap is trimmed:
    at 1M rows, 30-80 MB of a finished stage's arrays counted in the next stage's peak
    (bench/prepare_memory.py, RSS sampled by phase next to mallinfo2)."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)
    for pool in _ARROW_POOLS:
        pool.release_unused()


def _allocator_pools() -> list[pa.MemoryPool]:
    """Arrow's allocator pools in this build. Parquet's writer and readers allocate from Arrow's C++ default
    pool (mimalloc or jemalloc) whatever pa.set_memory_pool says, and those allocators keep freed pages for
    reuse; trim_heap hands them back too (1M rows: RSS between the write phase's steps 5-15 MiB lower, the peak
    unchanged: an open Parquet writer's buffers are live)."""
    pools = []
    for make in (pa.mimalloc_memory_pool, pa.jemalloc_memory_pool):
        with suppress(NotImplementedError):  # not built into this pyarrow
            pools.append(make())
    return pools


_ARROW_POOLS = _allocator_pools()


@contextmanager
def large_arrays_mapped() -> Iterator[None]:
    """Within: every allocation of 1 MB or more is its own memory map (glibc's M_MMAP_THRESHOLD, fixed: a no-op
    without glibc), so that a freed per-sample array goes back to the OS at once. By default glibc raises the
    threshold after each large free (up to 32 MB): the stages' arrays (8 MB each at 1M rows) then come from the
    heap, and the holes they leave between longer-lived ones stay resident until trim_heap, including at the
    peak of pack (1M rows: 322 -> 313 MiB with MALLOC_MMAP_THRESHOLD_=1048576, bench/prepare_memory.py).
    For the stages and the write, not the row pass, whose per-batch allocations are small and many.

    On exit, for what runs next in the same process (`tessera train` prepares in-process, then trains): with
    every allocation of 1 MB or more its own map, each tensor of a CPU training step was a fresh map whose pages
    were faulted in and zeroed every step (CPU steps ~40% slower, measured). glibc has no way back to its
    dynamic threshold once one is set, so exit sets where that threshold ends up by itself in a loop of large
    allocations: 32 MB (DEFAULT_MMAP_THRESHOLD_MAX, 64-bit) and a trim threshold of twice that."""
    mallopt = getattr(_LIBC, "mallopt", None)
    if mallopt is None:
        yield
        return
    mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD (malloc.h)
    try:
        yield
    finally:
        mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        mallopt(-1, 64 << 20)  # M_TRIM_THRESHOLD


@dataclass
class View:
    """The active samples: `rows` are table rows (ascending, so in sample_id order)."""

    table: SampleTable
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.table.take(name, self.rows)

    def extra(self, name: str) -> pa.Array:
        return self.table.extra(name, self.rows)

    def matrix(self, name: str) -> Matrix:
        return self.table.matrix(name, self.rows)


    def tokens(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, labels) of the view's i-th sample (memmap slices)."""
        row = self.rows[i]
        start, n = int(self.table.columns["offset"][row]), int(self.table.columns["num_tokens"][row])
        return self.table.ids[start:start + n], self.table.labels[start:start + n]


@dataclass
class Matrix:
    """A fixed-width extra column on disk, for the rows of a view: `at[i]` is the stored row of the view's i-th
    sample (-1: it has no value). Read with pread (`block`, `take`), not a memory map: every page a map touches
    would count in RSS until it is gone, and the whole file is touched (num_perm x 4 bytes a row for MinHash)."""

    path: Path
    dtype: np.dtype
    width: int
    at: np.ndarray

    def rows_between(self, lo: int, hi: int) -> np.ndarray:
        """Stored rows lo..hi-1, shape (hi - lo, width)."""
        out = np.empty((max(hi - lo, 0), self.width), self.dtype)
        if hi > lo:
            pread_into(self.path, out, lo * out.itemsize * self.width)
        return out

    def take(self, stored: np.ndarray) -> np.ndarray:
        """Stored rows `stored` (any order, repeats allowed), shape (len(stored), width); runs of consecutive
        rows are read at once."""
        order = np.argsort(stored, kind="stable")
        uniq, inverse = np.unique(stored[order], return_inverse=True)
        out = np.empty((len(uniq), self.width), self.dtype)
        if len(uniq):
            run = np.flatnonzero(np.diff(uniq) != 1) + 1
            first, last = np.concatenate([[0], run]), np.concatenate([run, [len(uniq)]])
            row_bytes = out.itemsize * self.width
            fd = os.open(self.path, os.O_RDONLY)
            try:
                for a, b in zip(first.tolist(), last.tolist(), strict=True):
                    pread_into(fd, out[a:b], int(uniq[a]) * row_bytes)
            finally:
                os.close(fd)
        result = np.empty((len(stored), self.width), self.dtype)
        result[order] = out[inverse.reshape(-1)]
        return result


def _stored_rows(ids_path: Path, rows: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """For each of `rows` (ascending table rows), its row in a fixed-width column whose stored rows' table rows
    are the file `ids_path` (int64, ascending), or -1. Merged a chunk of the ids file at a time, so that nothing
    but the result (4 bytes a row) is held for all rows."""
    stored = ids_path.stat().st_size // 8
    at = np.full(len(rows), -1, dtype=np.int32 if stored < 1 << 31 else np.int64)
    with open(ids_path, "rb") as f:
        for lo in range(0, stored, chunk):
            ids = np.fromfile(f, dtype=np.int64, count=chunk)
            a, b = np.searchsorted(rows, [ids[0], ids[-1] + 1])  # the rows this chunk's ids can match
            pos = np.searchsorted(ids, rows[a:b])
            hit = ids[np.minimum(pos, len(ids) - 1)] == rows[a:b]
            at[a:b][hit] = lo + pos[hit]
    return at


def pread_into(file: Path | int, out: np.ndarray, offset: int) -> None:
    """Fills the contiguous array `out` from a work file at byte `offset` (any dtype, records included)."""
    fd = os.open(file, os.O_RDONLY) if isinstance(file, Path) else file
    try:
        view = memoryview(out.reshape(-1).view(np.uint8))
        done = 0
        while done < len(view):
            n = os.preadv(fd, [view[done:]], offset + done)
            if n <= 0:
                raise OSError(f"{file}: the work file is shorter than expected (was it modified?)")
            done += n
    finally:
        if isinstance(file, Path):
            os.close(fd)


@dataclass
class TableBuilder:
    work: Path
    reasons: list[str] = field(default_factory=list)
    _files: dict[str, Any] = field(default_factory=dict)
    _extra: dict[str, ipc.RecordBatchFileWriter] = field(default_factory=dict)
    _extra_types: dict[str, pa.DataType] = field(default_factory=dict)
    _matrix: dict[str, tuple[Any, Any, np.dtype, int]] = field(default_factory=dict)  # data, ids files; dtype, width
    rows: int = 0

    def __post_init__(self) -> None:
        self.spill = TokenSpill(self.work)
        (self.work / "extra").mkdir(exist_ok=True)
        (self.work / "table").mkdir(exist_ok=True)
        # Each batch's columns go to one file per column at once: small arrays kept alive for the whole row pass
        # would pin heap memory between the batches' short-lived objects, and RSS would grow with the rows.
        self._files = {k: open(self.work / "table" / f"{k}.bin", "wb") for k in _DTYPES}  # noqa: SIM115

    def add(self, dataset_index: int, source: int, results: list[Any]) -> int:
        """Append one batch's RowResults (transform.py); returns the table row of the first."""
        n, first = len(results), self.rows
        cols = {k: np.empty(n, dtype=v) for k, v in _DTYPES.items()}
        cols["sample_id"][:] = np.arange(first, first + n)
        cols["dataset_index"][:] = dataset_index
        cols["source"][:] = source
        cols["kind"][:] = 0
        extra: dict[str, list[tuple[int, Any]]] = {}
        for i, r in enumerate(results):
            cols["source_row"][i] = r.source_row
            cols["status"][i] = STATUS_CODE[r.status]
            cols["reason"][i] = -1 if r.reason is None else self._reason(str(r.reason))
            cols["has_hash"][i] = r.content_hash is not None
            cols["content_hash"][i] = bytes.fromhex(r.content_hash) if r.content_hash is not None else b""
            cols["num_tokens"][i] = -1 if r.num_tokens is None else r.num_tokens
            cols["num_trainable"][i] = -1 if r.num_trainable is None else r.num_trainable
            cols["offset"][i] = -1
            if r.status is Status.kept:
                cols["offset"][i] = self.spill.add(r.input_ids, r.labels)
            for key, value in (r.extra or {}).items():
                extra.setdefault(key, []).append((first + i, value))
        for k, v in cols.items():
            self._files[k].write(v.tobytes())
        for key, pairs in extra.items():
            self._write_extra(key, pairs)
        self.rows += n
        return first

    def _reason(self, reason: str) -> int:
        if reason not in self.reasons:
            self.reasons.append(reason)
        return self.reasons.index(reason)

    def _write_extra(self, key: str, pairs: list[tuple[int, Any]]) -> None:
        first = pairs[0][1]
        if key in self._matrix or (key not in self._extra and isinstance(first, np.ndarray) and first.ndim == 1):
            self._write_matrix(key, pairs)
            return
        ids = pa.array([p[0] for p in pairs], pa.int64())
        if key not in self._extra:
            values = pa.array([p[1] for p in pairs])
            schema = pa.schema([("sample_id", pa.int64()), ("value", values.type)])
            self._extra[key] = ipc.new_file(self.work / "extra" / f"{key}.arrow", schema)
            self._extra_types[key] = values.type
        else:
            values = pa.array([p[1] for p in pairs], self._extra_types[key])
        self._extra[key].write_batch(pa.record_batch([ids, values], names=["sample_id", "value"]))

    def _write_matrix(self, key: str, pairs: list[tuple[int, Any]]) -> None:
        values = np.stack([p[1] for p in pairs])
        if key not in self._matrix:
            (self.work / "extra" / f"{key}.dtype").write_text(f"{values.dtype.str} {values.shape[1]}\n")
            data = open(self.work / "extra" / f"{key}.bin", "wb")  # noqa: SIM115  (closed in finish())
            ids = open(self.work / "extra" / f"{key}.ids", "wb")  # noqa: SIM115
            self._matrix[key] = (data, ids, values.dtype, values.shape[1])
        data, ids, dtype, width = self._matrix[key]
        if values.dtype != dtype or values.shape[1:] != (width,):
            raise ValueError(f"extra[{key!r}]: every row's array must be {dtype} x {width}, not "
                             f"{values.dtype} x {values.shape[1:]}")
        data.write(values.tobytes())
        ids.write(np.array([p[0] for p in pairs], np.int64).tobytes())

    def finish(self) -> SampleTable:
        for data, ids, _, _ in self._matrix.values():
            data.close()
            ids.close()
        for writer in self._extra.values():
            writer.close()
        ids, labels = self.spill.finish()
        columns, maps = {}, {}
        for k, f in self._files.items():
            f.close()
            if self.rows == 0:
                columns[k] = np.zeros(0, dtype=_DTYPES[k])
                continue
            with open(self.work / "table" / f"{k}.bin", "r+b") as file:
                maps[k] = mmap.mmap(file.fileno(), 0)  # the map outlives the file object
            columns[k] = np.frombuffer(maps[k], dtype=_DTYPES[k])
        return SampleTable(columns, self.reasons, ids, labels, self.work / "extra", maps=maps)
