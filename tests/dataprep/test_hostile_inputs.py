"""Inputs from a hostile-input sweep of `tessera prepare` that used to crash a run, fail a whole file for one
row, or be refused although `datasets` reads them: each is now one row's quarantine record (with its reason and
source row) or is read, and the accounting still balances.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/dataprep/test_hostile_inputs.py -v
"""

from __future__ import annotations

import bz2
import json
import lzma
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataprep.csv_rows import _csv_rows_one_by_one
from dataprep.load import InputError, RawRow, Unreadable, is_data_file, read_batches
from dataprep.pipeline import PrepareError, Result
from schemas.reasons import Reason
from tests.conftest import Prepare, write_jsonl

GOOD = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
CHAT = {"type": "chat_template"}
HEADER = b"instruction,input,output\n"


def reasons_by_row(result: Result) -> list[str | None]:
    samples = pl.read_parquet(result.out / "samples.parquet").sort("source_file", "source_row")
    acc = result.manifest["accounting"]
    assert acc["input_rows"] == acc["kept"] + acc["quarantined"] + acc["duplicates"] + acc["dropped"] == len(samples)
    return samples["reason"].to_list()


def rows_of(path: Path, fmt: str = "csv") -> list[RawRow]:
    return [row for batch in read_batches(path, fmt, 512) for row in batch]


# ---- JSON Lines ------------------------------------------------------------------------------------------

def test_a_lone_surrogate_in_a_key_is_quarantined(tmp_path: Path, prepare: Prepare) -> None:
    # The field path names the key, which is not text: quarantine.parquet could not hold it (UnicodeEncodeError
    # when the quarantine table was written, which stopped the run).
    bad = b'{"messages": [{"role": "user", "content": "x", "\\udc00": 1}, {"role": "assistant", "content": "y"}]}'
    (tmp_path / "chat.jsonl").write_bytes(json.dumps(GOOD).encode() + b"\n" + bad + b"\n")
    result = prepare({"datasets": [{"path": "chat.jsonl", **CHAT}], "quarantine_max_fraction": 1.0})
    assert reasons_by_row(result) == [None, "invalid_unicode"]
    q = pl.read_parquet(result.out / "quarantine.parquet").row(0, named=True)
    assert q["field"] == "messages[0].\\udc00" and q["source_row"] == 1


# ---- Parquet / Arrow -------------------------------------------------------------------------------------

def test_a_date_python_cannot_hold_quarantines_its_row(tmp_path: Path, prepare: Prepare) -> None:
    # Parquet timestamps and dates reach far past Python's year 9999; to_pylist raised OverflowError.
    stamps = pa.array([0, 2**62, 0], pa.int64()).cast(pa.timestamp("us"))
    texts = pa.array(["first text", "second text", "third text"])
    pq.write_table(pa.table({"text": texts, "created": stamps}), tmp_path / "data.parquet")
    result = prepare({"datasets": [{"path": "data.parquet", "type": "completion"}], "quarantine_max_fraction": 1.0})
    assert reasons_by_row(result) == [None, "wrong_type", None]
    q = pl.read_parquet(result.out / "quarantine.parquet").row(0, named=True)
    assert (q["field"], q["source_row"]) == ("created", 1) and "cannot represent" in q["message"]
    assert "second text" in q["original"] and "value out of range" in q["original"]


def test_a_decimal_field_is_a_number_to_filters(tmp_path: Path, prepare: Prepare) -> None:
    # Parquet decimals reached the filters as text ('1.50'): `price >= 0` failed the run with "Cannot compare
    # values of type VARCHAR and type INTEGER_LITERAL".
    from decimal import Decimal

    prices = pa.array([Decimal("1.50"), None, Decimal("-2.25"), Decimal("7")], pa.decimal128(10, 2))
    texts = pa.array(["first text", "second text", "third text", "fourth text"])
    pq.write_table(pa.table({"text": texts, "price": prices}), tmp_path / "data.parquet")
    result = prepare({"datasets": [{"path": "data.parquet", "type": "completion"}],
                      "filters": [{"name": "priced", "where": "price >= 0"}], "quarantine_max_fraction": 1.0})
    assert reasons_by_row(result) == [None, "filter:priced", "filter:priced", None]


# ---- CSV -------------------------------------------------------------------------------------------------

