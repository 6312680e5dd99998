"""Exact dedup: a sample whose normalised content (transform.content_hash: Unicode NFC, whitespace runs folded)
equals an earlier kept sample's, in any dataset, is removed as a duplicate of that first occurrence.

Vectorised: a stable sort of the 16-byte hashes (as two uint64) groups equal ones; the first of each group is
its first position in sample_id order. (np.unique over the hashes as 16-byte voids did the same with about
three times the memory: +90 MB at 1M rows.)
"""

from __future__ import annotations

import numpy as np

from dataprep.stage import Outcome, Rejected
from dataprep.table import View
from schemas.config import Config
from schemas.reasons import Reason, Status


def exact_dedup_settings(cfg: Config) -> bool | None:
    return True if cfg.dataset_exact_deduplication else None


def exact_dedup(view: View, settings: bool) -> Outcome:
    hashes = view["content_hash"]
    if len(hashes) == 0:
        return Outcome()
    kept_at = first_of_each(hashes.view(np.uint64).reshape(-1, 2))
    dup = np.flatnonzero(kept_at != np.arange(len(hashes)))
    if len(dup) == 0:
        return Outcome()
    kept_ids = view["sample_id"][kept_at[dup]]
    return Outcome(rejected=[Rejected(dup, Status.duplicate, str(Reason.duplicate),
                                      audit={"kept_sample_id": kept_ids, "similarity": np.ones(len(dup)),
                                             "cluster_id": kept_ids})])


def first_of_each(keys: np.ndarray) -> np.ndarray:
    """For each row of `keys` (n, 2) uint64, the position of the first row equal to it."""
    order = np.lexsort((keys[:, 1], keys[:, 0]))  # stable: equal keys stay in position order
    ordered = keys[order]
    starts = np.ones(len(order), bool)
    starts[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    del ordered
    group = np.cumsum(starts) - 1
    kept_at = np.empty(len(order), np.int64)
    kept_at[order] = order[np.flatnonzero(starts)][group]
    return kept_at
