"""Weighted mixing: `datasets[].weight` applied to the kept samples, after deduplication, before the split.

The unit of weighting is the input row (a row of the sample table): a completion row cut into chunks is kept,
dropped or repeated with all its chunks, and a pretrain document is dropped or repeated whole (its copies
continue the stream after every original document, cut at sequence_len like the rest). For a dataset with n
kept rows and weight w the rows appear round_half_up(w × n) times in all,
computed exactly on the weight as written (0.3 × 1000 = 300; 0.25 × 10 = 2.5 → 3; 2.5 × 3 = 7.5 → 8), as evenly
as possible: every row floor(total / n) times, plus one more time for the `total mod n` rows whose
blake2b(f"{seed}:weight:{row}") is smallest, `row` being the row's position in the input over all datasets
(the sample table's sample_id). So

    weight 0.3   keeps the 30% of rows with the smallest keys; the others are dropped (reason weighted_out)
    weight 2.5   keeps every row, adds one copy of every row and a second copy of the 50% with the smallest keys
                 (the fractional selection is of distinct rows: no row gets two extra copies before all get one)

The key depends only on the seed and the row's input position: not on the order rows finish in, the number of
workers, or what the other rows hold. The salt `weight:` keeps it independent of the
validation split's hash(seed, sample_id) (pack.choose_validation), so weighting a dataset down does not bias
which of its rows land in val.

As a stage (`mix_stage`, runner.STAGES: after dedup, filters and decontamination, before split), rows weighted
out are rejected as dropped/weighted_out and every kept row gets `repeats`, its number of copies. layout.py
turns the copies into samples of their own: new sample_ids numbered after every input id (copy 1 of every
repeated row in row order, then copy 2, ...; a chunked row's chunks stay consecutive), a samples.parquet row
each with `repeat_of` = the original's sample_id (for a chunk, the same chunk of the original; for a pretrain
piece, the document's first sample, since a copy is cut at other places of the stream) and the original's
dataset, source and status (kept). The split is chosen over the original rows and copies follow them, so one
row's copies are all in train or all in val. With every weight 1 the stage does not run.

`mix` and `mixing_stats` are plain arrays in and out, so they can be tested on their own.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import numpy as np

from dataprep.stage import Outcome, Rejected
from dataprep.table import KEPT, SampleTable, View
from schemas.config import Config
from schemas.reasons import Reason, Status

BLOCK = 1 << 16  # table rows per block in add_mixing


@dataclass(frozen=True)
class Mixed:
    """The outcome over the input samples (arrays indexed like the `mix` arguments)."""

    keep: np.ndarray  # bool: False = dropped by weight < 1 (weighted_out)
    copy_of: np.ndarray  # int64 index into the input samples, one per copy, in the order copies are numbered

    @property
    def changed(self) -> bool:
        return bool(len(self.copy_of)) or not bool(self.keep.all())


def target_count(weight: float, n: int) -> int:
    """How many times a dataset's n rows appear after weighting: round_half_up(weight × n), exact in decimal."""
    return int((Decimal(repr(weight)) * n).to_integral_value(rounding=ROUND_HALF_UP))


def weight_keys(row_ids: np.ndarray, seed: int) -> np.ndarray:
    """uint64 selection key per row id: blake2b(f"{seed}:weight:{row_id}"), little-endian."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(f"{seed}:weight:{i}".encode(), digest_size=8).digest(), "little")
         for i in row_ids.tolist()),
        dtype=np.uint64, count=len(row_ids))


def repeat_counts(row_ids: np.ndarray, weight: float, seed: int) -> np.ndarray:
    """How many times each of one dataset's rows appears (0 = dropped), summing to target_count(weight, n)."""
    n = len(row_ids)
    counts = np.zeros(n, dtype=np.int64)
    if n == 0:
        return counts
    whole, extra = divmod(target_count(weight, n), n)
    counts[:] = whole
    if extra:
        counts[np.lexsort((row_ids, weight_keys(row_ids, seed)))[:extra]] += 1
    return counts


def mix(row_of: np.ndarray, dataset_of: np.ndarray, weights: list[float], seed: int) -> Mixed:
    """Weights applied to kept samples: `row_of` is each sample's input-row id (a chunk's first chunk's
    sample_id; the sample's own id otherwise), `dataset_of` its index into `weights`."""
    rows, first, inverse = np.unique(row_of, return_index=True, return_inverse=True)
    times = np.ones(len(rows), dtype=np.int64)  # appearances per row (index into `rows`)
    row_dataset = dataset_of[first]
    for d, w in enumerate(weights):
        if w == 1:
            continue
        in_d = np.flatnonzero(row_dataset == d)
        times[in_d] = repeat_counts(rows[in_d], w, seed)
    keep = times[inverse] > 0
    # Copies: round r = 1 .. max-1 takes every row appearing more than r times, in sample_id order; each row
    # contributes its samples (chunks) in order, so a copied row's chunks get consecutive new ids.
    order = np.argsort(row_of, kind="stable")  # samples grouped by row, rows ascending, chunks in order
    copy_parts = [order[times[inverse[order]] > r] for r in range(1, int(times.max(initial=1)))]
    copy_of = np.concatenate(copy_parts).astype(np.int64) if copy_parts else np.zeros(0, np.int64)
    return Mixed(keep, copy_of)