def test_a_csv_line_with_the_wrong_number_of_values_is_quarantined_alone(tmp_path: Path, prepare: Prepare) -> None:
    # Arrow's CSV reader stopped the whole file at such a line ("Expected 3 columns, got 4").
    (tmp_path / "data.csv").write_bytes(HEADER + b"Say hi,,hi\nSay a,,b,EXTRA\nSay bye,,bye\nShort\nSay ok,,ok\n")
    result = prepare({"datasets": [{"path": "data.csv", "type": "alpaca"}], "quarantine_max_fraction": 1.0})
    assert reasons_by_row(result) == [None, "malformed_csv", None, "malformed_csv", None]
    q = pl.read_parquet(result.out / "quarantine.parquet").sort("source_row")
    assert q["original"].to_list() == ["Say a,,b,EXTRA", "Short"]
    assert "4 values, but the header has 3 columns" in q["message"][0]


def test_csv_rows_after_arrows_first_block_keep_their_numbers(tmp_path: Path) -> None:
    # Arrow reads 16 MiB blocks: the bad line sits in the second one, after rows Arrow has already handed over;
    # the rest of the file is read by Python's csv module from there, each row once and in order.
    good = b"".join(b"Instruction number %d,,Output %d\n" % (i, i) for i in range(600_000))
    assert len(good) > 1 << 24
    path = tmp_path / "data.csv"
    path.write_bytes(HEADER + good + b"bad,line\n" + b'"multi\nline",,ok\nbad\xff,,x\n')
    rows = rows_of(path)
    assert [r.source_row for r in rows] == list(range(600_003))
    assert rows[599_999].payload == {"instruction": "Instruction number 599999", "input": "", "output": "Output 599999"}
    assert isinstance(rows[600_000].payload, Unreadable) and rows[600_000].payload.reason is Reason.malformed_csv
    assert rows[600_001].payload == {"instruction": "multi\nline", "input": "", "output": "ok"}
    bad = rows[600_002].payload
    assert isinstance(bad, Unreadable) and (bad.reason, bad.field) == (Reason.invalid_utf8, "instruction")


def test_a_csv_value_larger_than_arrows_block_is_read(tmp_path: Path) -> None:
    # "straddling object straddles two block boundaries" stopped the file; the value is under the line limit.
    path = tmp_path / "data.csv"
    path.write_bytes(HEADER + b"Say hi,,hi\nLong,," + b"y" * (20 << 20) + b"\nSay bye,,bye\n")
    rows = rows_of(path)
    assert [r.source_row for r in rows] == [0, 1, 2]
    assert [len(r.payload["output"]) for r in rows if isinstance(r.payload, dict)] == [2, 20 << 20, 3]


def test_a_csv_header_that_is_not_utf8_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b"instruction,outp\xfct\nSay hi,hi\n")
    with pytest.raises(InputError, match=r"data.csv: the header line is not UTF-8 .*re-encode the file as UTF-8"):
        rows_of(path)


def test_csv_fixtures_read_the_same_by_both_readers(tmp_path: Path) -> None:
    # The Python reader takes over from Arrow mid-file: for good rows both must give the same records.
    path = tmp_path / "data.csv"
    path.write_bytes(b"\xef\xbb\xbf" + HEADER + b'a,,"quoted, comma"\r\n\n"x ""y""",b,\n  spaced , , \nlast,,row')
    fast = rows_of(path)
    slow = [row for batch in _csv_rows_one_by_one(path, 2, 1 << 20, 0) for row in batch]
    assert [(r.source_row, r.payload) for r in fast] == [(r.source_row, r.payload) for r in slow]
    assert len(fast) == 4 and fast[1].payload == {"instruction": 'x "y"', "input": "b", "output": ""}


def test_bz2_and_xz_files_are_read_as_streams(tmp_path: Path, prepare: Prepare) -> None:
    # `datasets` reads both (fsspec infers the compression from the name); they were "unknown file type".
    text = b"".join(json.dumps({**GOOD, "id": i}).encode() + b"\n" for i in range(3))
    (tmp_path / "a.jsonl.bz2").write_bytes(bz2.compress(text))
    (tmp_path / "b.jsonl.xz").write_bytes(lzma.compress(text))
    (tmp_path / "c.csv.xz").write_bytes(lzma.compress(HEADER + b"Say hi,,hi\nSay a,,b,EXTRA\n"))
    (tmp_path / "d.csv.bz2").write_bytes(bz2.compress(HEADER + b"Say hi,,hi\nSay a,,b,EXTRA\n"))
    assert all(is_data_file(tmp_path / n) for n in ("a.jsonl.bz2", "b.jsonl.xz", "c.csv.xz", "d.csv.bz2"))
    assert rows_of(tmp_path / "c.csv.xz")[0].payload == {"instruction": "Say hi", "input": "", "output": "hi"}
    result = prepare({"datasets": [{"path": "a.jsonl.bz2", **CHAT}, {"path": "b.jsonl.xz", **CHAT},
                                   {"path": "c.csv.xz", "type": "alpaca"}, {"path": "d.csv.bz2", "type": "alpaca"}],
                      "dataset_exact_deduplication": False, "quarantine_max_fraction": 1.0})
    per = result.manifest["stats"]["per_dataset"]
    assert [per[n]["kept"] for n in ("a.jsonl.bz2", "b.jsonl.xz", "c.csv.xz", "d.csv.bz2")] == [3, 3, 1, 1]
    assert result.manifest["stats"]["by_reason"] == {"malformed_csv": 2}


