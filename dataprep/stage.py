"""The stage contract: what runs after the row pass, as plain functions over the sample table.

    def my_stage(view: View, settings: MySettings) -> Outcome

`view` (table.py) is the sample table restricted to the samples still kept, in sample_id order:
`view["content_hash"]`, `view["num_tokens"]`, ... are numpy arrays with one value per active sample,
`view.extra("assistant_text")` an extra column from the row pass (`view.matrix("minhash")` a fixed-width one,
read from disk a block at a time), `view.tokens(i)` a sample's ids and labels,
`view.rows` the table rows and `view.table` the whole table (read it, never write it). `settings` is what
`Stage.settings(cfg)` returned: only what the stage uses, never the whole Config. A stage whose settings are
built once per run before any row is read (filters and decontaminate: the checked filters and the eval index,
curate.Curation) is declared with `takes_setup=True`; the runner then calls `settings(cfg, setup)` with the
setup the run made, so nothing is looked up by config identity. A stage neither writes files
nor prints; it returns an `Outcome`:

    rejected  a list of `Rejected`: positions in the view (0 .. len(view)-1), the status they get
              (duplicate, quarantined, dropped), the reason (one string, or a numpy array of strings, one per
              rejected sample: e.g. `filter:<name>`), an optional message (same shapes; a quarantined
              sample's message goes to quarantine.parquet) and audit columns (numpy arrays, one value per
              rejected sample). Everything not rejected stays kept. A sample is rejected at most once per stage.
    columns   new per-sample columns (numpy, one value per sample of the view) that later stages read as
              `view[name]`; the rows rejected by the stage get the fill value of their dtype (0, False, "").
    output    anything the runner needs from the stage (pack returns the shard layout).

Audit columns the runner understands:

    duplicates (status duplicate)   kept_sample_id (required: the table sample_id of the sample kept in
                                    its place), similarity (default 1.0), cluster_id (default
                                    kept_sample_id), kind ("exact" | "near"; default "exact" for reason
                                    `duplicate`, else "near"). -> duplicates.parquet, samples.duplicate_of
    quarantined                     original (the row as text; default ""), field -> quarantine.parquet

Sample ids in audit columns (kept_sample_id, cluster_id) are table sample_ids; the runner renumbers them like
every other id when it writes the outputs (see table.py). The runner records one manifest row per stage,
`{name, rows_in, rows_out, rejected_by_reason, seconds}`, and accounts every rejection by its status and reason.

Worked example, exact dedup (dedup.py): content hashes of five active samples, the 3rd and 5th copies of
the 1st:

    view.rows            [0, 2, 3, 5, 6]         (rows 1 and 4 were quarantined by the row pass)
    view["content_hash"] [h1, h2, h1, h3, h1]
    np.unique(..., return_index=True, return_inverse=True) -> first occurrence of each hash: positions 0, 1, 3
    Outcome(rejected=[Rejected(rows=[2, 4], status=duplicate, reason="duplicate",
                               audit={"kept_sample_id": [0, 0]})])
    manifest: {"name": "exact_dedup", "rows_in": 5, "rows_out": 3, "rejected_by_reason": {"duplicate": 2}, ...}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dataprep.table import View
from schemas.reasons import Status


@dataclass
class Rejected:
    rows: np.ndarray  # positions in the view
    status: Status
    reason: str | np.ndarray  # one reason, or one per rejected sample
    message: str | np.ndarray | None = None
    audit: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Outcome:
    rejected: list[Rejected] = field(default_factory=list)
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    output: Any = None


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[View, Any], Outcome]
    settings: Callable[..., Any]  # settings(cfg) -> the stage's settings; None: the stage is off
    takes_setup: bool = False  # settings(cfg, setup): they need the run's setup (curate.Curation) too
