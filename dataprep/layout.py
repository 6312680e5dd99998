"""The last two stages, split and pack, and the published sample ids.

After the rejecting stages, the kept rows are cut into samples (chunks.cut_rows: completion rows longer than
sequence_len, pretrain documents crossing a stream row's end) and the samples are numbered: in table order,
a kept row takes one id per piece and every other row one id, so ids run 0, 1, ... over samples.parquet.

    split  val_set_size of the kept rows, chosen by hash(seed, the row's first sample id) (pack.choose_validation);
           a split row's chunks stay together, pretrain documents are all train (as Axolotl). Adds `is_val`.
    pack   best-fit decreasing (sample_packing) or one sample per row, then the pretrain stream rows, per
           split: the `Layout` the shard writer follows.

Copies made by datasets[].weight > 1 (the mix stage's `repeats` column, mix.py) are cut like their original
(pretrain copies continue the stream after every original document) and numbered after every input id; they
follow their original into train or val.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dataprep.chunks import Pieces, cut_rows, piece_counts, stream_rows
from dataprep.pack import Rows, choose_validation, one_per_row, pack_best_fit
from dataprep.stage import Outcome
from dataprep.table import View
from schemas.config import Config


class SplitError(ValueError):
    """The validation split leaves nothing to train on (a config problem: exit 2)."""


@dataclass(frozen=True)
class LayoutSettings:
    sequence_len: int
    sample_packing: bool
    val_set_size: float
    seed: int
    types: tuple[str, ...]  # datasets[i].type, by dataset_index


def layout_settings(cfg: Config) -> LayoutSettings:
    return LayoutSettings(cfg.sequence_len, cfg.sample_packing, cfg.val_set_size, cfg.seed,
                          tuple(str(ds.type) for ds in cfg.datasets))


@dataclass
class Layout:
    pieces: Pieces
    sample_ids: np.ndarray  # published id of each piece
    count: np.ndarray  # published ids of each table row: its pieces if kept, else 1 (first ids: their cumsum)
    rows: dict[str, Rows]  # split -> shard rows (indices into pieces); only splits with rows
    # Pieces from `originals` on are copies (datasets[].weight): the table row each copies, and the published
    # id of the original sample it repeats.
    originals: int = 0
    copy_row: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    repeat_of: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def first_id(self) -> np.ndarray:
        """Published id of each table row (its first piece); built on demand, not held."""
        first = np.cumsum(self.count, dtype=np.int64)
        first -= self.count
        return first


def instances(view: View) -> np.ndarray | None:
    """View position of every instance to cut: the rows, then their copies (copy 1 of every repeated row in
    row order, then copy 2, ...); None when there are no copies (the instances are the view's rows)."""
    if "repeats" not in view.table.columns:
        return None
    repeats = view["repeats"]
    return np.concatenate([np.arange(len(view)), *(np.flatnonzero(repeats > r)
                                                   for r in range(int(repeats.max(initial=0))))])


def cut(view: View, s: LayoutSettings) -> tuple[Pieces, np.ndarray | None]:
    """The pieces of the active rows and their copies (pieces.row: index into the instances) and the instances
    (view positions; None: the view's rows)."""
    inst = instances(view)
    completion, pretrain = _type_flags(view, s, inst)
    offset, num_tokens = view["offset"], view["num_tokens"]
    if inst is not None:
        offset, num_tokens = offset[inst], num_tokens[inst]
    return cut_rows(offset, num_tokens, completion, pretrain, s.sequence_len), inst


def _type_flags(view: View, s: LayoutSettings, inst: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(completion, pretrain) per view row (per instance when given): per-dataset flags, then per row (an
    array of the type strings would take ~60 bytes a row)."""
    dataset = view["dataset_index"] if inst is None else view["dataset_index"][inst]
    return (np.array([t == "completion" for t in s.types], bool)[dataset],
            np.array([t == "pretrain" for t in s.types], bool)[dataset])


def published(view: View, pieces: Pieces, instances: int) -> tuple[np.ndarray, np.ndarray]:
    """The number of published ids of every table row, and each instance's first published id (copies after
    every table row's ids). Every row outside the view has one id, so a view row's first id is its table
    position plus the extra pieces of the view rows before it: no array of every table row's first id (8 bytes
    a row at pack's peak; Placed.save sums the counts a block at a time)."""
    per_inst = np.bincount(pieces.row, minlength=instances)
    count = np.ones(len(view.table), np.int32)  # a row's pieces: at most 64 for completion, more for a document
    count[view.rows] = per_inst[:len(view)]
    copies = per_inst[len(view):].copy()
    del per_inst
    extra = count[view.rows] - 1
    inst_first = np.cumsum(extra, dtype=np.int64)
    inst_first -= extra
    del extra
    inst_first += view.rows
    if len(copies):
        inst_first = np.concatenate([inst_first, int(count.sum(dtype=np.int64)) + np.cumsum(copies) - copies])
    return count, inst_first


def split(view: View, s: LayoutSettings) -> Outcome:
    # Only how many pieces each row becomes is needed here (the first published ids), not the pieces.
    completion, pretrain = _type_flags(view, s)
    counted = piece_counts(view["num_tokens"], completion, pretrain, s.sequence_len)
    count = np.ones(len(view.table), np.int32)
    stream = np.zeros(len(view), bool)
    if counted is not None:
        count[view.rows] = counted[0]
        stream = pretrain & (counted[0] > 0)  # a document in the stream (an empty one at a row end has no piece)
    del completion, pretrain, counted
    first_id = np.cumsum(count, dtype=np.int64)
    first_id -= count
    del count
    is_val = np.zeros(len(view), bool)
    is_val[~stream] = choose_validation(first_id[view.rows[~stream]], s.val_set_size, s.seed)
    if len(view) and is_val.all():
        n = len(cut(view, s)[0])
        raise SplitError(f"val_set_size {s.val_set_size:g} puts all {n:,} kept samples in the validation split "
                         f"and none in train; lower val_set_size (a fraction < 1, or a count below {n:,})")
    return Outcome(columns={"is_val": is_val})


def pack(view: View, s: LayoutSettings) -> Outcome:
    pieces, inst = cut(view, s)
    # The rows are packed before the published ids are made, and each temporary is dropped once used: this
    # stage's peak was the run's at 1M rows (bench/prepare_memory.py).
    lengths = pieces.length
    is_val = view["is_val"][pieces.row if inst is None else inst[pieces.row]]  # copies follow their original
    rows: dict[str, Rows] = {}
    for name, mask in (("train", ~is_val), ("val", is_val)):
        idx = np.flatnonzero(mask & ~pieces.stream)
        # idx ascends, so its samples are in sample id order: the packers need no ids (pack.py)
        packed = (pack_best_fit(lengths[idx], None, s.sequence_len) if s.sample_packing
                  else one_per_row(None, len(idx)))
        streamed = np.flatnonzero(mask & pieces.stream)
        stream_order, stream_bounds = stream_rows(streamed, lengths[streamed], s.sequence_len)
        # the packed rows' pieces, in place of their positions in idx (no copy as long as the split)
        order = np.take(idx, packed.order, out=packed.order.astype(np.int64, copy=False), mode="clip")
        if len(stream_order):
            order = np.concatenate([order, stream_order])
        bounds = np.concatenate([packed.bounds, stream_bounds[1:] + packed.bounds[-1]]).astype(np.int64, copy=False)
        del idx, packed, streamed, stream_order
        if len(bounds) > 1:
            rows[name] = Rows(order, bounds)
    del lengths, is_val
    n_inst = len(view) if inst is None else len(inst)
    originals = int(np.searchsorted(pieces.row, len(view)))  # pieces are in instance order
    copied = inst[pieces.row[originals:]] if inst is not None else np.zeros(0, np.int64)
    del inst
    count, inst_first = published(view, pieces, n_inst)
    # A copy's chunk k repeats the original's chunk k; a pretrain copy is cut elsewhere: its document's first.
    same_chunk = np.where(pieces.stream[originals:], 0, np.maximum(pieces.chunk[originals:], 0))
    repeat_of = inst_first[copied] + same_chunk  # inst_first[:len(view)]: the view rows' first ids
    del same_chunk
    if len(pieces) == n_inst and not (pieces.chunk >= 0).any():  # one piece per instance: the same ids
        sample_ids = inst_first
    else:
        sample_ids = inst_first[pieces.row]
        sample_ids += np.maximum(pieces.chunk, 0)
    del inst_first
    return Outcome(output=Layout(pieces, sample_ids, count, rows, originals, view.rows[copied], repeat_of))