def test_a_corrupt_xz_file_is_an_input_error(tmp_path: Path, prepare: Prepare) -> None:
    (tmp_path / "bad.jsonl.xz").write_bytes(b"\xfd7zXZ\x00 garbage")
    with pytest.raises(InputError, match=r"bad\.jsonl\.xz: cannot decompress"):
        prepare({"datasets": [{"path": "bad.jsonl.xz", **CHAT}]})


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz", ".zst"])
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_compressed_file_cut_short_is_an_input_error(tmp_path: Path, suffix: str, fmt: str) -> None:
    # zstandard's stream reader stops quietly where its input stops: a .jsonl.zst cut in half read as the rows
    # before the cut, with no error (half a dataset, silently). Every format must say the file is cut short.
    import gzip

    import zstandard

    compress = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress,
                ".zst": zstandard.ZstdCompressor().compress}[suffix]
    body = (b"".join(json.dumps(GOOD).encode() + b"\n" for _ in range(20_000)) if fmt == "jsonl"
            else HEADER + b"Say hi,,hello there\n" * 20_000)
    data = compress(body)
    whole, cut = tmp_path / f"whole.{fmt}{suffix}", tmp_path / f"cut.{fmt}{suffix}"
    whole.write_bytes(data)
    cut.write_bytes(data[:-1])
    assert len(rows_of(whole, fmt)) == 20_000
    with pytest.raises(InputError, match=rf"cut\.{fmt}\{suffix}: the file ends inside its compressed data"):
        rows_of(cut, fmt)


