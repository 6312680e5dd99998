"""The sample table and the stages after the row pass: each stage on plain arrays (exact dedup, the cut into
chunks and the pretrain stream, split, pack), extra columns from the row pass, and the runner through a whole
prepare: one manifest row per stage (rows_in/rows_out chain, rejected_by_reason sums), any reason a stage
writes flowing into accounting, samples.parquet and quarantine.parquet, the accounting invariant, and the same
bytes for 1 or 2 workers.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/dataprep/test_stages.py -v
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from dataprep import runner
from dataprep.chunks import cut_rows
from dataprep.dedup import exact_dedup
from dataprep.layout import LayoutSettings, SplitError, pack, split
from dataprep.stage import Outcome, Rejected, Stage
from dataprep.table import STATUS_CODE, SampleTable, TableBuilder, View
from dataprep.transform import RowResult
from schemas.reasons import Reason, Status
from tests.conftest import Prepare, write_jsonl


def _table(hashes: list[bytes], lengths: list[int], status: list[Status] | None = None,
           dataset_index: list[int] | None = None) -> SampleTable:
    """A sample table from plain arrays: kept rows' tokens back to back (ids = position, all trained)."""
    n = len(hashes)
    status = status or [Status.kept] * n
    kept = np.array([s is Status.kept for s in status])
    length = np.array(lengths, np.int32)
    offset = np.where(kept, np.cumsum(np.where(kept, length, 0)) - np.where(kept, length, 0), -1)
    total = int(length[kept].sum())
    columns = {
        "sample_id": np.arange(n, dtype=np.int64), "dataset_index": np.array(dataset_index or [0] * n, np.int32),
        "source": np.zeros(n, np.int32), "source_row": np.arange(n, dtype=np.int64),
        "status": np.array([STATUS_CODE[s] for s in status], np.uint8), "reason": np.full(n, -1, np.int16),
        "content_hash": np.array([h.ljust(16, b"\0") for h in hashes], "S16"), "has_hash": np.ones(n, bool),
        "num_tokens": length, "num_trainable": length - 1, "offset": offset.astype(np.int64),
        "kind": np.zeros(n, np.uint8),
    }
    labels = np.arange(total, dtype=np.int32)
    return SampleTable(columns, [], np.arange(total, dtype=np.int32), labels, Path("/nonexistent"))


def test_exact_dedup_keeps_the_first_occurrence_of_each_hash() -> None:
    # rows 1 and 4 were quarantined by the row pass: they are not in the view and are never duplicates.
    table = _table([b"a", b"a", b"b", b"a", b"b", b"c", b"a"], [3] * 7,
                   [Status.kept, Status.quarantined, Status.kept, Status.kept, Status.quarantined, Status.kept,
                    Status.kept])
    view = table.active()
    assert view.rows.tolist() == [0, 2, 3, 5, 6]
    [rejected] = exact_dedup(view, True).rejected
    assert rejected.rows.tolist() == [2, 4]  # positions in the view: rows 3 and 6
    assert (rejected.status, rejected.reason) == (Status.duplicate, "duplicate")
    assert rejected.audit["kept_sample_id"].tolist() == [0, 0] == rejected.audit["cluster_id"].tolist()
    assert rejected.audit["similarity"].tolist() == [1.0, 1.0]


def test_exact_dedup_compares_all_16_bytes() -> None:
    # Hashes that differ only in a trailing zero byte are different (numpy bytes would strip it).
    view = _table([b"x" * 15 + b"\0", b"x" * 15 + b"\1", b"x" * 15 + b"\0"], [2, 2, 2]).active()
    [rejected] = exact_dedup(view, True).rejected
    assert rejected.rows.tolist() == [2] and rejected.audit["kept_sample_id"].tolist() == [0]
    assert exact_dedup(_table([b"p", b"q"], [2, 2]).active(), True).rejected == []


def _stream_reference(lengths: list[int], seq: int) -> list[tuple[int, int]]:
    """pretrain cuts as the row pass made them before the table: one stream, a piece ends at each row end."""
    fill, out = 0, []
    for n in lengths:
        pos = 0
        while pos < n:
            take = min(n - pos, seq - fill)
            out.append((pos, pos + take))
            pos += take
            fill = (fill + take) % seq
    return out


