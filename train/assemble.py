"""Micro-batch assembly for train/data.py: the rows of many micro-batches at once -> Batches.

On this 2-core VM a numpy call costs about as much as copying 1,000 tokens, and creating and freeing a torch
tensor about as much again, so per-micro-batch calls, not the copying, bounded the loader (~50 µs a
micro-batch at micro_batch_size 1). Here the micro-batches of a chunk (about CHUNK_TOKENS tokens) are built
together, and each step is a fixed number of calls per chunk (the copy also slices a view of each row):

    rows         Rows.table[picked]: chunk, token range, trained tokens and runs of every row, one fancy index
    tokens       one np.concatenate of every row's strided [3, n] view of Chunk.tokens (int32 input_ids,
                 labels, position_ids in the shard), each short row followed by a slice of a padding block,
                 into a [3, chunk tokens] int64 array, widened as it copies
    sample_ids   one np.repeat over the chunk's runs (each row's samples, plus its padding run)
    cu_seqlens   one cumsum over the same runs, made relative to each micro-batch's first token
    scalars      max_seqlen, num_tokens, num_trainable: one reduceat each (none at micro_batch_size 1), then
                 one .tolist() each, so that a Batch holds Python ints
    tensors      torch.from_numpy once per array per chunk; then, as the consumer takes them, one narrow +
                 split per array for every GROUP micro-batches: at micro_batch_size 1 the splits are the
                 Batch's [1, T] tensors, otherwise one view + unbind per micro-batch
    Batches      tuples (Batch is a NamedTuple) made in C by map + zip over the group's splits and scalars,
                 the groups chained in C (itertools.chain), so no Python frame runs per micro-batch here

Per micro-batch at micro_batch_size 1 (a ~970-token row; 50M tokens/s leaves ~19 µs) what is left is the
copy (~7-10 µs, ~3 µs of it because the rows are read in random order, 12 KB each, from the page cache), the
five tensors (~0.7 µs each to create and free) and ~2 µs of per-chunk numpy calls shared out (bench/RESULTS.md).

assemble() does everything but the last step at once (on train/prefetch.py's thread when the loader
prefetches) and returns an iterator that makes the views (in the consumer's thread, _views says why lazily).
Each micro-batch's tensors are views of its own range of the chunk's arrays (32 bytes a token), which live as
long as one of its Batches does. What is yielded does not depend on the chunking, the grouping or the thread:
the same values, shapes and dtypes as building every micro-batch on its own (tests/train/test_data_reference.py
and test_data_prefetch.py compare with a plain per-row loader at several chunk and group sizes).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from itertools import chain
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from schemas.shard import IGNORE_INDEX

PAD_TOKEN_ID = 0  # any id the model can embed works: padding is never attended to from, nor trained
# ~256k tokens a chunk (8 MiB of arrays): the per-chunk calls (~50) then cost < 1 µs a row; measured, 2^14-2^17
# were 10-40% slower at micro_batch_size 8-32, 2^20 no faster at 1.
CHUNK_TOKENS = 1 << 18
GROUP = 32  # micro-batches whose tensor views are made together (_views says why not a chunk's)
# Views of consecutive ranges of one tensor, made in one C++ loop. The unsafe_ variant makes them without
# autograd's view tracking (integer tensors are never differentiated): measured ~20% less per tensor.
_split = torch.unsafe_split_with_sizes


class Batch(NamedTuple):
    """One micro-batch. A NamedTuple, not a dataclass: one is made per micro-batch, and a tuple is made in C
    (_new_batch) at a quarter of a dataclass __init__'s cost. Nothing assigns to a Batch's fields."""

    input_ids: torch.Tensor  # int64 [B, T]
    labels: torch.Tensor  # int64 [B, T], aligned with input_ids as in the shards (not shifted); -100 = not trained
    position_ids: torch.Tensor  # int64 [B, T], restart at 0 per sample; a padding tail is its own run
    sample_ids: torch.Tensor  # int64 [B, T], samples.parquet sample_id of each token, -1 on padding
    cu_seqlens: torch.Tensor  # int32 [n+1], boundaries over the flattened B*T tokens (padding runs included)
    max_seqlen: int
    num_tokens: int  # non-padding tokens
    num_trainable: int  # label != -100


# Batch((fields...)) without a Python frame: map(_new_batch, zip(...)) builds a group's Batches in C.
_new_batch = partial(tuple.__new__, Batch)


@dataclass
class Chunk:
    """One record batch of a shard: numpy views straight into the memory-mapped file."""

    path: Path  # the shard, for error messages
    ids: np.ndarray  # int32 values of input_ids, all rows back to back
    labels: np.ndarray
    positions: np.ndarray
    # [3, tokens] int32 view of the three columns above, when the file lays them out at one stride (pyarrow's
    # writer does: equal offsets, equal buffer sizes, back to back), so that a row is one copy, not three.
    tokens: np.ndarray | None
    cu: np.ndarray  # int32 values of cu_seqlens
    sids: np.ndarray  # int64 values of sample_ids


@dataclass(frozen=True)
class Rows:
    """What assembly needs about every row of a split, gathered once per split (data.py, _rows) so that a
    chunk gets it for all its rows with one fancy index: table[r] = (chunk, start, end, trained, first run,
    runs). Run k of row r is a sample with id sid[first + k] and length length[first + k] (from cu_seqlens)."""

    table: np.ndarray  # int64 [rows, 6], the columns below
    sid: np.ndarray  # int64 [runs]
    length: np.ndarray  # int64 [runs]


CHUNK, START, END, TRAINED, FIRST_RUN, RUNS = range(6)


def ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """concatenate(arange(s, s + c) for s, c in zip(starts, counts)), without a Python loop."""
    firsts = np.cumsum(counts) - counts
    return np.repeat(starts - firsts, counts) + np.arange(int(counts.sum()))


_pad = np.zeros((3, 0), np.int64)


def _padding(width: int) -> np.ndarray:
    """Rows of input_ids, labels and position_ids of a padding tail, at least `width` long."""
    global _pad
    if _pad.shape[1] < width:
        width = max(width, 1024)
        _pad = np.stack([np.full(width, PAD_TOKEN_ID, np.int64), np.full(width, IGNORE_INDEX, np.int64),
                         np.arange(width, dtype=np.int64)])
    return _pad


def padding_batch() -> Batch:
    """For a rank left without a row in an epoch's last round: one padding token, nothing counted."""
    def one(value: int) -> torch.Tensor:
        return torch.full((1, 1), value, dtype=torch.int64)

    return Batch(one(PAD_TOKEN_ID), one(IGNORE_INDEX), one(0), one(-1), torch.tensor([0, 1], dtype=torch.int32),
                 1, 0, 0)


