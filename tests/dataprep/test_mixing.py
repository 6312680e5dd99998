"""datasets[].weight through `tessera prepare` with the real Qwen2.5 tokenizer: exact counts, weighted_out rows
in the accounting, copies in the shards (unique sample_ids, repeat_of, the original's tokens), the val split
never sharing an input row with train, chunked completion rows weighted as one, determinism across worker
counts, reruns and seeds, the trainer's per-dataset mapping of copies, and shards byte-identical to those of
the code before weighting existed when every weight is 1.

    .venv/bin/python -m pytest tests/dataprep/test_mixing.py -v
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.ipc as ipc
import pytest
import torch
import yaml

from dataprep.look.html_report import build as build_report
from dataprep.look.inspect_tokens import InspectError, find_sample
from dataprep.pipeline import PrepareError, Result, run_pipeline
from dataprep.report import Progress, summary_lines
from schemas.config import ConfigError, load_config
from tests.conftest import write_jsonl
from train.data import open_prepared

ROOT = Path(__file__).resolve().parents[2]
ALPACA = [{"instruction": f"Add {i} and {i + 1}.", "input": "", "output": f"{2 * i + 1}"} for i in range(40)]
CHATS = [{"messages": [{"role": "user", "content": f"Name the number after {i}."},
                       {"role": "assistant", "content": f"It is {i + 1}."}]} for i in range(10)]
# Completion rows of ~100-250 tokens: at sequence_len 64 each is cut into 2-4 chunks.
LONG = [{"text": " ".join(f"w{i}x{k}" for k in range(30 + 10 * i))} for i in range(12)]


def write_data(folder: Path) -> None:
    write_jsonl(folder / "alpaca.jsonl", ALPACA)
    write_jsonl(folder / "chat.jsonl", CHATS)
    write_jsonl(folder / "long.jsonl", LONG)


def mixed_config(**top: Any) -> dict[str, Any]:
    return {"datasets": [{"path": "alpaca.jsonl", "type": "alpaca", "weight": 0.3},
                         {"path": "chat.jsonl", "type": "chat_template", "weight": 2.5},
                         {"path": "long.jsonl", "type": "completion", "weight": 1.5}],
            "chat_template": "chatml", "sequence_len": 64, "sample_packing": True, "val_set_size": 0.2, **top}


def run(folder: Path, config: dict[str, Any], qwen_dir: Path, out: str = "out", workers: int = 1) -> Result:
    folder.mkdir(parents=True, exist_ok=True)
    write_data(folder)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({"tokenizer_config": str(qwen_dir), **config}, sort_keys=False))
    return run_pipeline(load_config(path), path, folder / out, workers=workers, force=True,
                        progress=Progress(enabled=False))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory, qwen_dir: Path) -> Result:
    return run(tmp_path_factory.mktemp("mixed"), mixed_config(), qwen_dir)


def shard_samples(result: Result) -> dict[int, tuple[str, np.ndarray, np.ndarray]]:
    """sample_id -> (split, input_ids, labels), read back from the shards."""
    out = {}
    for info in result.manifest["shards"]:
        table = ipc.open_file(result.out / info["file"]).read_all()
        for ids, labels, cu, sids in zip(*(table.column(c).to_pylist() for c in
                                           ("input_ids", "labels", "cu_seqlens", "sample_ids")), strict=True):
            for k, sid in enumerate(sids):
                assert sid not in out, f"sample {sid} is in the shards twice"
                out[sid] = (info["split"], np.array(ids[cu[k]:cu[k + 1]]), np.array(labels[cu[k]:cu[k + 1]]))
    return out


def hashes(result: Result) -> dict[str, str]:
    return {s["file"]: s["sha256"] for s in result.manifest["shards"]}


def test_weights_give_exact_counts_and_the_accounting_balances(mixed: Result) -> None:
    m = mixed.manifest
    acc, stats = m["accounting"], m["stats"]
    assert acc["balanced"] and acc["input_rows"] == 40 + 10 + 12
    assert (acc["kept"], acc["dropped"]) == (12 + 10 + 12, 28)  # round(0.3 * 40) = 12 alpaca rows kept
    assert stats["by_reason"] == {"weighted_out": 28}
    assert stats["per_dataset"]["alpaca.jsonl"]["kept"] == 12
    assert stats["per_dataset"]["alpaca.jsonl"]["dropped"] == 28
    samples = pl.read_parquet(mixed.out / "samples.parquet")
    input_rows = samples.filter(pl.col("repeat_of").is_null() & (pl.col("chunk").fill_null(0) == 0))
    assert len(input_rows) == acc["input_rows"]
    assert input_rows.group_by("status").len().sort("status").rows() == [("dropped", 28), ("kept", 34)]
    out = samples.filter(pl.col("reason") == "weighted_out")
    assert set(out["dataset"]) == {"alpaca.jsonl"} and out["shard"].null_count() == len(out) == 28
    assert out["split"].null_count() == 28
    # Copies: chat 2.5 x 10 = 25 appearances (15 copies); long 1.5 x 12 = 18 rows (6 copied, with their chunks).
    copies = samples.filter(pl.col("repeat_of").is_not_null())
    per_dataset = dict(copies.filter(pl.col("chunk").fill_null(0) == 0).group_by("dataset").len().rows())
    assert per_dataset == {"chat.jsonl": 15, "long.jsonl": 6}
    assert stats["repeated_samples"] == len(copies)
    first_copy = samples.filter(pl.col("repeat_of").is_null())["sample_id"].max() + 1
    assert copies["sample_id"].to_list() == list(range(first_copy, first_copy + len(copies)))
    assert samples["sample_id"].n_unique() == len(samples)
    chat_times = (samples.filter((pl.col("dataset") == "chat.jsonl") & (pl.col("status") == "kept"))
                  .group_by("source_row").len()["len"].sort().to_list())
    assert chat_times == [2] * 5 + [3] * 5  # the fractional 50% is five distinct rows
    # Per dataset, tokens are what is in the shards, copies included.
    assert sum(d["tokens"] for d in stats["per_dataset"].values()) == stats["tokens"]
    assert stats["chunked_rows"] == 12
    mixing = stats["mixing"]
    assert [mixing[d]["samples_after"] for d in ("alpaca.jsonl", "chat.jsonl")] == [12, 25]
    # stats.mixing counts input rows (a chunked row once): 12 long rows x 1.5 = 18
    assert (mixing["long.jsonl"]["samples_before"], mixing["long.jsonl"]["samples_after"]) == (12, 18)
    assert [r["name"] for r in m["stages"]] == ["exact_dedup", "mix", "split", "pack"]
    assert m["stages"][1]["rejected_by_reason"] == {"weighted_out": 28}


def test_copies_are_in_the_shards_with_the_originals_tokens(mixed: Result) -> None:
    samples = pl.read_parquet(mixed.out / "samples.parquet")
    packed = shard_samples(mixed)
    kept = samples.filter(pl.col("status") == "kept")
    assert sorted(packed) == sorted(kept["sample_id"].to_list())
    for copy in kept.filter(pl.col("repeat_of").is_not_null()).iter_rows(named=True):
        original = packed[copy["repeat_of"]]
        assert np.array_equal(packed[copy["sample_id"]][1], original[1])
        assert np.array_equal(packed[copy["sample_id"]][2], original[2])
    stats = mixed.manifest["stats"]
    for name in ("alpaca.jsonl", "chat.jsonl"):  # rows not cut into chunks: row and shard counts agree
        in_shards = kept.filter(pl.col("dataset") == name)["num_trainable"].sum()
        assert stats["mixing"][name]["trained_tokens_after"] == in_shards
    assert sum(m["share_after"] for m in stats["mixing"].values()) == pytest.approx(1.0, abs=1e-5)


def test_val_never_shares_an_input_row_with_train(mixed: Result) -> None:
    samples = pl.read_parquet(mixed.out / "samples.parquet").filter(pl.col("status") == "kept")
    splits = samples.group_by("source_file", "source_row").agg(pl.col("split").n_unique().alias("splits"))
    assert splits["splits"].max() == 1
    assert set(samples["split"]) == {"train", "val"}
    by_id = dict(zip(samples["sample_id"], samples["split"], strict=True))
    copies = samples.filter(pl.col("repeat_of").is_not_null())
    assert all(by_id[c["repeat_of"]] == c["split"] for c in copies.iter_rows(named=True))
    assert "val" in set(copies["split"])  # copies of val rows are in val: the mixture is the same in both


def test_chunked_rows_are_weighted_and_copied_whole(mixed: Result) -> None:
    long = pl.read_parquet(mixed.out / "samples.parquet").filter(pl.col("dataset") == "long.jsonl")
    assert long["chunk"].null_count() == 0  # every long row was cut into chunks
    for rows in long.partition_by("source_row"):
        originals = rows.filter(pl.col("repeat_of").is_null()).sort("chunk")
        copies = rows.filter(pl.col("repeat_of").is_not_null()).sort("sample_id")
        assert len(copies) in (0, len(originals))
        if len(copies):
            assert copies["chunk"].to_list() == originals["chunk"].to_list()
            assert copies["repeat_of"].to_list() == originals["sample_id"].to_list()
            assert np.all(np.diff(copies["sample_id"].to_numpy()) == 1)  # consecutive, like the originals
            assert copies["split"].n_unique() == 1 and copies["split"][0] == originals["split"][0]


def test_chunked_rows_weighted_out_leave_every_count(tmp_path: Path, qwen_dir: Path) -> None:
    result = run(tmp_path, {"datasets": [{"path": "long.jsonl", "type": "completion", "weight": 0.5}],
                            "sequence_len": 64, "sample_packing": True}, qwen_dir)
    stats, acc = result.manifest["stats"], result.manifest["accounting"]
    assert acc["balanced"] and (acc["kept"], acc["dropped"]) == (6, 6) and stats["chunked_rows"] == 6
    samples = pl.read_parquet(result.out / "samples.parquet")
    kept = samples.filter(pl.col("status") == "kept")
    assert stats["samples"] == len(shard_samples(result)) == len(kept)
    assert stats["per_dataset"]["long.jsonl"]["tokens"] == stats["tokens"] == kept["num_tokens"].sum()
    out = samples.filter(pl.col("reason") == "weighted_out")
    # A row weighted out is one samples.parquet row, not cut into chunks (as any row a stage removes).
    assert out["source_row"].n_unique() == len(out) == 6 and out["chunk"].null_count() == 6


def test_deterministic_across_workers_and_reruns_seed_changes_selection(tmp_path: Path, qwen_dir: Path,
                                                                        mixed: Result) -> None:
    two = run(tmp_path / "two", mixed_config(), qwen_dir, workers=2)  # also a rerun of the `mixed` run
    assert hashes(two) == hashes(mixed)
    # samples.parquet too, but for source_file (each run reads its own copy of the data)
    assert pl.read_parquet(tmp_path / "two/out/samples.parquet").drop("source_file").equals(
        pl.read_parquet(mixed.out / "samples.parquet").drop("source_file"))
    assert two.manifest["stats"]["mixing"] == mixed.manifest["stats"]["mixing"]
    reseeded = run(tmp_path / "seed", mixed_config(seed=7), qwen_dir)

    def weighted_out(result: Result) -> set[int]:
        s = pl.read_parquet(result.out / "samples.parquet")
        return set(s.filter(pl.col("reason") == "weighted_out")["source_row"])

    assert len(weighted_out(reseeded)) == len(weighted_out(mixed)) == 28
    assert weighted_out(reseeded) != weighted_out(mixed)


def test_trainer_maps_copies_to_their_dataset(mixed: Result) -> None:
    data = open_prepared(mixed.out)
    samples = pl.read_parquet(mixed.out / "samples.parquet").filter(pl.col("status") == "kept")
    ids = torch.tensor([*samples["sample_id"].to_list(), -1], dtype=torch.int64)
    expected = [*samples["dataset_index"].to_list(), -1]
    assert data.token_datasets(ids).tolist() == expected
    copies = samples.filter(pl.col("repeat_of").is_not_null())
    mapped = data.token_datasets(torch.tensor(copies["sample_id"].to_list())).tolist()
    assert {data.dataset_names[i] for i in mapped} == {"chat.jsonl", "long.jsonl"}


def test_inspect_summary_and_report_show_mixing(mixed: Result) -> None:
    samples = pl.read_parquet(mixed.out / "samples.parquet")
    copy = samples.filter(pl.col("repeat_of").is_not_null()).row(0, named=True)
    assert find_sample(mixed.out, copy["sample_id"])["repeat_of"] == copy["repeat_of"]
    dropped = samples.filter(pl.col("reason") == "weighted_out")["sample_id"][0]
    with pytest.raises(InspectError, match="was dropped \\(weighted_out"):
        find_sample(mixed.out, dropped)
    lines = summary_lines(mixed.manifest)
    copies = mixed.manifest["stats"]["repeated_samples"]
    assert lines[-4].startswith(f"mixing: 28 rows weighted out, {copies} copies added;")
    assert any(line.startswith("  chat.jsonl (weight 2.5): 10 -> 25 rows") for line in lines)
    page = build_report(mixed.out)
    assert '<section id="mixing">' in page and "rows weighted out" in page


def test_every_weight_1_gives_the_shards_of_the_code_before_mixing(tmp_path: Path, qwen_dir: Path) -> None:
    # Recorded with the pipeline as it was before datasets[].weight existed (commit 6ea6575): alpaca, chat
    # (truncated at sequence_len 64), chunked completion rows and a pretrain stream, 10% validation.
    folder = tmp_path / "ones"
    folder.mkdir()
    write_jsonl(folder / "long.jsonl",
                [{"text": " ".join(f"word{i}_{k}" for k in range(30 + 7 * i))} for i in range(12)])
    write_jsonl(folder / "docs.jsonl",
                [{"text": " ".join(f"doc{i}_{k}" for k in range(5 + 9 * i))} for i in range(8)])
    datasets = [{"path": str(ROOT / "examples/data/alpaca.jsonl"), "type": "alpaca"},
                {"path": str(ROOT / "examples/data/chat.jsonl"), "type": "chat_template", "weight": 1},
                {"path": str(ROOT / "examples/data/sharegpt.jsonl"), "type": "chat_template"},
                {"path": "long.jsonl", "type": "completion", "weight": 1.0},
                {"path": "docs.jsonl", "type": "pretrain"}]
    path = folder / "c.yaml"
    path.write_text(yaml.safe_dump({"tokenizer_config": str(qwen_dir), "chat_template": "chatml",
                                    "datasets": datasets, "sequence_len": 64, "sample_packing": True,
                                    "val_set_size": 0.1, "excess_length_strategy": "truncate"}))
    result = run_pipeline(load_config(path), path, folder / "prep", progress=Progress(enabled=False))
    assert hashes(result) == {
        "shards/train-00000.arrow": "5b98d502e9395becef78a1fb84c1f5b5680ae33428e5710d98e65eb1ec4384c4",
        "shards/val-00000.arrow": "788fb021f3d14ca7dee932cddbe298b8dc69e7c15707caf82d776b9be3075a50",
    }
    stats = result.manifest["stats"]
    assert stats["repeated_samples"] == 0 and "weighted_out" not in stats["by_reason"]
    assert all(m["samples_before"] == m["samples_after"] for m in stats["mixing"].values())
    assert not [line for line in summary_lines(result.manifest) if line.startswith("mixing")]
    assert pl.read_parquet(result.out / "samples.parquet")["repeat_of"].null_count() == stats["samples"] + sum(
        result.manifest["accounting"][k] for k in ("quarantined", "duplicates", "dropped"))


def test_weight_errors(tmp_path: Path, qwen_dir: Path) -> None:
    with pytest.raises(PrepareError, match="no row was kept after the stages"):
        run(tmp_path / "none", {"datasets": [{"path": "chat.jsonl", "type": "chat_template", "weight": 0.01}],
                                "chat_template": "chatml"}, qwen_dir)
    for weight, message in [(0, "greater than 0"), (101, "less than or equal to 100")]:
        path = tmp_path / "bad.yaml"
        path.write_text(json.dumps({"tokenizer_config": str(qwen_dir),
                                    "datasets": [{"path": "a.jsonl", "type": "alpaca", "weight": weight}]}))
        with pytest.raises(ConfigError, match=rf"datasets\[0\]\.weight: Input should be {message}"):
            load_config(path)


def test_pretrain_documents_are_weighted_whole_and_the_stream_stays_full(tmp_path: Path, qwen_dir: Path) -> None:
    write_jsonl(tmp_path / "docs.jsonl", [{"text": " ".join(f"d{i}x{k}" for k in range(5 + 9 * i))}
                                          for i in range(10)])
    result = run(tmp_path, {"datasets": [{"path": "chat.jsonl", "type": "chat_template"}],
                            "pretraining_dataset": [{"path": "docs.jsonl", "weight": 2}],
                            "sequence_len": 64, "sample_packing": True}, qwen_dir)
    samples = pl.read_parquet(result.out / "samples.parquet").filter(pl.col("dataset") == "docs.jsonl")
    copies = samples.filter(pl.col("repeat_of").is_not_null())
    assert copies["source_row"].n_unique() == 10  # every document once more
    firsts = dict(samples.filter(pl.col("repeat_of").is_null() & (pl.col("chunk").fill_null(0) == 0))
                  .select("source_row", "sample_id").iter_rows())
    # A copy is cut at other places in the stream: each of its pieces names the document's first sample.
    assert all(firsts[r["source_row"]] == r["repeat_of"] for r in copies.iter_rows(named=True))
    originals = samples.filter(pl.col("repeat_of").is_null())["num_tokens"].sum()
    assert copies["num_tokens"].sum() == originals
    # The stream (documents, then their copies) is cut into rows of exactly sequence_len, the last one aside.
    table = ipc.open_file(result.out / "shards/train-00000.arrow").read_all()
    stream_ids = set(samples["sample_id"])
    lengths = [n for n, ids in zip(table.column("num_tokens").to_pylist(), table.column("sample_ids").to_pylist(),
                                   strict=True) if set(ids) <= stream_ids]
    assert sum(lengths) == 2 * originals and all(n == 64 for n in lengths[:-1])
