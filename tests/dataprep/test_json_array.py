"""One hostile item in a JSON-array file quarantines only that item (issue 7, item 3).

json.loads reads a JSON-array file whole, so one item nested 5,000 deep or holding a 5,000-digit integer used to
stop the run. Now such a file is split into its items (dataprep/json_array.py) and each goes through the same
per-row parser as a JSONL line: the same reason codes, source_row = the item's index, its original text, and
the same shards as the same rows written as JSON Lines. A file whose array structure is broken (truncated, an
unterminated string, text after the array) is still a one-line error.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/dataprep/test_json_array.py -v
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataprep import json_rows
from dataprep.json_array import NotAnArray, split_array
from dataprep.load import InputError, read_batches
from tests.conftest import Prepare

CHAT = {"type": "chat_template"}
Q_FRACTION = {"quarantine_max_fraction": 0.9}


def chat(i: int) -> str:
    return json.dumps({"messages": [{"role": "user", "content": f"Question {i}: [a], {{b}}, \"c\\\\\"?"},
                                    {"role": "assistant", "content": f"Answer {i}, é ✓"}]}, ensure_ascii=False)


# Each item as the text written to the file. The bad ones, with the reason a JSONL line gets for them.
DEEP = '{"messages": [], "x": ' + "[" * 5000 + "]" * 5000 + "}"
HUGE_INT = '{"messages": [], "id": ' + "7" * 5000 + "}"
SURROGATE = '{"messages": [{"role": "user", "content": "broken \\ud83d emoji"}, {"role": "assistant", "content": "x"}]}'
BAD = {1: (DEEP, "too_deep"), 3: (HUGE_INT, "number_too_large"), 4: (SURROGATE, "invalid_unicode"),
       6: ('{"messages" [1]}', "malformed_json"), 7: ("[1, 2]", "not_an_object")}
ITEMS = [BAD[i][0] if i in BAD else chat(i) for i in range(10)]


def as_array(items: list[str]) -> bytes:
    # Pretty-ish layout: whitespace around items is not part of them.
    return ("[\n  " + ",\n  ".join(items) + "\n]\n").encode()


def as_jsonl(items: list[str]) -> bytes:
    return ("\n".join(items) + "\n").encode()


def same_output(a: Path, b: Path) -> None:
    """The same shards, byte for byte, and the same per-row records, whatever the file was called."""
    names = sorted(p.name for p in (a / "shards").iterdir())
    assert names == sorted(p.name for p in (b / "shards").iterdir())
    for name in names:
        assert (a / "shards" / name).read_bytes() == (b / "shards" / name).read_bytes()
    for table in ("samples.parquet", "quarantine.parquet"):
        left, right = (pl.read_parquet(d / table).drop("dataset", "source_file") for d in (a, b))
        assert left.equals(right), table


# ---- the run goes on ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["chat.json", "chat.json.gz"])
def test_bad_items_are_quarantined_and_the_rest_kept(tmp_path: Path, prepare: Prepare, name: str) -> None:
    data = as_array(ITEMS)
    (tmp_path / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    result = prepare({"datasets": [{"path": name, **CHAT}], **Q_FRACTION})
    acc = result.manifest["accounting"]
    assert acc == {"input_rows": 10, "kept": 5, "quarantined": 5, "duplicates": 0, "dropped": 0, "balanced": True}
    q = pl.read_parquet(result.out / "quarantine.parquet").sort("source_row")
    assert q["source_row"].to_list() == sorted(BAD)
    assert q["reason"].to_list() == [BAD[i][1] for i in sorted(BAD)]
    assert q["original"].to_list() == [BAD[i][0] for i in sorted(BAD)]  # the item's own text, not re-written
    assert {Path(f).name for f in q["source_file"].to_list()} == {name}
    samples = pl.read_parquet(result.out / "samples.parquet").sort("source_row")
    assert samples.filter(pl.col("status") == "kept")["source_row"].to_list() == [0, 2, 5, 8, 9]


def test_bytes_that_are_not_utf8_quarantine_only_their_item(tmp_path: Path, prepare: Prepare) -> None:
    latin1 = '{"messages": [{"role": "user", "content": "café"}, {"role": "assistant", "content": "x"}]}'
    items = [chat(0).encode(), latin1.encode("latin-1"), chat(2).encode()]
    (tmp_path / "chat.json").write_bytes(b"[" + b",\n".join(items) + b"]")
    result = prepare({"datasets": [{"path": "chat.json", **CHAT}], **Q_FRACTION})
    assert result.manifest["stats"]["by_reason"] == {"invalid_utf8": 1}
    q = pl.read_parquet(result.out / "quarantine.parquet").row(0, named=True)
    assert q["source_row"] == 1 and "caf\ufffd" in q["original"]
    assert result.manifest["accounting"]["kept"] == 2


def test_split_items_give_the_same_output_as_json_lines(tmp_path: Path, prepare: Prepare) -> None:
    # The split path hands over each item's bytes, as a JSONL line: the same results, row for row.
    (tmp_path / "chat.json").write_bytes(as_array(ITEMS))
    (tmp_path / "chat.jsonl").write_bytes(as_jsonl(ITEMS))
    array = prepare({"datasets": [{"path": "chat.json", **CHAT}], **Q_FRACTION}, "array")
    lines = prepare({"datasets": [{"path": "chat.jsonl", **CHAT}], **Q_FRACTION}, "lines")
    same_output(array.out, lines.out)


def test_a_clean_array_is_read_as_before(tmp_path: Path, prepare: Prepare, monkeypatch: pytest.MonkeyPatch) -> None:
    # A clean array takes the fast path (one json.loads, nothing split): the same shards as the same rows as JSON
    # Lines, and as the split path would give.
    clean = [chat(i) for i in range(12)]
    (tmp_path / "chat.json").write_bytes(as_array(clean))
    (tmp_path / "chat.jsonl").write_bytes(as_jsonl(clean))
    calls: list[int] = []
    split = json_rows.split_array
    monkeypatch.setattr(json_rows, "split_array", lambda data: calls.append(1) or split(data))
    array = prepare({"datasets": [{"path": "chat.json", **CHAT}]}, "array")
    assert calls == []
    lines = prepare({"datasets": [{"path": "chat.jsonl", **CHAT}]}, "lines")
    same_output(array.out, lines.out)
    rows = [r for b in json_rows._json_array_items(tmp_path / "chat.json", as_array(clean), 5) for r in b]
    fast = [r for b in read_batches(tmp_path / "chat.json", "json", 5) for r in b]
    assert [(r.source_row, json.loads(r.payload)) for r in rows] == [
        (r.source_row, json.loads(r.payload)) for r in fast]


def test_split_batches_end_early_at_the_byte_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "chat.json").write_bytes(as_array(ITEMS))
    monkeypatch.setattr(json_rows, "BATCH_BYTES", 3 * len(chat(0)))
    batches = list(read_batches(tmp_path / "chat.json", "json", 1000))
    assert len(batches) > 2 and [r.source_row for b in batches for r in b] == list(range(10))
    assert [r.payload for b in batches for r in b] == [item.encode() for item in ITEMS]


# ---- a broken file is still the file's error -------------------------------------------------------------

@pytest.mark.parametrize(("text", "why"), [
    (b"[" + DEEP.encode() + b", " + chat(0).encode(), "the array does not end"),  # truncated after a deep item
    (b"[" + DEEP.encode() + b', {"a": "no end}]', "a string that does not end"),
    (b"[" + DEEP.encode() + b"] []", "text after the end of the array"),
    (b"[" + DEEP.encode() + b", ]", "an empty item"),
    (b"[" + DEEP.encode() + b', {"a": [1}]', "'}' at byte"),
])
def test_a_broken_array_with_a_bad_item_is_a_one_line_error(tmp_path: Path, prepare: Prepare, text: bytes,
                                                             why: str) -> None:
    (tmp_path / "chat.json").write_bytes(text)
    with pytest.raises(InputError, match=rf"chat.json: not a valid JSON array \({why}.*set ds_type: jsonl"):
        prepare({"datasets": [{"path": "chat.json", **CHAT}], **Q_FRACTION})


def test_a_truncated_clean_array_fails_as_before(tmp_path: Path, prepare: Prepare) -> None:
    (tmp_path / "chat.json").write_bytes(as_array([chat(0), chat(1)])[:-10])
    with pytest.raises(InputError, match=r"chat.json: not a valid JSON array \(Unterminated string starting at"):
        prepare({"datasets": [{"path": "chat.json", **CHAT}]})


# ---- the scanner on its own -------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "items"), [
    (b"[]", []),
    (b" \n[ \t]\r\n", []),
    (b"[1]", [b"1"]),
    (b'[ {"a": "x]\\",}{["}, [1,[2]], "\\\\", null ,\n -1.5e3\n]', [b'{"a": "x]\\",}{["}', b"[1,[2]]", b'"\\\\"',
                                                                  b"null", b"-1.5e3"]),
    (b"[1 2, {}]", [b"1 2", b"{}"]),  # an item's own syntax is its parser's business: malformed_json
    (b"[" + b"[" * 100_000 + b"]" * 100_000 + b"]", [b"[" * 100_000 + b"]" * 100_000]),  # no recursion
])
def test_split_array_finds_the_top_level_items(text: bytes, items: list[bytes]) -> None:
    assert list(split_array(text)) == items


@pytest.mark.parametrize("text", [b"", b"  ", b"{}", b'"a"', b"x[1]", b"[1", b"[1,]", b"[,1]", b"[1,,2]",
                                  b"[1}", b"[1]]", b"[1] x", b"[] x", b"[]]", b'["abc', b'["a\\"]'])
def test_split_array_refuses_what_is_not_one_array(text: bytes) -> None:
    with pytest.raises(NotAnArray):
        split_array(text)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4), max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(items=st.lists(json_values, max_size=8), indent=st.sampled_from([None, 0, 2]), ascii=st.booleans())
def test_split_array_agrees_with_json_loads(items: list[Any], indent: int | None, ascii: bool) -> None:
    data = json.dumps(items, indent=indent, ensure_ascii=ascii).encode("utf-8", errors="surrogatepass")
    assert [json.loads(item) for item in split_array(data)] == items