def _copy_rows(tokens: np.ndarray, chunks: list[Chunk], info: np.ndarray, dst: np.ndarray,
               row_width: np.ndarray | None, pad: np.ndarray) -> None:
    """The chunk's rows, each followed by its padding when short, back to back into `tokens`: one
    np.concatenate of the rows' [3, n] int32 views (Chunk.tokens), widened to int64 as it copies (measured: 20%
    less CPU than gathering int32 and widening the chunk in one call, and ~5% less than a Python loop of one
    copy per row). Reading the rows in the epoch's random order costs ~3 µs a row more than in file order
    (12 KB each from the page cache, measured). Shards without the strided view take three copies per row."""
    views = [c.tokens for c in chunks]
    rows = zip(info[:, CHUNK].tolist(), info[:, START].tolist(), info[:, END].tolist(), strict=True)
    if not any(v is None for v in views):
        if row_width is None:  # one row per micro-batch: no padding
            parts = [views[c][:, s:e] for c, s, e in rows]
        else:
            parts = []
            for (c, s, e), t in zip(rows, row_width.tolist(), strict=True):
                parts.append(views[c][:, s:e])
                if e - s < t:
                    parts.append(pad[:, :t - e + s])
        np.concatenate(parts, axis=1, out=tokens, casting="safe")
        return
    widths = (info[:, END] - info[:, START]).tolist() if row_width is None else row_width.tolist()
    for (c, s, e), d, t in zip(rows, dst.tolist(), widths, strict=True):
        n = e - s
        if views[c] is not None:
            tokens[:, d:d + n] = views[c][:, s:e]
        else:
            src = chunks[c]
            tokens[0, d:d + n], tokens[1, d:d + n], tokens[2, d:d + n] = (
                src.ids[s:e], src.labels[s:e], src.positions[s:e])
        if n < t:
            tokens[:, d + n:d + t] = pad[:, :t - n]


