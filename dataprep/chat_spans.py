"""Where each message's fields landed in a chat template's render (used by render.ChatRenderer).

A message can carry three kinds of text the template may write: its content, its reasoning trace
(reasoning_content / thinking) and the names of its tool calls. Each stripped text is wrapped in private-use
marker characters that carry (message index, kind); the template is rendered with and without markers, and
when the two agree once the markers are removed, the markers give each text's exact place. Otherwise (a
template that inspects the text, e.g. compares a tool name) each stripped text is searched in order.

A tool call's full extent (the JSON or tags around its name) is found, when it must be masked, by rendering
the conversation once more without that message's tool_calls: what differs between the two renders is what
the tool calls wrote.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dataprep.formats import Chat

# OPEN id SEP before a text, CLOSE id SEP after it; id = 3 * message index + kind.
_OPEN, _SEP, _CLOSE = "\ue000", "\ue001", "\ue002"
_MARK = re.compile(f"([{_OPEN}{_CLOSE}])(\\d+){_SEP}")
# A text's leading/trailing whitespace is marked too, written as other whitespace (still stripped by `trim`):
# what survives in the render is the text's own, what does not was trimmed, and the template's own space next
# to it is the template's (Mistral v2/v3's '[/INST] ' + content|trim), as Axolotl's render diff finds.
_ALT = ((" ", "\u2002"), ("\t", "\u2003"), ("\n", "\u2028"), ("\r", "\u2029"))
_BACK = tuple((b, a) for a, b in _ALT)
CONTENT, REASONING, TOOL = 0, 1, 2
KINDS = 3

Render = Callable[[list[dict[str, Any]]], str]


@dataclass(slots=True)
class Found:
    """Where one text landed in the plain render (None: the template did not keep that edge or text)."""

    start: int | None  # first character of the stripped text
    end: int | None  # one past its last character
    lead: str  # the text's leading whitespace, outside the markers
    trail: str

    def located(self) -> bool:
        return self.start is not None or self.end is not None


_NONE = Found(None, None, "", "")


def texts(chat: Chat, i: int) -> list[list[str]]:
    """Per kind, the texts of message i that markers go around."""
    msg = chat.messages[i]
    content = msg.get("content")
    key = chat.reasoning_key(i)
    names = [c["function"]["name"] for c in msg.get("tool_calls") or []]
    return [[content] if isinstance(content, str) else [], [msg[key]] if key else [], names]


def locate(render: Render, chat: Chat, text: str) -> list[list[Found]]:
    """found[i][kind] for every message. `render(messages)` renders like the call that produced `text`."""
    n = len(chat.messages)
    fields = [texts(chat, i) for i in range(n)]
    parts = [[_split_ws(t[0]) if t else ("", "", "") for t in f] for f in fields]
    every = [t for f in fields for kind in f for t in kind]
    if not any(ch in t for t in every for ch in (_OPEN, _CLOSE, _SEP, *"\u2002\u2003\u2028\u2029")):
        marked = [_marked(chat, i, fields[i]) for i in range(n)]
        with_marks = render(marked)
        starts: list[int | None] = [None] * (n * KINDS)
        ends: list[int | None] = [None] * (n * KINDS)
        kept = [[_swap(p[0], _ALT) if p[0] else "", _swap(p[2], _ALT) if p[2] else ""]  # "" once not kept
                for f in parts for p in f]
        plain, pos, removed = [], 0, 0
        for m in _MARK.finditer(with_marks):
            plain.append(with_marks[pos:m.start()])
            k = int(m.group(2))
            if k < n * KINDS:
                if m.group(1) == _OPEN and starts[k] is None:
                    starts[k] = m.start() - removed
                    kept[k][0] = kept[k][0] if with_marks.endswith(kept[k][0], 0, m.start()) else ""
                # A tool call name's last close: the end of the message's last tool call.
                elif m.group(1) == _CLOSE and (ends[k] is None or k % KINDS == TOOL):
                    ends[k] = m.start() - removed
                    kept[k][1] = kept[k][1] if with_marks.startswith(kept[k][1], m.end()) else ""
            removed += m.end() - m.start()
            pos = m.end()
        plain.append(with_marks[pos:])
        if _swap("".join(plain), _BACK) == _swap(text, _BACK):
            return [[Found(starts[j], ends[j], parts[i][k][0] if kept[j][0] else "",
                           parts[i][k][2] if kept[j][1] else "")
                     if fields[i][k] else _NONE for k in range(KINDS) for j in [KINDS * i + k]] for i in range(n)]
    # The markers changed what the template renders: find each stripped text in order instead.
    found, cursor = [], 0
    for i in range(n):
        row = [_NONE] * KINDS
        for k in (REASONING, CONTENT, TOOL):
            for t in fields[i][k]:
                lead, core, trail = _split_ws(t)
                at = text.find(core, cursor) if core else -1
                if at >= 0:
                    cursor = at + len(core)
                    prev = row[k]
                    row[k] = Found(prev.start if prev.start is not None else at, at + len(core), lead, trail)
                elif not row[k].located():
                    row[k] = Found(None, None, lead, trail)
        found.append(row)
    return found


def _marked(chat: Chat, i: int, fields: list[list[str]]) -> dict[str, Any]:
    """Message i with markers around its stripped texts. Empty texts stay unmarked: templates test them for
    truth (`if system_message`), and markers would make them true."""
    msg = dict(chat.messages[i])

    def mark(value: str, kind: int) -> str:
        lead, core, trail = _split_ws(value)
        k = KINDS * i + kind
        alt_lead, alt_trail = _swap(lead, _ALT), _swap(trail, _ALT)
        return f"{alt_lead}{_OPEN}{k}{_SEP}{core}{_CLOSE}{k}{_SEP}{alt_trail}" if core else value

    if fields[CONTENT]:
        msg["content"] = mark(msg["content"], CONTENT)
    if fields[REASONING]:
        for key in chat.thinking_keys:  # every copy of the reasoning (transformers aliases it)
            if isinstance(msg.get(key), str):
                msg[key] = mark(msg[key], REASONING)
    if fields[TOOL]:
        msg["tool_calls"] = [{**c, "function": {**c["function"], "name": mark(c["function"]["name"], TOOL)}}
                             for c in msg["tool_calls"]]
    return msg


def tool_region(render: Render, chat: Chat, i: int, text: str) -> tuple[int, int] | None:
    """The characters message i's tool calls add to `text`: the render without them, diffed."""
    msg = {k: v for k, v in chat.messages[i].items() if k != "tool_calls"}
    if not isinstance(msg.get("content"), str):
        msg["content"] = ""  # templates read the content of a message without tool calls
    other = render([*chat.messages[:i], msg, *chat.messages[i + 1:]])
    prefix = len(os.path.commonprefix([text, other]))  # noqa: RUF071  (characters are what we want)
    shorter = min(len(text), len(other))
    suffix = 0
    while suffix < shorter and text[-1 - suffix] == other[-1 - suffix]:
        suffix += 1
    if len(text) > len(other) and prefix + suffix >= len(other):
        # The tool calls were inserted: every position between the leftmost and rightmost alignment is a
        # valid place. The leftmost keeps the insertion's own first character (the '<' of '<tool_call>',
        # which the following text may also start with) inside it.
        start = len(other) - suffix if suffix < len(other) else 0
        return start, start + len(text) - len(other)
    start, end = prefix, len(text) - min(suffix, shorter - prefix)
    return (start, end) if end > start else None


