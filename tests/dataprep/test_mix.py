"""datasets[].weight as a plain function (dataprep/mix.py): exact counts and rounding, distinct fractional
selections, chunked rows weighted as one, selections that depend only on (seed, row id), the before/after
numbers of stats.mixing, and the mix stage on a hand-made sample table (rejected rows, `repeats`). Plain
arrays in, plain arrays out; no tokenizer.

    .venv/bin/python -m pytest tests/dataprep/test_mix.py -v
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from dataprep.mix import MixSettings, mix, mix_settings, mix_stage, mixing_stats, repeat_counts, target_count
from dataprep.table import SampleTable, View
from schemas.config import config_from_dict
from schemas.reasons import Status


def one_dataset(n: int, weight: float, seed: int = 42, first_id: int = 0):
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    return ids, mix(ids, np.zeros(n, np.int64), [weight], seed)


@pytest.mark.parametrize(("weight", "n", "expected"), [
    (0.3, 1000, 300), (2.5, 10, 25), (1.0, 7, 7), (0.25, 10, 3), (0.145, 100, 15), (2.5, 3, 8), (0.5, 1, 1),
    (0.01, 10, 0), (1.04, 10, 10), (100, 3, 300), (0.1, 0, 0),
])
def test_target_count_rounds_half_up_on_the_weight_as_written(weight: float, n: int, expected: int) -> None:
    # 0.145 * 100 is 14.499999999999998 in floating point, which would round to 14; the weight as written
    # gives 14.5 -> 15.
    assert target_count(weight, n) == expected


def test_weight_below_one_keeps_exactly_round_w_n() -> None:
    _, mixed = one_dataset(1000, 0.3)
    assert mixed.keep.sum() == 300 and len(mixed.copy_of) == 0


def test_weight_above_one_repeats_with_a_distinct_fractional_selection() -> None:
    ids, mixed = one_dataset(10, 2.5)
    assert mixed.keep.all()
    times = Counter(ids.tolist()) + Counter(ids[mixed.copy_of].tolist())
    assert sum(times.values()) == 25
    assert sorted(Counter(times.values()).items()) == [(2, 5), (3, 5)]  # 5 distinct rows get the third time
    # Copy numbering: copy 1 of every row in id order, then copy 2 of the selected ones.
    assert ids[mixed.copy_of[:10]].tolist() == list(range(10))
    assert sorted(ids[mixed.copy_of[10:]].tolist()) == ids[mixed.copy_of[10:]].tolist()


def test_no_row_gets_two_extra_copies_before_every_row_has_one() -> None:
    for weight, n in [(1.5, 7), (2.9, 11), (3.3, 20)]:
        counts = repeat_counts(np.arange(n, dtype=np.int64), weight, seed=1)
        assert counts.max() - counts.min() <= 1 and counts.sum() == target_count(weight, n)


def test_selection_depends_only_on_seed_and_row_ids() -> None:
    ids, a = one_dataset(200, 0.4)
    _, again = one_dataset(200, 0.4)
    assert np.array_equal(a.keep, again.keep)
    # The same rows in another order (another worker count would not even reorder them): the same ones kept.
    perm = np.random.default_rng(0).permutation(200)
    shuffled = mix(ids[perm], np.zeros(200, np.int64), [0.4], 42)
    assert set(ids[perm][shuffled.keep].tolist()) == set(ids[a.keep].tolist())
    # Another dataset before it (its rows take other ids) does not change this one's choice.
    both = mix(np.concatenate([np.arange(200, 260), ids]), np.repeat([1, 0], [60, 200]), [0.4, 0.5], 42)
    assert np.array_equal(both.keep[60:], a.keep)


def test_different_seeds_choose_different_rows() -> None:
    _, a = one_dataset(1000, 0.3, seed=1)
    _, b = one_dataset(1000, 0.3, seed=2)
    assert a.keep.sum() == b.keep.sum() == 300
    overlap = (a.keep & b.keep).sum()
    assert 40 < overlap < 160  # independent 30% draws share ~90


def test_weight_is_per_dataset() -> None:
    dataset = np.repeat([0, 1, 2], [100, 40, 30])
    mixed = mix(np.arange(170, dtype=np.int64), dataset, [0.3, 1.0, 2.5], 7)
    kept = np.bincount(dataset[mixed.keep], minlength=3)
    copies = np.bincount(dataset[mixed.copy_of], minlength=3)
    assert kept.tolist() == [30, 40, 30] and copies.tolist() == [0, 0, 45]


def test_a_chunked_row_is_weighted_as_one() -> None:
    # rows 0..49, each of 1-3 chunks: a chunk's row id is the first chunk's sample id
    sizes = np.random.default_rng(3).integers(1, 4, size=50)
    firsts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    row_of = np.repeat(firsts, sizes)
    for weight in (0.5, 1.5):
        mixed = mix(row_of, np.zeros(len(row_of), np.int64), [weight], 11)
        for first, size in zip(firsts.tolist(), sizes.tolist(), strict=True):
            assert len(set(mixed.keep[first:first + size].tolist())) == 1  # all chunks or none
        assert len(np.unique(row_of[mixed.keep])) == target_count(min(weight, 1.0), 50)
        # Copies keep a row's chunks together and in order.
        copied = mixed.copy_of.tolist()
        k = 0
        while k < len(copied):
            first = int(row_of[copied[k]])
            size = int(sizes[firsts.tolist().index(first)])
            assert copied[k:k + size] == list(range(first, first + size))
            k += size
        assert len(np.unique(row_of[mixed.copy_of])) == (target_count(weight, 50) - 50 if weight > 1 else 0)


def test_mixing_stats_before_and_after() -> None:
    dataset = np.repeat([0, 1], [10, 10])
    trainable = np.concatenate([np.full(10, 5), np.full(10, 20)])
    mixed = mix(np.arange(20, dtype=np.int64), dataset, [2.0, 0.5], 0)
    stats = mixing_stats(["a", "b"], dataset, trainable, mixed)
    assert stats["a"] == {"samples_before": 10, "samples_after": 20, "trained_tokens_before": 50,
                          "trained_tokens_after": 100, "share_before": 0.2, "share_after": 0.5,
                          "sample_share_before": 0.5, "sample_share_after": 0.8}
    assert stats["b"]["samples_after"] == 5 and stats["b"]["trained_tokens_after"] == 100
    assert stats["b"]["share_after"] == 0.5 and stats["b"]["sample_share_after"] == 0.2


def test_the_stage_rejects_weighted_out_rows_and_counts_copies() -> None:
    n = 22
    table = SampleTable({"sample_id": np.arange(n), "dataset_index": np.repeat([0, 1], [12, 10]).astype(np.int32)},
                        [], np.zeros(0, np.int32), np.zeros(0, np.int32), Path("."))
    view = View(table, np.arange(4, n))  # rows 0-3 were removed by an earlier stage: 8 rows of dataset 0 left
    outcome = mix_stage(view, MixSettings((0.5, 2.5), 42))
    [rejected] = outcome.rejected
    assert rejected.status is Status.dropped and rejected.reason == "weighted_out"
    assert len(rejected.rows) == 4 and (view["dataset_index"][rejected.rows] == 0).all()
    repeats = outcome.columns["repeats"]
    assert repeats[rejected.rows].sum() == 0 and repeats[view["dataset_index"] == 0].sum() == 0
    assert repeats.sum() == 15 and sorted(Counter(repeats[8:].tolist()).items()) == [(1, 5), (2, 5)]


def test_the_stage_runs_only_when_a_weight_is_not_1() -> None:
    base = {"tokenizer_config": "x", "seed": 3}
    ones = config_from_dict({**base, "datasets": [{"path": "a", "type": "alpaca"}, {"path": "b", "weight": 1}]})
    assert mix_settings(ones) is None
    mixed = config_from_dict({**base, "datasets": [{"path": "a", "type": "alpaca", "weight": 0.5},
                                                   {"path": "b", "type": "pretrain", "weight": 2}]})
    assert mix_settings(mixed) == MixSettings((0.5, 2.0), 3)
