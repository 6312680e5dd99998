"""The mixing stage in the pipeline: mix.py's decision applied to the kept samples the row pass produced.

Reads the kept samples' columns from the work copy of samples.parquet (ids, dataset, chunk, trained tokens),
decides with `mix.mix`, then

- appends each copy's tokens to the token spill under its new sample_id (TokenSpill.repeat),
- writes the copies' samples.parquet rows (the original's row, new sample_id, `repeat_of`) to
  `_work/copies.parquet`, which pipeline._finish_samples appends,
- moves the rows weighted out from kept to dropped (reason weighted_out) in the run's counts,
- and returns the per-dataset before/after numbers for the manifest's `stats.mixing`.

When every weight is 1 nothing is written or changed: the shards are byte for byte those of an unweighted run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from dataprep.mix import Mixed, mix, mixing_stats
from dataprep.shards import TokenSpill
from schemas.config import Config
from schemas.reasons import Reason, Status
from schemas.shard import SAMPLES_SCHEMA

if TYPE_CHECKING:
    from dataprep.pipeline import Counts

COPIES_FILE = "copies.parquet"


@dataclass(frozen=True)
class Weighting:
    """What mixing did, indexed like the token spill: its n original entries, then the copies."""

    mixed: Mixed
    copy_ids: np.ndarray  # sample_id of each copy (after every input id)
    dropped_ids: np.ndarray  # sample_ids weighted out (every chunk of a row)
    stats: dict[str, dict[str, Any]]

    @property
    def live(self) -> np.ndarray:
        """Spill entries that go into the shards: originals not weighted out, and every copy."""
        return np.concatenate([self.mixed.keep, np.ones(len(self.copy_ids), dtype=bool)])

    @property
    def original(self) -> np.ndarray:
        """Index of the original spill entry each entry stands for (itself for originals)."""
        return np.concatenate([np.arange(len(self.mixed.keep)), self.mixed.copy_of])


def apply_weights(cfg: Config, work: Path, spill: TokenSpill, next_id: int, counts: Counts,
                  row_trainable: dict[int, int]) -> Weighting:
    """`next_id` is the first id after every input sample; `row_trainable` holds the trained tokens of each
    chunked row as counted before it was cut (a chunk's first token is never trained)."""
    kept = (pl.scan_parquet(work / "samples.parquet")
            .filter(pl.col("status") == str(Status.kept))
            .select("sample_id", "dataset_index", "chunk", "num_tokens", "num_trainable", "reason")
            .collect())
    sample_ids = kept["sample_id"].to_numpy()
    if not np.array_equal(sample_ids, np.asarray(spill.sample_ids, dtype=np.int64)):
        raise AssertionError("the kept samples in samples.parquet are not the token spill's, in order")
    row_of = sample_ids - kept["chunk"].fill_null(0).to_numpy()
    dataset_of = kept["dataset_index"].to_numpy().astype(np.int64)
    trainable = kept["num_trainable"].to_numpy().astype(np.int64)
    mixed = mix(row_of, dataset_of, [ds.weight for ds in cfg.datasets], cfg.seed)
    stats = mixing_stats([ds.path for ds in cfg.datasets], dataset_of, trainable, mixed)
    copy_ids = next_id + np.arange(len(mixed.copy_of), dtype=np.int64)
    if len(copy_ids):
        spill.repeat(mixed.copy_of, copy_ids)
        _write_copies(work, sample_ids[mixed.copy_of], copy_ids)
    counts.repeated = len(copy_ids)
    dropped = ~mixed.keep
    if mixed.changed:
        first = sample_ids - kept["chunk"].fill_null(0).to_numpy()
        copy_first = copy_ids - kept["chunk"].fill_null(0).to_numpy()[mixed.copy_of]
        _count(cfg, counts, _per_dataset(kept.filter(pl.Series(dropped)), first[dropped], row_trainable),
               _per_dataset(kept[mixed.copy_of], copy_first, row_trainable))
    return Weighting(mixed, copy_ids, sample_ids[dropped], stats)


def _write_copies(work: Path, originals: np.ndarray, copy_ids: np.ndarray) -> None:
    """The copies' samples.parquet rows: each original's row with the copy's id and repeat_of."""
    link = pl.DataFrame({"repeat_of": originals, "copy_id": copy_ids})
    rows = (pl.scan_parquet(work / "samples.parquet")
            .join(link.lazy(), left_on="sample_id", right_on="repeat_of", how="inner")
            .with_columns(repeat_of=pl.col("sample_id"), sample_id=pl.col("copy_id"))
            .select(SAMPLES_SCHEMA.names)
            .sort("sample_id")
            .collect())
    pq.write_table(rows.to_arrow().cast(SAMPLES_SCHEMA), work / COPIES_FILE)


def _per_dataset(samples: pl.DataFrame, first_ids: np.ndarray, row_trainable: dict[int, int]) -> pl.DataFrame:
    """Input rows (or copies of them) per dataset: how many, their samples, tokens and trained tokens, chunked
    and truncated ones. `first_ids` is the id of each sample's first chunk (itself when not chunked): one row
    or one copy of it. A chunked row's trained tokens are those the row pass counted (row_trainable)."""
    rows = (samples.with_columns(first=pl.Series(first_ids), row=pl.col("sample_id") - pl.col("chunk").fill_null(0))
            .group_by("first")
            .agg(pl.col("row").first(), pl.col("dataset_index").first(), pl.col("num_tokens").sum(),
                 pl.col("num_trainable").sum(), pl.len().alias("samples"),
                 pl.col("chunk").is_not_null().any().alias("chunked"),
                 (pl.col("reason") == str(Reason.truncated)).any().alias("truncated")))
    if row_trainable:
        before_cut = pl.DataFrame({"row": list(row_trainable), "row_trainable": list(row_trainable.values())},
                                  schema={"row": pl.Int64, "row_trainable": pl.Int64})
        rows = (rows.join(before_cut, on="row", how="left")
                .with_columns(num_trainable=pl.coalesce("row_trainable", "num_trainable")))
    return (rows.group_by("dataset_index")
            .agg(pl.len().alias("rows"), pl.col("samples").sum(), pl.col("num_tokens").sum(),
                 pl.col("num_trainable").sum(), pl.col("chunked").sum(), pl.col("truncated").sum())
            .sort("dataset_index"))


def _count(cfg: Config, counts: Counts, weighted_out: pl.DataFrame, copies: pl.DataFrame) -> None:
    """Rows weighted out leave kept for dropped (the accounting counts input rows, a chunked row once); the
    per-dataset tokens count what is in the shards, copies included."""
    for r in weighted_out.iter_rows(named=True):  # one row per dataset
        per = counts.per_dataset[cfg.datasets[r["dataset_index"]].path]
        per["kept"] -= r["rows"]
        per["dropped"] += r["rows"]
        per["tokens"] -= r["num_tokens"]
        per["trainable"] -= r["num_trainable"]
        counts.kept -= r["rows"]
        counts.dropped += r["rows"]
        counts.samples -= r["samples"]
        counts.chunked -= r["chunked"]
        counts.truncated -= r["truncated"]
        counts.by_reason[str(Reason.truncated)] -= r["truncated"]
        counts.by_reason[str(Reason.weighted_out)] += r["rows"]
    counts.by_reason = +counts.by_reason  # a reason at 0 is not listed
    for r in copies.iter_rows(named=True):
        per = counts.per_dataset[cfg.datasets[r["dataset_index"]].path]
        per["tokens"] += r["num_tokens"]
        per["trainable"] += r["num_trainable"]