def mixing_stats(names: list[str], dataset_of: np.ndarray, trainable: np.ndarray, mixed: Mixed
                 ) -> dict[str, dict[str, Any]]:
    """Per dataset: samples and trained tokens before and after weighting (copies included), and each one's
    share of all trained tokens (`share_*`) and of all samples (`sample_share_*`)."""
    after_idx = np.concatenate([np.flatnonzero(mixed.keep), mixed.copy_of])
    k = len(names)
    after = dataset_of[after_idx]
    return mixing_entries(names, np.bincount(dataset_of, minlength=k), np.bincount(after, minlength=k),
                          np.bincount(dataset_of, weights=trainable, minlength=k).astype(np.int64),
                          np.bincount(after, weights=trainable[after_idx], minlength=k).astype(np.int64))


def mixing_entries(names: list[str], samples_before: np.ndarray, samples_after: np.ndarray,
                   trained_before: np.ndarray, trained_after: np.ndarray) -> dict[str, dict[str, Any]]:
    """stats.mixing from the per-dataset totals (by dataset index)."""

    def share(part: np.ndarray, i: int) -> float:
        total = int(part.sum())
        return round(int(part[i]) / total, 6) if total else 0.0

    out: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(names):
        entry = out.setdefault(name, {"samples_before": 0, "samples_after": 0, "trained_tokens_before": 0,
                                      "trained_tokens_after": 0, "share_before": 0.0, "share_after": 0.0,
                                      "sample_share_before": 0.0, "sample_share_after": 0.0})
        # Two datasets[] entries with the same path are one name in the manifest: their numbers add up.
        entry["samples_before"] += int(samples_before[i])
        entry["samples_after"] += int(samples_after[i])
        entry["trained_tokens_before"] += int(trained_before[i])
        entry["trained_tokens_after"] += int(trained_after[i])
        entry["share_before"] = round(entry["share_before"] + share(trained_before, i), 6)
        entry["share_after"] = round(entry["share_after"] + share(trained_after, i), 6)
        entry["sample_share_before"] = round(entry["sample_share_before"] + share(samples_before, i), 6)
        entry["sample_share_after"] = round(entry["sample_share_after"] + share(samples_after, i), 6)
    return out


@dataclass(frozen=True)
class MixSettings:
    weights: tuple[float, ...]  # by dataset_index
    seed: int


def mix_settings(cfg: Config) -> MixSettings | None:
    """None (the stage does not run) when every weight is 1."""
    weights = tuple(ds.weight for ds in cfg.datasets)
    return MixSettings(weights, cfg.seed) if any(w != 1 for w in weights) else None


def mix_stage(view: View, s: MixSettings) -> Outcome:
    """The stage: rows weighted out are dropped (weighted_out); `repeats` = copies of each kept row."""
    mixed = mix(view["sample_id"], view["dataset_index"].astype(np.int64), list(s.weights), s.seed)
    repeats = np.bincount(mixed.copy_of, minlength=len(view)).astype(np.int32)
    out = np.flatnonzero(~mixed.keep)
    return Outcome(rejected=[Rejected(out, Status.dropped, str(Reason.weighted_out))] if len(out) else [],
                   columns={"repeats": repeats})


def add_mixing(counts: dict[str, Any], table: SampleTable, names: list[str], copies: int) -> None:
    """counts (outputs.counts) after the stages: `mixing` (stats.mixing), `repeated_samples` (the copies'
    samples), and each dataset's tokens with its copies' (what the shards hold). Summed a block of table rows
    at a time: arrays of the kept rows were ~40 bytes a row at the end of a 1M-row run (bench/prepare_memory.py)."""
    c = table.columns
    code = table.reasons.index(str(Reason.weighted_out)) if str(Reason.weighted_out) in table.reasons else -2
    k = len(names)
    # by dataset: samples before, after; trained tokens before, after; the copies' tokens, trained tokens; rows
    # with copies
    sums = np.zeros((7, k), np.int64)
    for lo in range(0, len(table), BLOCK):
        weighted_out = c["reason"][lo:lo + BLOCK] == code
        rows = (c["status"][lo:lo + BLOCK] == KEPT) | weighted_out
        dataset = c["dataset_index"][lo:lo + BLOCK][rows].astype(np.int64)
        trainable = c["num_trainable"][lo:lo + BLOCK][rows].astype(np.int64)
        repeats = (c["repeats"][lo:lo + BLOCK][rows].astype(np.int64) if "repeats" in c
                   else np.zeros(len(dataset), np.int64))
        after = (~weighted_out[rows]).astype(np.int64) + repeats  # a kept row and its copies
        for i, weights in enumerate((None, after, trainable, after * trainable,
                                     repeats * c["num_tokens"][lo:lo + BLOCK][rows], repeats * trainable,
                                     repeats > 0)):
            sums[i] += np.bincount(dataset, weights=weights, minlength=k).astype(np.int64)
        table.release()
    counts["mixing"] = mixing_entries(names, *sums[:4])
    counts["repeated_samples"] = copies
    for d in np.flatnonzero(sums[6]).tolist():
        per = counts["per_dataset"][names[d]]
        per["tokens"] += int(sums[4, d])
        per["trainable"] += int(sums[5, d])
