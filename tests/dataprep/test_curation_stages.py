"""The filters and decontaminate stages on their own (dataprep/curate.py): a sample table built from plain
RowResults with the worker's extra columns, a View in, an Outcome out (positions, reasons, messages, the
original row and the eval file/row as audit), evaluated in chunks that agree on field types; and the run's
Curation handed to them by the runner.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/dataprep/test_curation_stages.py -v
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dataprep import curate, runner
from dataprep.curate import Curation, decontam_stage, filter_stage
from dataprep.filters import FilterError
from dataprep.report import StageTimer
from dataprep.table import SampleTable, TableBuilder
from dataprep.transform import RowResult
from schemas.config import config_from_dict
from schemas.reasons import Reason, Status
from tests.conftest import write_jsonl


def _row(i: int, assistant: str, fields: dict[str, Any], status: Status = Status.kept) -> RowResult:
    kept = status is Status.kept
    extra = {"turns": 2, "system_text": "", "user_text": f"question {i}", "assistant_text": assistant,
             "text": f"question {i}\n{assistant}", "fields": json.dumps(fields), "original": f"row {i}"}
    return RowResult(i, status, content_hash=f"{i:032x}", num_tokens=10 + i, num_trainable=5 + i,
                     input_ids=np.arange(3, dtype=np.int32) if kept else None,
                     labels=np.arange(3, dtype=np.int32) if kept else None, extra=extra if kept else None)


def _table(tmp_path: Path, rows: list[RowResult]) -> SampleTable:
    builder = TableBuilder(tmp_path)
    builder.add(0, 0, rows)
    return builder.finish()


def _curation(tmp_path: Path, **keys: Any) -> Curation:
    cfg = config_from_dict({"base_model": "x", "datasets": [{"path": "data.jsonl", "type": "alpaca"}], **keys})
    cur = Curation(cfg, tmp_path)
    cur.sources = ["data.jsonl"]
    return cur


def test_filter_stage_rejects_by_position_with_reason_message_and_original(tmp_path: Path) -> None:
    rows = [_row(0, "fine answer", {"score": 1}), _row(1, "As an AI, no", {"score": 1}),
            _row(2, "", {}, Status.quarantined), _row(3, "fine", {"score": 0.1}), _row(4, "fine", {})]
    view = _table(tmp_path, rows).active()
    assert view.rows.tolist() == [0, 1, 3, 4]
    cur = _curation(tmp_path, filters=[
        {"name": "no_ai", "where": "assistant_text not like 'As an AI%'"},
        {"name": "scored", "where": "score >= 0.5 and source_file = 'data.jsonl' and dataset = 'data.jsonl'"},
        {"name": "long", "where": "num_tokens >= 10 and turns = 2"}])
    [rejected] = filter_stage(view, cur).rejected
    assert rejected.status is Status.quarantined
    assert rejected.rows.tolist() == [1, 2, 3]  # positions in the view: table rows 1, 3 and 4
    assert rejected.reason.tolist() == ["filter:no_ai", "filter:scored", "filter:scored"]
    assert rejected.message[2] == ("filter 'scored' is NULL for this sample: score >= 0.5 and source_file = "
                                   "'data.jsonl' and dataset = 'data.jsonl'")
    assert rejected.audit["original"].tolist() == ["row 1", "row 3", "row 4"]
    assert cur.manifest()["filters"] == [
        {"name": "no_ai", "where": "assistant_text not like 'As an AI%'", "rejected": 1},
        {"name": "scored", "where": cur.plan.filters[1].rule.where, "rejected": 2},
        {"name": "long", "where": "num_tokens >= 10 and turns = 2", "rejected": 0}]


def test_chunks_agree_on_field_types(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(curate, "CHUNK_ROWS", 2)
    # `level` is an integer in the first and last chunks and text in the second: text in all of them. Typed per
    # chunk, the integer chunks would read '03' as 3 and keep rows 0 and 4; as text, no value equals '03'.
    rows = [_row(0, "a", {"level": 3}), _row(1, "b", {"level": 4}), _row(2, "c", {"level": "3"}),
            _row(3, "d", {"level": "x"}), _row(4, "e", {"level": 3})]
    cur = _curation(tmp_path, filters=[{"name": "level03", "where": "level = '03'"}])
    [rejected] = filter_stage(_table(tmp_path, rows).active(), cur).rejected
    assert rejected.rows.tolist() == [0, 1, 2, 3, 4]
    monkeypatch.setattr(curate, "CHUNK_ROWS", 10)  # one chunk: the same answer
    (tmp_path / "one").mkdir()
    [rejected] = filter_stage(_table(tmp_path / "one", rows).active(), cur).rejected
    assert rejected.rows.tolist() == [0, 1, 2, 3, 4]


def test_filter_stage_names_a_field_no_row_has(tmp_path: Path) -> None:
    cur = _curation(tmp_path, filters=[{"name": "typo", "where": "scroe > 1"}])
    with pytest.raises(FilterError, match="filter 'typo' names 'scroe'"):
        filter_stage(_table(tmp_path, [_row(0, "a", {"score": 2})]).active(), cur)


def test_decontam_stage_in_chunks_records_the_eval_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(curate, "CHUNK_ROWS", 2)
    write_jsonl(tmp_path / "eval.jsonl", [{"q": "nothing shared here at all"}, {"q": "the leaked answer text"}])
    cur = _curation(tmp_path, decontaminate=[{"path": "eval.jsonl", "field": "q", "ngram": 3}])
    rows = [_row(0, "clean", {}), _row(1, "clean too", {}), _row(2, "so THE leaked answer!", {}),
            _row(3, "clean", {}), _row(4, "answer text", {})]
    [rejected] = decontam_stage(_table(tmp_path, rows).active(), cur).rejected
    assert rejected.rows.tolist() == [2]
    assert rejected.reason == str(Reason.contaminated)
    assert rejected.message.tolist() == ["shares the 3-gram 'the leaked answer' with eval.jsonl row 1"]
    assert rejected.audit["eval_file"].tolist() == ["eval.jsonl"]
    assert rejected.audit["eval_row"].tolist() == [1]
    assert rejected.audit["original"].tolist() == ["row 2"]
    assert cur.manifest()["decontaminate"][0]["rejected"] == 1


def test_runner_passes_the_runs_curation_to_the_stages_that_take_it(tmp_path: Path) -> None:
    """The Curation is the setup pipeline.setup makes once per run; the runner hands it to filters and
    decontaminate (nothing is looked up by config identity), and without it a configured filter is an error,
    never a stage silently skipped."""
    cfg = config_from_dict({"base_model": "x", "datasets": [{"path": "data.jsonl", "type": "alpaca"}],
                            "filters": [{"name": "no_ai", "where": "assistant_text not like 'As an AI%'"}]})
    cur, other = Curation(cfg, tmp_path), Curation(cfg, tmp_path)  # two runs of one config: each its own
    cur.sources = other.sources = ["data.jsonl"]
    rows = [_row(0, "fine", {}), _row(1, "As an AI, no", {}), _row(2, "fine too", {})]
    filters = [s for s in runner.STAGES if s.name == "filters"]
    assert [s.takes_setup for s in runner.STAGES if s.name in ("filters", "decontaminate")] == [True, True]
    records, _, removed = runner.run_stages(_table(tmp_path, rows), cfg, StageTimer(), filters, curation=cur)
    assert records[0]["rejected_by_reason"] == {"filter:no_ai": 1}
    assert removed.quarantined[0]["rows"].tolist() == [1]
    assert cur.manifest()["filters"][0]["rejected"] == 1 and other.manifest()["filters"][0]["rejected"] == 0
    assert curate.decontam_settings(cfg, cur) is None  # no eval files: the stage is off
    (tmp_path / "again").mkdir()
    with pytest.raises(ValueError, match="`filters` is configured but the run has no Curation"):
        runner.run_stages(_table(tmp_path / "again", rows), cfg, StageTimer(), filters)
