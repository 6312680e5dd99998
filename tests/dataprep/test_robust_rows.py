"""No row can crash the run, and no row can make it use memory in proportion to its size (issue 7, items 3-4).

Each class of bad row that used to stop the run (deep nesting, lone surrogates, 5,000-digit integers, bytes
that are not UTF-8 in one Parquet cell or CSV line, a failure inside the tokenizer) is quarantined with its own
reason while the rest of its file is kept; hypothesis throws random rows at RowProcessor.process and at a
whole run; a 50 MB row and a 300 MB line run in a subprocess whose peak RSS is measured.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/dataprep/test_robust_rows.py -v
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataprep.load import RawRow, read_batches
from dataprep.pipeline import run_pipeline
from dataprep.report import Progress
from dataprep.transform import RowProcessor, max_token_chars, text_limit
from schemas.config import config_from_dict, load_config
from schemas.reasons import Reason, Status
from tests.conftest import ROOT, Prepare, _tokenizer, process_rows

GOOD = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
CHAT = {"type": "chat_template"}


def reasons(results: list[Any]) -> list[str | None]:
    return [None if r.reason is None else str(r.reason) for r in results]


# ---- one regression test per class of bad row -------------------------------------------------------------

def test_each_bad_row_is_quarantined_with_its_reason(qwen_dir: Path) -> None:
    rows = [
        json.dumps(GOOD).encode(),
        b'{"messages": [], "unused": ' + b"[" * 1000 + b"]" * 1000 + b"}",  # deep, in a field nobody reads
        b'{"messages": [{"role": "user", "content": "broken emoji \\ud83d"}]}',
        b'{"messages": [], "id": ' + b"7" * 5000 + b"}",
        b'{"messages": [{"role": "user", "content": "caf\xe9"}]}',  # Latin-1, not UTF-8
        b'{"messages": [{"role": "user", "content": "nul \\u0000 byte"}, {"role": "assistant", "content": "ok"}]}',
        b'{"messages": [{"role": "user", "content": "a pair \\ud83d\\ude00 is fine"}, '
        b'{"role": "assistant", "content": "yes"}]}',
    ]
    results = process_rows(qwen_dir, CHAT, rows)
    assert reasons(results) == [None, "too_deep", "invalid_unicode", "number_too_large", "invalid_utf8", None, None]
    surrogate = results[2]
    assert surrogate.field == "messages[0].content" and "surrogate" in (surrogate.message or "")
    assert "4300" in (results[3].message or "") and "strings" in (results[3].message or "")
    for r in results:
        assert r.original is None or isinstance(r.original.encode("utf-8"), bytes)  # storable as Parquet text


def test_a_tokenizer_failure_quarantines_only_its_row_as_row_error(qwen_dir: Path) -> None:
    # Readers never hand over a lone surrogate, but if one got through, hashing and tokenizing it fail (UTF-8
    # cannot encode it): only that row is quarantined, with the exception type and message.
    bad = {"messages": [{"role": "user", "content": "x\ud800"}, {"role": "assistant", "content": "y"}]}
    other = {"messages": [{"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Bye!"}]}
    results = process_rows(qwen_dir, CHAT, [GOOD, bad, other])
    assert [r.status for r in results] == [Status.kept, Status.quarantined, Status.kept]
    assert results[1].reason is Reason.row_error
    assert results[1].message is not None and results[1].message.split(":")[0].isidentifier()
    assert "\\ud800" in (results[1].original or "")  # escaped, so quarantine.parquet can hold it


def test_bad_utf8_in_one_parquet_cell_quarantines_that_row(tmp_path: Path, prepare: Prepare) -> None:
    texts = pa.array([b"first", b"caf\xe9 au lait", b"third"], pa.binary()).view(pa.string())
    pq.write_table(pa.table({"text": texts}), tmp_path / "data.parquet")
    result = prepare({"datasets": [{"path": "data.parquet", "type": "completion"}], "quarantine_max_fraction": 0.5})
    q = pl.read_parquet(result.out / "quarantine.parquet").row(0, named=True)
    assert (q["source_row"], q["reason"], q["field"]) == (1, "invalid_utf8", "text")
    assert "caf\ufffd au lait" in q["original"] and "re-encode" in q["message"]
    assert result.manifest["accounting"]["kept"] == 2


def test_bad_utf8_in_one_csv_line_quarantines_that_line(tmp_path: Path, prepare: Prepare) -> None:
    (tmp_path / "data.csv").write_bytes(b"instruction,output\nSay hi,hi\nSay caf\xe9,caf\xe9\nSay bye,bye\n")
    result = prepare({"datasets": [{"path": "data.csv", "type": "alpaca"}], "quarantine_max_fraction": 0.5})
    samples = pl.read_parquet(result.out / "samples.parquet").sort("source_row")
    assert samples["reason"].to_list() == [None, "invalid_utf8", None]
    q = pl.read_parquet(result.out / "quarantine.parquet").row(0, named=True)
    assert q["field"] == "instruction" and q["source_row"] == 1


def test_json_array_items_get_the_same_checks(tmp_path: Path, prepare: Prepare) -> None:
    other = {"messages": [{"role": "user", "content": "Bye é"}, {"role": "assistant", "content": "Bye!"}]}
    items = [GOOD, {"messages": [{"role": "user", "content": "\ud83d"}]}, other]
    (tmp_path / "chat.json").write_text(json.dumps(items))  # ASCII JSON: the surrogate is an escape
    result = prepare({"datasets": [{"path": "chat.json", **CHAT}], "quarantine_max_fraction": 0.5})
    q = pl.read_parquet(result.out / "quarantine.parquet").row(0, named=True)
    assert (q["source_row"], q["reason"], q["field"]) == (1, "invalid_unicode", "messages[0].content")
    assert result.manifest["accounting"]["kept"] == 2
    # One item json.loads cannot read makes the array unreadable as one document: it is split into its items
    # and only that one is quarantined (tests/dataprep/test_json_array.py has the rest).
    (tmp_path / "deep.json").write_text("[" + json.dumps(GOOD) + ", " + "[" * 5000 + "]" * 5000 + "]")
    result = prepare({"datasets": [{"path": "deep.json", **CHAT}], "quarantine_max_fraction": 0.5})
    assert result.manifest["stats"]["by_reason"] == {"too_deep": 1}
    assert result.manifest["accounting"]["kept"] == 1


def test_bad_rows_in_worker_processes(tmp_path: Path, prepare: Prepare) -> None:
    lines = [json.dumps({"messages": [{"role": "user", "content": f"Hi {i}"}, GOOD["messages"][1]]})
             for i in range(6)]
    lines[2] = '{"messages": [{"role": "user", "content": "\\udfff"}]}'
    lines[4] = '{"messages": [], "x": ' + "[" * 3000 + "]" * 3000 + "}"
    (tmp_path / "chat.jsonl").write_text("\n".join(lines) + "\n")
    config = {"datasets": [{"path": "chat.jsonl", "type": "chat_template"}], "quarantine_max_fraction": 0.5}
    one, two = prepare(config, "one"), prepare(config, "two", workers=2)
    for result in (one, two):
        assert result.manifest["stats"]["by_reason"] == {"invalid_unicode": 1, "too_deep": 1}
    shard = Path("shards") / "train-00000.arrow"
    assert (one.out / shard).read_bytes() == (two.out / shard).read_bytes()


# ---- property-based: random rows at the row path and at a whole run -------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "gpt", 7]),
                                           "content": st.text() | json_values}), max_size=4)
rows_as_objects = st.fixed_dictionaries({"messages": messages, "instruction": st.text() | json_values,
                                         "output": st.text() | json_values, "input": st.text() | json_values})


@st.composite
def raw_lines(draw: st.DrawFn) -> bytes:
    """Bytes a JSONL line might hold: JSON of random values (with lone surrogates escaped), deep nesting, huge
    numbers and strings, NUL bytes, random bytes, or a valid row cut short."""
    kind = draw(st.sampled_from(["object", "value", "deep", "number", "huge", "bytes", "cut"]))
    if kind == "object":
        return json.dumps(draw(rows_as_objects)).encode()  # ensure_ascii: surrogates become \udXXX escapes
    if kind == "value":
        return json.dumps(draw(json_values)).encode()
    if kind == "deep":
        depth = draw(st.integers(500, 5000))
        return b'{"messages": [], "x": ' + b"[" * depth + b"]" * depth + b"}"
    if kind == "number":
        return b'{"messages": [], "n": ' + b"9" * draw(st.integers(4000, 20000)) + b"}"
    if kind == "huge":
        text = draw(st.sampled_from(["a", "\x00", "é", "🙂", " "])) * draw(st.integers(100_000, 400_000))
        return json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": text}],
                           "instruction": text, "output": text}).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    line = json.dumps(draw(rows_as_objects)).encode()
    return line[:draw(st.integers(0, len(line)))]


def _processor(qwen_dir: Path, ds: dict[str, Any], sequence_len: int = 256) -> RowProcessor:
    from dataprep.render import resolve_template

    cfg = config_from_dict({"tokenizer_config": str(qwen_dir), "chat_template": "chatml",
                            "sequence_len": sequence_len, "datasets": [{"path": "x", **ds}]})
    tok = _tokenizer(str(qwen_dir))
    template = None
    if ds.get("type") == "chat_template":
        template = resolve_template("chatml", None, tok.chat_template, Path("."))[1]
    return RowProcessor(cfg, 0, tok, template)


@pytest.mark.parametrize("ds", [CHAT, {"type": "alpaca"}, {"type": "completion", "field": "output"}, {}],
                         ids=["chat", "alpaca", "completion", "pretokenized"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=st.lists(raw_lines() | rows_as_objects, min_size=1, max_size=6))
def test_random_rows_never_raise_and_each_gets_one_result(qwen_dir: Path, ds: dict[str, Any],
                                                          batch: list[bytes | dict[str, Any]]) -> None:
    raws = [RawRow(i, payload) for i, payload in enumerate(batch)]
    results = _processor(qwen_dir, ds).process(raws)
    assert [r.source_row for r in results] == list(range(len(raws)))
    for r in results:
        if r.status is Status.kept:
            assert r.input_ids is not None and r.labels is not None
            # completion rows longer than sequence_len are split into chunks of at most sequence_len
            pieces = r.chunks or [(0, len(r.input_ids))]
            assert all(b - a <= 256 for a, b in pieces) and pieces[-1][1] == len(r.input_ids)
        else:
            assert r.reason is not None and r.message
        for text in (r.message, r.original, r.field):
            assert text is None or isinstance(text.encode("utf-8"), bytes)  # what the run writes to Parquet


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(lines=st.lists(raw_lines(), min_size=1, max_size=8), workers=st.sampled_from([1, 2]))
def test_random_files_prepare_with_balanced_accounting(qwen_dir: Path, lines: list[bytes], workers: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        good = json.dumps(GOOD).encode()
        (folder / "chat.jsonl").write_bytes(b"\n".join([good, *(x.replace(b"\n", b" ") for x in lines)]) + b"\n")
        config = {"tokenizer_config": str(qwen_dir), "chat_template": "chatml", "quarantine_max_fraction": 1.0,
                  "datasets": [{"path": "chat.jsonl", "type": "chat_template"}]}
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        cfg = load_config(folder / "config.yaml")
        result = run_pipeline(cfg, folder / "config.yaml", folder / "out", workers=workers,
                              progress=Progress(enabled=False))
        acc = result.manifest["accounting"]
        assert acc["balanced"] and acc["kept"] >= 1
        samples = pl.read_parquet(folder / "out" / "samples.parquet")
        assert len(samples) == acc["input_rows"]


# ---- bounded memory per row ------------------------------------------------------------------------------

def test_text_limit_comes_from_the_longest_vocabulary_piece(qwen_dir: Path) -> None:
    tok = _tokenizer(str(qwen_dir))
    longest = max(tok.tokenizer.get_vocab(with_added_tokens=True), key=len)
    assert max_token_chars(tok) == len(longest) == 128  # Qwen2.5: 128 spaces ('Ġ' x 128) is one token
    assert text_limit(tok, 1024) == 1024 * 128 * 4
    # Sanity of the bound: that piece's text is one token, so no text of N tokens is longer than N x 128 chars.
    assert len(tok.tokenizer.encode(" " * 128, add_special_tokens=False).ids) == 1


def test_a_row_too_long_to_fit_is_dropped_before_tokenizing(qwen_dir: Path) -> None:
    limit = 64 * 128 * 4
    long = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "word " * limit}]}
    results = _processor(qwen_dir, CHAT, sequence_len=64).process([RawRow(0, long), RawRow(1, GOOD)])
    assert reasons(results) == ["too_long", None]
    assert results[0].num_tokens is None and "before tokenizing" in (results[0].message or "")


def test_truncate_cuts_the_text_before_tokenizing_with_the_same_tokens(qwen_dir: Path) -> None:
    answer = "word " * (64 * 128 * 4)
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": answer}]}
    top = {"sequence_len": 64, "excess_length_strategy": "truncate"}
    [cut] = process_rows(qwen_dir, CHAT, [row], **top)
    [whole] = process_rows(qwen_dir, CHAT, [{**row, "messages": [row["messages"][0],
                                                                 {"role": "assistant", "content": "word " * 200}]}],
                           **top)
    assert cut.reason is Reason.truncated and cut.num_tokens == 64
    assert cut.input_ids.tolist() == whole.input_ids.tolist() and cut.labels.tolist() == whole.labels.tolist()


def test_parquet_rows_with_huge_cells_come_in_small_batches_and_are_dropped(tmp_path: Path,
                                                                           prepare: Prepare) -> None:
    texts = ["short text", "word " * (10 << 20), "another short one", "word " * (10 << 20)]  # 50 MB cells
    pq.write_table(pa.table({"text": texts}), tmp_path / "big.parquet", row_group_size=4)
    batches = list(read_batches(tmp_path / "big.parquet", "parquet", 512))
    assert [len(b) for b in batches] == [2, 2]  # Arrow gives one batch of 4 rows (100 MB): cut to <= 64 MiB
    result = prepare({"datasets": [{"path": "big.parquet", "type": "completion"}], "sequence_len": 2048})
    s = pl.read_parquet(result.out / "samples.parquet").sort("source_row")
    assert s["reason"].to_list() == [None, "too_long", None, "too_long"]
    assert s["num_tokens"].to_list()[1::2] == [None, None]


PEAK_RSS = """
import json, resource, sys
from dataprep.cli import main
rc = main(["prepare", sys.argv[1], "--out", sys.argv[2]])
print(json.dumps({"rc": rc, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _peak_run(folder: Path, qwen_dir: Path, big_row_bytes: int, name: str) -> tuple[dict[str, Any], Path]:
    """Prepare [GOOD, a chat row of about `big_row_bytes` (none if 0), another row] in a subprocess."""
    data = folder / f"{name}.jsonl"
    with open(data, "wb") as f:
        f.write(json.dumps(GOOD).encode() + b"\n")
        if big_row_bytes:
            f.write(b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "')
            piece = b"word " * (1 << 18)
            for _ in range(big_row_bytes // len(piece)):
                f.write(piece)
            f.write(b'"}]}\n')
        f.write(json.dumps({"messages": [{"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Bye!"}]}
                           ).encode() + b"\n")
    config = folder / f"{name}.yaml"
    config.write_text(yaml.safe_dump({"tokenizer_config": str(qwen_dir), "chat_template": "chatml",
                                      "sequence_len": 2048, "quarantine_max_fraction": 0.5,
                                      "datasets": [{"path": data.name, "type": "chat_template"}]}))
    out = folder / f"{name}-out"
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS, str(config), str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), out


def test_peak_rss_does_not_grow_with_the_largest_row(tmp_path: Path, qwen_dir: Path) -> None:
    base, _ = _peak_run(tmp_path, qwen_dir, 0, "base")
    # 20 MB: read and parsed (under the 32 MiB line limit), but dropped before rendering and tokenizing.
    mid, mid_out = _peak_run(tmp_path, qwen_dir, 20 << 20, "mid")
    # 50 MB and 300 MB lines: over the line limit, skipped to the next newline in 1 MiB reads.
    big, big_out = _peak_run(tmp_path, qwen_dir, 50 << 20, "big")
    huge, huge_out = _peak_run(tmp_path, qwen_dir, 300 << 20, "huge")
    s = pl.read_parquet(mid_out / "samples.parquet").sort("source_row")
    assert s["reason"].to_list() == [None, "too_long", None]
    for out in (big_out, huge_out):
        q = pl.read_parquet(out / "quarantine.parquet")
        assert q["reason"].to_list() == ["line_too_long"] and q["source_row"].to_list() == [1]
        assert len(q["original"][0]) < 5000 and "bytes)" in q["original"][0]
    assert pl.read_parquet(huge_out / "samples.parquet")["status"].to_list() == ["kept", "quarantined", "kept"]
    # The old path held the line, its text and the tokenizer's offsets: 6.4 GB for 50 MB.
    assert mid["peak_mb"] - base["peak_mb"] < 250, (base, mid)
    assert big["peak_mb"] - base["peak_mb"] < 100, (base, big)
    assert huge["peak_mb"] - base["peak_mb"] < 100, (base, huge)
