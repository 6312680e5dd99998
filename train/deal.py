"""Which rows each micro-batch of each rank gets, chunk by chunk (train/data.py's module docstring states the
rules: an order drawn from (seed, epoch) per epoch, rounds of micro_batch_size * world_size rows, the short last
round split as evenly as possible)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

# A chunk: the rows of its micro-batches back to back (indices into the split), how many each has, and the
# spans of micro-batches it covers, (epoch, first, last, per epoch): micro-batches first..last-1 of that epoch.
Span = tuple[int, int, int, int]
Plan = tuple[np.ndarray, np.ndarray, list[Span]]


def plan(rows: int, n: int, per_chunk: int, mbs: int, seed: int, rank: int, world_size: int, shuffle: bool,
         epoch: int, index: int, epochs: int | None) -> Iterator[Plan]:
    """The chunks of `rank` from micro-batch `index` of `epoch` on, each of per_chunk micro-batches (n per
    epoch), across epochs when an epoch ends inside a chunk; epochs=None goes on forever."""
    order, order_epoch = None, -1
    while epochs is None or epoch < epochs:
        picked, counts, spans, taken = [], [], [], 0
        while taken < per_chunk and (epochs is None or epoch < epochs):
            if order_epoch != epoch:
                order, order_epoch = (np.random.default_rng([seed, epoch]).permutation(rows) if shuffle
                                      else np.arange(rows)), epoch
            last = min(index + per_chunk - taken, n)
            p, c = deal_range(order, index, last, mbs, rank, world_size)
            picked.append(p)
            counts.append(c)
            spans.append((epoch, index, last, n))
            taken += last - index
            epoch, index = (epoch + 1, 0) if last == n else (epoch, last)
        yield np.concatenate(picked), np.concatenate(counts), spans


def deal_range(order: np.ndarray, first: int, last: int, mbs: int, rank: int,
                world_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows of micro-batches first..last-1 of `rank`, back to back, and how many each has: _deal for each,
    with the full rounds taken in one slice."""
    per_round = mbs * world_size
    full = min(last, len(order) // per_round)
    rows = [order[first * per_round:full * per_round].reshape(-1, per_round)[:, rank * mbs:(rank + 1) * mbs]
            .ravel()] if full > first else []
    rows += [deal(order, i, mbs, rank, world_size) for i in range(max(first, full), last)]
    counts = [mbs] * max(0, full - first) + [len(r) for r in rows[1 if full > first else 0:]]
    return np.concatenate(rows), np.array(counts, np.int64)


def deal(order: np.ndarray, i: int, mbs: int, rank: int, world_size: int) -> np.ndarray:
    """The rows of micro-batch i of `rank` in an epoch whose rows come in `order`."""
    per_round = mbs * world_size
    full = len(order) // per_round
    if i < full:
        first = i * per_round + rank * mbs
        return order[first:first + mbs]
    q, extra = divmod(len(order) - full * per_round, world_size)  # the last, partial round
    first = full * per_round + rank * q + min(rank, extra)
    return order[first:first + q + (rank < extra)]


