"""The tables and the accounting, built once at the end from the sample table (vectorised, in blocks).

    samples.parquet     one row per table row, or one per piece of a kept row that was split; published ids
    duplicates.parquet  one row per sample a stage removed as a duplicate (exact or near)
    quarantine.parquet  the row pass's records (streamed to _work/quarantine.arrow while reading), renumbered,
                        then the samples stages quarantined (filters, decontamination)
    accounting          input_rows == kept + quarantined + duplicates + dropped, by reason and per dataset

Any reason string a stage wrote is counted and written as it is: nothing here lists the reasons.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from dataprep.placed import PIECE, Placed
from dataprep.runner import Removed
from dataprep.table import KEPT, STATUSES, SampleTable
from schemas.reasons import Reason, Status
from schemas.shard import DUPLICATES_SCHEMA, KINDS, QUARANTINE_SCHEMA, SAMPLES_SCHEMA

# samples.parquet's column types as they have always been on disk (Polars wrote it: large strings, every column
# nullable), so readers see the same table as before the sample table; SAMPLES_SCHEMA names the columns.
SAMPLES_FILE_SCHEMA = pa.schema([pa.field(f.name, pa.large_string() if f.type == pa.string() else f.type)
                                 for f in SAMPLES_SCHEMA])
BLOCK = 1 << 16  # rows per block while writing the tables: memory stays flat with the row count


@contextlib.contextmanager
def system_pool() -> Iterator[None]:
    """Arrow allocates from the C library's malloc inside the block (the shards and the tables): its default
    jemalloc pool kept the pages of freed blocks, ~50 MB more RSS by the end of samples.parquet's block loop
    (300k rows: write phase 342 -> 292 MiB, bench/prepare_memory.py), while freed malloc memory goes back with
    table.trim_heap. Arrays keep the pool they came from, so the default is restored safely after."""
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


def _strings(values: list[str | None], codes: np.ndarray) -> pa.Array:
    return pa.array(values, pa.string()).take(pa.array(codes))


def _nullable(values: np.ndarray, valid: np.ndarray, kind: pa.DataType) -> pa.Array:
    return pa.array(values, kind, mask=~valid)


def write_samples(path: Path, table: SampleTable, placed: Placed, removed: Removed, datasets: list[str],
                  formats: list[str], sources: list[str]) -> None:
    """A block of table rows at a time, with their samples' records read from `placed` (placed.py): nothing
    here is as long as the table."""
    c = table.columns
    dup = removed.duplicates()
    dup_first = placed.first_ids(dup["kept"])  # published id each duplicate names, by duplicate (sorted by row)
    columns = _Columns(table, placed.shard_names, datasets, formats, sources)
    # pyarrow, a block at a time (one row group each): Polars' sink_parquet read a whole 1M-row file at once.
    with pq.ParquetWriter(path, SAMPLES_FILE_SCHEMA, compression="zstd") as writer:
        next_piece = 0  # a kept row's samples are the next count pieces (pieces are in table row order)
        for lo in range(0, len(table), BLOCK):
            hi = min(lo + BLOCK, len(table))
            rows = placed.row_block(lo, hi)
            t = np.repeat(np.arange(lo, hi), rows["count"])
            in_shards = (c["status"][lo:hi] == KEPT)[t - lo]
            piece = np.zeros(len(t), PIECE)
            n = int(in_shards.sum())
            piece[in_shards] = placed.piece_block(next_piece, next_piece + n)
            next_piece += n
            a, b = np.searchsorted(dup["rows"], [lo, hi])
            dup_of = np.full(hi - lo, -1, np.int64)
            dup_of[dup["rows"][a:b] - lo] = dup_first[a:b]
            sample_id = np.repeat(rows["first_id"], rows["count"]) + np.where(in_shards & (piece["chunk"] >= 0),
                                                                              piece["chunk"], 0)
            writer.write_batch(columns.batch(t, sample_id, piece, in_shards, dup_of[t - lo], None)
                               .cast(SAMPLES_FILE_SCHEMA))
            table.release()  # this block's pages of the column files
        # Copies made by datasets[].weight: after every input row, as their sample_ids are.
        for lo in range(placed.originals, placed.pieces, BLOCK):
            hi = min(lo + BLOCK, placed.pieces)
            piece = placed.piece_block(lo, hi)
            copies = placed.copy_block(lo - placed.originals, hi - placed.originals)
            t = copies["copy_row"]
            writer.write_batch(columns.batch(t, piece["sample_id"], piece, np.ones(len(t), bool),
                                             np.full(len(t), -1, np.int64), copies["repeat_of"])
                               .cast(SAMPLES_FILE_SCHEMA))


@dataclass
class _Columns:
    """samples.parquet columns for table rows `t`, their sample ids and their samples' records (placed.PIECE;
    zeros where a row is not in the shards)."""

    table: SampleTable
    shard_names: list[str]
    datasets: list[str]
    formats: list[str]
    sources: list[str]

    def batch(self, t: np.ndarray, sample_id: np.ndarray, piece: np.ndarray, in_shards: np.ndarray,
              dup_of: np.ndarray, repeat_of: np.ndarray | None) -> pa.RecordBatch:
        c = self.table.columns
        reasons = [*self.table.reasons, None]
        chunked = in_shards & (piece["chunk"] >= 0)
        num_tokens = np.where(chunked, piece["num_tokens"], c["num_tokens"][t])
        trainable = np.where(chunked, piece["trainable"], c["num_trainable"][t])
        is_val = c["is_val"][t]
        shard = np.where(in_shards, piece["shard"], -1)
        shard = np.where(shard >= 0, shard, len(self.shard_names))
        reason = c["reason"][t]
        return pa.record_batch([
            pa.array(sample_id, pa.int64()),
            _strings(self.datasets, c["dataset_index"][t]),
            pa.array(c["dataset_index"][t], pa.int32()),
            _strings(self.formats, c["dataset_index"][t]),
            _strings(self.sources, c["source"][t]),
            pa.array(c["source_row"][t], pa.int64()),
            _strings([str(s) for s in STATUSES], c["status"][t]),
            _strings(reasons, np.where(reason >= 0, reason, len(reasons) - 1)),
            _nullable(dup_of, dup_of >= 0, pa.int64()),
            _hash_column(c["content_hash"], c["has_hash"], t),
            _nullable(num_tokens, num_tokens >= 0, pa.int32()),
            _nullable(trainable, trainable >= 0, pa.int32()),
            _strings(["train", "val", None], np.where(in_shards, is_val, 2)),
            _strings([*self.shard_names, None], shard),
            _nullable(piece["shard_row"], in_shards, pa.int32()),
            _nullable(piece["row_offset"], in_shards, pa.int32()),
            _nullable(piece["chunk"], chunked, pa.int32()),
            _strings(list(KINDS), c["kind"][t]),
            pa.nulls(len(t), pa.int64()) if repeat_of is None else pa.array(repeat_of, pa.int64()),
        ], schema=SAMPLES_SCHEMA)


_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


def hex_hashes(hashes: np.ndarray) -> pa.Array:
    """16-byte hashes (numpy "S16") as the 32-character lowercase hex strings samples.parquet has always had.
    In numpy, not Polars: Polars' allocator kept ~270 bytes a row of freed memory through the block loop of
    write_samples (+80 MB at 300k rows, bench/prepare_memory.py). (Raw bytes: numpy's "S16" items would drop
    trailing zero bytes.)"""
    raw = np.frombuffer(hashes.tobytes(), np.uint8).reshape(len(hashes), 16)
    text = np.empty((len(hashes), 32), np.uint8)
    text[:, 0::2], text[:, 1::2] = _HEX[raw >> 4], _HEX[raw & 15]
    offsets = np.arange(0, 32 * len(hashes) + 1, 32, dtype=np.int32)
    return pa.StringArray.from_buffers(len(hashes), pa.py_buffer(offsets), pa.py_buffer(text.tobytes()))


def _hash_column(hashes: np.ndarray, has: np.ndarray, t: np.ndarray) -> pa.Array:
    values = hex_hashes(hashes[t])
    return pc.if_else(pa.array(has[t]), values, pa.nulls(len(t), pa.string()))


def write_duplicates(path: Path, table: SampleTable, placed: Placed, removed: Removed) -> None:
    dup = removed.duplicates()
    hashes = hex_hashes(table.take("content_hash", dup["rows"]))  # its pages dropped at once: read at random
    exact = ~dup["near"]
    columns = [
        pa.array(placed.first_ids(dup["rows"]), pa.int64()),
        pa.array(placed.first_ids(dup["kept"]), pa.int64()),
        _strings(["exact", "near"], dup["near"].astype(np.int8)),
        pa.array(dup["similarity"], pa.float64()),
        pa.array(placed.first_ids(dup["cluster"]), pa.int64()),
        pc.if_else(pa.array(exact, pa.bool_()), hashes, pa.nulls(len(hashes), pa.string())),
    ]
    pq.write_table(pa.Table.from_arrays(columns, schema=DUPLICATES_SCHEMA), path)


def write_quarantine(path: Path, work_file: Path, table: SampleTable, placed: Placed, removed: Removed,
                     datasets: list[str], sources: list[str]) -> None:
    """The row pass's records with published ids (a row group per record batch of the work file, as the row
    pass wrote them), then the stages' quarantined samples."""
    with pq.ParquetWriter(path, QUARANTINE_SCHEMA) as writer:
        with pa.OSFile(str(work_file)) as f:  # read, not mapped: a mapped page would count in RSS
            source = ipc.open_file(f)
            for g in range(source.num_record_batches):
                group = pa.Table.from_batches([source.get_batch(g)])
                column = pa.array(placed.first_ids(group.column(0).to_numpy()), pa.int64())
                writer.write_table(group.set_column(0, QUARANTINE_SCHEMA.field("sample_id"), column))
        if removed.quarantined:
            rows = np.concatenate([q["rows"] for q in removed.quarantined])
            order = np.argsort(rows, kind="stable")
            rows = rows[order]
            c = table.columns

            def joined(key: str) -> list[Any]:
                return np.concatenate([q[key] for q in removed.quarantined])[order].tolist()

            writer.write_table(pa.Table.from_arrays([
                pa.array(placed.first_ids(rows), pa.int64()),
                _strings(datasets, c["dataset_index"][rows]),
                _strings(sources, c["source"][rows]),
                pa.array(c["source_row"][rows], pa.int64()),
                _strings(table.reasons, c["reason"][rows]),
                pa.array(joined("field"), pa.string()),
                pa.array(joined("message"), pa.string()),
                pa.array(joined("original"), pa.string()),
                pa.array(joined("eval_file"), pa.string()),
                pa.array(joined("eval_row"), pa.int64()),
            ], schema=QUARANTINE_SCHEMA))


