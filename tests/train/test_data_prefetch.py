"""The loader's fast path beyond test_data_reference.py: iterate_batches with and without the prefetch thread
(train/prefetch.py), with tensor views made in groups of GROUP micro-batches (group boundaries inside a chunk,
across epochs and at resume), each against the plain per-row reference loader, on packed and unpacked (padded)
data at several micro_batch_size / world_size / rank / epoch combinations; batches changed in place by the
consumer never change another batch (nor overlap it in memory); Batch keeps its field names; the prefetch thread
stops when the consumer leaves, and an error while building a chunk reaches the consumer.

Run: PYTHONPATH=$PWD .venv/bin/python -m pytest tests/train/test_data_prefetch.py -q
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import pytest
import torch

import train.assemble
import train.data
from tests.train.test_data_reference import _same, reference
from train.data import iterate_batches, open_prepared
from train.prefetch import prefetched

COMBOS = [(1, 1, 0), (2, 1, 0), (5, 1, 0), (32, 1, 0), (1, 3, 2), (3, 2, 1), (2, 7, 6)]


@pytest.mark.parametrize("fixture", ["packed", "unpacked"])
@pytest.mark.parametrize("prefetch", [False, True])
@pytest.mark.parametrize(("chunk_tokens", "group"), [(None, 1), (None, 3), (700, 2), (1, 32)])
def test_prefetch_and_groups_equal_the_reference(fixture: str, prefetch: bool, chunk_tokens: int | None,
                                                 group: int, request: pytest.FixtureRequest,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    out = request.getfixturevalue(fixture)
    if chunk_tokens is not None:
        monkeypatch.setattr(train.data, "CHUNK_TOKENS", chunk_tokens)
    monkeypatch.setattr(train.assemble, "GROUP", group)
    data = open_prepared(out)
    for mbs, world_size, rank in COMBOS:
        want = reference(out, "train", mbs, seed=5, rank=rank, world_size=world_size, epochs=3)
        got = list(iterate_batches(data, "train", mbs, seed=5, rank=rank, world_size=world_size, epochs=3,
                                   prefetch=prefetch))
        assert len(got) == len(want)
        for (batch, state), (ref, ref_state) in zip(got, want, strict=True):
            assert state == ref_state
            _same(batch, ref)
        for stop in (1, len(want) // 2 + 1):  # resumed mid-chunk, mid-group
            tail = iterate_batches(data, "train", mbs, seed=5, rank=rank, world_size=world_size,
                                   start=want[stop - 1][1], epochs=3, prefetch=prefetch)
            for (batch, state), (ref, ref_state) in zip(tail, want[stop:], strict=True):
                assert state == ref_state
                _same(batch, ref)


@pytest.mark.parametrize("fixture", ["packed", "unpacked"])
def test_a_batch_changed_in_place_leaves_the_others_intact(fixture: str, request: pytest.FixtureRequest) -> None:
    """Batches are views of one chunk's arrays: each must cover its own range, so that overwriting a batch
    (here every tensor of it, after checking it) never shows up in the batches after it."""
    out = request.getfixturevalue(fixture)
    data = open_prepared(out)
    for mbs in (1, 3):
        want = reference(out, "train", mbs, seed=4, epochs=2)
        for (batch, _), (ref, _) in zip(iterate_batches(data, "train", mbs, seed=4, epochs=2), want, strict=True):
            _same(batch, ref)
            for t in (batch.input_ids, batch.labels, batch.position_ids, batch.sample_ids, batch.cu_seqlens):
                t.fill_(-7)


def _loader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "tessera-loader"]


def _no_loader_thread_within(seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _loader_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    return not _loader_threads()


def test_the_thread_stops_when_the_consumer_leaves(packed: Path) -> None:
    assert _no_loader_thread_within(5)
    data = open_prepared(packed)
    batches = iterate_batches(data, "train", 1, seed=0, prefetch=True)  # forever
    for _ in range(5):
        next(batches)
    assert len(_loader_threads()) == 1
    batches.close()
    assert _no_loader_thread_within(5)
    batches = iterate_batches(data, "train", 2, seed=0, prefetch=True)
    next(batches)
    del batches  # dropped without close(), as a training loop's generator is when the run ends
    assert _no_loader_thread_within(5)


def test_an_error_while_building_reaches_the_consumer_in_order() -> None:
    def build(i: int) -> int:
        if i == 3:
            raise ValueError("chunk 3 is bad")
        return i * 10

    got = []
    with pytest.raises(ValueError, match="chunk 3 is bad"):
        for x in prefetched(iter(range(10)), build):
            got.append(x)
    assert got == [0, 10, 20]
    assert list(prefetched(iter(range(50)), lambda i: torch.tensor(i))) == [torch.tensor(i) for i in range(50)]
    assert _no_loader_thread_within(5)


def test_batch_is_a_named_tuple_with_the_public_field_names(packed: Path) -> None:
    """train/loop.py, evaluate.py and distributed.py read Batch fields by name: the NamedTuple keeps the names
    and order of the former dataclass, and each of a batch's tensors owns no other batch's range."""
    assert train.assemble.Batch._fields == ("input_ids", "labels", "position_ids", "sample_ids", "cu_seqlens",
                                            "max_seqlen", "num_tokens", "num_trainable")
    data = open_prepared(packed)
    batches = [b for b, _ in iterate_batches(data, "train", 1, seed=0, epochs=1)]
    assert all(type(b) is train.assemble.Batch for b in batches)
    spans = sorted((t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()) for b in batches
                   for t in (b.input_ids, b.labels, b.position_ids, b.sample_ids, b.cu_seqlens))
    assert all(end <= start for (_, end), (start, _) in itertools.pairwise(spans))
