"""train/data.py's fast path (micro-batches built a chunk at a time by train/assemble.py) against a plain
reference loader written here: pyarrow rows, one row at a time in numpy, following the module docstring (epoch
permutation from (seed, epoch), rounds of micro_batch_size * world_size rows, the short last round split with
np.array_split, padding to the longest row). Packed and unpacked (padded, labels -100) data, several
micro_batch_size / world_size / rank / epoch / shuffle combinations, chunk sizes from one micro-batch to the
whole epoch, resume mid-epoch, the three-copies fallback for shards without a strided token view, and the
refusal of rows whose sample_ids and cu_seqlens disagree.

Run: PYTHONPATH=$PWD .venv/bin/python -m pytest tests/train/test_data_reference.py -q
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import train.data
from tests.train.test_data import _arrow_rows
from train.data import PAD_TOKEN_ID, Batch, DataError, LoaderState, iterate_batches, open_prepared

FIELDS = ("input_ids", "labels", "position_ids", "sample_ids")


def _reference_batch(rows: list[dict[str, Any]]) -> dict[str, Any]:
    if not rows:  # a rank without a row in the last round
        return {"input_ids": [[PAD_TOKEN_ID]], "labels": [[-100]], "position_ids": [[0]], "sample_ids": [[-1]],
                "cu_seqlens": [0, 1], "max_seqlen": 1, "num_tokens": 0, "num_trainable": 0}
    t = max(len(r["input_ids"]) for r in rows)
    out = {k: np.full((len(rows), t), fill, np.int64)
           for k, fill in (("input_ids", PAD_TOKEN_ID), ("labels", -100), ("position_ids", 0), ("sample_ids", -1))}
    cu = [0]
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        out["input_ids"][i, :n] = r["input_ids"]
        out["labels"][i, :n] = r["labels"]
        out["position_ids"][i, :n] = r["position_ids"]
        out["position_ids"][i, n:] = np.arange(t - n)
        out["sample_ids"][i, :n] = np.repeat(r["sample_ids"], np.diff(r["cu_seqlens"]))
        cu += [i * t + x for x in r["cu_seqlens"][1:]] + ([(i + 1) * t] if n < t else [])
    return {**{k: v.tolist() for k, v in out.items()}, "cu_seqlens": cu, "max_seqlen": int(max(np.diff(cu))),
            "num_tokens": sum(len(r["input_ids"]) for r in rows),
            "num_trainable": sum(r["num_trainable"] for r in rows)}


def reference(out: Path, split: str, mbs: int, *, seed: int, rank: int = 0, world_size: int = 1,
              shuffle: bool = True, epochs: int = 1) -> list[tuple[dict[str, Any], LoaderState]]:
    rows = _arrow_rows(out, split)
    per_round = mbs * world_size
    n, full = math.ceil(len(rows) / per_round), len(rows) // per_round
    got = []
    for epoch in range(epochs):
        order = np.random.default_rng([seed, epoch]).permutation(len(rows)) if shuffle else np.arange(len(rows))
        for i in range(n):
            if i < full:
                mine = order[i * per_round + rank * mbs:i * per_round + (rank + 1) * mbs]
            else:
                mine = np.array_split(order[full * per_round:], world_size)[rank]
            state = LoaderState(epoch, i + 1) if i + 1 < n else LoaderState(epoch + 1, 0)
            got.append((_reference_batch([rows[j] for j in mine]), state))
    return got


def _same(batch: Batch, want: dict[str, Any]) -> None:
    for f in FIELDS:
        t = getattr(batch, f)
        assert t.dtype == torch.int64 and t.is_contiguous() and t.tolist() == want[f], f
    assert batch.cu_seqlens.dtype == torch.int32 and batch.cu_seqlens.tolist() == want["cu_seqlens"]
    for f in ("max_seqlen", "num_tokens", "num_trainable"):
        assert type(getattr(batch, f)) is int and getattr(batch, f) == want[f], f


COMBOS = [(1, 1, 0), (2, 1, 0), (3, 1, 0), (8, 1, 0), (32, 1, 0), (1, 2, 1), (3, 2, 0), (3, 2, 1), (4, 3, 2),
          (2, 7, 6), (1, 4, 3)]


@pytest.mark.parametrize("fixture", ["packed", "unpacked"])
@pytest.mark.parametrize("chunk_tokens", [None, 1, 300])
def test_fast_path_equals_the_reference_loader(fixture: str, chunk_tokens: int | None,
                                               request: pytest.FixtureRequest,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    out = request.getfixturevalue(fixture)
    if chunk_tokens is not None:  # 1: one micro-batch a chunk; 300: a few; default: the whole epoch at once
        monkeypatch.setattr(train.data, "CHUNK_TOKENS", chunk_tokens)
    data = open_prepared(out)
    assert all(c.tokens is not None for c in data.split("train").chunks)  # the strided view, as written
    for (mbs, world_size, rank), shuffle in itertools.product(COMBOS, (True, False)):
        want = reference(out, "train", mbs, seed=11, rank=rank, world_size=world_size, shuffle=shuffle,
                         epochs=2)
        got = list(iterate_batches(data, "train", mbs, seed=11, rank=rank, world_size=world_size,
                                   shuffle=shuffle, epochs=2))
        assert len(got) == len(want)
        for (batch, state), (ref, ref_state) in zip(got, want, strict=True):
            assert state == ref_state
            _same(batch, ref)
    for mbs in (1, 2, 5):
        for (batch, _), (ref, _) in zip(iterate_batches(data, "val", mbs, seed=0, shuffle=False, epochs=1),
                                        reference(out, "val", mbs, seed=0, shuffle=False), strict=True):
            _same(batch, ref)


@pytest.mark.parametrize("fixture", ["packed", "unpacked"])
def test_resume_mid_epoch_equals_the_reference_tail(fixture: str, request: pytest.FixtureRequest,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    out = request.getfixturevalue(fixture)
    monkeypatch.setattr(train.data, "CHUNK_TOKENS", 500)  # resumed chunks start where the state says
    data = open_prepared(out)
    for mbs, world_size, rank in ((1, 1, 0), (3, 2, 1), (2, 3, 0)):
        want = reference(out, "train", mbs, seed=2, rank=rank, world_size=world_size, epochs=3)
        for stop in (1, 2, len(want) // 3 - 1, len(want) // 3, len(want) // 2 + 1):
            got = iterate_batches(data, "train", mbs, seed=2, rank=rank, world_size=world_size,
                                  start=want[stop - 1][1], epochs=3)
            pairs = list(zip(got, want[stop:], strict=True))
            assert pairs
            for (batch, state), (ref, ref_state) in pairs:
                assert state == ref_state
                _same(batch, ref)


def test_three_copies_fallback_equals_the_reference(unpacked: Path) -> None:
    data = open_prepared(unpacked)
    for c in data.split("train").chunks:
        c.tokens = None  # as for a file whose token columns are not at one stride
    for mbs in (1, 4):
        for (batch, _), (ref, _) in zip(iterate_batches(data, "train", mbs, seed=3, epochs=1),
                                        reference(unpacked, "train", mbs, seed=3), strict=True):
            _same(batch, ref)


def test_rows_whose_sample_ids_and_cu_seqlens_disagree_are_refused(packed: Path) -> None:
    data = open_prepared(packed)
    data.split("train").where[0, 4] -= 1  # the first row now has one sample id fewer than its runs
    with pytest.raises(DataError, match=r"train-00000\.arrow: rows whose sample_ids and cu_seqlens disagree; "
                                        r"run `tessera prepare CONFIG --force`"):
        next(iterate_batches(data, "train", 1, seed=0))
