"""The saved tokenizer's vocabulary with each token's exact bytes: the `vocab` view of `tessera query` and the
token text `tessera inspect` shows.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import numpy as np
import pyarrow as pa

from dataprep.look.prepared import tokenizer_file


class Vocab:
    """The saved tokenizer's vocabulary with each token's exact bytes, so that a run of tokens decodes to the
    text the model saw even when a multi-byte character is split across tokens (each token alone would
    decode to U+FFFD). Bytes are worked out per id on first use: inspect needs a few hundred, vocab all."""

    def __init__(self, tokenizer_json: Path):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer_json))
        decoder = self.tokenizer.decoder
        self.byte_level = decoder is not None and "ByteLevel" in decoder.__getstate__().decode()
        self.added = self.tokenizer.get_added_tokens_decoder()
        self.size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        self._bytes: dict[int, bytes] = {}

    def __len__(self) -> int:
        return self.size

    def piece(self, token_id: int) -> str | None:
        """As stored in the vocabulary: Ġ-encoded for byte-level BPE, ▁ for SentencePiece."""
        return self.tokenizer.id_to_token(token_id)

    def special(self, token_id: int) -> bool:
        return token_id in self.added and self.added[token_id].special

    def bytes(self, token_id: int) -> bytes:
        if (b := self._bytes.get(token_id)) is None:
            b = self._bytes[token_id] = self._token_bytes(token_id)
        return b

    def text(self, token_id: int) -> str:
        return self.bytes(token_id).decode("utf-8", errors="replace")

    def _token_bytes(self, token_id: int) -> bytes:
        piece = self.piece(token_id)
        if piece is None:
            return b""
        if token_id in self.added:  # added tokens are stored as their literal text
            return self.added[token_id].content.encode()
        byte_map = _byte_decoder()
        if self.byte_level and all(c in byte_map for c in piece):
            return bytes(byte_map[c] for c in piece)
        if m := _BYTE_PIECE.match(piece):  # SentencePiece byte fallback
            return bytes([int(m.group(1), 16)])
        return piece.replace("▁", " ").encode()


@cache
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet (printable stand-ins for the 256 bytes), reversed."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, n = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def cached_vocab_table(prepared: Path) -> pa.Table:
    """vocab_table for a tokenizer file, built once per process for each version of the file: the report
    and the tests open several connections, and a 150k vocabulary takes about a second."""
    path = tokenizer_file(prepared).resolve()
    st = path.stat()
    return _vocab_table_for(str(path), st.st_mtime_ns, st.st_size)


@cache
def _vocab_table_for(path: str, mtime_ns: int, size: int) -> pa.Table:
    return vocab_table(Vocab(Path(path)))


def vocab_table(vocab: Vocab) -> pa.Table:
    ids = range(len(vocab))
    token_bytes = [vocab.bytes(i) for i in ids]
    return pa.table({
        "token_id": pa.array(np.arange(len(vocab), dtype=np.int32)),
        "piece": pa.array([vocab.piece(i) for i in ids], pa.string()),
        "text": pa.array([b.decode("utf-8", errors="replace") for b in token_bytes], pa.string()),
        "bytes": pa.array(token_bytes, pa.binary()),
        "special": pa.array([vocab.special(i) for i in ids], pa.bool_()),
    })
