"""What keeps `prepare`'s memory flat with the row count (bench/prepare_memory.py measures it at 100k and 1M
rows), each piece checked against the in-memory code it replaced: near-dedup over signatures read from disk
(table.Matrix, near_dedup.ViewSignatures) gives the same clusters as over one array; Parquet is read a few row
groups per reader (the same rows, and Arrow's pool does not grow with the file); content hashes are
hex-encoded in numpy exactly as Polars did; exact dedup's first occurrences equal np.unique's; the shard writer
and the tables read the layout from _work/placed/ in memory that does not grow with the rows.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/dataprep/test_memory.py -q
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataprep import lsh
from dataprep import minhash as mh
from dataprep.dedup import first_of_each
from dataprep.load import _parquet_batches, read_batches
from dataprep.near_dedup import ViewSignatures
from dataprep.outputs import hex_hashes
from dataprep.table import TableBuilder
from dataprep.transform import RowResult
from schemas.reasons import Reason, Status


def _texts(rng: random.Random, n: int) -> list[str]:
    """n texts; about a third are light edits of an earlier one (near duplicates), some have no words."""
    texts: list[str] = []
    for i in range(n):
        if texts and rng.random() < 0.35:
            words = rng.choice(texts).split()
            for _ in range(max(1, len(words) // 25)):
                if words:
                    words[rng.randrange(len(words))] = f"x{rng.randrange(10_000)}"
            texts.append(" ".join(words))
        else:
            words = [f"w{rng.randrange(5000)}" for _ in range(rng.randrange(20, 80))]
            texts.append("" if i % 17 == 0 else " ".join(words))
    return texts


def test_near_duplicates_from_disk_equal_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(3)
    texts = _texts(rng, 700)
    sigs = mh.signatures(texts, 64, 3)
    # Row pass: a quarantined row every 11th (no signature), signatures as numpy arrays -> fixed-width column.
    builder = TableBuilder(tmp_path)
    ids = np.array([1, 2, 3], np.int32)
    for lo in range(0, len(texts), 64):
        batch = []
        for i in range(lo, min(lo + 64, len(texts))):
            if i % 11 == 5:
                batch.append(RowResult(i, Status.quarantined, Reason.malformed_json, original="{"))
            else:
                batch.append(RowResult(i, Status.kept, content_hash=f"{i:032x}", input_ids=ids, labels=ids,
                                       num_tokens=3, num_trainable=2, extra={"minhash": sigs[i]}))
        builder.add(0, 0, batch)
    table = builder.finish()
    assert (tmp_path / "extra" / "minhash.bin").stat().st_size == sum(i % 11 != 5 for i in range(700)) * 64 * 4
    # A view that skips rows (as after exact dedup): every 7th kept row is left out.
    view_rows = np.array([i for i in range(700) if i % 11 != 5 and i % 7 != 0] + [5], np.int64)
    view_rows.sort()
    matrix = table.matrix("minhash", view_rows)
    assert (matrix.at[view_rows == 5] == -1).all()  # quarantined: no signature
    on_disk = ViewSignatures(matrix, 64)
    in_memory = np.where((view_rows % 11 == 5)[:, None], mh.MAX_HASH, sigs[view_rows])
    assert np.array_equal(on_disk.block(0, len(view_rows)), in_memory)
    picks = np.array([5, 0, 5, len(view_rows) - 1, 3])
    assert np.array_equal(on_disk.take(picks), in_memory[picks])
    assert table.extra("minhash", view_rows[:3]).to_pylist() == in_memory[:3].tolist()

    bands, rows = lsh.lsh_params(0.7, 64)
    rank = np.arange(len(view_rows))
    expected = lsh.near_duplicates(in_memory, 0.7, bands, rows, rank)
    assert len(expected.removed) > 50  # planted copies were found
    # Small blocks and pair chunks, so that banding and verification take many reads.
    monkeypatch.setattr(mh, "BLOCK", 100)
    monkeypatch.setattr(mh, "PAIR_CHUNK", 37)
    got = lsh.near_duplicates(on_disk, 0.7, bands, rows, rank)
    for name in ("removed", "kept", "similarity", "cluster_size"):
        assert np.array_equal(getattr(got, name), getattr(expected, name)), name
    assert (got.pairs_candidate, got.pairs_verified) == (expected.pairs_candidate, expected.pairs_verified)
    # Band keys spilled to many partition files (a few dozen keys each): the same pairs and clusters.
    monkeypatch.setattr(lsh, "PARTITION_KEYS", 40)
    spread = lsh.near_duplicates(on_disk, 0.7, bands, rows, lambda nodes: rank[nodes], tmp_path)
    for name in ("removed", "kept", "similarity", "cluster_size"):
        assert np.array_equal(getattr(spread, name), getattr(expected, name)), name
    assert (spread.pairs_candidate, spread.pairs_verified) == (expected.pairs_candidate, expected.pairs_verified)
    assert not list(tmp_path.glob("lsh-*"))  # the spill folder is gone


@dataclass
class _MappedSignatures:
    """Signatures in a .npy file, read as ViewSignatures reads minhash.bin: copies of a block or of some rows."""

    sigs: np.ndarray  # np.load(..., mmap_mode="r")

    def __len__(self) -> int:
        return len(self.sigs)

    def block(self, lo: int, hi: int) -> np.ndarray:
        return np.array(self.sigs[lo:hi])

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.sigs[rows]


def test_near_dedup_memory_does_not_grow_with_the_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """numpy's peak while clustering on-disk signatures, at 30k and 120k rows (a near copy of the row before in
    ~3% of rows): only one byte a row (which rows have text) and the pairs may grow. Banding all rows' keys at
    once, as before lsh.py spilled them, held ~25 bytes a row (2.6 MB more at 120k)."""
    import tracemalloc

    monkeypatch.setattr(mh, "BLOCK", 2048)  # small fixed costs, so that what grows shows
    monkeypatch.setattr(mh, "PAIR_CHUNK", 256)
    monkeypatch.setattr(lsh, "PARTITION_KEYS", 1 << 15)
    perms, rng = 64, np.random.default_rng(0)
    bands, rows = lsh.lsh_params(0.8, perms)
    peaks, found = [], []
    for n in (30_000, 120_000):
        sigs = rng.integers(0, 1 << 32, (n, perms), dtype=np.uint32)
        near = np.flatnonzero(rng.random(n) < 0.03)[1:]
        sigs[near] = np.where(rng.random((len(near), perms)) < 0.95, sigs[near - 1], sigs[near])
        np.save(tmp_path / f"{n}.npy", sigs)
        del sigs
        src = _MappedSignatures(np.load(tmp_path / f"{n}.npy", mmap_mode="r"))
        tracemalloc.start()
        clusters = lsh.near_duplicates(src, 0.8, bands, rows, lambda nodes: nodes, tmp_path)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        found.append(len(clusters.removed) / len(near))
    assert min(found) > 0.95  # the planted copies were found at both sizes
    # 1 byte a row and the pairs (3% of the rows here) grow: ~3.5 bytes a row; the old code ~28
    assert peaks[1] - peaks[0] < 8 * 90_000, peaks


def _row_groups(path: Path, groups: list[int]) -> pa.Table:
    rng = np.random.default_rng(0)
    schema = pa.schema([("text", pa.string()), ("ids", pa.list_(pa.int32()))])
    tables = [schema.empty_table()]
    with pq.ParquetWriter(path, schema) as w:
        for g, n in enumerate(groups):
            t = pa.table({"text": [f"row {g}:{i}" for i in range(n)],
                          "ids": [rng.integers(0, 1000, 64).astype(np.int32) for _ in range(n)]}, schema=schema)
            w.write_table(t)  # one row group per call (n < the default row group size)
            tables.append(t)
    return pa.concat_tables(tables)


@pytest.mark.parametrize("groups", [[1000, 1000, 37], [100] * 30, [3, 900, 5, 5, 2000], []])
def test_parquet_batches_read_every_row_in_order(tmp_path: Path, groups: list[int]) -> None:
    path = tmp_path / "data.parquet"
    expected = _row_groups(path, groups)
    batches = list(_parquet_batches(path, 512))
    assert all(b.num_rows <= 512 for b in batches)
    got = [r for b in batches for r in b.to_pylist()]
    assert got == expected.to_pylist()
    rows = [r for batch in read_batches(path, "parquet", 512) for r in batch]
    assert [r.source_row for r in rows] == list(range(sum(groups)))


def test_parquet_reader_memory_does_not_grow_with_the_file(tmp_path: Path) -> None:
    """One iter_batches over a whole file kept every row group's memory in Arrow's pool (pyarrow 26); the
    reader per run of row groups holds about one."""
    path = tmp_path / "data.parquet"
    _row_groups(path, [2000] * 120)  # ~0.6 MB of Arrow data a row group
    before = pa.total_allocated_bytes()  # what earlier tests still hold in the same pool
    peak = 0
    for batch in _parquet_batches(path, 512):
        batch.to_pylist()
        peak = max(peak, pa.total_allocated_bytes() - before)
    assert peak < 6 * 2**20, f"{peak / 2**20:.1f} MiB held while reading"  # one reader for the file: ~21 MiB


def test_hex_hashes_equal_polars_encoding() -> None:
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 256, (200, 16), dtype=np.uint8)
    raw[:10, -4:] = 0  # trailing zero bytes (numpy's S16 items hide them) must still be written
    raw[10] = 0
    hashes = raw.view("S16").reshape(-1)
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), len(hashes), [None, pa.py_buffer(hashes.tobytes())])
    expected = pl.Series(fixed.cast(pa.binary())).bin.encode("hex").to_list()
    assert hex_hashes(hashes).to_pylist() == expected
    assert hex_hashes(hashes[:0]).to_pylist() == []


@pytest.mark.parametrize("n", [1, 2, 9, 5000])
@pytest.mark.parametrize("shared_halves", [True, False])
def test_first_of_each_equals_numpy_unique(n: int, shared_halves: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataprep import dedup

    monkeypatch.setattr(dedup, "BLOCK", 7)  # the second halves are compared a block at a time: many blocks
    rng = np.random.default_rng(n)
    raw = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    copies = rng.integers(0, n, n // 2)
    raw[rng.integers(0, n, n // 2)] = raw[copies]
    if shared_halves:  # equal first halves, different second ones: still different hashes (sorted by both)
        raw[n // 2:, :8] = raw[0, :8]
    hashes = raw.view("S16").reshape(-1)
    _, first, inverse = np.unique(hashes.view(np.dtype((np.void, 16))), return_index=True, return_inverse=True)
    assert np.array_equal(first_of_each(hashes.view(np.uint64).reshape(-1, 2)), first[inverse.reshape(-1)])


def _pretokenized(path: Path, rows: int) -> None:
    """Seeded pretokenized rows (8-40 tokens, the first half a prompt), every 30th a copy of the row before."""
    rng = np.random.default_rng(rows)
    lengths = rng.integers(8, 41, rows)
    ids = [rng.integers(0, 150_000, n).astype(np.int32) for n in lengths.tolist()]
    for i in range(30, rows, 30):
        ids[i] = ids[i - 1]
    labels = [np.where(np.arange(len(x)) < len(x) // 2, -100, x).astype(np.int32) for x in ids]
    pq.write_table(pa.table({"input_ids": ids, "labels": labels}), path, row_group_size=5000)


def _write_phase_peak(tmp_path: Path, qwen_dir: Path, rows: int, peaks: list[int], traced: int = 3,
                      **settings: Any) -> int:
    """Peak of numpy's allocations (tracemalloc) in the traced write functions (`traced` calls of them)."""
    from dataprep import pipeline
    from dataprep.report import Progress
    from schemas.config import config_from_dict

    data = tmp_path / f"rows-{rows}.parquet"
    if not data.exists():
        _pretokenized(data, rows)
    cfg = config_from_dict({"tokenizer_config": str(qwen_dir), "datasets": [{"path": str(data)}],
                            "sequence_len": 256, "sample_packing": True, "val_set_size": 0.05, **settings})
    peaks.clear()
    result = pipeline.run_pipeline(cfg, tmp_path / "x.yaml", tmp_path / f"out-{rows}", force=True,
                                   progress=Progress(enabled=False))
    assert result.manifest["accounting"]["balanced"] and len(peaks) == traced
    return max(peaks, default=0)