def _with_padding(built: Iterator[Batch], counts: list[int]) -> Iterator[Batch]:
    for k in counts:
        yield next(built) if k else padding_batch()


def assemble(chunks: list[Chunk], rows: Rows, picked: np.ndarray, counts: np.ndarray) -> Iterator[Batch]:
    """The Batches of consecutive micro-batches: micro-batch j holds the next counts[j] of `picked` (row
    indices into the split); a micro-batch of 0 rows is a padding batch. The arrays are built now, the Batches
    (views of them) as they are iterated."""
    if not counts.all():
        return _with_padding(assemble(chunks, rows, picked, counts[counts > 0]) if counts.any() else iter(()),
                             counts.tolist())
    info = rows.table[picked]
    length = info[:, END] - info[:, START]
    nruns = info[:, RUNS]
    source = ranges(info[:, FIRST_RUN], nruns)
    one_row = len(counts) == len(picked)
    if one_row:  # one row per micro-batch (micro_batch_size 1, the usual choice with packing): no padding
        width = row_width = size = length
        run_len, run_sid, per_batch, num_tokens, num_trainable = (
            rows.length[source], rows.sid[source], nruns, length, info[:, TRAINED])
    else:
        first = np.cumsum(counts) - counts  # each micro-batch's first row
        width = np.maximum.reduceat(length, first)  # T: each micro-batch is padded to its longest row
        row_width = np.repeat(width, counts)
        size = counts * width
        # Runs in chunk order: each row's samples, then a padding run (sample id -1) when the row is short.
        padded = length < row_width
        slots = nruns + padded
        slot_first = np.cumsum(slots) - slots
        run_len, run_sid = np.empty(int(slots.sum()), np.int64), np.empty(int(slots.sum()), np.int64)
        real = ranges(slot_first, nruns)
        run_len[real], run_sid[real] = rows.length[source], rows.sid[source]
        tails = (slot_first + nruns)[padded]
        run_len[tails], run_sid[tails] = (row_width - length)[padded], -1
        per_batch = np.add.reduceat(slots, first)
        num_tokens, num_trainable = np.add.reduceat(length, first), np.add.reduceat(info[:, TRAINED], first)
    offset = np.cumsum(size) - size  # where each micro-batch starts in the chunk's arrays
    # where each row starts: its micro-batch's start plus its place in it times the micro-batch's width
    dst = offset if one_row else np.repeat(offset - first * width, counts) + np.arange(len(picked)) * row_width

    tokens = np.empty((3, int(size.sum())), np.int64)  # input_ids, labels, position_ids
    pad = _padding(0 if one_row else int((row_width - length).max()))
    _copy_rows(tokens, chunks, info, dst, None if one_row else row_width, pad)
    sample_ids = np.repeat(run_sid, run_len)

    run_first = np.cumsum(per_batch) - per_batch
    ends = np.cumsum(run_len) - np.repeat(offset, per_batch)  # run ends relative to their micro-batch
    cu = np.zeros(len(run_len) + len(size), np.int32)  # each micro-batch's cu_seqlens: 0, then its run ends
    cu[np.arange(len(run_len)) + np.repeat(np.arange(1, len(size) + 1), per_batch)] = ends
    scalars = (np.maximum.reduceat(run_len, run_first).tolist(), num_tokens.tolist(), num_trainable.tolist())
    return _tensors(tokens, sample_ids, cu, None if one_row else (counts, width), size, per_batch, *scalars)


