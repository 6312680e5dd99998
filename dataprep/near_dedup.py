"""Near-dedup (`dataset_near_deduplication`): the MinHash stage after exact dedup.

    row pass (transform.py, in the worker batches)   dedup_text(row) -> signature, RowResult.extra["minhash"]
    near_dedup(view, settings)                        banding -> verified pairs -> clusters -> one kept each

The signature of every kept row is computed where the row is parsed, so the work is spread over the workers
and nothing but num_perm uint32 values per row reaches the stage. They are written, a batch at a time, to a
fixed-width file of the sample table (`_work/extra/minhash.bin`, table.py), and the stage runs
dataprep/lsh.py over that file without loading it (see its docstring for the S-curve and the choice of
bands and rows): banding reads it once, a block of rows at a time, and spills every band key to partition
files under `_work/extra/` that are bucketed one at a time; verification reads the two rows of each candidate
pair (pread, a chunk of pairs at a time); union-find runs over the verified pairs only, and the keep rule's
rank is built for the rows in clusters only. Memory held for all samples is the view's row numbers, the
signature file's row of each sample (Matrix.at) and one byte a sample, not num_perm x 4. A removed
sample gets status `duplicate`, reason `near_duplicate`; duplicates.parquet gets one row per removed sample:
kept_sample_id, kind `near`, similarity (estimated Jaccard to the kept sample; below the threshold for a sample
joined to the cluster through another one) and cluster_id = the kept sample's id, as for exact duplicates.

A completion row split into chunks has one signature and is kept or removed whole. Rows without any compared
text (e.g. `fields: [system]` and no system message) are never near duplicates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from dataprep import lsh, minhash
from dataprep.dedup_text import dedup_text
from schemas.reasons import Reason, Status

if TYPE_CHECKING:
    from dataprep.formats import Sample
    from dataprep.stage import Outcome
    from dataprep.table import Matrix, View
    from schemas.config import Config, DatasetConfig

EXTRA = "minhash"  # the RowResult.extra key and sample-table column holding a row's signature


@dataclass(frozen=True)
class NearDedupSettings:
    threshold: float
    num_perm: int
    ngram: int
    fields: tuple[str, ...]
    keep: lsh.Keep
    bands: int
    rows: int

    def record(self) -> dict[str, Any]:
        """What the manifest records (manifest.json `near_deduplication`)."""
        return {**asdict(self), "fields": list(self.fields), "lsh_weights": list(lsh.LSH_WEIGHTS),
                "implementation": minhash.IMPLEMENTATION}


def near_dedup_settings(cfg: Config) -> NearDedupSettings | None:
    near = cfg.dataset_near_deduplication
    if near is None:
        return None
    bands, rows = lsh.lsh_params(near.threshold, near.num_perm)
    return NearDedupSettings(near.threshold, near.num_perm, near.ngram, tuple(near.fields), near.keep, bands, rows)


class Signer:
    """Per dataset, in the row pass: each kept row's signature, computed for a whole batch at once."""

    def __init__(self, cfg: Config, ds: DatasetConfig):
        near = cfg.dataset_near_deduplication
        assert near is not None
        self.ds, self.fields, self.num_perm, self.ngram = ds, list(near.fields), near.num_perm, near.ngram

    def text(self, record: dict[str, Any], sample: Sample) -> str:
        return dedup_text(record, sample, self.ds, self.fields)

    def sign(self, results: list[Any], texts: list[str]) -> None:
        """Sets results[i].extra[EXTRA] to the signature of texts[i] (uint32, num_perm)."""
        if not results:
            return
        sigs = minhash.signatures(texts, self.num_perm, self.ngram)
        for result, sig in zip(results, sigs, strict=True):
            result.extra = {**(result.extra or {}), EXTRA: sig}


@dataclass
class ViewSignatures:
    """minhash.Signatures of a view's samples, read from the row pass's fixed-width `minhash` column on disk
    (table.Matrix); a sample without a signature reads as MAX_HASH everywhere, which minhash treats as a row
    without text."""

    matrix: Matrix
    num_perm: int

    def __len__(self) -> int:
        return len(self.matrix.at)

    def block(self, lo: int, hi: int) -> np.ndarray:
        at = self.matrix.at[lo:hi]
        out = np.full((len(at), self.num_perm), minhash.MAX_HASH, dtype=np.uint32)
        have = np.flatnonzero(at >= 0)
        if len(have) == 0:
            return out
        first, last = int(at[have[0]]), int(at[have[-1]])
        if last - first < 2 * len(have):  # mostly consecutive stored rows: one read
            out[have] = self.matrix.rows_between(first, last + 1)[at[have] - first]
        else:
            out[have] = self.matrix.take(at[have])
        return out

    def take(self, rows: np.ndarray) -> np.ndarray:
        at = self.matrix.at[rows]
        out = np.full((len(at), self.num_perm), minhash.MAX_HASH, dtype=np.uint32)
        have = at >= 0
        if have.any():
            out[have] = self.matrix.take(at[have])
        return out


def near_dedup(view: View, settings: NearDedupSettings) -> Outcome:
    from dataprep.stage import Outcome, Rejected

    if len(view) < 2:
        return Outcome()
    try:
        sigs = ViewSignatures(view.matrix(EXTRA), settings.num_perm)
    except KeyError:  # no kept row had a signature (a row pass without near-dedup text): nothing is a duplicate
        return Outcome()
    table = view.table

    def rank(nodes: np.ndarray) -> np.ndarray:  # keep_order for the rows in clusters only: nothing for all rows
        at = view.rows[nodes]
        return lsh.keep_order(settings.keep, table.take("sample_id", at), table.take("num_tokens", at),
                              table.take("num_trainable", at))

    found = lsh.near_duplicates(sigs, settings.threshold, settings.bands, settings.rows, rank, table.extra_dir)
    if len(found.removed) == 0:
        return Outcome()
    kept_ids = table.take("sample_id", view.rows[found.kept])
    audit = {"kept_sample_id": kept_ids, "similarity": found.similarity.astype(np.float64),
             "cluster_id": kept_ids, "kind": np.full(len(kept_ids), "near", dtype=object)}
    return Outcome(rejected=[Rejected(found.removed, Status.duplicate, str(Reason.near_duplicate), audit=audit)])
