"""Every sql/*.sql file, run on the small prepared fixture (tests/sql/fixture.py), against answers that are
known by construction or computed here independently: from the shard files with pyarrow/numpy, from the
parquet tables with polars, and token text with the `tokenizers` library, never by running the same SQL.

    .venv/bin/python -m pytest tests/sql/test_queries.py -v
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.ipc as ipc
import pytest
from tokenizers import Tokenizer

from dataprep.look.query import SQL_DIR, connect, header, named_params, run_file
from tests.sql.fixture import (
    CONTAINING_CAPITAL,
    CONTAINING_NIHAO,
    DROPPED,
    DUPLICATES,
    MISSING_END_OF_TURN,
    QUARANTINED,
    SEQUENCE_LEN,
    location,
)

IGNORE = -100
TESTED = {"summary", "token_length_histogram", "trained_share_by_source", "packing_efficiency",
          "quarantine_reasons", "duplicate_clusters", "longest_samples", "frequent_tokens", "missing_end_of_turn",
          "samples_containing_text",
          "near_duplicate_clusters"}  # on a near-dedup output: tests/dataprep/test_near_dedup.py


@pytest.fixture(scope="module")
def con(prepared: Path) -> Any:
    return connect(prepared)


@pytest.fixture(scope="module")
def samples(prepared: Path) -> pl.DataFrame:
    return pl.read_parquet(prepared / "samples.parquet")


@pytest.fixture(scope="module")
def shard_rows(prepared: Path) -> list[dict[str, Any]]:
    """Every packed row, read straight from the Arrow files, with its shard name."""
    rows = []
    for f in sorted((prepared / "shards").glob("*.arrow")):
        for r in ipc.open_file(f).read_all().to_pylist():
            rows.append({"shard": f"shards/{f.name}", "split": f.name.split("-")[0], **r})
    return rows


@pytest.fixture(scope="module")
def per_sample(shard_rows: list[dict[str, Any]]) -> dict[int, dict[str, np.ndarray]]:
    """sample_id -> its ids and labels, cut out of the packed rows with cu_seqlens."""
    out = {}
    for r in shard_rows:
        cu = r["cu_seqlens"]
        for k, sid in enumerate(r["sample_ids"]):
            out[sid] = {"ids": np.array(r["input_ids"][cu[k]:cu[k + 1]]),
                        "labels": np.array(r["labels"][cu[k]:cu[k + 1]])}
    return out


@pytest.fixture(scope="module")
def tok(prepared: Path) -> Tokenizer:
    return Tokenizer.from_file(str(prepared / "tokenizer" / "tokenizer.json"))


def where(samples: pl.DataFrame, sample_id: int) -> tuple[str, int]:
    rec = samples.filter(pl.col("sample_id") == sample_id).row(0, named=True)
    return location(rec["source_file"], rec["source_row"])


def test_every_library_file_is_tested_and_says_what_it_answers() -> None:
    files = {p.stem: p.read_text() for p in SQL_DIR.glob("*.sql")}
    assert set(files) == TESTED
    for name, sql in files.items():
        assert len(header(sql)) > 40, f"sql/{name}.sql: start with a -- comment saying what it answers"
        assert f"sql/{name}.sql" in header(sql), f"sql/{name}.sql: the header shows how to run it"
        assert not re.search(r"\b(SELECT|FROM|WHERE|GROUP BY|ORDER BY|JOIN|WITH)\b", sql), \
            f"sql/{name}.sql: lowercase keywords (STYLE.md F)"


def test_summary(con: Any, samples: pl.DataFrame, shard_rows: list[dict[str, Any]]) -> None:
    got = run_file(con, "summary").to_pylist()
    assert len(got) == 1
    s = got[0]
    status = Counter(samples["status"].to_list())
    # Known by construction: 18 rows, 6 quarantined, 3 duplicates, 1 too long.
    assert (s["input_rows"], s["quarantined"], s["duplicates"], s["dropped"]) == (18, 6, 3, 1)
    assert s["kept"] == status["kept"] == 8
    tokens = sum(len(r["input_ids"]) for r in shard_rows)
    trained = sum(sum(label != IGNORE for label in r["labels"]) for r in shard_rows)
    assert s["packed_samples"] == sum(len(r["sample_ids"]) for r in shard_rows) == s["kept"]
    assert s["packed_rows"] == len(shard_rows)
    assert s["train_rows"] == sum(r["split"] == "train" for r in shard_rows)
    assert s["val_rows"] == sum(r["split"] == "val" for r in shard_rows)
    assert (s["tokens"], s["trained_tokens"]) == (tokens, trained)
    assert s["trained_share"] == pytest.approx(trained / tokens, abs=1e-4)
    assert s["sequence_len"] == SEQUENCE_LEN
    assert s["packing_efficiency"] == pytest.approx(tokens / (len(shard_rows) * SEQUENCE_LEN), abs=1e-4)
    assert s["longest_sample"] == samples.filter(pl.col("status") == "kept")["num_tokens"].max()
    assert s["truncated"] == 0


def test_token_length_histogram(con: Any, per_sample: dict[int, dict[str, np.ndarray]]) -> None:
    got = run_file(con, "token_length_histogram").to_pylist()
    lengths = [len(s["ids"]) for s in per_sample.values()]
    trained = [int((s["labels"] != IGNORE).sum()) for s in per_sample.values()]
    longest = max(lengths)
    raw = max(longest / 20, 1)
    mag = 10 ** math.floor(math.log10(raw))
    width = next(m * mag for m in (1, 2, 5, 10) if raw <= m * mag)
    assert width == 5  # longest kept sample is 45 tokens: 45 / 20 = 2.25 -> 5
    starts = list(range(0, (longest // width + 1) * width, width))
    assert [r["tokens_from"] for r in got] == starts
    assert all(r["tokens_to"] - r["tokens_from"] == width for r in got)
    assert [r["samples_by_length"] for r in got] == [sum(s <= n < s + width for n in lengths) for s in starts]
    assert [r["samples_by_trained"] for r in got] == [sum(s <= n < s + width for n in trained) for s in starts]
    assert sum(r["samples_by_length"] for r in got) == len(per_sample)


def test_trained_share_by_source(con: Any, samples: pl.DataFrame,
                                 per_sample: dict[int, dict[str, np.ndarray]]) -> None:
    got = run_file(con, "trained_share_by_source").to_pylist()
    assert [Path(r["source_file"]).name for r in got] == ["alpaca.jsonl", "chat.jsonl", "io.jsonl"]  # config order
    for r in got:
        rows = samples.filter(pl.col("source_file") == r["source_file"])
        status = Counter(rows["status"].to_list())
        assert (r["rows_in"], r["kept"], r["quarantined"], r["duplicates"], r["dropped"]) == (
            len(rows), status["kept"], status["quarantined"], status["duplicate"], status["dropped"])
        kept_ids = rows.filter(pl.col("status") == "kept")["sample_id"].to_list()
        tokens = sum(len(per_sample[i]["ids"]) for i in kept_ids)
        trained = sum(int((per_sample[i]["labels"] != IGNORE).sum()) for i in kept_ids)
        assert (r["tokens"], r["trained_tokens"]) == (tokens, trained)
        assert r["trained_share"] == pytest.approx(trained / tokens, abs=1e-4)
        assert r["mean_tokens"] == pytest.approx(tokens / len(kept_ids), abs=0.05)
    assert [(Path(r["source_file"]).name, r["rows_in"]) for r in got] == [
        ("alpaca.jsonl", 8), ("chat.jsonl", 8), ("io.jsonl", 2)]


def test_packing_efficiency(con: Any, shard_rows: list[dict[str, Any]]) -> None:
    got = {r["shard"]: r for r in run_file(con, "packing_efficiency").to_pylist()}
    assert list(got) == sorted(got) == ["shards/train-00000.arrow", "shards/val-00000.arrow"]
    for shard, r in got.items():
        rows = [x for x in shard_rows if x["shard"] == shard]
        lengths = [len(x["input_ids"]) for x in rows]
        samples = sum(len(x["sample_ids"]) for x in rows)
        assert (r["rows"], r["samples"], r["tokens"]) == (len(rows), samples, sum(lengths))
        assert r["trained_tokens"] == sum(sum(label != IGNORE for label in x["labels"]) for x in rows)
        assert r["capacity"] == len(rows) * SEQUENCE_LEN
        assert r["efficiency"] == pytest.approx(sum(lengths) / (len(rows) * SEQUENCE_LEN), abs=1e-4)
        assert r["samples_per_row"] == pytest.approx(samples / len(rows), abs=0.005)
        assert (r["emptiest_row"], r["fullest_row"]) == (min(lengths), max(lengths))
        assert r["split"] == shard.removeprefix("shards/").split("-")[0]


def test_quarantine_reasons(con: Any) -> None:
    got = run_file(con, "quarantine_reasons").to_pylist()
    expected = Counter(QUARANTINED.values())
    assert {r["reason"]: r["rows"] for r in got} == expected
    # Most frequent first, then by name: malformed_json (2) leads.
    assert [r["reason"] for r in got] == sorted(expected, key=lambda k: (-expected[k], k))
    assert sum(r["share"] for r in got) == pytest.approx(1.0, abs=1e-3)
    for r in got:
        file, _, row = r["example_location"].rpartition(":")
        # The example is the reason's first row in input order.
        first = min((k for k, v in QUARANTINED.items() if v == r["reason"]),
                    key=lambda k: (["alpaca.jsonl", "chat.jsonl"].index(k[0]), k[1]))
        assert (Path(file).name, int(row)) == first
        assert r["example_message"]
    malformed = next(r for r in got if r["reason"] == "malformed_json")
    assert malformed["example_original"] == '{"instruction": "Broken row", "output": "x"'
    assert next(r for r in got if r["reason"] == "missing_field")["example_field"] == "output"


def test_duplicate_clusters(con: Any, samples: pl.DataFrame) -> None:
    got = run_file(con, "duplicate_clusters").to_pylist()
    clusters = {where(samples, r["kept_sample_id"]): r for r in got}
    assert set(clusters) == set(DUPLICATES)
    for kept, copies in DUPLICATES.items():
        r = clusters[kept]
        assert r["copies"] == len(copies)
        assert [where(samples, i) for i in r["duplicate_ids"]] == copies
        assert [location(*loc.rsplit(":", 1)) for loc in r["duplicate_locations"]] == copies
        assert location(*r["kept_location"].rsplit(":", 1)) == kept
        # exact copies: cluster named by the kept sample, similarity 1.0
        assert (r["kinds"], r["min_similarity"], r["cluster_id"]) == (["exact"], 1.0, r["kept_sample_id"])
    assert [r["copies"] for r in got] == [2, 1]  # largest cluster first


def test_longest_samples(con: Any, samples: pl.DataFrame) -> None:
    got = run_file(con, "longest_samples").to_pylist()
    expected = (samples.filter(pl.col("num_tokens").is_not_null())
                .sort(["num_tokens", "sample_id"], descending=[True, False]).head(20))
    assert [r["sample_id"] for r in got] == expected["sample_id"].to_list()
    assert [r["num_tokens"] for r in got] == expected["num_tokens"].to_list()
    # The row that was too long is the longest, and shows as dropped with no shard.
    top = got[0]
    assert {location(*top["location"].rsplit(":", 1))} == DROPPED
    assert (top["status"], top["reason"], top["shard"]) == ("dropped", "too_long", None)
    kept = [r for r in got if r["status"] == "kept"]
    assert all(r["shard"] and r["shard_row"] is not None for r in kept)


def test_frequent_tokens(con: Any, shard_rows: list[dict[str, Any]], tok: Tokenizer) -> None:
    got = run_file(con, "frequent_tokens").to_pylist()
    ids = np.concatenate([np.array(r["input_ids"]) for r in shard_rows])
    labels = np.concatenate([np.array(r["labels"]) for r in shard_rows])
    for trained in (True, False):
        mask = (labels != IGNORE) if trained else (labels == IGNORE)
        counts = Counter(ids[mask].tolist())
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:15]
        rows = [r for r in got if r["trained"] is trained]
        assert [(r["token_id"], r["count"]) for r in rows] == top
        assert [r["rank"] for r in rows] == list(range(1, len(top) + 1))
        for r in rows:
            assert r["share"] == pytest.approx(r["count"] / mask.sum(), abs=1e-4)
            assert r["special"] == (r["token_id"] in (151643, 151644, 151645))
            text = tok.decode([r["token_id"]], skip_special_tokens=False)
            if "\ufffd" not in text:
                assert r["text"] == text.replace(" ", "␣")
    assert [r["trained"] for r in got] == sorted((r["trained"] for r in got), reverse=True)
    # The end-of-turn token is trained (train_on_eos: turn, and alpaca's eos) and among the top trained tokens.
    assert 151645 in [r["token_id"] for r in got if r["trained"]]


def test_missing_end_of_turn(con: Any, samples: pl.DataFrame, per_sample: dict[int, dict[str, np.ndarray]],
                             tok: Tokenizer) -> None:
    got = run_file(con, "missing_end_of_turn").to_pylist()
    assert {location(*r["location"].rsplit(":", 1)) for r in got} == MISSING_END_OF_TURN
    end_of_turn = {tok.token_to_id("<|im_end|>")}
    independent = {sid for sid, s in per_sample.items()
                   if int(s["ids"][np.flatnonzero(s["labels"] != IGNORE)[-1]]) not in end_of_turn}
    assert {r["sample_id"] for r in got} == independent
    madrid = next(r for r in got if location(*r["location"].rsplit(":", 1)) == ("io.jsonl", 1))
    assert madrid["last_trained_text"] == tok.decode([madrid["last_trained_id"]])
    assert madrid["last_trained_text"].strip() == "Madrid"


@pytest.mark.parametrize(("text", "expected"), [("capital", CONTAINING_CAPITAL), ("CAPITAL", CONTAINING_CAPITAL),
                                                ("你好", CONTAINING_NIHAO), ("no such text anywhere", set())])
def test_samples_containing_text(con: Any, samples: pl.DataFrame, per_sample: dict[int, dict[str, np.ndarray]],
                                 tok: Tokenizer, text: str, expected: set[tuple[str, int]]) -> None:
    got = run_file(con, "samples_containing_text", {"text": text}).to_pylist()
    assert {location(*r["location"].rsplit(":", 1)) for r in got} == expected
    decoded = {sid: tok.decode(s["ids"].tolist(), skip_special_tokens=False) for sid, s in per_sample.items()}
    assert [r["sample_id"] for r in got] == sorted(sid for sid, t in decoded.items() if text.lower() in t.lower())
    for r in got:
        assert text.lower() in r["context"].lower()


def test_samples_containing_text_needs_its_parameter() -> None:
    assert named_params((SQL_DIR / "samples_containing_text.sql").read_text()) == ["text"]
    assert all(not named_params(p.read_text()) for p in SQL_DIR.glob("*.sql") if p.stem != "samples_containing_text")
