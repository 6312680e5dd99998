"""Rows that become several samples: completion texts longer than sequence_len, and pretrain documents.

- completion (Axolotl's completion.py): the tokenized text (BOS, text, EOS) is cut into consecutive chunks of
  sequence_len tokens, no overlap; only the last chunk ends with EOS (transform.py bounds a row at 64 chunks).
- pretrain (Axolotl's `pretraining_dataset`): the kept documents (each BOS, text, EOS) form one stream cut into
  rows of exactly sequence_len tokens; a document that crosses a row's end is split there, and `stream_rows`
  lays the pieces back into those rows.

The rows are cut after the stages (`cut_rows`, vectorised over the sample table), so a duplicate or filtered
row is one sample, and the stream holds only kept documents.

Each piece is a sample of its own: its own sample_id (consecutive for one row), its own samples.parquet row
(same source_file and source_row, `chunk` 0, 1, ...), positions restarting at 0 and, as for every sample, its
first token not a target. The input row is still counted once (kept), so the accounting balances per input
row; `stats.samples` in the manifest counts the samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Pieces:
    """The samples the kept rows become, in sample_id order: a row is one piece unless it is split (chunk k >= 0).
    Token offsets are absolute in the spill."""

    row: np.ndarray  # position of the piece's row in the view (int32: a piece's row and chunk are 4 bytes each)
    start: np.ndarray  # first token (spill offset)
    length: np.ndarray  # tokens, int32 (an end offset would take 8 bytes a piece to the end of the shards)
    chunk: np.ndarray  # k-th piece of a split row; -1: the row is one piece
    stream: np.ndarray  # a pretrain piece (laid out by stream_rows)

    def __len__(self) -> int:
        return len(self.row)

    @property
    def end(self) -> np.ndarray:
        return self.start + self.length


def piece_counts(length: np.ndarray, completion: np.ndarray, pretrain: np.ndarray, sequence_len: int
                 ) -> tuple[np.ndarray, np.ndarray] | None:
    """How many pieces each row becomes and where each pretrain document starts in the stream (cut_rows
    without the pieces); None when every row is one piece."""
    big = completion & (length > sequence_len)
    if not pretrain.any() and not big.any():
        return None
    length = length.astype(np.int64)
    stream_start = np.zeros(len(length), np.int64)
    stream_start[pretrain] = np.cumsum(length[pretrain]) - length[pretrain]
    count = np.ones(len(length), np.int64)
    count[big] = -(-length[big] // sequence_len)
    count[pretrain] = -(-(stream_start[pretrain] + length[pretrain]) // sequence_len) - (
        stream_start[pretrain] // sequence_len)
    return count, stream_start


def cut_rows(offset: np.ndarray, length: np.ndarray, completion: np.ndarray, pretrain: np.ndarray,
             sequence_len: int) -> Pieces:
    """Pieces of kept rows (offset, length in the spill; per-row type masks), vectorised.

    completion: consecutive sequence_len pieces when longer than sequence_len. pretrain: the documents, in order,
    form one stream; a document's pieces end where the stream crosses a multiple of sequence_len."""
    n = len(length)
    counted = piece_counts(length, completion, pretrain, sequence_len)
    if counted is None:  # nothing to cut (supervised data): one piece per row
        return Pieces(np.arange(n, dtype=np.int32), offset.astype(np.int64, copy=False),
                      length.astype(np.int32, copy=False), np.full(n, -1, np.int32), np.zeros(n, bool))
    length = length.astype(np.int64)
    count, stream_start = counted
    row = np.repeat(np.arange(n), count)
    k = np.arange(len(row)) - np.repeat(np.cumsum(count) - count, count)
    rel_start = np.zeros(len(row), np.int64)
    rel_end = length[row].copy()
    comp = completion[row]
    rel_start[comp] = k[comp] * sequence_len
    rel_end[comp] = np.minimum(rel_start[comp] + sequence_len, length[row][comp])
    pre = pretrain[row]
    first_line = stream_start[row][pre] // sequence_len + k[pre]  # the stream row this piece sits in
    rel_start[pre] = np.maximum(first_line * sequence_len, stream_start[row][pre]) - stream_start[row][pre]
    rel_end[pre] = np.minimum((first_line + 1) * sequence_len, stream_start[row][pre] + length[row][pre]) \
        - stream_start[row][pre]
    chunk = np.where(count[row] > 1, k, -1).astype(np.int32)
    base = offset[row]
    rel_end -= rel_start
    return Pieces(row.astype(np.int32), base + rel_start, rel_end.astype(np.int32), chunk, pre)


def stream_rows(stream_pieces: np.ndarray, lengths: np.ndarray, sequence_len: int) -> tuple[np.ndarray, np.ndarray]:
    """The pretrain pieces (indices, in sample order, with their lengths) back in the sequence_len rows of the
    stream: (order, bounds) as pack.py's layouts. Pieces were cut at row ends, so each lies in one row."""
    if len(stream_pieces) == 0:
        return stream_pieces.astype(np.int64), np.zeros(1, np.int64)
    pos = np.cumsum(lengths) - lengths
    line = pos // sequence_len
    counts = np.bincount(line)
    return stream_pieces.astype(np.int64), np.concatenate([[0], np.cumsum(counts[counts > 0])])
