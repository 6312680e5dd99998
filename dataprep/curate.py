"""Filters and decontamination as stages over the sample table (contract: stage.py), after deduplication:

    filters         filter_stage: a sample for which a filter's `where` is not true is quarantined as
                    `filter:<name>` (filters.py), the first failing filter in config order naming it
    decontaminate   decontam_stage: a sample sharing a word n-gram with an eval text is quarantined as
                    `contaminated`, with eval_file and eval_row in quarantine.parquet (decontam.py)

Both read the per-sample columns the row workers computed (sample_columns.py; the table stores them on disk
as extra columns) CHUNK_ROWS samples at a time, so memory does not grow with the dataset. Their settings are
the run's `Curation`, built once by pipeline.setup before any row is read (the checked filters and the eval
index: a config error, exit 2, when either cannot work) and handed to the runner, which passes it to
`filter_settings` / `decontam_settings` (stage.py: `Stage(..., takes_setup=True)`). Nothing is looked up by
config: a run that configures filters without building a Curation fails loudly instead of skipping them.
A later duplicate of a rejected sample is still a `duplicate` of it (deduplication runs first). These are
choices about good rows, not broken input: `quarantine_max_fraction` (checked after the row pass, before the
stages) does not count them.
"""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from dataprep.decontam import Decontamination, build_index, find_contaminated
from dataprep.filters import FilterPlan, FilterRunner, check_filters, merge_types
from dataprep.stage import Outcome, Rejected
from dataprep.table import View
from schemas.config import Config, FilterRule
from schemas.reasons import Reason, Status

CHUNK_ROWS = 65_536  # samples per DuckDB query and per hashing call: bounds the text held in memory at once
TEXT_COLUMNS = ("turns", "system_text", "user_text", "assistant_text", "text")


def wanted(cfg: Config) -> bool:
    """Whether the row workers compute the per-sample columns (sample_columns.py)."""
    return bool(cfg.filters or cfg.decontaminate)


def filter_fields(cfg: Config) -> tuple[str, ...]:
    """The top-level row fields the filters name (what a worker keeps of each row)."""
    if not cfg.filters:
        return ()
    return _fields(tuple((f.name, f.where) for f in cfg.filters))


