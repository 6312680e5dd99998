"""Render: samples -> one string each, plus the character spans that are trained.

Chat templates run in a Jinja environment set up the way transformers' `apply_chat_template` sets it up
(sandboxed, trim_blocks, lstrip_blocks, loopcontrols, `raise_exception`, `tojson`, `strftime_now`, the
tokenizer's special tokens as variables), so the text is the text inference renders. `strftime_now` returns
the pinned `chat_template_date`, never today's date.

Spans come from a single render, not from re-rendering prefixes (quadratic, and wrong for templates that
rewrite history): each message's content is wrapped in private-use marker characters that carry its index,
the template is rendered once with markers and once without, and when the two agree once the markers are
removed, the markers give the exact character range of every content. When they disagree the template
changed the content (e.g. `| trim`), and each content is searched for in the plain render instead, in
message order. A trained content that cannot be found is quarantined (content_not_rendered) rather than
trained wrongly.

End-of-turn: the first special token after a trained content, with only whitespace in between, is that
turn's end-of-turn token (<|im_end|>, <|eot_id|>, <end_of_turn>, </s>, ...); `train_on_eos` decides which
of them are trained.
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

from dataprep.formats import Chat, RowError, Segments
from schemas.reasons import Reason

_OPEN, _SEP, _CLOSE = "\ue000", "\ue001", "\ue002"
_MARK = re.compile(f"{_OPEN}(\\d+){_SEP}|{_CLOSE}")


@dataclass(slots=True)
class Rendered:
    text: str
    spans: list[tuple[int, int]]  # trained character ranges [start, end), sorted, non-overlapping


class TemplateNotFound(Exception):
    pass


def library_templates() -> list[str]:
    return sorted(p.name.removesuffix(".jinja") for p in resources.files("dataprep.templates").iterdir()
                  if p.name.endswith(".jinja"))


def resolve_template(name: str, jinja_text: str | None, tokenizer_default: str | None,
                     config_dir: Path) -> tuple[str, str]:
    """(source name, template text) for the `chat_template` setting."""
    if name == "jinja":
        assert jinja_text is not None
        path = Path(jinja_text) if jinja_text.endswith(".jinja") else None
        if path is not None and not path.is_absolute():
            path = config_dir / path if (config_dir / path).exists() else path
        if path is not None:
            if not path.exists():
                raise TemplateNotFound(f"chat_template_jinja: file {path} not found")
            return f"jinja:{path.name}", path.read_text(encoding="utf-8")
        return "jinja", jinja_text
    if name == "tokenizer_default" or name.startswith("tokenizer_default_fallback_"):
        if tokenizer_default:
            return "tokenizer_default", tokenizer_default
        if name == "tokenizer_default":
            raise TemplateNotFound("chat_template: tokenizer_default, but the tokenizer has no chat_template; "
                                   "set chat_template to one of "
                                   f"{', '.join(library_templates())}, tokenizer_default_fallback_<name> or jinja")
        name = name.removeprefix("tokenizer_default_fallback_")
    file = resources.files("dataprep.templates") / f"{name}.jinja"
    if not file.is_file():
        raise TemplateNotFound(f"chat_template '{name}' is not in the template library "
                               f"({', '.join(library_templates())}); use jinja + chat_template_jinja for your own")
    return name, file.read_text(encoding="utf-8")


class _GenerationTag(Extension):
    """`{% generation %}…{% endgeneration %}` (transformers' assistant-mask tag) renders its body unchanged."""

    tags = {"generation"}  # noqa: RUF012  (jinja's API)

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

    def _render(self, caller: Any) -> str:
        return caller()


def compile_template(text: str, date: datetime.date) -> jinja2.Template:
    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    pinned = datetime.datetime.combine(date, datetime.time())
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[_GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: pinned.strftime(fmt)
    return env.from_string(text)


class ChatRenderer:
    def __init__(self, template: jinja2.Template, special_tokens: dict[str, str], specials: list[str],
                 train_on_eos: str, train_on_inputs: bool):
        self.template = template
        self.variables = special_tokens  # bos_token, eos_token, ... as transformers passes them
        self.special = re.compile("|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)))
        self.train_on_eos = train_on_eos
        self.train_on_inputs = train_on_inputs

    def render(self, chat: Chat, add_generation_prompt: bool = False) -> Rendered:
        text = self._render(chat.messages, add_generation_prompt)
        if self.train_on_inputs:
            return Rendered(text, [(0, len(text))])
        starts = self._content_starts(chat, text, add_generation_prompt)
        last_trained = max((i for i, t in enumerate(chat.train) if t), default=-1)
        spans = []
        for i, (msg, trained) in enumerate(zip(chat.messages, chat.train, strict=True)):
            start = starts[i]
            if start is None:
                if trained:
                    raise RowError(Reason.content_not_rendered, f"the chat template does not render the content "
                                   f"of message {i} ({msg['role']}) as given, so it cannot be trained exactly",
                                   f"messages[{i}].content")
                continue
            end = start + len(msg["content"])
            if trained:
                ranges = chat.detail[i]
                spans += [(start + a, start + b) for a, b in ranges] if ranges is not None else [(start, end)]
            eos = self.train_on_eos
            if eos == "all" or (eos == "turn" and trained) or (eos == "last" and i == last_trained):
                m = self.special.search(text, end) if self.special.pattern else None
                if m is not None and not text[end:m.start()].strip():
                    spans.append((end, m.end()))
        return Rendered(text, _merge(spans))

    def _render(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        try:
            return self.template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                        **self.variables)
        except jinja2.exceptions.TemplateError as e:
            raise RowError(Reason.template_error, f"the chat template raised: {e}") from None
        except Exception as e:  # a template is code: any error is this row's problem, not the run's
            raise RowError(Reason.template_error, f"the chat template failed: {type(e).__name__}: {e}") from None

    def _content_starts(self, chat: Chat, text: str, add_generation_prompt: bool) -> list[int | None]:
        n = len(chat.messages)
        if not any(ch in m["content"] for m in chat.messages for ch in (_OPEN, _SEP, _CLOSE)):
            marked = [{**m, "content": f"{_OPEN}{i}{_SEP}{m['content']}{_CLOSE}"}
                      for i, m in enumerate(chat.messages)]
            with_marks = self._render(marked, add_generation_prompt)
            starts: list[int | None] = [None] * n
            plain, pos, removed = [], 0, 0
            for m in _MARK.finditer(with_marks):
                plain.append(with_marks[pos:m.start()])
                if m.group(1) is not None:
                    i = int(m.group(1))
                    if i < n and starts[i] is None:
                        starts[i] = m.start() - removed
                removed += m.end() - m.start()
                pos = m.end()
            plain.append(with_marks[pos:])
            if "".join(plain) == text and all(
                    s is None or text.startswith(chat.messages[i]["content"], s) for i, s in enumerate(starts)):
                return starts
        # The template changed the contents: find each one in the plain render, in order.
        starts, cursor = [], 0
        for m in chat.messages:
            at = text.find(m["content"], cursor)
            starts.append(None if at < 0 else at)
            if at >= 0:
                cursor = at + len(m["content"])
        return starts


def render_segments(segments: Segments) -> Rendered:
    text, spans, pos = [], [], 0
    for part, trained in segments.parts:
        if trained and part:
            spans.append((pos, pos + len(part)))
        text.append(part)
        pos += len(part)
    return Rendered("".join(text), _merge(spans))


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(s for s in spans if s[1] > s[0]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out
