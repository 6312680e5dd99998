"""JSON Lines, JSON-array and single-document JSON files as batches of raw rows: read_batches' JSON readers.

What a `.json` or `.jsonl` file holds is told from its bytes, not its name. A file that starts with `[` is an
array, unless its first line is a whole JSON value and more lines follow. A file that starts with `{` is one
(pretty-printed) document if its first line is not a whole value and the file, within the read limit, is one
JSON object. Anything else is JSON Lines, read in CHUNK-sized pieces: a line over the read limit is skipped,
never held whole, and comes out as an Unreadable. An array or a single document is read whole; an array item
json.loads cannot read (too deep, a huge integer, not UTF-8) is quarantined alone: see json_array.py.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from dataprep.compressed import open_stream
from dataprep.json_array import NotAnArray, split_array
from dataprep.load import BATCH_BYTES, InputError, RawRow, Unreadable
from schemas.reasons import Reason

CHUNK = 1 << 20  # bytes per read of a JSON Lines file
ORIGINAL_PREFIX = 4096  # bytes of an unread (too long) line kept as its `original` in quarantine.parquet


def json_rows(path: Path, batch_size: int, max_line: int) -> Iterator[list[RawRow]]:
    """The rows of a JSON Lines, JSON-array or single-document file, in batches of `batch_size` rows (a JSONL
    or split-array batch ends early at BATCH_BYTES)."""
    with open_stream(path) as f:
        head = f.read(4096).removeprefix(codecs.BOM_UTF8).lstrip()
    if head.startswith(b"[") and not _is_json_lines(path, max_line):
        yield from _json_array(path, batch_size)
        return
    if head.startswith(b"{"):
        document = _single_document(path, max_line)
        if document is not None:
            yield [RawRow(0, document)]
            return
    batch: list[RawRow] = []
    row = size = 0
    with open_stream(path) as f:
        for line in _split_bare_cr(_lines(f, max_line)):
            if isinstance(line, bytes):
                if not line.strip():
                    continue
                size += len(line)
            batch.append(RawRow(row, line))
            row += 1
            if len(batch) == batch_size or size >= BATCH_BYTES:
                yield batch
                batch, size = [], 0
    if batch:
        yield batch


def _lines(f: IO[bytes], max_line: int) -> Iterator[bytes | Unreadable]:
    """The lines of a stream without their line ends, read in CHUNK-sized pieces. A line over `max_line`
    bytes is never held whole: it is skipped up to its newline and comes out as an Unreadable."""
    pending: list[bytes] = []  # pieces of the line being read
    pending_len = 0
    skipped = -1  # >= 0: bytes of an over-long line seen so far
    prefix = b""
    first = True
    while chunk := f.read(CHUNK):
        if first:
            chunk, first = chunk.removeprefix(codecs.BOM_UTF8), False  # a UTF-8 BOM is not part of row 0
        parts = chunk.split(b"\n")
        for i, part in enumerate(parts):
            if skipped >= 0:
                skipped += len(part)
            else:
                pending.append(part)
                pending_len += len(part)
                if pending_len > max_line:
                    prefix = b"".join(pending)[:ORIGINAL_PREFIX]
                    skipped, pending, pending_len = pending_len, [], 0
            if i == len(parts) - 1:
                break  # no newline after this piece (yet)
            if skipped >= 0:
                yield _too_long(skipped, prefix, max_line)
                skipped = -1
            else:
                yield (pending[0] if len(pending) == 1 else b"".join(pending)).removesuffix(b"\r")
                pending, pending_len = [], 0
    if skipped >= 0:
        yield _too_long(skipped, prefix, max_line)
    elif pending_len:
        yield b"".join(pending).removesuffix(b"\r")


def _split_bare_cr(lines: Iterator[bytes | Unreadable]) -> Iterator[bytes | Unreadable]:
    """Old Mac line ends: a bare CR ends a line too (datasets' Arrow JSON reader splits there as well), or a
    whole file of them would be one malformed row. A CR between JSON tokens is whitespace, so a line that
    parses as it is stays whole; only one that does not is split (a rare line, parsed once more here)."""
    for line in lines:
        if isinstance(line, bytes) and b"\r" in line:
            try:
                json.loads(line)
            except (ValueError, RecursionError):
                yield from line.split(b"\r")
                continue
        yield line


def _too_long(size: int, prefix: bytes, max_line: int) -> Unreadable:
    return Unreadable(Reason.line_too_long, f"the line has {size:,} bytes, over the read limit of {max_line:,} "
                      "bytes (8 x sequence_len x the longest token, at least 32 MiB): it cannot fit and was not "
                      "read; split or shorten the row", None,
                      prefix.decode("utf-8", errors="replace") + f"… ({size:,} bytes)")


def _is_json_lines(path: Path, max_line: int) -> bool:
    """Whether a file that starts with `[` is JSON Lines: its first line is a whole JSON value and more lines
    follow (`[1, 2]` then objects: the array is one bad row, not a broken array file)."""
    with open_stream(path) as f:
        lines = (line for line in _split_bare_cr(_lines(f, max_line)) if not isinstance(line, bytes) or line.strip())
        first = next(lines, None)
        if not isinstance(first, bytes):
            return False
        try:
            json.loads(first)
        except (ValueError, RecursionError):
            return False
        return next(lines, None) is not None


def _single_document(path: Path, max_line: int) -> bytes | None:
    """A file holding one (pretty-printed) JSON object is one row: its bytes, or None if it is JSON Lines."""
    with open_stream(path) as f:
        first = next((line for line in _lines(f, max_line) if not isinstance(line, bytes) or line.strip()), b"")
        if not isinstance(first, bytes):
            return None
        try:
            json.loads(first)
            return None  # the first line is a whole value: JSON Lines
        except (ValueError, RecursionError):
            pass
    with open_stream(path) as f:
        data = f.read(max_line + 1)
    if len(data) > max_line:
        return None
    try:
        value = json.loads(data.removeprefix(codecs.BOM_UTF8))
    except (ValueError, RecursionError):
        return None  # not one document either: JSON Lines with a bad first line
    return data.removeprefix(codecs.BOM_UTF8).strip() if isinstance(value, dict) else None


def _json_array(path: Path, batch_size: int) -> Iterator[list[RawRow]]:
    # A JSON array is one document, read whole; rows are its items. Fast path: one json.loads. When that fails
    # for one item's sake (nested past the parser's ~1,000 levels, an integer of over 4,300 digits, bytes that
    # are not UTF-8), the items are split out of the bytes instead and each goes to the parser on its own, like
    # a JSONL line, so that only the bad item is quarantined. A syntax error is the file's: it stops the run.
    with open_stream(path) as f:
        data = f.read().removeprefix(codecs.BOM_UTF8)
    try:
        items = json.loads(data)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not a valid JSON array ({e}); if it is JSON Lines, set ds_type: jsonl") from None
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError too
        items = None  # split below, outside this handler: a RecursionError's traceback holds ~1,000 frames
    if items is None:
        yield from _json_array_items(path, data, batch_size)
        return
    del data
    for start in range(0, len(items), batch_size):
        yield [RawRow(start + i, _as_payload(item)) for i, item in enumerate(items[start:start + batch_size])]


def _json_array_items(path: Path, data: bytes, batch_size: int) -> Iterator[list[RawRow]]:
    """Rows of an array json.loads could not read whole, each item's own bytes (quarantined with its original
    text if bad). Memory: the file's bytes, as on the fast path, plus 8 bytes per item and one batch of item
    copies, cut at BATCH_BYTES like a JSONL batch."""
    try:
        items = split_array(data)
    except NotAnArray as e:
        raise InputError(f"{path}: not a valid JSON array ({e}); if it is JSON Lines, set ds_type: jsonl") from None
    batch: list[RawRow] = []
    size = 0
    for row, item in enumerate(items):
        batch.append(RawRow(row, item))
        size += len(item)
        if len(batch) == batch_size or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _as_payload(item: Any) -> bytes:
    # Items go back to JSON text and through the same parser as a JSONL line: the same checks (surrogates,
    # non-objects) and the same quarantine records. A lone surrogate cannot be UTF-8: it stays a \\u escape.
    text = json.dumps(item, ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(item, ensure_ascii=True).encode()
