"""Exact dedup: a sample whose normalised content (transform.content_hash: Unicode NFC, whitespace runs folded)
equals an earlier kept sample's, in any dataset, is removed as a duplicate of that first occurrence.

Vectorised: numpy's unique over the 16-byte hashes gives each hash's first position in sample_id order.
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
    # The view is in sample_id order, and unique's return_index is the first position of each value.
    _, first, inverse = np.unique(hashes.view(np.dtype((np.void, 16))), return_index=True, return_inverse=True)
    kept_at = first[inverse.reshape(-1)]
    dup = np.flatnonzero(kept_at != np.arange(len(hashes)))
    if len(dup) == 0:
        return Outcome()
    kept_ids = view["sample_id"][kept_at[dup]]
    return Outcome(rejected=[Rejected(dup, Status.duplicate, str(Reason.duplicate),
                                      audit={"kept_sample_id": kept_ids, "similarity": np.ones(len(dup)),
                                             "cluster_id": kept_ids})])
