"""The tables and the accounting, built once at the end from the sample table (vectorised, in blocks).

    samples.parquet     one row per table row, or one per piece of a kept row that was split; published ids
    duplicates.parquet  one row per sample a stage removed as a duplicate (exact or near)
    quarantine.parquet  the row pass's records (streamed to _work/ while reading), renumbered, then the samples
                        stages quarantined (filters, decontamination)
    accounting          input_rows == kept + quarantined + duplicates + dropped, by reason and per dataset

Any reason string a stage wrote is counted and written as it is: nothing here lists the reasons.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dataprep.layout import Layout
from dataprep.runner import Removed
from dataprep.shards import Placement
from dataprep.table import KEPT, STATUSES, SampleTable
from schemas.reasons import Reason, Status
from schemas.shard import DUPLICATES_SCHEMA, KINDS, QUARANTINE_SCHEMA, SAMPLES_SCHEMA

# samples.parquet's column types as they have always been on disk (Polars wrote it: large strings, every column
# nullable), so readers see the same table as before the sample table; SAMPLES_SCHEMA names the columns.
SAMPLES_FILE_SCHEMA = pa.schema([pa.field(f.name, pa.large_string() if f.type == pa.string() else f.type)
                                 for f in SAMPLES_SCHEMA])
BLOCK = 1 << 16  # rows per block while writing the tables: memory stays flat with the row count


def _strings(values: list[str | None], codes: np.ndarray) -> pa.Array:
    return pa.array(values, pa.string()).take(pa.array(codes))


def _nullable(values: np.ndarray, valid: np.ndarray, kind: pa.DataType) -> pa.Array:
    return pa.array(values, kind, mask=~valid)


def write_samples(path: Path, table: SampleTable, layout: Layout, placement: Placement,
                  removed: Removed, datasets: list[str], formats: list[str], sources: list[str]) -> None:
    c = table.columns
    # Output row -> table row, and -> piece (-1: the row is not in the shards).
    active = c["status"] == KEPT
    pieces_before = np.cumsum(np.where(active, layout.count, 0)) - np.where(active, layout.count, 0)
    dup = removed.duplicates()
    dup_of = np.full(len(table), -1, np.int64)
    dup_of[dup["rows"]] = layout.first_id[dup["kept"]]
    columns = _Columns(table, layout, placement, dup_of, datasets, formats, sources)
    # pyarrow, a block at a time (one row group each): Polars' sink_parquet read a whole 1M-row file at once.
    with pq.ParquetWriter(path, SAMPLES_FILE_SCHEMA, compression="zstd") as writer:
        for lo in range(0, len(table), BLOCK):
            hi = min(lo + BLOCK, len(table))
            t = np.repeat(np.arange(lo, hi), layout.count[lo:hi])
            first_piece = int(pieces_before[lo])
            in_shards = active[t]
            piece = np.full(len(t), -1, np.int64)
            piece[in_shards] = first_piece + np.arange(int(in_shards.sum()))
            writer.write_batch(columns.batch(t, piece, in_shards, None).cast(SAMPLES_FILE_SCHEMA))
            table.release()  # this block's pages of the column files
        # Copies made by datasets[].weight: after every input row, as their sample_ids are.
        for lo in range(layout.originals, len(layout.pieces), BLOCK):
            piece = np.arange(lo, min(lo + BLOCK, len(layout.pieces)))
            t = layout.copy_row[piece - layout.originals]
            writer.write_batch(columns.batch(t, piece, np.ones(len(t), bool),
                                             layout.repeat_of[piece - layout.originals]).cast(SAMPLES_FILE_SCHEMA))


@dataclass
class _Columns:
    """samples.parquet columns for table rows `t` and their pieces (-1: not in the shards)."""

    table: SampleTable
    layout: Layout
    placement: Placement
    dup_of: np.ndarray
    datasets: list[str]
    formats: list[str]
    sources: list[str]

    def batch(self, t: np.ndarray, piece: np.ndarray, in_shards: np.ndarray,
              repeat_of: np.ndarray | None) -> pa.RecordBatch:
        c, layout, placement, dup_of = self.table.columns, self.layout, self.placement, self.dup_of
        reasons = [*self.table.reasons, None]
        p = np.maximum(piece, 0)
        chunked = in_shards & (layout.pieces.chunk[p] >= 0) if len(layout.pieces) else in_shards & False
        num_tokens = np.where(chunked, layout.pieces.end[p] - layout.pieces.start[p], c["num_tokens"][t])
        trainable = np.where(chunked, placement.trainable[p] if len(p) and len(placement.trainable) else 0,
                             c["num_trainable"][t])
        is_val = c["is_val"][t]
        shard = np.where(in_shards, placement.shard[p] if len(placement.shard) else -1, -1)
        shard = np.where(shard >= 0, shard, len(placement.names))
        reason = c["reason"][t]
        sample_id = (layout.sample_ids[piece] if repeat_of is not None
                     else layout.first_id[t] + np.where(chunked, layout.pieces.chunk[p], 0))
        return pa.record_batch([
            pa.array(sample_id, pa.int64()),
            _strings(self.datasets, c["dataset_index"][t]),
            pa.array(c["dataset_index"][t], pa.int32()),
            _strings(self.formats, c["dataset_index"][t]),
            _strings(self.sources, c["source"][t]),
            pa.array(c["source_row"][t], pa.int64()),
            _strings([str(s) for s in STATUSES], c["status"][t]),
            _strings(reasons, np.where(reason >= 0, reason, len(reasons) - 1)),
            _nullable(dup_of[t], dup_of[t] >= 0, pa.int64()),
            _hash_column(c["content_hash"], c["has_hash"], t),
            _nullable(num_tokens, num_tokens >= 0, pa.int32()),
            _nullable(trainable, trainable >= 0, pa.int32()),
            _strings(["train", "val", None], np.where(in_shards, is_val, 2)),
            _strings([*placement.names, None], shard),
            _nullable(placement.shard_row[p] if len(p) and len(placement.shard_row) else np.zeros(len(t)),
                      in_shards, pa.int32()),
            _nullable(placement.row_offset[p] if len(p) and len(placement.row_offset) else np.zeros(len(t)),
                      in_shards, pa.int32()),
            _nullable(layout.pieces.chunk[p] if len(layout.pieces) else np.zeros(len(t)), chunked, pa.int32()),
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


def write_duplicates(path: Path, table: SampleTable, layout: Layout, removed: Removed) -> None:
    dup = removed.duplicates()
    hashes = hex_hashes(table.columns["content_hash"][dup["rows"]])
    exact = ~dup["near"]
    columns = [
        pa.array(layout.first_id[dup["rows"]], pa.int64()),
        pa.array(layout.first_id[dup["kept"]], pa.int64()),
        _strings(["exact", "near"], dup["near"].astype(np.int8)),
        pa.array(dup["similarity"], pa.float64()),
        pa.array(layout.first_id[dup["cluster"]], pa.int64()),
        pc.if_else(pa.array(exact, pa.bool_()), hashes, pa.nulls(len(hashes), pa.string())),
    ]
    pq.write_table(pa.Table.from_arrays(columns, schema=DUPLICATES_SCHEMA), path)


def write_quarantine(path: Path, work_file: Path, table: SampleTable, layout: Layout, removed: Removed,
                     datasets: list[str], sources: list[str]) -> None:
    """The row pass's records with published ids (row group by row group, as they were written), then the
    stages' quarantined samples."""
    with pq.ParquetWriter(path, QUARANTINE_SCHEMA) as writer:
        source = pq.ParquetFile(work_file)
        for g in range(source.num_row_groups):
            group = source.read_row_group(g)
            ids = layout.first_id[group.column("sample_id").to_numpy()]
            writer.write_table(group.set_column(0, QUARANTINE_SCHEMA.field("sample_id"), pa.array(ids, pa.int64())))
        source.close()
        if removed.quarantined:
            rows = np.concatenate([q["rows"] for q in removed.quarantined])
            order = np.argsort(rows, kind="stable")
            rows = rows[order]
            c = table.columns

            def joined(key: str) -> list[Any]:
                return np.concatenate([q[key] for q in removed.quarantined])[order].tolist()

            writer.write_table(pa.Table.from_arrays([
                pa.array(layout.first_id[rows], pa.int64()),
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
    """accounting, by_reason, per_dataset and truncated, from the table's status and reason columns."""
    c = table.columns
    by_status = np.bincount(c["status"], minlength=len(STATUSES))
    n = {s: int(by_status[i]) for i, s in enumerate(STATUSES)}
    reason_counts = np.bincount(c["reason"][c["reason"] >= 0], minlength=len(table.reasons))
    by_reason = {table.reasons[i]: int(k) for i, k in enumerate(reason_counts) if k}
    truncated = table.reasons.index(Reason.truncated) if Reason.truncated in table.reasons else -2
    kept = c["status"] == KEPT
    # per dataset path (two datasets[] entries may read the same file), in the order the rows came
    present = np.unique(c["dataset_index"])
    names = list(dict.fromkeys(datasets[i] for i in present.tolist()))
    group = np.array([names.index(d) if d in names else -1 for d in datasets], np.int64)[c["dataset_index"]] \
        if len(datasets) else np.zeros(0, np.int64)
    per_status = np.bincount(group * len(STATUSES) + c["status"], minlength=len(names) * len(STATUSES))
    tokens = np.bincount(group[kept], weights=c["num_tokens"][kept], minlength=len(names))
    trainable = np.bincount(group[kept], weights=c["num_trainable"][kept], minlength=len(names))
    per_dataset: dict[str, dict[str, int]] = {}
    for g, name in enumerate(names):
        d: Counter[str] = Counter()
        for s, status in enumerate(STATUSES):
            if per_status[g * len(STATUSES) + s]:
                d[str(status)] = int(per_status[g * len(STATUSES) + s])
        d["rows_in"] = sum(d.values())
        if d.get(str(Status.kept)):
            d["tokens"], d["trainable"] = int(tokens[g]), int(trainable[g])
        per_dataset[name] = dict(sorted(d.items()))
    rows_in = len(table)
    accounting = {"input_rows": rows_in, "kept": n[Status.kept], "quarantined": n[Status.quarantined],
                  "duplicates": n[Status.duplicate], "dropped": n[Status.dropped],
                  "balanced": rows_in == sum(n.values())}
    return {"accounting": accounting, "by_reason": dict(sorted(by_reason.items())), "per_dataset": per_dataset,
            "truncated": int(np.count_nonzero(kept & (c["reason"] == truncated)))}