def _tensors(tokens: np.ndarray, sample_ids: np.ndarray, cu: np.ndarray, shapes: tuple[np.ndarray, ...] | None,
             size: np.ndarray, per_batch: np.ndarray, *scalars: list[int]) -> Iterator[Batch]:
    """The chunk's arrays as tensors (torch.from_numpy once per array per chunk) and where each micro-batch
    lies in them; the Batches are views of these (_views), made as they are consumed."""
    cu_size = per_batch + 1
    at, cu_at = [0, *np.cumsum(size).tolist()], [0, *np.cumsum(cu_size).tolist()]
    if shapes is None:  # [1, N] each, so that a split along dim 1 gives a micro-batch's [1, T] directly
        fields = [torch.from_numpy(a[None]) for a in (*tokens, sample_ids)]
    else:  # [3, N] (input_ids, labels, position_ids) and [N]
        fields = [torch.from_numpy(tokens), torch.from_numpy(sample_ids)]
    fields.append(torch.from_numpy(cu))
    return _views(fields, size.tolist(), cu_size.tolist(), at, cu_at,
                  None if shapes is None else [x.tolist() for x in shapes], scalars)


def _views(fields: list[torch.Tensor], sizes: list[int], cu_sizes: list[int], at: list[int], cu_at: list[int],
           shapes: list[list[int]] | None, scalars: tuple[list[int], ...]) -> Iterator[Batch]:
    """The Batches: five tensors each, the fewest a Batch can hold (creating and freeing a tensor costs about
    as much as copying 1,000 tokens), made with one split per field for GROUP micro-batches. Not a whole
    chunk's at once: torch tensors are tracked by Python's garbage collector, and at micro_batch_size 1 a
    chunk's ~1,500 views alive together set off a collection every 700 and a full one (every object of the
    process, ~200k with torch imported) every few chunks: measured, a third of the loader's time. A group's
    ~200 objects are freed by the consumer before the next group is made, so no collection runs. The groups
    are chained in C (chain.from_iterable over a lazy map): no Python frame per micro-batch.

    Each micro-batch's views cover its own range of the chunk's arrays and no other's (padding is copied in,
    not shared), so a consumer that changes a Batch in place cannot change another Batch."""
    group = partial(_group, fields, sizes, cu_sizes, at, cu_at, shapes, scalars, GROUP)
    return chain.from_iterable(map(group, range(0, len(sizes), GROUP)))


def _group(fields: list[torch.Tensor], sizes: list[int], cu_sizes: list[int], at: list[int], cu_at: list[int],
           shapes: list[list[int]] | None, scalars: tuple[list[int], ...], size: int, g: int) -> Iterator[Batch]:
    """The Batches of micro-batches g .. g + size - 1 of a chunk (_views)."""
    *columns, cus = fields
    h = min(g + size, len(sizes))
    group = [x[g:h] for x in scalars]
    cs = _split(cus.narrow(0, cu_at[g], cu_at[h] - cu_at[g]), cu_sizes[g:h], 0)
    if shapes is None:
        # One row each (micro_batch_size 1, the usual choice with packing): the splits are the [1, T] tensors
        # themselves, with no torch call per micro-batch.
        parts = [_split(f.narrow(1, at[g], at[h] - at[g]), sizes[g:h], 1) for f in columns]
        return map(_new_batch, zip(*parts, cs, *group, strict=True))
    values, sids = columns
    return iter([_new_batch((*v.view(3, b, t).unbind(0), s.view(b, t), c, m, n, tr)) for v, s, c, b, t, m, n, tr in
                 zip(_split(values.narrow(1, at[g], at[h] - at[g]), sizes[g:h], 1),
                     _split(sids.narrow(0, at[g], at[h] - at[g]), sizes[g:h], 0), cs, *(x[g:h] for x in shapes),
                     *group, strict=True)])
