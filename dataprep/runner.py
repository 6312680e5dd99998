"""The stages after the row pass, in order, and what they removed.

`STAGES` is the order; adding a stage is one line there (its contract: stage.py). Each stage receives the
samples still kept; the runner applies its rejections to the sample table (status, reason), keeps the audit
of what was removed (duplicates, quarantined), and records one manifest row per stage that ran:

    {"name": "exact_dedup", "rows_in": 325, "rows_out": 323, "rejected_by_reason": {"duplicate": 2}, "seconds": 0.001}

A stage whose settings are None (turned off in the config) is not run and has no row. split and pack come
last: they reject nothing, and the sample ids are published from the kept rows they see (layout.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dataprep.curate import Curation, decontam_settings, decontam_stage, filter_settings, filter_stage
from dataprep.dedup import exact_dedup, exact_dedup_settings
from dataprep.layout import Layout, layout_settings, pack, split
from dataprep.mix import mix_settings, mix_stage
from dataprep.near_dedup import near_dedup, near_dedup_settings
from dataprep.report import StageTimer
from dataprep.stage import Outcome, Rejected, Stage
from dataprep.table import STATUS_CODE, SampleTable, View
from schemas.config import Config
from schemas.reasons import Reason, Status

STAGES: list[Stage] = [
    Stage("exact_dedup", exact_dedup, exact_dedup_settings),
    Stage("near_dedup", near_dedup, near_dedup_settings),
    Stage("filters", filter_stage, filter_settings, takes_setup=True),
    Stage("decontaminate", decontam_stage, decontam_settings, takes_setup=True),
    Stage("mix", mix_stage, mix_settings),
    Stage("split", split, layout_settings),
    Stage("pack", pack, layout_settings),
]


@dataclass
class Removed:
    """What the stages rejected, for duplicates.parquet, samples.duplicate_of and quarantine.parquet. Arrays
    hold table rows / table sample ids; one entry per rejected sample."""

    dup_rows: list[np.ndarray] = field(default_factory=list)
    dup_kept: list[np.ndarray] = field(default_factory=list)
    dup_near: list[np.ndarray] = field(default_factory=list)  # kind: near (True) or exact
    dup_similarity: list[np.ndarray] = field(default_factory=list)
    dup_cluster: list[np.ndarray] = field(default_factory=list)
    quarantined: list[dict[str, np.ndarray]] = field(default_factory=list)  # rows, message, field, original, eval_*

    def duplicates(self) -> dict[str, np.ndarray]:
        """Columns sorted by table row."""
        if not self.dup_rows:
            return {"rows": np.zeros(0, np.int64), "kept": np.zeros(0, np.int64), "near": np.zeros(0, bool),
                    "similarity": np.zeros(0), "cluster": np.zeros(0, np.int64)}
        rows = np.concatenate(self.dup_rows)
        order = np.argsort(rows, kind="stable")
        rows, kept = rows[order], np.concatenate(self.dup_kept)[order]
        similarity = np.concatenate(self.dup_similarity)[order]
        cluster = np.concatenate(self.dup_cluster)[order]
        # A sample one stage kept in others' place may be removed by a later one (exact copies of a sample that
        # near-dedup then removes): follow the chain, so that duplicate_of always names a sample that stays. The
        # similarity to it is the chain's lowest, and the cluster the last stage's.
        # The hops are looked up in the sorted rows (arrays as long as the table were 24 bytes a row).
        hop_kept, hop_similarity, hop_cluster = kept, similarity, cluster
        while True:
            at = np.minimum(np.searchsorted(rows, kept), len(rows) - 1)
            moved = rows[at] == kept
            if not moved.any():
                break
            similarity = np.where(moved, np.minimum(similarity, hop_similarity[at]), similarity)
            cluster = np.where(moved, hop_cluster[at], cluster)
            kept = np.where(moved, hop_kept[at], kept)
        return {"rows": rows, "kept": kept, "near": np.concatenate(self.dup_near)[order],
                "similarity": similarity, "cluster": cluster}


def run_stages(table: SampleTable, cfg: Config, timer: StageTimer, stages: list[Stage] | None = None,
               curation: Curation | None = None) -> tuple[list[dict[str, Any]], Layout | None, Removed]:
    """Runs the stages on the table; returns the manifest rows, pack's layout and what was removed.
    `curation` is the run's setup for the stages that take one (filters, decontaminate): pipeline.setup
    builds it once, before any row is read."""
    records: list[dict[str, Any]] = []
    removed = Removed()
    layout = None
    for stage in STAGES if stages is None else stages:
        settings = stage.settings(cfg, curation) if stage.takes_setup else stage.settings(cfg)
        if settings is None:
            continue
        with timer(stage.name) as t:
            view = table.active()
            t.rows = len(view)
            outcome = stage.run(view, settings)
            by_reason = _apply(table, view, outcome, removed, stage.name)
        if isinstance(outcome.output, Layout):
            layout = outcome.output
        rejected = sum(by_reason.values())
        records.append({"name": stage.name, "rows_in": len(view), "rows_out": len(view) - rejected,
                        "rejected_by_reason": by_reason, "seconds": round(t.seconds, 3)})
    return records, layout, removed


def _apply(table: SampleTable, view: View, outcome: Outcome, removed: Removed, name: str) -> dict[str, int]:
    by_reason: dict[str, int] = {}
    done = np.zeros(len(view), bool)
    for r in outcome.rejected:
        at = np.asarray(r.rows, dtype=np.int64)
        if len(at) == 0:
            continue
        if done[at].any() or len(np.unique(at)) != len(at):
            raise ValueError(f"stage {name}: a sample is rejected more than once")
        done[at] = True
        rows = view.rows[at]
        table.columns["status"][rows] = STATUS_CODE[r.status]
        if isinstance(r.reason, str):  # one reason for all: no array of strings as long as the rejections
            table.columns["reason"][rows] = table.reason_code(r.reason)
            by_reason[r.reason] = by_reason.get(r.reason, 0) + len(rows)
        else:
            names, inverse, counts = np.unique(np.asarray(r.reason).astype(str), return_inverse=True,
                                               return_counts=True)
            codes = np.array([table.reason_code(str(n)) for n in names], np.int16)
            table.columns["reason"][rows] = codes[inverse.reshape(-1)]
            for n, c in zip(names.tolist(), counts.tolist(), strict=True):
                by_reason[n] = by_reason.get(n, 0) + c
        if r.status is Status.duplicate:
            _record_duplicates(removed, r, rows, name)
        elif r.status is Status.quarantined:
            removed.quarantined.append({"rows": rows, "message": _per_row(r.message, len(at), f"removed by {name}"),
                                        "field": _per_row(r.audit.get("field"), len(at), None),
                                        "original": _per_row(r.audit.get("original"), len(at), ""),
                                        # decontamination's: the eval row a contaminated sample shares text with
                                        "eval_file": _per_row(r.audit.get("eval_file"), len(at), None),
                                        "eval_row": _per_row(r.audit.get("eval_row"), len(at), None)})
    for col, values in outcome.columns.items():
        if col in table.columns and col not in table.added:
            raise ValueError(f"stage {name}: column {col!r} is one of the sample table's own")
        full = np.zeros(len(table), dtype=np.asarray(values).dtype)
        full[view.rows] = values
        table.columns[col] = full
        table.added.add(col)
    return dict(sorted(by_reason.items()))


def _record_duplicates(removed: Removed, r: Rejected, rows: np.ndarray, name: str) -> None:
    if "kept_sample_id" not in r.audit:
        raise ValueError(f"stage {name}: duplicates need audit['kept_sample_id']")
    n = len(rows)
    kept = np.asarray(r.audit["kept_sample_id"], dtype=np.int64)
    if "kind" in r.audit:
        near = np.asarray(r.audit["kind"]) == "near"
    else:
        near = (r.reason != str(Reason.duplicate) if isinstance(r.reason, str)
                else np.asarray(r.reason).astype(str) != str(Reason.duplicate))
    removed.dup_rows.append(rows)
    removed.dup_kept.append(kept)
    removed.dup_near.append(np.broadcast_to(near, (n,)).copy())
    removed.dup_similarity.append(np.asarray(r.audit.get("similarity", np.ones(n)), dtype=np.float64))
    removed.dup_cluster.append(np.asarray(r.audit.get("cluster_id", kept), dtype=np.int64))


def _per_row(value: Any, n: int, default: Any) -> np.ndarray:
    if value is None or isinstance(value, str):
        return np.full(n, default if value is None else value, dtype=object)
    return np.asarray(value, dtype=object)
