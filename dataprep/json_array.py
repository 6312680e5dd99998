"""Split a JSON array into the raw bytes of its items, without parsing them and without recursion.

`json.loads` reads a JSON-array file in one call, so one item it cannot read (nested deeper than Python's
parser goes, an integer of over 4,300 digits, bytes that are not UTF-8) fails the whole document. json_rows.py
then falls back to this scanner: a compiled regex jumps over strings (escapes included) and stops only at
brackets, braces and commas, and a stack of the open brackets tells where each top-level item ends. Each
item's bytes then go through the same per-row parser as a JSONL line (formats.parse), so a bad item is
quarantined with the same reason and its original text, and the other items are kept.

Only the array's own structure is checked here: an unterminated string, a bracket closed by the wrong kind, an
empty item (`[1,,2]`, `[1,]`), text before or after the array, or a missing `]` (a truncated file) raise
`NotAnArray`, which json_rows.py reports as a file that is not a valid JSON array, as before. Anything wrong inside
one item (`{"a" 1}`) is that item's problem: it is quarantined as `malformed_json`.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Iterator
from itertools import pairwise

# A whole string (the unrolled form of "(?:[^"\\]|\\.)*": one regex step per run of plain bytes, not one per
# byte), or one structural byte. A `"` matched alone is a string that never ends. DOTALL: a backslash may be
# followed by any byte, newline included (invalid JSON, but the item's parser says so, not the scanner).
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[][{},"]', re.DOTALL)
_WS = b" \t\n\r"  # JSON's whitespace (not \x0b or \x0c, which bytes.strip() would also take)
_NOT_WS = re.compile(rb"[^ \t\n\r]")  # searched between offsets: no copy of the bytes it looks at
_QUOTE, _COMMA, _OPEN_LIST = ord('"'), ord(","), ord("[")
_CLOSER = {ord("["): ord("]"), ord("{"): ord("}")}


class NotAnArray(ValueError):
    """The bytes are not one well-formed JSON array; the message says what is wrong and at which byte."""


def split_array(data: bytes) -> Iterator[bytes]:
    """The top-level items of the JSON array in `data`, each as its bytes without surrounding whitespace, in
    order. The whole structure is checked before the first item comes out, so a broken file fails before any
    of its rows is processed. Besides `data`, this holds 8 bytes per item (the separators' offsets)."""
    seps = _separators(data)
    return (_item(data, start + 1, end) for start, end in pairwise(seps))


def _separators(data: bytes) -> array[int]:
    """Offsets of the array's `[`, its top-level commas and its `]`: item i lies between seps[i] and
    seps[i + 1]. Empty for `[]`."""
    seps: array[int] = array("q")
    expected = bytearray()  # the closing byte of each open bracket, innermost last: no recursion, any depth
    closed = -1  # offset of the array's `]` once seen
    for m in _TOKEN.finditer(data):
        pos = m.start()
        c = data[pos]
        if closed >= 0:
            raise NotAnArray(f"text after the end of the array at byte {_first(data, closed + 1)}")
        if c == _QUOTE:
            if m.end() - pos == 1:
                raise NotAnArray(f"a string that does not end, from byte {pos}")
            if not expected:
                raise NotAnArray(f"expected '[' at byte {_first(data, 0)}")
        elif c in _CLOSER:
            if not expected:
                if c != _OPEN_LIST or not _blank(data, 0, pos):
                    raise NotAnArray(f"expected '[' at byte {_first(data, 0)}")
                seps.append(pos)
            expected.append(_CLOSER[c])
        elif c == _COMMA:
            if len(expected) == 1:
                _end_item(data, seps, pos)
            elif not expected:
                raise NotAnArray(f"expected '[' at byte {_first(data, 0)}")
        else:  # ] or }
            if not expected:
                raise NotAnArray(f"expected '[' at byte {_first(data, 0)}")
            if expected[-1] != c:
                raise NotAnArray(f"'{chr(c)}' at byte {pos} where '{chr(expected[-1])}' was expected")
            expected.pop()
            if not expected:
                closed = pos
                if len(seps) == 1 and _blank(data, seps[0] + 1, pos):
                    seps = array("q")  # [] holds no item (what follows it is still checked)
                else:
                    _end_item(data, seps, pos)
    if closed < 0:
        raise NotAnArray(f"the array does not end (no closing ']' by byte {len(data)}: is the file truncated?)")
    if not _blank(data, closed + 1, len(data)):
        raise NotAnArray(f"text after the end of the array at byte {_first(data, closed + 1)}")
    return seps


def _end_item(data: bytes, seps: array[int], pos: int) -> None:
    # Text between two separators is an item only if it holds something: `[1,,2]` and `[1,]` are not JSON.
    if _blank(data, seps[-1] + 1, pos):
        raise NotAnArray(f"an empty item before byte {pos}")
    seps.append(pos)


def _item(data: bytes, start: int, end: int) -> bytes:
    # Trimmed by offsets, then sliced once: a huge item is copied once, not twice (slice, then strip).
    while data[start] in _WS:
        start += 1
    while data[end - 1] in _WS:
        end -= 1
    return data[start:end]


def _blank(data: bytes, start: int, end: int) -> bool:
    return _NOT_WS.search(data, start, end) is None


def _first(data: bytes, start: int) -> int:
    """Offset of the first byte at or after `start` that is not whitespace (for messages)."""
    m = _NOT_WS.search(data, start)
    return len(data) if m is None else m.start()
