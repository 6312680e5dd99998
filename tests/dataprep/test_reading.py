"""Read what the user meant (issue 7, item 7, and item 5's non-UTF-8 file names).

Placeholders are filled in one pass; `**` globs and directory walks end on symlink loops and list each file
once; CSV values may hold newlines at any file size; a pretty-printed JSON object is one row; a UTF-8 BOM is
not a bad row; .gz/.zst files are read as streams; a file name that is not UTF-8 is shown with escapes; shard
names from a manifest cannot leave the prepared directory.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/dataprep/test_reading.py -v
"""

from __future__ import annotations

import codecs
import glob
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from dataprep.formats import ALPACA, Segments, to_sample
from dataprep.load import InputError, is_data_file, read_batches
from dataprep.look.prepared import QueryError
from dataprep.look.query import connect
from dataprep.paths import expand_glob, walk_files
from dataprep.shards import ShardPathError, shard_path
from schemas.config import CustomInstructType, config_from_dict
from tests.conftest import ROOT, Prepare, write_jsonl

CHATS = [{"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}]}
         for i in range(3)]
CHAT_DS = {"type": "chat_template"}


# ---- placeholders ----------------------------------------------------------------------------------------

def _prompt(ds: dict, record: dict) -> str:
    cfg = config_from_dict({"tokenizer_config": "x", "datasets": [{"path": "x", **ds}]})
    sample = to_sample(record, cfg.datasets[0], False, "</s>")
    assert isinstance(sample, Segments)
    return sample.parts[0][0]


def test_placeholders_in_user_text_stay_literal() -> None:
    record = {"instruction": "Explain {input} and {instruction} in str.format", "input": "x = {y}", "output": "o"}
    prompt = _prompt({"type": "alpaca"}, record)
    assert "### Instruction:\nExplain {input} and {instruction} in str.format\n\n### Input:\nx = {y}\n" in prompt
    no_input = _prompt({"type": "alpaca"}, {"instruction": "Fill {input}", "output": "o"})
    assert no_input == ALPACA.no_input_format.replace("{instruction}", "Fill {input}")


def test_custom_instruct_fills_each_format_with_its_own_placeholders() -> None:
    fmt = {"field_instruction": "q", "field_output": "a", "field_system": "s", "format": "[{instruction}|{input}]",
           "no_input_format": "<{instruction}|{input}>", "system_format": "{system}/{instruction}:"}
    prompt = _prompt({"type": CustomInstructType(**fmt).model_dump()},
                     {"q": "{system}", "a": "x", "s": "sys {instruction}"})
    # {input} stays literal in no_input_format and {instruction} in system_format, as before; user text is never
    # scanned for placeholders.
    assert prompt == "sys {instruction}/{instruction}:<{system}|{input}>"


# ---- globs and folders -----------------------------------------------------------------------------------

def _tree(root: Path) -> None:
    (root / "data" / "sub").mkdir(parents=True)
    for name in ("data/a.jsonl", "data/sub/b.jsonl", "data/sub/c.json", "data/.hidden.jsonl"):
        write_jsonl(root / name, CHATS[:1])


def test_expand_glob_matches_glob_glob_on_a_plain_tree(tmp_path: Path) -> None:
    _tree(tmp_path)
    for pattern in ("data/**/*.jsonl", "data/*", "data/**", "data/s*/*.json*", "**/*.json", "data/?.jsonl"):
        expected = sorted(Path(p) for p in glob.glob(str(tmp_path / pattern), recursive=True) if Path(p).is_file())
        assert expand_glob(tmp_path / pattern) == expected, pattern


def test_symlink_loops_end_and_each_file_is_listed_once(tmp_path: Path) -> None:
    _tree(tmp_path)
    os.symlink(tmp_path / "data", tmp_path / "data" / "sub" / "loop")  # back to an ancestor
    os.symlink("..", tmp_path / "data" / "sub" / "up")  # a second loop: glob.glob runs for hours on two
    os.symlink(tmp_path / "data" / "a.jsonl", tmp_path / "data" / "sub" / "a-again.jsonl")
    os.link(tmp_path / "data" / "sub" / "b.jsonl", tmp_path / "data" / "b-hardlink.jsonl")
    start = time.monotonic()
    files = expand_glob(tmp_path / "data" / "**" / "*.jsonl")
    walked = walk_files(tmp_path / "data")
    assert time.monotonic() - start < 5
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["data/a.jsonl", "data/b-hardlink.jsonl"]
    assert [f.relative_to(tmp_path).as_posix() for f in walked] == [
        "data/a.jsonl", "data/b-hardlink.jsonl", "data/sub/c.json"]


def test_a_looping_folder_prepares_each_row_once(tmp_path: Path, prepare: Prepare) -> None:
    write_jsonl(tmp_path / "data" / "chat.jsonl", CHATS)
    os.symlink(tmp_path / "data", tmp_path / "data" / "loop")
    os.symlink(tmp_path / "data", tmp_path / "data" / "loop2")
    for path in ("data", "data/**/*.jsonl"):
        result = prepare({"datasets": [{"path": path, **CHAT_DS}]}, out_name=f"out{len(path)}")
        assert result.manifest["accounting"]["input_rows"] == 3
        assert len(result.manifest["sources"]) == 1


# ---- formats ---------------------------------------------------------------------------------------------

def test_csv_with_quoted_newlines_larger_than_a_read_block(tmp_path: Path) -> None:
    answer = "line one\nline two, with a comma\n\"quoted\"\n" + "x" * 200
    row = 'Explain,"' + answer.replace('"', '""') + '"\n'
    n = (20 << 20) // len(row) + 1  # > 16 MiB, Arrow's block: values with newlines cross block boundaries
    with open(tmp_path / "big.csv", "w", encoding="utf-8") as f:
        f.write("instruction,output\n")
        for _ in range(n):
            f.write(row)
    rows = [r for batch in read_batches(tmp_path / "big.csv", "csv", 4096) for r in batch]
    assert len(rows) == n
    assert all(r.payload == {"instruction": "Explain", "output": answer} for r in (rows[0], rows[n // 2], rows[-1]))


def test_a_pretty_printed_json_object_is_one_row(tmp_path: Path, prepare: Prepare) -> None:
    (tmp_path / "one.json").write_text(json.dumps(CHATS[0], indent=2))
    (tmp_path / "one.jsonl").write_text(json.dumps(CHATS[1], indent=4))
    result = prepare({"datasets": [{"path": "one.json", **CHAT_DS}, {"path": "one.jsonl", **CHAT_DS}]})
    assert result.manifest["accounting"] == {"input_rows": 2, "kept": 2, "quarantined": 0, "duplicates": 0,
                                             "dropped": 0, "balanced": True}


def test_a_broken_first_line_is_still_json_lines(tmp_path: Path, prepare: Prepare) -> None:
    (tmp_path / "chat.jsonl").write_text('{"messages": [\n' + "\n".join(json.dumps(c) for c in CHATS) + "\n")
    result = prepare({"datasets": [{"path": "chat.jsonl", **CHAT_DS}], "quarantine_max_fraction": 0.5})
    assert result.manifest["stats"]["by_reason"] == {"malformed_json": 1}


def test_a_utf8_bom_is_not_a_bad_row(tmp_path: Path, prepare: Prepare) -> None:
    bom = codecs.BOM_UTF8
    (tmp_path / "chat.jsonl").write_bytes(bom + "\n".join(json.dumps(c) for c in CHATS).encode())
    (tmp_path / "array.json").write_bytes(bom + json.dumps(CHATS[:2]).encode())
    (tmp_path / "alpaca.csv").write_bytes(bom + b"instruction,output\nSay hi,hi\n")
    result = prepare({"datasets": [{"path": "chat.jsonl", **CHAT_DS}, {"path": "array.json", **CHAT_DS},
                                   {"path": "alpaca.csv", "type": "alpaca"}],
                      "dataset_exact_deduplication": False})
    acc = result.manifest["accounting"]
    assert (acc["input_rows"], acc["kept"]) == (6, 6)


def test_compressed_files_are_read_as_streams(tmp_path: Path, prepare: Prepare) -> None:
    text = ("\n".join(json.dumps(c) for c in CHATS) + "\n").encode()
    (tmp_path / "plain.jsonl").write_bytes(text)
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(text))
    (tmp_path / "b.json.gz").write_bytes(gzip.compress(json.dumps(CHATS).encode()))
    (tmp_path / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(text))
    (tmp_path / "d.zst").write_bytes(zstandard.ZstdCompressor().compress(text))
    names = ["plain.jsonl", "a.jsonl.gz", "b.json.gz", "c.jsonl.zst", "d.zst"]
    assert all(is_data_file(tmp_path / n) for n in names) and not is_data_file(tmp_path / "notes.txt.gz")
    result = prepare({"datasets": [{"path": n, **CHAT_DS} for n in names], "dataset_exact_deduplication": False})
    per = result.manifest["stats"]["per_dataset"]
    assert [per[n]["kept"] for n in names] == [3] * 5
    tokens = {per[n]["tokens"] for n in names}
    assert len(tokens) == 1  # the same rows, whatever the wrapping


def test_compressed_csv_with_a_bom_and_a_quoted_newline(tmp_path: Path) -> None:
    data = codecs.BOM_UTF8 + b'instruction,output\nhi,"a\nb"\n'
    (tmp_path / "r.csv.gz").write_bytes(gzip.compress(data))
    (tmp_path / "r.csv.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    for name in ("r.csv.gz", "r.csv.zst"):
        rows = [r.payload for batch in read_batches(tmp_path / name, "csv", 10) for r in batch]
        assert rows == [{"instruction": "hi", "output": "a\nb"}]


def test_a_compressed_parquet_file_is_a_one_line_error(tmp_path: Path, prepare: Prepare) -> None:
    (tmp_path / "x.parquet.gz").write_bytes(gzip.compress(b"not really"))
    with pytest.raises(InputError, match=r"x.parquet.gz: a compressed parquet file cannot be read as a stream; "
                                         r"decompress it \(gunzip x.parquet.gz\)"):
        prepare({"datasets": [{"path": "x.parquet.gz", "type": "completion"}]})


def test_a_corrupt_compressed_file_is_an_input_error(tmp_path: Path, prepare: Prepare) -> None:
    (tmp_path / "bad.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd garbage")
    with pytest.raises(InputError, match=r"bad\.jsonl\.zst: cannot"):
        prepare({"datasets": [{"path": "bad.jsonl.zst", **CHAT_DS}]})


# ---- file names that are not UTF-8 -----------------------------------------------------------------------

def test_a_file_name_that_is_not_utf8_is_shown_with_escapes(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    name = os.fsdecode(b"caf\xe9.jsonl")  # Latin-1 bytes on a Linux file system
    write_jsonl(folder / name, CHATS)
    config = tmp_path / "c.yaml"
    config.write_text("tokenizer_config: fixture:qwen2.5\nchat_template: chatml\n"
                      "datasets:\n  - path: data\n    type: chat_template\n")
    proc = subprocess.run([sys.executable, "-m", "dataprep.cli", "prepare", str(config), "--out", str(tmp_path / "o")],
                          cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    source = pl.read_parquet(tmp_path / "o" / "samples.parquet")["source_file"].unique().to_list()
    assert source == ["data/caf\\xe9.jsonl"]
    assert "wrote" in proc.stdout
    bad_out = os.fsdecode(b"out\xe9")
    proc = subprocess.run([sys.executable, "-m", "dataprep.cli", "prepare", str(config), "--out", bad_out],
                          cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 1 and proc.stderr == ("error: --out (or dataset_prepared_path) 'out\\xe9' is not a "
                                                    "UTF-8 name, which Arrow, tokenizers and DuckDB cannot open; "
                                                    "rename it\n")


def test_a_parquet_file_name_that_is_not_utf8_is_a_one_line_error(tmp_path: Path, prepare: Prepare) -> None:
    (tmp_path / "pq").mkdir()
    with open(tmp_path / "pq" / os.fsdecode(b"d\xe9.parquet"), "wb") as f:
        pq.write_table(pa.table({"text": ["hello"]}), f)
    with pytest.raises(InputError, match=r"d\\xe9\.parquet: the file name is not UTF-8, which Arrow cannot open; "
                                         "rename the file"):
        prepare({"datasets": [{"path": "pq", "type": "completion"}]})


# ---- shard names from a manifest -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "shards/../../x.arrow", ""])
def test_shard_names_cannot_leave_the_directory(tmp_path: Path, name: str) -> None:
    with pytest.raises(ShardPathError, match="not a path inside the directory"):
        shard_path(tmp_path, name)


def test_query_refuses_a_manifest_that_points_outside(tmp_path: Path, prepared: Path) -> None:
    copy = tmp_path / "p"
    shutil.copytree(prepared, copy)
    assert shard_path(copy, "shards/train-00000.arrow") == copy / "shards" / "train-00000.arrow"
    outside = tmp_path / "outside.arrow"
    shutil.copy(copy / "shards" / "train-00000.arrow", outside)
    (copy / "shards" / "link.arrow").symlink_to(outside)
    manifest = json.loads((copy / "manifest.json").read_text())
    for name, message in (("../outside.arrow", "not a path inside"), ("shards/link.arrow", "outside")):
        manifest["shards"][0]["file"] = name
        (copy / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(QueryError, match=message):
            connect(copy)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for command in (["query", str(copy), "select 1"], ["inspect", str(copy), "--row", "0", "--shard", "link.arrow"]):
        proc = subprocess.run([sys.executable, "-m", "dataprep.cli", *command], capture_output=True, text=True, env=env)
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "outside" in proc.stderr, proc.stderr