def widened(f: Found, text: str) -> tuple[int, int]:
    """The text's range, widened to its leading/trailing whitespace where the template kept it."""
    start = f.start if f.start is not None else f.end
    end = f.end if f.end is not None else f.start
    assert start is not None and end is not None
    if f.start is not None and f.lead and text.endswith(f.lead, 0, start):
        start -= len(f.lead)
    if f.end is not None and f.trail and text.startswith(f.trail, end):
        end += len(f.trail)
    return start, end


def map_ranges(f: Found, text: str, value: str, ranges: list[tuple[int, int]]) -> list[tuple[int, int]] | None:
    """Ranges of `value` (a field's text) as ranges of the render, or None when the template changed the
    text itself (only surrounding whitespace may go)."""
    lead, core, _ = _split_ws(value)
    if f.start is None or f.end is None or text[f.start:f.end] != core:
        return None
    base = f.start - len(lead)
    out = []
    for a, b in ranges:
        a, b = max(a, len(lead)), min(b, len(lead) + len(core))
        if b > a:
            out.append((base + a, base + b))
    return out


def subtract(spans: list[tuple[int, int]], cut: tuple[int, int]) -> list[tuple[int, int]]:
    out = []
    for a, b in spans:
        if cut[1] <= a or cut[0] >= b:
            out.append((a, b))
            continue
        if a < cut[0]:
            out.append((a, cut[0]))
        if cut[1] < b:
            out.append((cut[1], b))
    return out


def next_anchor(found: list[list[Found]], i: int, default: int) -> int:
    """The first located position of any message from i on."""
    for row in found[i:]:
        positions = [p for f in row for p in (f.start, f.end) if p is not None]
        if positions:
            return min(positions)
    return default


def _swap(text: str, pairs: tuple[tuple[str, str], ...]) -> str:
    """`text` with each pair's first character replaced by its second: what str.translate does, but translate
    looks a dict entry up per character once the text is not ASCII (every marked render is not), 155 us for a
    1,650-character bench chat, twice per row: a large part of the row pass's Python time. str.replace scans in
    C and returns the text itself when the character is absent, the common case (0.5 us). The pairs map to
    characters that are never replaced themselves, so replacing one pair after another gives the same text."""
    for old, new in pairs:
        text = text.replace(old, new)
    return text


def _split_ws(value: str) -> tuple[str, str, str]:
    core = value.strip()
    if not core:
        return value, "", ""
    start = value.index(core)
    return value[:start], core, value[start + len(core):]