def test_cut_rows_matches_the_stream_and_completion_chunks() -> None:
    rng = np.random.default_rng(0)
    seq = 16
    lengths = rng.integers(2, 60, 200)
    types = rng.choice(["completion", "pretrain", "alpaca"], 200)
    offset = np.cumsum(lengths) - lengths
    pieces = cut_rows(offset, lengths, types == "completion", types == "pretrain", seq)
    pre = np.flatnonzero(types == "pretrain")
    expected_stream = _stream_reference(lengths[pre].tolist(), seq)
    got_stream = [(int(a - offset[pieces.row[i]]), int(b - offset[pieces.row[i]]))
                  for i, (a, b) in enumerate(zip(pieces.start, pieces.end, strict=True)) if pieces.stream[i]]
    assert got_stream == expected_stream
    for r in range(200):
        mine = np.flatnonzero(pieces.row == r)
        spans = [(int(pieces.start[i] - offset[r]), int(pieces.end[i] - offset[r])) for i in mine]
        assert spans[0][0] == 0 and spans[-1][1] == lengths[r]  # the pieces tile the row
        if types[r] == "completion" and lengths[r] > seq:
            assert spans == [(a, min(a + seq, lengths[r])) for a in range(0, lengths[r], seq)]
        if len(mine) == 1:
            assert pieces.chunk[mine].tolist() == [-1]
        else:
            assert pieces.chunk[mine].tolist() == list(range(len(mine)))


SETTINGS = LayoutSettings(sequence_len=8, sample_packing=True, val_set_size=0.25, seed=0,
                          types=("completion", "pretrain"))


def test_split_keeps_chunks_together_and_pretrain_in_train() -> None:
    lengths = [20, 5, 8, 30, 3, 4, 9, 6, 7, 2, 5, 5]
    table = _table([bytes([i]) for i in range(12)], lengths, dataset_index=[0] * 8 + [1] * 4)
    view = table.active()
    is_val = split(view, SETTINGS).columns["is_val"]
    assert is_val[:8].sum() == 2 and not is_val[8:].any()  # 25% of the 8 completion rows; pretrain: train
    with pytest.raises(SplitError, match="puts all"):
        split(_table([b"a", b"b"], [3, 3]).active(), LayoutSettings(8, True, 2, 0, ("completion",)))


def test_pack_places_every_piece_once_within_sequence_len() -> None:
    lengths = [20, 5, 8, 30, 3, 4, 9, 6, 7, 2, 5, 5]
    table = _table([bytes([i]) for i in range(12)], lengths, dataset_index=[0] * 8 + [1] * 4)
    view = table.active()
    table.columns["is_val"] = np.zeros(12, bool)
    table.columns["is_val"][view.rows] = split(view, SETTINGS).columns["is_val"]
    layout = pack(table.active(), SETTINGS).output
    sizes = layout.pieces.end - layout.pieces.start
    placed = np.concatenate([rows.order for rows in layout.rows.values()])
    assert sorted(placed.tolist()) == list(range(len(layout.pieces)))
    for rows in layout.rows.values():
        for a, b in zip(rows.bounds[:-1], rows.bounds[1:], strict=True):
            assert sizes[rows.order[a:b]].sum() <= 8
    # Published ids: consecutive over rows, one per piece: rows 0 (20 tokens) and 3 (30) have 3 and 4 chunks.
    assert layout.first_id[:5].tolist() == [0, 3, 4, 5, 9]
    assert layout.sample_ids.tolist() == list(range(len(layout.pieces)))


def test_extra_columns_are_stored_on_disk_and_aligned_with_the_view(tmp_path: Path) -> None:
    builder = TableBuilder(tmp_path)
    ids = np.array([5, 6, 7], np.int32)
    rows = [RowResult(0, Status.kept, content_hash="00" * 16, input_ids=ids, labels=ids, num_tokens=3,
                      num_trainable=3, extra={"sig": [1, 2], "text": "a"}),
            RowResult(1, Status.quarantined, Reason.malformed_json, original="{"),
            RowResult(2, Status.kept, content_hash="11" * 16, input_ids=ids, labels=ids, num_tokens=3,
                      num_trainable=3, extra={"sig": [3, 4]})]
    builder.add(0, 0, rows[:2])
    builder.add(0, 0, rows[2:])
    table = builder.finish()
    assert (tmp_path / "extra" / "sig.arrow").is_file()
    view = table.active()
    assert view.extra("sig").to_pylist() == [[1, 2], [3, 4]]
    assert view.extra("text").to_pylist() == ["a", None]
    assert table.columns["content_hash"][2] == b"\x11" * 16 and table.columns["offset"].tolist() == [0, -1, 3]
    assert view.tokens(1)[0].tolist() == [5, 6, 7]
    with pytest.raises(KeyError, match="no extra column"):
        view.extra("nothing")


def _no_refusals(view: View, settings: str) -> Outcome:
    """A test stage with per-row reasons: every third sample is quarantined as filter:<name>."""
    short = np.flatnonzero(view["sample_id"] % 3 == 0)
    return Outcome(rejected=[Rejected(short, Status.quarantined, np.full(len(short), f"filter:{settings}"),
                                      message="sample_id % 3 = 0")])


