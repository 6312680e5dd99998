"""Filters and decontamination in a prepare run: set up from the config (setup, before any row is read), then
applied to each batch of the row pass after exact deduplication, then recorded in the manifest.

A sample rejected here is `quarantined` with reason `filter:<name>` or `contaminated`, its message and original
row in quarantine.parquet (contaminated ones also with eval_file and eval_row). These are choices about good
rows, not broken input, so `quarantine_max_fraction` does not count them. A later duplicate of a rejected
sample is still a `duplicate` of it (deduplication sees every row first).
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from dataprep.decontam import Decontamination, build_index, find_contaminated
from dataprep.filters import FilterPlan, FilterRunner, check_filters
from dataprep.sample_columns import BUILTIN_COLUMNS
from schemas.config import Config, FilterRule
from schemas.reasons import Reason

_ARROW = {"VARCHAR": pa.string(), "BIGINT": pa.int64(), "INTEGER": pa.int32()}
TABLE_SCHEMA = pa.schema([pa.field("sample_id", pa.int64()),
                          *(pa.field(c, _ARROW[t]) for c, t in BUILTIN_COLUMNS.items()),
                          pa.field("fields", pa.string())])


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str  # filter:<name> | contaminated
    message: str
    eval_file: str | None = None
    eval_row: int | None = None


def wanted(cfg: Config) -> bool:
    """Whether the row workers compute the per-sample columns (dataprep/sample_columns.py)."""
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
    def __init__(self, cfg: Config, config_dir: Path):
        """Raises FilterError / DecontamError for filters or eval files that cannot work."""
        self.plan: FilterPlan | None = check_filters(cfg.filters) if cfg.filters else None
        self.runner = FilterRunner(self.plan) if self.plan else None
        self.dec: Decontamination | None = build_index(cfg.decontaminate, config_dir) if cfg.decontaminate else None
        self.rejected: Counter[str] = Counter()  # reason -> samples rejected
        self.contaminated_by: Counter[int] = Counter()  # decontaminate entry -> samples it rejected

    def fingerprint(self) -> list[str]:
        """What the config's text does not say: the eval files' contents."""
        return list(self.dec.sha256) if self.dec else []

    def check(self, rows: list[dict[str, Any]]) -> dict[int, Rejection]:
        """Rejections by position in `rows` (kept samples of one batch, each with the BUILTIN_COLUMNS and
        `fields`): the first failing filter, else the first matching eval n-gram. Counted by `count`."""
        out: dict[int, Rejection] = {}
        if not rows:
            return out
        if self.runner is not None:
            table = pa.Table.from_pylist([{**r, "sample_id": i} for i, r in enumerate(rows)], TABLE_SCHEMA)
            result = self.runner.run(table)
            for i, reason, message in zip(result.sample_ids.tolist(), result.reasons(self.runner.plan),
                                          result.messages(self.runner.plan), strict=True):
                out[i] = Rejection(reason, message)
        if self.dec is not None:
            left = [i for i in range(len(rows)) if i not in out]
            found = find_contaminated([rows[i]["text"] for i in left], self.dec)
            for j, entry, row, message in zip(found.index.tolist(), found.entry.tolist(), found.eval_row.tolist(),
                                              found.messages, strict=True):
                out[left[j]] = Rejection(str(Reason.contaminated), message, self.dec.files[entry], row)
        return out

    def count(self, rejection: Rejection) -> None:
        self.rejected[rejection.reason] += 1
        if rejection.eval_file is not None and self.dec is not None:
            self.contaminated_by[self.dec.files.index(rejection.eval_file)] += 1

    def finish(self) -> None:
        """Raises FilterError for a filter naming a field that no row had (known only now)."""
        if self.runner is not None:
            self.runner.check_fields_seen()

    @property
    def total(self) -> int:
        return sum(self.rejected.values())

    def manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.plan is not None:
            out["filters"] = [{"name": f.rule.name, "where": f.rule.where,
                               "rejected": self.rejected[f"filter:{f.rule.name}"]} for f in self.plan.filters]
        if self.dec is not None:
            out["decontaminate"] = [{**entry, "rejected": self.contaminated_by[i]}
                                    for i, entry in enumerate(self.dec.manifest())]
        return out