def _traced(peaks: list[int], write: Any) -> Any:
    import tracemalloc

    def run(*args: Any, **kwargs: Any) -> Any:
        tracemalloc.start()
        try:
            return write(*args, **kwargs)
        finally:
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
    return run


def test_tables_are_written_in_memory_that_does_not_grow_with_the_rows(
        tmp_path: Path, qwen_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """samples/duplicates/quarantine.parquet read the layout from _work/placed/ a block at a time (placed.py):
    4x the rows, same peak. Before, the layout's arrays and per-row temporaries (17 bytes a row in write_samples
    alone) grew with the table."""
    from dataprep import outputs, placed

    monkeypatch.setattr(outputs, "BLOCK", 2048)
    monkeypatch.setattr(placed, "BLOCK", 2048)
    peaks: list[int] = []
    for name in ("write_samples", "write_duplicates", "write_quarantine"):
        monkeypatch.setattr(outputs, name, _traced(peaks, getattr(outputs, name)))
    small = _write_phase_peak(tmp_path, qwen_dir, 10_000, peaks)
    large = _write_phase_peak(tmp_path, qwen_dir, 40_000, peaks)
    assert large < small + 150_000, f"{small:,} -> {large:,} bytes at 4x the rows"  # 30k rows x 5 bytes


@pytest.mark.parametrize("packing", [True, False])
def test_shards_are_written_in_memory_that_does_not_grow_with_the_rows(
        tmp_path: Path, qwen_dir: Path, monkeypatch: pytest.MonkeyPatch, packing: bool) -> None:
    """The shard writer reads its split's rows and samples from _work/placed/ a batch at a time and appends
    the placement to bucket files (placed.py): 4x the rows, same peak. Before, it held the samples' token
    ranges, ids and shard order and the placement by sample (~57 bytes a sample)."""
    from dataprep import pipeline, placed, shards

    monkeypatch.setattr(shards, "BATCH_ROWS", 64)  # full batches at both sizes
    monkeypatch.setattr(shards, "ROWS_BLOCK", 256)
    # 4 placement buckets at both sizes (each open file has a write buffer: at most MAX_BUCKETS of them)
    monkeypatch.setattr(placed, "BLOCK", 256)
    monkeypatch.setattr(placed, "MAX_BUCKETS", 4)
    peaks: list[int] = []
    monkeypatch.setattr(pipeline, "write_split", _traced(peaks, pipeline.write_split))
    small = _write_phase_peak(tmp_path, qwen_dir, 10_000, peaks, traced=2, sample_packing=packing)
    large = _write_phase_peak(tmp_path, qwen_dir, 40_000, peaks, traced=2, sample_packing=packing)
    assert large < small + 150_000, f"{small:,} -> {large:,} bytes at 4x the rows"  # 30k rows x 5 bytes


def test_placement_buckets_give_the_same_bytes(tmp_path: Path, qwen_dir: Path, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    """Placement split over many bucket files (and buckets larger than a block) reads back as one array did."""
    from dataprep import placed, shards

    def prepared(name: str) -> dict[str, bytes]:
        _write_phase_peak(tmp_path, qwen_dir, 3_000, [], traced=0)
        out = tmp_path / "out-3000"
        files = [out / "samples.parquet", *sorted((out / "shards").iterdir())]
        (tmp_path / name).write_text("")
        return {f.name: f.read_bytes() for f in files}

    expected = prepared("default")
    monkeypatch.setattr(placed, "BLOCK", 100)
    monkeypatch.setattr(placed, "MAX_BUCKETS", 4)  # 3k pieces: buckets of ~750 pieces, read in blocks of 100
    monkeypatch.setattr(shards, "ROWS_BLOCK", 10)  # (BATCH_ROWS is the shards' record batch size: their bytes)
    assert prepared("small blocks") == expected


def test_layout_holds_few_bytes_a_piece(tmp_path: Path, qwen_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The layout pack returns is held until Placed.save has written it, on top of packing's temporaries: its
    peak was the 1M-row run's (bench/RESULTS.md). Pieces keep int32 lengths, not end offsets, and table rows
    their counts, not first ids (summed when saved): ~53 -> 42 bytes a piece here (one piece a row)."""
    from dataprep import pipeline, placed

    layouts: list[Any] = []
    save = placed.Placed.save
    monkeypatch.setattr(placed.Placed, "save", classmethod(lambda cls, folder, layout: (
        layouts.append(layout), save(folder, layout))[1]))
    monkeypatch.setattr(pipeline, "Placed", placed.Placed)
    _write_phase_peak(tmp_path, qwen_dir, 3_000, [], traced=0)
    (layout,) = layouts
    p = layout.pieces
    held = sum(a.nbytes for a in (p.row, p.start, p.length, p.chunk, p.stream, layout.sample_ids, layout.count,
                                  layout.copy_row, layout.repeat_of, *(a for r in layout.rows.values() for a in r)))
    assert len(p) > 2_500 and held < 45 * len(p), f"{held / len(p):.1f} bytes a piece"


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 16])
def test_stored_rows_merged_a_chunk_at_a_time(tmp_path: Path, chunk: int) -> None:
    """table._stored_rows equals a searchsorted over the whole ids file (the code it replaced)."""
    from dataprep.table import _stored_rows

    rng = np.random.default_rng(chunk)
    ids = np.flatnonzero(rng.random(1000) < 0.6).astype(np.int64)  # table rows that have a value
    ids.tofile(tmp_path / "x.ids")
    for rows in (np.flatnonzero(rng.random(1000) < 0.5), np.arange(1000), ids, np.empty(0, np.int64)):
        at = np.minimum(np.searchsorted(ids, rows), len(ids) - 1)
        expected = np.where(ids[at] == rows, at, -1)
        assert np.array_equal(_stored_rows(tmp_path / "x.ids", rows, chunk), expected)
    (tmp_path / "none.ids").write_bytes(b"")
    assert _stored_rows(tmp_path / "none.ids", np.arange(5), chunk).tolist() == [-1] * 5
