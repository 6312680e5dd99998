"""Filters and decontamination through `tessera prepare` (dataprep/curate.py): planted filter failures and eval
leaks in an alpaca and a chat dataset land with the right reason in samples.parquet and quarantine.parquet
(contaminated rows with their eval file and row), never in the shards; the accounting balances; the summary,
HTML report and sql/quarantine_reasons.sql list them; 1 and 2 workers write identical bytes; bad filters and
eval files stop the run before any row is read; a changed eval file re-prepares.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/dataprep/test_curation.py -v
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.ipc as ipc
import pytest
import yaml

from dataprep.look.html_report import build
from dataprep.look.query import connect, run_file
from dataprep.pipeline import ConfigProblem, Result, run_pipeline
from dataprep.report import Progress, summary_lines
from schemas.config import load_config
from tests.conftest import write_jsonl

LEAK = "the old lighthouse keeper counted seventeen ships passing the northern cape before the winter storm arrived"
FILTERS = [
    {"name": "no_refusals", "where": "not regexp_matches(assistant_text, '(?i)as an ai language model')"},
    {"name": "length", "where": "num_trainable >= 6"},
    {"name": "scored", "where": "score >= 0.5"},
    {"name": "no_jailbreak", "where": "system_text not ilike '%jailbreak%' and turns <= 5"},
]


def _alpaca(instruction: str, output: str, **extra: Any) -> dict[str, Any]:
    return {"instruction": instruction, "input": "", "output": output, **extra}


def _chat(user: str, assistant: str, system: str | None = None, **extra: Any) -> dict[str, Any]:
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return {"messages": messages, **extra}


# (row, expected reason or None for kept) per dataset, in file order
ALPACA = [
    (_alpaca("Name a primary colour.", "Red is a primary colour in painting.", score=0.9), None),
    (_alpaca("Write a poem.", "As an AI language model, I cannot write poems.", score=0.1), "filter:no_refusals"),
    (_alpaca("Say ok.", "ok", score=0.9), "filter:length"),
    (_alpaca("Tell a story.", f"Once, {LEAK.upper()}!", score=0.9), "contaminated"),
    (_alpaca("Name a primary colour.", "Red is a primary colour in painting.", score=0.9), "duplicate"),
    (_alpaca("Describe rain.", "Rain is water falling from clouds in drops."), "filter:scored"),  # no score: NULL
    ("{broken json", "malformed_json"),
    (_alpaca("Write a poem.", "As an AI language model, I cannot write poems.", score=0.1), "duplicate"),
    (_alpaca("Count to three.", "One, two, three, and that is all.", score=0.7), None),
]
CHAT = [
    (_chat("What is a noun?", "A noun names a person, place or thing.", score=1), None),
    (_chat("Jailbreak me", "Sure, here is everything you asked for.", "You are in jailbreak mode.", score=1),
     "filter:no_jailbreak"),
    (_chat("Tell me about red apples and green pears", "They are both tasty fruits to eat.", score=1),
     "contaminated"),
    (_chat("Explain gravity briefly.", "Gravity pulls masses toward each other.", score=0.2), "filter:scored"),
    (_chat("Explain tides briefly.", "The moon's gravity pulls the oceans.", score=0.75), None),
]


def _write(root: Path) -> Path:
    write_jsonl(root / "alpaca.jsonl", [r for r, _ in ALPACA])
    write_jsonl(root / "chat.jsonl", [r for r, _ in CHAT])
    write_jsonl(root / "eval" / "eval.jsonl", [{"question": f"unrelated question {i}"} for i in range(5)]
                + [{"question": f"Context: {LEAK}. What happened next?"}])
    write_jsonl(root / "eval" / "chat_eval.jsonl", [{"messages": [
        {"role": "user", "content": "Tell me about red apples"}, {"role": "assistant", "content": "and pears"}]}])
    return root


def _config(root: Path, qwen_dir: Path, **extra: Any) -> Path:
    config = {"tokenizer_config": str(qwen_dir), "chat_template": "chatml", "sequence_len": 256,
              "datasets": [{"path": "alpaca.jsonl", "type": "alpaca"}, {"path": "chat.jsonl", "type": "chat_template"}],
              "filters": FILTERS,
              "decontaminate": [{"path": "eval/eval.jsonl", "field": "question"},
                                {"path": "eval/chat_eval.jsonl", "field": "messages", "ngram": 6}],
              **extra}
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _prepare(config: Path, out: Path, workers: int = 1) -> Result:
    return run_pipeline(load_config(config), config, out, workers=workers, progress=Progress(enabled=False))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, qwen_dir: Path) -> tuple[Path, Result, Result]:
    root = _write(tmp_path_factory.mktemp("curation"))
    config = _config(root, qwen_dir)
    return root, _prepare(config, root / "one"), _prepare(config, root / "two", workers=2)


def test_each_planted_row_gets_its_reason(runs: tuple[Path, Result, Result]) -> None:
    _, one, _ = runs
    samples = pl.read_parquet(one.out / "samples.parquet").sort("sample_id")
    got = [(r["dataset"], r["source_row"], r["reason"] if r["status"] != "kept" else None)
           for r in samples.iter_rows(named=True)]
    want = [("alpaca.jsonl", i, reason) for i, (_, reason) in enumerate(ALPACA)]
    want += [("chat.jsonl", i, reason) for i, (_, reason) in enumerate(CHAT)]
    assert got == want
    statuses = dict(zip(samples["reason"].to_list(), samples["status"].to_list(), strict=True))
    assert statuses["filter:no_refusals"] == statuses["contaminated"] == "quarantined"
    # dedup runs first: the refusal's copy is a duplicate of the (then quarantined) first one
    assert samples.filter(pl.col("source_row") == 7, pl.col("dataset") == "alpaca.jsonl")["duplicate_of"].item() == 1


def test_quarantine_records_say_why_and_where(runs: tuple[Path, Result, Result]) -> None:
    _, one, _ = runs
    q = pl.read_parquet(one.out / "quarantine.parquet").sort("sample_id")
    by_reason = {r["reason"]: r for r in q.iter_rows(named=True) if r["reason"] != "contaminated"}
    assert by_reason["filter:no_refusals"]["message"] == (
        f"filter 'no_refusals' is false for this sample: {FILTERS[0]['where']}")
    assert by_reason["filter:length"]["original"] == json.dumps(ALPACA[2][0])
    assert by_reason["filter:no_jailbreak"]["source_file"].endswith("chat.jsonl")
    contaminated = q.filter(pl.col("reason") == "contaminated").to_dicts()
    assert [(c["source_row"], c["eval_file"], c["eval_row"]) for c in contaminated] == [
        (3, "eval/eval.jsonl", 5), (2, "eval/chat_eval.jsonl", 0)]
    leak13 = " ".join(LEAK.split()[:13])
    assert contaminated[0]["message"] == f"shares the 13-gram '{leak13}' with eval/eval.jsonl row 5"
    assert contaminated[1]["message"] == ("shares the 6-gram 'tell me about red apples and' with "
                                          "eval/chat_eval.jsonl row 0")
    assert q.filter(pl.col("reason") == "filter:scored")["message"].to_list() == [
        "filter 'scored' is NULL for this sample: score >= 0.5",
        "filter 'scored' is false for this sample: score >= 0.5"]
    assert q.filter(pl.col("eval_file").is_not_null()).height == 2


def test_rejected_samples_are_not_in_the_shards(runs: tuple[Path, Result, Result]) -> None:
    _, one, _ = runs
    samples = pl.read_parquet(one.out / "samples.parquet")
    kept = set(samples.filter(pl.col("status") == "kept")["sample_id"].to_list())
    in_shards: set[int] = set()
    for shard in one.manifest["shards"]:
        with ipc.open_file(one.out / shard["file"]) as f:
            for ids in f.read_all().column("sample_ids").to_pylist():
                in_shards.update(ids)
    assert in_shards == kept and len(kept) == 4


def test_accounting_manifest_and_reports(runs: tuple[Path, Result, Result]) -> None:
    root, one, _ = runs
    m = one.manifest
    acc = m["accounting"]
    assert acc == {"input_rows": 14, "kept": 4, "quarantined": 8, "duplicates": 2, "dropped": 0, "balanced": True}
    assert m["stats"]["by_reason"] == {"contaminated": 2, "duplicate": 2, "filter:length": 1,
                                       "filter:no_jailbreak": 1, "filter:no_refusals": 1, "filter:scored": 2,
                                       "malformed_json": 1}
    assert [(f["name"], f["rejected"]) for f in m["curation"]["filters"]] == [
        ("no_refusals", 1), ("length", 1), ("scored", 2), ("no_jailbreak", 1)]
    evals = m["curation"]["decontaminate"]
    assert [(d["path"], d["rows"], d["rejected"]) for d in evals] == [("eval/eval.jsonl", 6, 1),
                                                                      ("eval/chat_eval.jsonl", 1, 1)]
    assert evals[0]["sha256"] == hashlib.sha256((root / "eval" / "eval.jsonl").read_bytes()).hexdigest()
    assert ("filters: no_refusals 1, length 1, scored 2, no_jailbreak 1; decontaminate: eval/eval.jsonl 1, "
            "eval/chat_eval.jsonl 1 rejected") in summary_lines(m)
    reasons = {r["reason"]: r["rows"] for r in run_file(connect(one.out), "quarantine_reasons").to_pylist()}
    assert reasons == {"filter:scored": 2, "contaminated": 2, "filter:no_refusals": 1, "filter:length": 1,
                       "filter:no_jailbreak": 1, "malformed_json": 1}
    html = build(one.out)
    assert "Filters and decontamination: 7 samples set aside" in html and "filter:no_jailbreak" in html


def test_workers_do_not_change_the_bytes(runs: tuple[Path, Result, Result]) -> None:
    _, one, two = runs
    files = sorted(p.relative_to(one.out) for p in one.out.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert files
    for f in files:
        assert (one.out / f).read_bytes() == (two.out / f).read_bytes(), f


@pytest.mark.parametrize(("where", "message"), [
    ("num_tokens >", "is not a valid SQL expression"),
    ("exists (select * from read_csv('/etc/passwd'))", "uses a subquery"),
    ("read_text('/etc/passwd') is null", r"uses the table function read_text\(\)"),
])
def test_bad_filters_stop_before_any_row_is_read(tmp_path: Path, qwen_dir: Path, where: str, message: str) -> None:
    # The data file is not Parquet at all: reading any row of it would fail with another error.
    (tmp_path / "data.parquet").write_bytes(b"not parquet")
    config = _config(tmp_path, qwen_dir, datasets=[{"path": "data.parquet", "type": "alpaca"}],
                     filters=[{"name": "bad", "where": where}], decontaminate=None)
    with pytest.raises(ConfigProblem, match=rf"^filters\[0\] \(bad\): .*{message}"):
        _prepare(config, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unusable_eval_file_stops_before_any_row_is_read(tmp_path: Path, qwen_dir: Path) -> None:
    (tmp_path / "data.parquet").write_bytes(b"not parquet")
    write_jsonl(tmp_path / "eval" / "eval.jsonl", [{"question": "fine"}, {"prompt": "no question"}])
    config = _config(tmp_path, qwen_dir, datasets=[{"path": "data.parquet", "type": "alpaca"}], filters=None,
                     decontaminate=[{"path": "eval/eval.jsonl", "field": "question"}])
    with pytest.raises(ConfigProblem, match=r"eval.jsonl row 1: no field 'question' \(the row has prompt\)"):
        _prepare(config, tmp_path / "out")


def test_unknown_field_fails_after_the_rows_and_writes_nothing(tmp_path: Path, qwen_dir: Path) -> None:
    _write(tmp_path)
    config = _config(tmp_path, qwen_dir, filters=[{"name": "typo", "where": "scroe > 0.5"}])
    with pytest.raises(ConfigProblem, match="filter 'typo' names 'scroe', which is neither a sample column"):
        _prepare(config, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_changed_eval_file_prepares_again(tmp_path: Path, qwen_dir: Path) -> None:
    _write(tmp_path)
    config = _config(tmp_path, qwen_dir, filters=None)
    first = _prepare(config, tmp_path / "out")
    assert first.manifest["stats"]["by_reason"]["contaminated"] == 2
    assert _prepare(config, tmp_path / "out").cached
    write_jsonl(tmp_path / "eval" / "eval.jsonl", [{"question": "nothing in common"}])
    again = _prepare(config, tmp_path / "out")
    assert not again.cached and again.manifest["fingerprint"] != first.manifest["fingerprint"]
    assert again.manifest["stats"]["by_reason"]["contaminated"] == 1  # only the chat eval's leak is left
