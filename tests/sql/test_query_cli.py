"""`tessera query`: the views (tokens and vocab checked against the files), output formats (json is exactly one
JSON array), parameters, errors that list the views, and read-only behaviour.

    .venv/bin/python -m pytest tests/sql/test_query_cli.py -v
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from dataprep.cli import main
from dataprep.look.query import VIEWS, connect, resolve_sql, run


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def query(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["query", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_json_is_exactly_one_array(prepared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = query(capsys, str(prepared), "sql/summary.sql", "--format", "json")
    assert rc == 0 and err == ""
    rows = json.loads(out)  # the whole of stdout parses: nothing printed around the array
    assert isinstance(rows, list) and len(rows) == 1 and isinstance(rows[0], dict)
    assert out.lstrip().startswith("[") and out.rstrip().endswith("]")
    assert rows[0]["input_rows"] == 18 and isinstance(rows[0]["tokens"], int)
    rc, out, _ = query(capsys, str(prepared), "select * from samples where false", "--format", "json")
    assert rc == 0 and json.loads(out) == []


def test_json_lists_and_text(prepared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = query(capsys, str(prepared), "duplicate_clusters", "--format", "json")
    rows = json.loads(out)
    assert rc == 0 and [len(r["duplicate_ids"]) for r in rows] == [2, 1]
    rc, out, _ = query(capsys, str(prepared), "samples_containing_text", "--param", "text=你好", "--format", "json")
    assert rc == 0 and "你好" in json.loads(out)[0]["context"]


def test_csv_and_parquet(prepared: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, out, _ = query(capsys, str(prepared), "sql/packing_efficiency.sql", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rc == 0 and [r["shard"] for r in rows] == ["shards/train-00000.arrow", "shards/val-00000.arrow"]
    rc, out, _ = query(capsys, str(prepared), "duplicate_clusters", "--format", "csv")
    assert json.loads(next(csv.DictReader(io.StringIO(out)))["duplicate_ids"]) == [3, 6]  # lists as JSON
    target = tmp_path / "samples.parquet"
    rc, _, _ = query(capsys, str(prepared), "select * from samples", "--format", "parquet", "--out", str(target))
    assert rc == 0
    assert pq.read_table(target).to_pylist() == pq.read_table(prepared / "samples.parquet").to_pylist()


def test_table_output(prepared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = query(capsys, str(prepared), "select status, count(*) as n from samples group by all order by 1")
    assert rc == 0 and "│ kept" in out and "│ quarantined" in out
    # A single row too wide for the screen is shown one column per line rather than with columns left out.
    rc, out, _ = query(capsys, str(prepared), "summary")
    assert rc == 0 and "packing_efficiency" in out and "longest_sample" in out


def test_sql_error_lists_the_views(prepared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = query(capsys, str(prepared), "select no_such_column from packed")
    assert rc == 1 and out == ""
    assert "no_such_column" in err and "views" in err
    for view in VIEWS:
        assert f"  {view} " in err
    for column in ("input_ids", "cu_seqlens", "sample_id", "trained", "kept_sample_id", "piece", "eos_token"):
        assert column in err
    rc, _, err = query(capsys, str(prepared), "select * from tokenz")
    assert rc == 1 and "tokens" in err and "packed" in err


def test_params(prepared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = query(capsys, str(prepared), "sql/samples_containing_text.sql")
    assert rc == 1 and "--param text=VALUE" in err
    rc, _, err = query(capsys, str(prepared), "select 1", "--param", "x=1")
    assert rc == 1 and "--param x" in err
    rc, out, _ = query(capsys, str(prepared), "select count(*) as n from samples where status = $s",
                       "--param", "s=kept", "--format", "json")
    assert rc == 0 and json.loads(out) == [{"n": 8}]


def test_missing_directory_and_file(tmp_path: Path, prepared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = query(capsys, str(tmp_path / "nope"), "select 1")
    assert rc == 1 and "tessera prepare" in err
    rc, _, err = query(capsys, str(prepared), "sql/no_such_query.sql")
    assert rc == 1 and "summary" in err  # lists the library


def test_listing_without_sql(prepared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = query(capsys, str(prepared))
    assert rc == 0
    assert all(f"  {v} " in out for v in VIEWS)
    assert "samples_containing_text" in out and "packing_efficiency" in out


def test_read_only(prepared: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    before = snapshot(prepared)
    rc, _, err = query(capsys, str(prepared), f"copy (select * from samples) to '{prepared / 'x.csv'}'")
    assert rc == 1 and "disabled" in err
    rc, _, err = query(capsys, str(prepared), f"select * from read_csv('{tmp_path / 'x.csv'}')")
    assert rc == 1
    rc, _, err = query(capsys, str(prepared), "set enable_external_access = true")
    assert rc == 1
    rc, _, err = query(capsys, str(prepared), "select 1", "--out", str(prepared / "out.txt"))
    assert rc == 1 and "inside the prepared directory" in err
    for name in ("summary", "frequent_tokens", "longest_samples"):
        assert query(capsys, str(prepared), name)[0] == 0
    assert snapshot(prepared) == before


def test_packed_and_tokens_views_match_the_shards(prepared: Path) -> None:
    con = connect(prepared, with_vocab=False)
    packed = run(con, "select shard, split, row, sample_ids from packed order by shard, row").to_pylist()
    tokens = run(con, "select * from tokens order by shard, row, position").to_pylist()
    expected_packed, expected_tokens = [], []
    for f in sorted((prepared / "shards").glob("*.arrow")):
        shard = f"shards/{f.name}"
        for i, r in enumerate(ipc.open_file(f).read_all().to_pylist()):
            expected_packed.append({"shard": shard, "split": f.name.split("-")[0], "row": i,
                                    "sample_ids": r["sample_ids"]})
            cu = r["cu_seqlens"]
            for k, sid in enumerate(r["sample_ids"]):
                for p in range(cu[k], cu[k + 1]):
                    expected_tokens.append({"shard": shard, "split": f.name.split("-")[0], "row": i,
                                            "sample_id": sid, "position": p, "position_id": r["position_ids"][p],
                                            "token_id": r["input_ids"][p], "label": r["labels"][p],
                                            "trained": r["labels"][p] != -100})
    assert packed == expected_packed
    assert tokens == expected_tokens
    # Positions restart at every sample boundary (position_ids as stored).
    assert all(t["position_id"] == 0 for t in tokens if t["position"] == 0)


def test_vocab_view(prepared: Path) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(prepared / "tokenizer" / "tokenizer.json"))
    con = connect(prepared)
    size = run(con, "select count(*) as n, max(token_id) as top from vocab").to_pylist()[0]
    assert size == {"n": tok.get_vocab_size(with_added_tokens=True), "top": tok.get_vocab_size(True) - 1}
    specials = {r["piece"] for r in run(con, "select piece from vocab where special").to_pylist()}
    assert {"<|im_end|>", "<|im_start|>", "<|endoftext|>"} <= specials
    assert "<tool_call>" not in specials  # added, but not special
    ids = tok.encode("你好！ The capital", add_special_tokens=False).ids
    rows = {r["token_id"]: r for r in run(con, f"select * from vocab where token_id in {tuple(ids)}").to_pylist()}
    joined = b"".join(rows[i]["bytes"] for i in ids)
    assert joined.decode() == "你好！ The capital"
    for i in ids:
        assert rows[i]["piece"] == tok.id_to_token(i)
        assert rows[i]["text"] == rows[i]["bytes"].decode("utf-8", errors="replace")
    # Every token's bytes, decoded in a run, give what the tokenizer decodes (byte-level BPE, spot check).
    sample = np.random.default_rng(0).integers(0, 151643, 2000).tolist()
    got = run(con, f"select token_id, bytes from vocab where token_id in {tuple(sample)}").to_pylist()
    by_id = {r["token_id"]: r["bytes"] for r in got}
    assert b"".join(by_id[i] for i in sample).decode("utf-8", errors="replace") == tok.decode(sample)


def test_resolve_sql(prepared: Path) -> None:
    text, path = resolve_sql("summary")
    assert path is not None and path.name == "summary.sql" and "packing_efficiency" in text
    assert resolve_sql("select 1") == ("select 1", None)


def test_manifest_view(prepared: Path) -> None:
    manifest = json.loads((prepared / "manifest.json").read_text())
    row: dict[str, Any] = run(connect(prepared, with_vocab=False), "select * from manifest").to_pylist()[0]
    assert row["sequence_len"] == 128 and row["eos_token"] == "<|im_end|>"
    assert row["fingerprint"] == manifest["fingerprint"] and row["chat_template"] == "chatml"


def test_samples_view_is_the_parquet_file(prepared: Path) -> None:
    got = pl.from_arrow(run(connect(prepared, with_vocab=False), "select * from samples order by sample_id"))
    assert isinstance(got, pl.DataFrame)
    assert got.equals(pl.read_parquet(prepared / "samples.parquet"))


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_reader_that_stops_early_is_not_an_error(prepared: Path, fmt: str) -> None:
    # `tessera query DIR SQL --format parquet | head -c 4` ended in a BrokenPipeError traceback.
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-m", "dataprep.cli", "query", str(prepared), "select * from tokens, range(50)",
           "--format", fmt]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=root) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.read(4)
        proc.stdout.close()  # the reader goes away, as `head` does
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) in (0, 141) and "Traceback" not in err, err