def test_runner_records_each_stage_and_any_reason_flows_to_the_outputs(tmp_path: Path, prepare: Prepare,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [{"instruction": f"Say {i}", "output": f"{i} " * (i % 5 + 1)} for i in range(30)]
    write_jsonl(tmp_path / "a.jsonl", rows + rows[:4] + ['{"broken'])
    monkeypatch.setattr(runner, "STAGES", [runner.STAGES[0], Stage("short", _no_refusals, lambda cfg: "short"),
                                           *runner.STAGES[1:]])
    result = prepare({"datasets": [{"path": "a.jsonl", "type": "alpaca"}], "sequence_len": 64,
                      "val_set_size": 0.1})
    m = result.manifest
    stages = m["stages"]
    assert [s["name"] for s in stages] == ["exact_dedup", "short", "split", "pack"]
    assert stages[0]["rows_in"] == 34  # 35 rows, one malformed
    for a, b in itertools.pairwise(stages):
        assert a["rows_out"] == b["rows_in"]
    for s in stages:
        assert s["rows_in"] - s["rows_out"] == sum(s["rejected_by_reason"].values()) and s["seconds"] >= 0
    assert stages[0]["rejected_by_reason"] == {"duplicate": 4}
    filtered = stages[1]["rejected_by_reason"]["filter:short"]
    assert filtered == 10  # sample ids 0, 3, ..., 27 (30-33 are duplicates already)
    acc = m["accounting"]
    assert acc["input_rows"] == 35 == acc["kept"] + acc["quarantined"] + acc["duplicates"] + acc["dropped"]
    assert acc["balanced"] and acc["quarantined"] == 1 + filtered and acc["kept"] == stages[-1]["rows_out"]
    assert m["stats"]["by_reason"]["filter:short"] == filtered
    samples = pl.read_parquet(result.out / "samples.parquet")
    assert samples.filter(pl.col("reason") == "filter:short")["status"].unique().to_list() == ["quarantined"]
    assert set(samples["kind"]) == {"sft"}
    q = pl.read_parquet(result.out / "quarantine.parquet")
    assert sorted(q["reason"].to_list()) == ["filter:short"] * filtered + ["malformed_json"]
    assert set(q.filter(pl.col("reason") == "filter:short")["message"]) == {"sample_id % 3 = 0"}
    dups = pl.read_parquet(result.out / "duplicates.parquet")
    assert dups.columns == ["sample_id", "kept_sample_id", "kind", "similarity", "cluster_id", "content_hash"]
    assert dups["sample_id"].to_list() == [30, 31, 32, 33] and dups["kept_sample_id"].to_list() == [0, 1, 2, 3]
    assert set(dups["kind"]) == {"exact"} and set(dups["similarity"]) == {1.0}
    assert dups["cluster_id"].to_list() == dups["kept_sample_id"].to_list()
    joined = dups.join(samples, on="sample_id")
    assert joined["duplicate_of"].to_list() == joined["kept_sample_id"].to_list()
    assert (joined["content_hash_right"] == joined["content_hash"]).all()


def test_tables_and_shards_are_the_same_with_1_or_2_workers(tmp_path: Path, prepare: Prepare) -> None:
    words = [" ".join(f"w{(i * 7 + k) % 31}" for k in range(5 + i * 3)) for i in range(40)]
    write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in words + words[:5]])
    write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in words[::3]])
    config = {"datasets": [{"path": "c.jsonl", "type": "completion"}],
              "pretraining_dataset": [{"path": "d.jsonl", "type": "pretrain"}],
              "sequence_len": 32, "val_set_size": 0.2}
    one, two = prepare(config, "one"), prepare(config, "two", workers=2)
    for name in ("samples.parquet", "duplicates.parquet", "quarantine.parquet"):
        assert pq.read_table(one.out / name).equals(pq.read_table(two.out / name)), name
    assert [s["sha256"] for s in one.manifest["shards"]] == [s["sha256"] for s in two.manifest["shards"]]
    # 5 repeated completion rows, and the 14 pretrain documents that copy completion rows (across datasets)
    assert one.manifest["stats"]["chunked_rows"] > 0 and one.manifest["accounting"]["duplicates"] == 5 + 14
    drop = ("seconds",)
    assert [{k: v for k, v in s.items() if k not in drop} for s in one.manifest["stages"]] == \
        [{k: v for k, v in s.items() if k not in drop} for s in two.manifest["stages"]]
    assert json.loads(json.dumps(one.manifest["accounting"])) == two.manifest["accounting"]