@functools.cache
def _fields(rules: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    return check_filters([FilterRule(name=n, where=w) for n, w in rules]).fields


class Curation:
    """The filters and decontaminate stages' setup: made once per run (eval paths relative to config_dir),
    passed to both stages, and read back for the manifest after they ran (what each filter and eval file
    rejected)."""

    def __init__(self, cfg: Config, config_dir: Path):
        """Raises FilterError / DecontamError for filters or eval files that cannot work."""
        self.plan: FilterPlan | None = check_filters(cfg.filters) if cfg.filters else None
        self.dec: Decontamination | None = build_index(cfg.decontaminate, config_dir) if cfg.decontaminate else None
        self.datasets = [ds.path for ds in cfg.datasets]  # the `dataset` column, by dataset_index
        self.sources: list[str] = []  # the `source_file` column, by the table's source index (pipeline.setup)
        self.rejected: Counter[str] = Counter()  # reason -> samples the stages rejected
        self.contaminated_by: Counter[int] = Counter()  # decontaminate entry -> samples it rejected

    def fingerprint(self) -> list[str]:
        """What the config's text does not say: the eval files' contents."""
        return list(self.dec.sha256) if self.dec else []

    def manifest(self) -> dict[str, Any]:
        """Each filter and eval file with the samples it rejected (manifest `curation`)."""
        out: dict[str, Any] = {}
        if self.plan is not None:
            out["filters"] = [{"name": f.rule.name, "where": f.rule.where,
                               "rejected": self.rejected[f"filter:{f.rule.name}"]} for f in self.plan.filters]
        if self.dec is not None:
            out["decontaminate"] = [{**entry, "rejected": self.contaminated_by[i]}
                                    for i, entry in enumerate(self.dec.manifest())]
        return out


def filter_settings(cfg: Config, cur: Curation | None) -> Curation | None:
    """The filters stage's settings: the run's Curation when the config has filters (None: the stage is off)."""
    return _settings(cfg.filters, cur, "filters")


def decontam_settings(cfg: Config, cur: Curation | None) -> Curation | None:
    """The decontaminate stage's settings: the run's Curation when the config has eval files."""
    return _settings(cfg.decontaminate, cur, "decontaminate")


def _settings(configured: Any, cur: Curation | None, key: str) -> Curation | None:
    if not configured:
        return None
    if cur is None:  # a caller of run_stages forgot the setup: skipping the stage would keep rows silently
        raise ValueError(f"`{key}` is configured but the run has no Curation: build curate.Curation(cfg, "
                         "config_dir) once and pass it to runner.run_stages(..., curation=...)")
    return cur


def _chunks(n: int) -> list[tuple[int, int]]:
    return [(a, min(a + CHUNK_ROWS, n)) for a in range(0, n, CHUNK_ROWS)]


def _columns(view: View, cur: Curation, a: int, b: int, names: tuple[str, ...] = ("fields",)) -> pa.Table:
    """Samples a..b of the view as the table filters.py evaluates (`sample_id` = position in the view)."""
    rows = view.rows[a:b]
    data: dict[str, Any] = {"sample_id": pa.array(np.arange(a, b, dtype=np.int64))}
    if names != ("fields",):
        c = view.table.columns
        data["dataset"] = pa.array(np.asarray(cur.datasets, dtype=object)[c["dataset_index"][rows]], pa.string())
        data["source_file"] = pa.array(np.asarray(cur.sources, dtype=object)[c["source"][rows]], pa.string())
        data["source_row"] = pa.array(c["source_row"][rows], pa.int64())
        data["num_tokens"] = pa.array(c["num_tokens"][rows], pa.int64())
        data["num_trainable"] = pa.array(c["num_trainable"][rows], pa.int64())
    for name in names:
        data[name] = view.table.extra(name, rows)
    return pa.table(data)


def filter_stage(view: View, cur: Curation) -> Outcome:
    """Samples for which a filter's `where` is not true, quarantined as filter:<name>. One DuckDB query per
    CHUNK_ROWS samples; the row fields are typed over the whole view first, so chunks agree."""
    assert cur.plan is not None
    runner = FilterRunner(cur.plan)
    fields = ("fields",) if cur.plan.fields else ()
    types: dict[str, str] = {}
    if fields:
        for a, b in _chunks(len(view)):
            types = merge_types(types, runner.field_types(_columns(view, cur, a, b)))
    at, reasons, messages = [], [], []
    for a, b in _chunks(len(view)):
        result = runner.run(_columns(view, cur, a, b, TEXT_COLUMNS + fields), types)
        at.append(result.sample_ids)
        reasons += result.reasons(cur.plan)
        messages += result.messages(cur.plan)
    runner.check_fields_seen()
    cur.rejected.update(reasons)
    positions = np.concatenate(at) if at else np.zeros(0, np.int64)
    return Outcome([Rejected(positions, Status.quarantined, np.asarray(reasons, dtype=object),
                             np.asarray(messages, dtype=object), {"original": _originals(view, positions)})])


def decontam_stage(view: View, cur: Curation) -> Outcome:
    """Samples whose text shares a word n-gram with an eval text, quarantined as contaminated, with the eval
    file and row that share it."""
    assert cur.dec is not None
    at, entries, rows, messages = [], [], [], []
    for a, b in _chunks(len(view)):
        texts = view.table.extra("text", view.rows[a:b]).to_pylist()
        found = find_contaminated([t or "" for t in texts], cur.dec)
        at.append(found.index + a)
        entries += found.entry.tolist()
        rows += found.eval_row.tolist()
        messages += found.messages
    cur.rejected[str(Reason.contaminated)] += len(entries)
    cur.contaminated_by.update(entries)
    positions = np.concatenate(at) if at else np.zeros(0, np.int64)
    files = np.asarray([cur.dec.files[e] for e in entries], dtype=object)
    return Outcome([Rejected(positions, Status.quarantined, str(Reason.contaminated),
                             np.asarray(messages, dtype=object),
                             {"original": _originals(view, positions), "eval_file": files,
                              "eval_row": np.asarray(rows, dtype=np.int64)})])


def _originals(view: View, positions: np.ndarray) -> np.ndarray:
    return np.asarray(view.table.extra("original", view.rows[positions]).to_pylist(), dtype=object)
