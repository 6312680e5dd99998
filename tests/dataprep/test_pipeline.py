"""The prepared directory as a whole: inputs of every file type, accounting, determinism (also across worker
counts), the cache and its invalidation, atomic output, and the validation split.

    .venv/bin/python -m pytest tests/dataprep/test_pipeline.py -v
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from dataprep import pipeline
from dataprep.load import InputError
from schemas.shard import SHARD_SCHEMA
from tests.conftest import Prepare, write_jsonl

ROOT = Path(__file__).resolve().parents[2]
ALPACA = [{"instruction": f"Add {i} and {i + 1}.", "input": "", "output": f"{2 * i + 1}"} for i in range(40)]
CHATS = [{"messages": [{"role": "user", "content": f"Count to {i}."},
                       {"role": "assistant", "content": " ".join(str(k) for k in range(1, i + 2))}]}
         for i in range(60)]


def demo_config() -> dict:
    return {"datasets": [{"path": str(ROOT / "examples/data/alpaca.jsonl"), "type": "alpaca"},
                         {"path": str(ROOT / "examples/data/chat.jsonl"), "type": "chat_template"},
                         {"path": str(ROOT / "examples/data/sharegpt.jsonl"), "type": "chat_template"}],
            "sequence_len": 1024, "sample_packing": True, "val_set_size": 0.05}


def shard_hashes(out: Path) -> dict[str, str]:
    return {s["file"]: s["sha256"] for s in json.loads((out / "manifest.json").read_text())["shards"]}


def test_demo_accounting_and_outputs(prepare: Prepare) -> None:
    result = prepare(demo_config())
    acc = result.manifest["accounting"]
    assert acc["balanced"] and acc["input_rows"] == 327
    samples = pl.read_parquet(result.out / "samples.parquet")
    assert len(samples) == acc["input_rows"] and samples["sample_id"].to_list() == list(range(327))
    kept = samples.filter(pl.col("status") == "kept")
    assert kept["shard"].null_count() == 0 and len(kept) == acc["kept"]
    # Each kept sample sits exactly once in the shards, where samples.parquet says it is.
    tables = {s["file"]: ipc.open_file(result.out / s["file"]).read_all() for s in result.manifest["shards"]}
    placed = [sid for t in tables.values() for ids in t.column("sample_ids").to_pylist() for sid in ids]
    assert sorted(placed) == sorted(kept["sample_id"].to_list())
    for row in kept.head(20).iter_rows(named=True):
        sample_ids = tables[row["shard"]].column("sample_ids")[row["shard_row"]].as_py()
        cu = tables[row["shard"]].column("cu_seqlens")[row["shard_row"]].as_py()
        k = sample_ids.index(row["sample_id"])
        assert cu[k] == row["row_offset"] and cu[k + 1] - cu[k] == row["num_tokens"]
    assert all(t.schema.equals(SHARD_SCHEMA, check_metadata=True) for t in tables.values())
    stats = result.manifest["stats"]
    assert stats["tokens"] == kept["num_tokens"].sum()
    assert stats["rows_by_split"]["val"] > 0
    assert set(result.manifest) >= {"fingerprint", "config", "tokenizer", "chat_template", "shards", "accounting"}
    assert result.manifest["tokenizer"]["files"]["tokenizer.json"]


def test_saved_tokenizer_renders_like_the_shards(prepare: Prepare) -> None:
    from transformers import AutoTokenizer

    result = prepare(demo_config())
    saved = AutoTokenizer.from_pretrained(str(result.out / "tokenizer"))
    assert saved.chat_template == result.manifest["chat_template"]["text"]
    samples = pl.read_parquet(result.out / "samples.parquet")
    chats = samples.filter(pl.col("status") == "kept", pl.col("format") == "chat_template").head(25)
    lines = {f: (ROOT / f).read_text().splitlines() for f in chats["source_file"].unique()}
    for row in chats.iter_rows(named=True):
        record = json.loads(lines[row["source_file"]][row["source_row"]])
        messages = record.get("messages") or [
            {"role": {"human": "user", "gpt": "assistant"}[m["from"]], "content": m["value"]}
            for m in record["conversations"]]
        shard = ipc.open_file(result.out / row["shard"]).read_all()
        ids = shard.column("input_ids")[row["shard_row"]].as_py()
        start = row["row_offset"]
        assert ids[start:start + row["num_tokens"]] == saved.apply_chat_template(messages)["input_ids"]
    files = {p.name for p in (result.out / "tokenizer").iterdir()}
    assert files == set(result.manifest["tokenizer"]["saved"]) >= {"tokenizer.json", "tokenizer_config.json"}


def test_same_inputs_give_byte_identical_shards_with_1_or_2_workers(prepare: Prepare) -> None:
    one = prepare(demo_config(), out_name="one", workers=1)
    two = prepare(demo_config(), out_name="two", workers=2)
    again = prepare(demo_config(), out_name="again", workers=1)
    assert shard_hashes(one.out) == shard_hashes(two.out) == shard_hashes(again.out)
    for s in one.manifest["shards"]:
        assert (one.out / s["file"]).read_bytes() == (two.out / s["file"]).read_bytes()
    assert pl.read_parquet(one.out / "samples.parquet").equals(pl.read_parquet(two.out / "samples.parquet"))


def test_cache_is_reused_and_invalidated_by_template_text(tmp_path: Path, prepare: Prepare) -> None:
    write_jsonl(tmp_path / "chat.jsonl", CHATS)
    template = (ROOT / "dataprep/templates/chatml.jinja").read_text()
    cfg = {"chat_template": "jinja", "chat_template_jinja": template,
           "datasets": [{"path": "chat.jsonl", "type": "chat_template"}]}
    first = prepare(cfg)
    first_shards = shard_hashes(first.out)
    assert not first.cached
    second = prepare(cfg)
    assert second.cached and second.manifest["fingerprint"] == first.manifest["fingerprint"]
    # Only the template text changes (one extra newline per turn): rebuilt, different ids.
    changed = prepare({**cfg, "chat_template_jinja": template.replace("'<|im_end|>' + '\\n'",
                                                                      "'<|im_end|>' + '\\n\\n'")})
    assert not changed.cached and changed.manifest["fingerprint"] != first.manifest["fingerprint"]
    assert shard_hashes(changed.out) != first_shards


def test_cache_is_invalidated_by_data_and_config(tmp_path: Path, prepare: Prepare) -> None:
    write_jsonl(tmp_path / "chat.jsonl", CHATS)
    cfg = {"datasets": [{"path": "chat.jsonl", "type": "chat_template"}]}
    first = prepare(cfg)
    assert prepare(cfg, overrides=["micro_batch_size=8"]).cached  # trainer keys do not touch the data
    assert not prepare(cfg, overrides=["sequence_len=512"]).cached
    write_jsonl(tmp_path / "chat.jsonl", CHATS[:-1])
    rebuilt = prepare(cfg)
    assert not rebuilt.cached and rebuilt.manifest["accounting"]["input_rows"] == len(CHATS) - 1
    assert rebuilt.manifest["fingerprint"] != first.manifest["fingerprint"]


def test_crash_leaves_previous_output_untouched_and_no_partial_dir(tmp_path: Path, prepare: Prepare,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    write_jsonl(tmp_path / "chat.jsonl", CHATS)
    cfg = {"datasets": [{"path": "chat.jsonl", "type": "chat_template"}]}
    good = prepare(cfg)
    before = (good.out / "manifest.json").read_text()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pipeline, "write_split", boom)
    with pytest.raises(OSError, match="disk full"):
        prepare(cfg, force=True)
    assert (good.out / "manifest.json").read_text() == before
    assert sorted(p.name for p in (tmp_path / ".tessera.out").iterdir()) == ["lock", good.out.readlink().name]
    with pytest.raises(OSError):
        prepare(cfg, out_name="fresh")
    assert not (tmp_path / "fresh").exists()


def test_every_file_type_directory_and_glob(tmp_path: Path, prepare: Prepare) -> None:
    rows = ALPACA[:10]
    write_jsonl(tmp_path / "d/a.jsonl", rows)
    (tmp_path / "d/b.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d/c.parquet")
    pl.DataFrame(rows).write_csv(tmp_path / "d/e.csv")
    with ipc.new_file(tmp_path / "d/f.arrow", pa.Table.from_pylist(rows).schema) as w:
        w.write_table(pa.Table.from_pylist(rows))
    result = prepare({"datasets": [{"path": "d", "type": "alpaca"}, {"path": "d/*.parquet", "type": "alpaca"}],
                      "dataset_exact_deduplication": False})
    per_file = pl.read_parquet(result.out / "samples.parquet").group_by("source_file").len().sort("source_file")
    assert [Path(f).name for f in per_file["source_file"]] == ["a.jsonl", "b.json", "c.parquet", "e.csv", "f.arrow"]
    assert per_file["len"].to_list() == [10, 10, 20, 10, 10]
    assert result.manifest["accounting"]["kept"] == 60
    # All five files hold the same rows, so with dedup on only the first file's survive.
    deduped = prepare({"datasets": [{"path": "d", "type": "alpaca"}]}, out_name="dedup")
    assert deduped.manifest["accounting"]["kept"] == 10 and deduped.manifest["accounting"]["duplicates"] == 40


def test_missing_input_is_an_error_before_any_row(tmp_path: Path, prepare: Prepare) -> None:
    with pytest.raises(InputError, match=r"not found.*fix `path`"):
        prepare({"datasets": [{"path": "nope.jsonl", "type": "alpaca"}]})


def test_validation_split_is_deterministic_and_sized(tmp_path: Path, prepare: Prepare) -> None:
    write_jsonl(tmp_path / "chat.jsonl", CHATS)
    frac = prepare({"datasets": [{"path": "chat.jsonl", "type": "chat_template"}], "val_set_size": 0.1})
    count = prepare({"datasets": [{"path": "chat.jsonl", "type": "chat_template"}], "val_set_size": 7},
                    out_name="count")
    val = lambda r: pl.read_parquet(r.out / "samples.parquet").filter(pl.col("split") == "val")  # noqa: E731
    assert len(val(frac)) == 6 and len(val(count)) == 7
    # The 6 chosen by fraction are the first 6 of the 7 chosen by count: same hash order.
    assert set(val(frac)["sample_id"]) <= set(val(count)["sample_id"])
    assert {s["split"] for s in count.manifest["shards"]} == {"train", "val"}