def counts(table: SampleTable, datasets: list[str]) -> dict[str, Any]:
    """accounting, by_reason, per_dataset and truncated, from the table's status and reason columns, summed a
    block of rows at a time (whole-table temporaries were ~40 bytes a row at the end of a run)."""
    c = table.columns
    k, n_datasets = len(STATUSES), max(len(datasets), int(c["dataset_index"].max(initial=-1)) + 1)
    truncated_code = table.reasons.index(Reason.truncated) if Reason.truncated in table.reasons else -2
    by_status = np.zeros(k, np.int64)
    reason_counts = np.zeros(len(table.reasons), np.int64)
    per_status = np.zeros(n_datasets * k, np.int64)  # by dataset_index, then status
    tokens, trainable = np.zeros(n_datasets), np.zeros(n_datasets)
    truncated = 0
    for lo in range(0, len(table), BLOCK):
        status, reason = c["status"][lo:lo + BLOCK], c["reason"][lo:lo + BLOCK]
        dataset = c["dataset_index"][lo:lo + BLOCK].astype(np.int64)
        kept = status == KEPT
        by_status += np.bincount(status, minlength=k)
        reason_counts += np.bincount(reason[reason >= 0], minlength=len(table.reasons))
        per_status += np.bincount(dataset * k + status, minlength=n_datasets * k)
        tokens += np.bincount(dataset[kept], weights=c["num_tokens"][lo:lo + BLOCK][kept], minlength=n_datasets)
        trainable += np.bincount(dataset[kept], weights=c["num_trainable"][lo:lo + BLOCK][kept],
                                 minlength=n_datasets)
        truncated += int(np.count_nonzero(kept & (reason == truncated_code)))
        table.release()
    n = {s: int(by_status[i]) for i, s in enumerate(STATUSES)}
    by_reason = {table.reasons[i]: int(r) for i, r in enumerate(reason_counts) if r}
    # per dataset path (two datasets[] entries may read the same file), in dataset order
    names = list(dict.fromkeys(datasets[i] for i in range(len(datasets)) if per_status[i * k:(i + 1) * k].any()))
    per_dataset: dict[str, dict[str, int]] = {}
    for name in names:
        same = [i for i, d in enumerate(datasets) if d == name]
        d: Counter[str] = Counter()
        for s, status in enumerate(STATUSES):
            if total := int(sum(per_status[i * k + s] for i in same)):
                d[str(status)] = total
        d["rows_in"] = sum(d.values())
        if d.get(str(Status.kept)):
            d["tokens"], d["trainable"] = int(sum(tokens[i] for i in same)), int(sum(trainable[i] for i in same))
        per_dataset[name] = dict(sorted(d.items()))
    rows_in = len(table)
    accounting = {"input_rows": rows_in, "kept": n[Status.kept], "quarantined": n[Status.quarantined],
                  "duplicates": n[Status.duplicate], "dropped": n[Status.dropped],
                  "balanced": rows_in == sum(n.values())}
    return {"accounting": accounting, "by_reason": dict(sorted(by_reason.items())), "per_dataset": per_dataset,
            "truncated": truncated}
