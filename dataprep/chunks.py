"""Rows that become several samples: completion texts longer than sequence_len, and pretrain documents.

- completion (Axolotl's completion.py): the tokenized text (BOS, text, EOS) is cut into consecutive chunks of
  sequence_len tokens, no overlap; only the last chunk ends with EOS. transform.py computes the chunks.
- pretrain (Axolotl's `pretraining_dataset`): the documents (each BOS, text, EOS) form one stream cut into rows
  of exactly sequence_len tokens; a document that crosses a row's end is split there. `Stream` decides the cuts
  in input order while the rows are read, and `stream_rows` lays the pieces back into those rows.

Each piece is a sample of its own: its own sample_id (consecutive for one row), its own samples.parquet row
(same source_file and source_row, `chunk` 0, 1, ...), positions restarting at 0 and, as for every sample, its
first token not a target. The input row is still counted once (kept), so the accounting balances per input
row; `stats.samples` in the manifest counts the samples.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from schemas.shard import IGNORE_INDEX


class Stream:
    """pretrain documents as one stream, cut into rows of exactly sequence_len tokens."""

    def __init__(self, sequence_len: int):
        self.sequence_len, self.fill = sequence_len, 0
        self.sample_ids: list[int] = []  # every pretrain sample, in input order

    def cut(self, n: int) -> list[tuple[int, int]]:
        """[start, end) pieces of a document of n tokens that continues the stream."""
        pieces, pos = [], 0
        while pos < n:
            take = min(n - pos, self.sequence_len - self.fill)
            pieces.append((pos, pos + take))
            pos += take
            self.fill = (self.fill + take) % self.sequence_len
        return pieces


def split_row(input_ids: np.ndarray, labels: np.ndarray, pieces: list[tuple[int, int]],
              record: dict[str, Any]) -> Iterator[tuple[np.ndarray, np.ndarray, dict[str, Any]]]:
    """(ids, labels, samples.parquet record) per piece; the caller numbers them."""
    for k, (a, b) in enumerate(pieces):
        piece_labels = labels[a:b].copy()
        piece_labels[0] = IGNORE_INDEX  # the first token of every sample is never a target (schemas/shard.py)
        trainable = int(np.count_nonzero(piece_labels != IGNORE_INDEX))
        yield input_ids[a:b], piece_labels, {**record, "num_tokens": b - a, "num_trainable": trainable, "chunk": k}


def stream_rows(idx: np.ndarray, lengths: np.ndarray, sequence_len: int) -> list[list[int]]:
    """The pretrain pieces (indices into `lengths`, in input order) back in the sequence_len rows Stream cut."""
    rows: list[list[int]] = []
    fill = sequence_len
    for i in idx.tolist():
        if fill >= sequence_len:
            rows.append([])
            fill = 0
        rows[-1].append(i)
        fill += int(lengths[i])
    return rows