def test_a_zstd_file_of_several_frames_is_read_whole(tmp_path: Path) -> None:
    # zstd -T, pzstd and `cat a.zst b.zst` write one frame after another; each must be read, not only the first.
    import zstandard

    lines = [json.dumps({"messages": [{"role": "user", "content": f"q{i}"}]}).encode() + b"\n" for i in range(3000)]
    frames = [zstandard.ZstdCompressor().compress(b"".join(lines[i:i + 700])) for i in range(0, 3000, 700)]
    (tmp_path / "many.jsonl.zst").write_bytes(b"".join(frames))
    rows = rows_of(tmp_path / "many.jsonl.zst", "jsonl")
    assert [r.payload for r in rows] == [line.rstrip(b"\n") for line in lines]
    (tmp_path / "cut.jsonl.zst").write_bytes(b"".join(frames)[:-len(frames[-1]) // 2])
    with pytest.raises(InputError, match="cut short"):
        rows_of(tmp_path / "cut.jsonl.zst", "jsonl")


def test_json_lines_whose_first_row_is_an_array(tmp_path: Path, prepare: Prepare) -> None:
    # The file started with `[`, so it was read as one JSON array and failed whole ("Extra data").
    (tmp_path / "chat.jsonl").write_bytes(b'[{"messages": []}]\n' + json.dumps(GOOD).encode() + b"\n")
    result = prepare({"datasets": [{"path": "chat.jsonl", **CHAT}], "quarantine_max_fraction": 1.0})
    assert reasons_by_row(result) == ["not_an_object", None]
    # A one-line array is still an array file, and text after its `]` on that line is still a broken file.
    (tmp_path / "one.json").write_bytes(json.dumps([GOOD, GOOD]).encode() + b"\n\n")
    assert len(rows_of(tmp_path / "one.json", "json")) == 2
    (tmp_path / "broken.json").write_bytes(json.dumps([GOOD]).encode() + b" trailing\n")
    with pytest.raises(InputError, match="not a valid JSON array"):
        rows_of(tmp_path / "broken.json", "json")


# ---- a prepared directory edited by hand ------------------------------------------------------------------

@pytest.mark.parametrize(("edit", "problem"), [
    (lambda m: m.update(accounting=[]), "'accounting' is not an object"),  # a TypeError in the summary
    (lambda m: m.update(stats=None), "'stats' is not an object"),
    (lambda m: m["shards"][0].pop("split"), "shards[0].split is None, not a str"),
])
def test_a_cached_manifest_of_another_shape_is_rebuilt(tmp_path: Path, prepare: Prepare, edit: Any,
                                                        problem: str) -> None:
    write_jsonl(tmp_path / "chat.jsonl", [GOOD])
    config = {"datasets": [{"path": "chat.jsonl", **CHAT}]}
    first = prepare(config)
    manifest = json.loads((first.out / "manifest.json").read_text())
    edit(manifest)
    (first.out / "manifest.json").resolve().write_text(json.dumps(manifest))
    again = prepare(config)
    assert not again.cached and again.manifest["accounting"]["kept"] == 1
    assert any(f"the manifest is malformed ({problem}): rebuilding" in note for note in again.notes), again.notes


# ---- runs that keep nothing -------------------------------------------------------------------------------

def test_nothing_kept_says_why_in_the_message(tmp_path: Path, prepare: Prepare) -> None:
    # The message said "see the summary above", but no summary is printed for a failed run.
    (tmp_path / "empty.jsonl").write_bytes(b"\n  \n")
    with pytest.raises(PrepareError, match=r"no rows to prepare: the files of empty.jsonl hold no rows"):
        prepare({"datasets": [{"path": "empty.jsonl", **CHAT}]})
    write_jsonl(tmp_path / "chat.jsonl", [GOOD, {"messages": "x"}])
    with pytest.raises(PrepareError, match=r"no row was kept: of 2 rows 1 were quarantined, 1 dropped and 0 "
                                           r"duplicates; reasons: too_long 1, wrong_type 1 \(raise sequence_len"):
        prepare({"datasets": [{"path": "chat.jsonl", **CHAT}], "sequence_len": 4, "quarantine_max_fraction": 1.0})
    assert not (tmp_path / "out").exists()


def test_a_column_named_twice_is_a_one_line_error(tmp_path: Path) -> None:
    # Rows become dicts: one of the two columns was dropped without a word (`datasets` refuses such files too).
    (tmp_path / "data.csv").write_bytes(b"instruction,output,output\nSay hi,hi,bye\n")
    table = pa.Table.from_arrays([pa.array(["a"]), pa.array(["b"])], names=["text", "text"])
    pq.write_table(table, tmp_path / "data.parquet")
    for name, fmt in (("data.csv", "csv"), ("data.parquet", "parquet")):
        with pytest.raises(InputError, match=rf"{name}: column '(output|text)' appears more than once; rename one"):
            rows_of(tmp_path / name, fmt)
    with pytest.raises(InputError, match="appears more than once"):  # the reader that takes over from Arrow
        list(_csv_rows_one_by_one(tmp_path / "data.csv", 2, 1 << 20, 0))


def test_json_lines_with_bare_cr_line_ends(tmp_path: Path, prepare: Prepare) -> None:
    # Old Mac line ends: the whole file was one malformed_json row (datasets' Arrow reader splits at a CR too).
    other = {"messages": [{"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Bye!"}]}
    (tmp_path / "chat.jsonl").write_bytes(json.dumps(GOOD).encode() + b"\r" + json.dumps(other).encode() + b"\r")
    result = prepare({"datasets": [{"path": "chat.jsonl", **CHAT}]})
    assert reasons_by_row(result) == [None, None]
    # A CR between JSON tokens is whitespace: such a line is read whole, as before.
    path = tmp_path / "ws.jsonl"
    path.write_bytes(b'{"a":\r1}\n{"b": 2}\r\n')
    assert [r.payload for r in rows_of(path, "jsonl")] == [b'{"a":\r1}', b'{"b": 2}']
    path.write_bytes(b'[1]\r{"b": 2}\r')  # and an array as the first row is one row there too
    assert [r.payload for r in rows_of(path, "jsonl")] == [b"[1]", b'{"b": 2}']


def test_a_bom_starting_a_line_in_mid_file_is_not_a_bad_row(tmp_path: Path, prepare: Prepare) -> None:
    # `cat a.jsonl b.jsonl` of two files saved with a BOM: the second file's first row was malformed_json
    other = {"messages": [{"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Bye!"}]}
    bom = b"\xef\xbb\xbf"
    (tmp_path / "chat.jsonl").write_bytes(bom + json.dumps(GOOD).encode() + b"\n" + bom + json.dumps(other).encode())
    assert reasons_by_row(prepare({"datasets": [{"path": "chat.jsonl", **CHAT}]})) == [None, None]
