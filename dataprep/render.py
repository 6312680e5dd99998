"""Render: samples -> one string each, plus the character spans that are trained.

Chat templates run in a Jinja environment set up the way transformers' `apply_chat_template` sets it up
(sandboxed, trim_blocks, lstrip_blocks, loopcontrols, `raise_exception`, `tojson`, `strftime_now`, the
tokenizer's special tokens as variables, chat_template_kwargs over them), so the text is the text inference
renders. `strftime_now` returns the pinned `chat_template_date`, never today's date.

Spans come from a single render of the whole conversation, never from re-rendering prefixes (quadratic, and
wrong for templates that rewrite history). Each message's stripped content, reasoning and tool-call names are
wrapped in private-use marker characters that carry its index (chat_spans.py); the template is rendered with
and without markers, and when the two agree once the markers are removed, the markers give each text's exact
place (an edge may be missing when the template cut the text, e.g. Qwen3 dropping earlier reasoning). A
trained assistant turn then covers everything the model generates at inference: from the end of the assistant
header (the template's generation prompt, or its longest prefix ending at a special token or newline that
occurs in the history) to the turn's end-of-turn token, the first special token (or of `eot_tokens`) after
its last located text: reasoning and tool calls included, minus the reasoning text with train_on_reasoning
false and minus the tool calls (the characters a render without them lacks) with train_on_tool_calls false.
Its end-of-turn token is trained according to `train_on_eos` (`train_on_eot` once that or eot_tokens is set;
train_on_eos then covers the EOS token right after a turn). Non-assistant trained turns cover their content
(plus surrounding whitespace the template kept). A trained message the template does not render at all is
quarantined (content_not_rendered). Detail offsets and content parts map into the render when the template
writes the text unchanged (surrounding whitespace aside), else the row is quarantined (content_not_rendered).

How the templates that are not prefix-preserving are handled:
- Qwen3 drops the <think> block of assistant turns before the last user message and writes one (empty
  without reasoning_content) before the answers after it: earlier turns train their visible answer, later
  turns train the think block too (the model generates it after `<|im_start|>assistant\n`).
- Gemma 4's generation prompt opens an empty thought channel that past turns do not have: the header
  `<|turn>model\n` (a prefix of the prompt) anchors the turn, and the trimmed content plus `<turn|>` is trained.
- Mistral v3 moves the system prompt into the last user turn: only user contents move, which are not trained;
  Mistral tokenizers are encoded by mistral-common itself (dataprep/mistral.py).
"""

from __future__ import annotations

import datetime
import json
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension

from dataprep import chat_spans
from dataprep.formats import Chat, RowError, Segments
from dataprep.sandbox import LimitedEnvironment, TemplateLimit, TemplateTimeout, render_limited
from dataprep.template_names import unknown_name_message
from schemas.reasons import Reason


@dataclass(slots=True)
class Rendered:
    text: str
    spans: list[tuple[int, int]]  # trained character ranges [start, end), sorted, non-overlapping
    # Starts of whole-turn spans: a token that begins in the template's text before one and carries text of
    # the turn (Mistral's '[/INST] Hi' -> '▁Hi') is trained, as Axolotl trains every token a turn overlaps.
    grab: tuple[int, ...] = ()


class TemplateNotFound(Exception):
    pass


def library_templates() -> list[str]:
    return sorted(p.name.removesuffix(".jinja") for p in resources.files("dataprep.templates").iterdir()
                  if p.name.endswith(".jinja"))


MAX_TEMPLATE_CHARS = 1 << 20
"""Real chat templates are 1-20 KB (Gemma 4's, the longest in the library, is 17 KB); compiling one takes time
and memory in proportion to its size, before any limit of the sandbox applies."""


def resolve_template(name: str, jinja_text: str | None, tokenizer_default: str | None,
                     config_dir: Path) -> tuple[str, str]:
    """(source name, template text) for the `chat_template` setting."""
    source, text = _resolve_template(name, jinja_text, tokenizer_default, config_dir)
    if len(text) > MAX_TEMPLATE_CHARS:
        where = "the tokenizer's chat template" if source == "tokenizer_default" else f"chat template '{source}'"
        raise TemplateNotFound(f"{where} is {len(text):,} characters long, more than the {MAX_TEMPLATE_CHARS:,} "
                               "a chat template may have (real ones are 1-20 KB); is it the right file?")
    return source, text


def _resolve_template(name: str, jinja_text: str | None, tokenizer_default: str | None,
                      config_dir: Path) -> tuple[str, str]:
    if name == "jinja":
        assert jinja_text is not None
        path = Path(jinja_text) if jinja_text.endswith(".jinja") else None
        if path is not None and not path.is_absolute():
            path = config_dir / path if (config_dir / path).exists() else path
        if path is not None:
            if not path.exists():
                raise TemplateNotFound(f"chat_template_jinja: file {path} not found")
            try:
                return f"jinja:{path.name}", path.read_text(encoding="utf-8")
            except OSError as e:
                raise TemplateNotFound(f"chat_template_jinja: cannot read {path} ({e.strerror or e})") from None
            except UnicodeDecodeError as e:
                raise TemplateNotFound(f"chat_template_jinja: {path} is not UTF-8 text (byte {e.start}); save it "
                                       "as UTF-8") from None
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
        raise TemplateNotFound(unknown_name_message(name, library_templates()))
    return name, file.read_text(encoding="utf-8")


class _GenerationTag(Extension):
    """`{% generation %}…{% endgeneration %}` (transformers' assistant-mask tag) renders its body unchanged."""

    tags = {"generation"}  # noqa: RUF012  (jinja's API)

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("render_text", []), [], [], body).set_lineno(lineno)

    def render_text(self, caller: Any) -> str:
        return caller()


def compile_template(text: str, date: datetime.date) -> jinja2.Template:
    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    pinned = datetime.datetime.combine(date, datetime.time())
    # Time and size limits on top of transformers' sandbox: dataprep/sandbox.py.
    env = LimitedEnvironment(trim_blocks=True, lstrip_blocks=True,
                             extensions=[_GenerationTag, jinja2.ext.loopcontrols])
    env.set_filter("tojson", tojson)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: pinned.strftime(fmt)
    template = env.from_string(text)
    # Jinja keeps a template's globals as a ChainMap over the environment's, and every render copies them into
    # a dict through ChainMap.__getitem__ (Python, once per global): 4 of the 11 us a bench chat's render takes.
    # Nothing changes the globals after this, so the same names as one plain dict are copied in C.
    template.globals = dict(template.globals)
    return template


class ChatRenderer:
    def __init__(self, template: jinja2.Template, special_tokens: dict[str, str], specials: list[str],
                 train_on_eos: str, train_on_inputs: bool, train_on_eot: str | None = None,
                 eot_tokens: list[str] | None = None, template_kwargs: dict[str, Any] | None = None):
        self.template = template
        self.variables = special_tokens  # bos_token, eos_token, ... as transformers passes them
        # chat_template_kwargs: in every render (the probes' too, so headers and end-of-turn tokens are those of
        # the training text), over the special tokens as in transformers ({**special_tokens_map, **kwargs}).
        self.template_kwargs = dict(template_kwargs or {})
        self._extra_chars = len(json.dumps(self.template_kwargs)) if self.template_kwargs else 0
        self.special = _alternation(specials)
        self.train_on_eos = train_on_eos
        # train_on_inputs trains every message (chat_rows; the template's own text between turns is not, as in
        # Axolotl); here it only lets a message the template drops (a system prompt) go untrained.
        self.train_on_inputs = train_on_inputs
        # Axolotl's split (train_on_eot or eot_tokens set): end-of-turn tokens follow train_on_eot, and
        # train_on_eos only the tokenizer's EOS where it follows a turn as a token of its own. Otherwise the
        # turn's end-of-turn token (first special token after it) follows train_on_eos, as before.
        self.split_eos = train_on_eot is not None or eot_tokens is not None
        self.train_on_eot = train_on_eot or train_on_eos
        self.eot = _alternation(eot_tokens) if eot_tokens is not None else self.special
        self.eos = special_tokens.get("eos_token", "") if self.split_eos else ""
        self.limit_error: RowError | None = None  # the template hit a limit on the header probe
        self.headers = self._assistant_headers()

    def render(self, chat: Chat, add_generation_prompt: bool = False) -> Rendered:
        text = self.render_text(chat.messages, add_generation_prompt, chat.tools)

        def again(messages: list[dict[str, Any]]) -> str:
            return self.render_text(messages, add_generation_prompt, chat.tools)

        found = chat_spans.locate(again, chat, text)
        last_trained = max((i for i, t in enumerate(chat.train) if t), default=-1)
        spans: list[tuple[int, int]] = []
        grab: list[int] = []
        floor = 0  # nothing of message i lies before the end of message i-1
        for i, (msg, trained) in enumerate(zip(chat.messages, chat.train, strict=True)):
            located = [f for f in found[i] if f.located()]
            ceiling = chat_spans.next_anchor(found, i + 1, len(text))
            if not located:
                if trained and not self.train_on_inputs:  # train_on_inputs asks for what is there, as Axolotl
                    raise RowError(Reason.content_not_rendered, f"the chat template does not render the content "
                                   f"of message {i} ({msg['role']}), so it cannot be trained", f"messages[{i}].content")
                continue
            ranges = [chat_spans.widened(f, text) for f in located]
            # The header is looked for before the first located character itself, not before its leading
            # whitespace: a template that trims the content leaves the header's newline where that was.
            anchor = min(p for f in located for p in (f.start, f.end) if p is not None)
            end = max(b for _, b in ranges)
            eot = self._end_of_turn(text, end, ceiling, whitespace_only=msg["role"] != "assistant")
            if trained:
                turn = self._trained(chat, i, found[i], text, again, floor, anchor, end, eot)
                grab += [turn[0][0]] if turn and chat.detail[i] is None else []
                spans += turn
            wanted = self._wanted(self.train_on_eot, trained, i == last_trained)
            if eot is not None and wanted:
                spans.append(eot)
            if self.eos:
                eos = self._eos_after(text, eot[1] if eot is not None else end, ceiling)
                if eos is not None and eos != eot and self._wanted(self.train_on_eos, trained, i == last_trained):
                    spans.append(eos)
            floor = max(floor, eot[1] if eot is not None else end)
        return Rendered(text, _merge(spans), tuple(grab))

    @staticmethod
    def _wanted(mode: str, trained: bool, last: bool) -> bool:
        return mode == "all" or (mode == "turn" and trained) or (mode == "last" and last)

    def _trained(self, chat: Chat, i: int, found: list[chat_spans.Found], text: str, again: chat_spans.Render,
                 floor: int, anchor: int, end: int, eot: tuple[int, int] | None) -> list[tuple[int, int]]:
        """The trained character spans of message i (end-of-turn tokens aside)."""
        msg = chat.messages[i]
        content, reasoning, tools = found
        detail = chat.detail[i]
        reasoning_detail = chat.reasoning_detail[i] if chat.reasoning_detail else None
        key = chat.reasoning_key(i)
        if msg["role"] != "assistant":
            if detail is not None:
                return self._mapped(content, text, msg.get("content") or "", detail, i, "content")
            return [chat_spans.widened(content, text)] if content.located() else []
        spans: list[tuple[int, int]]
        if detail is None and reasoning_detail is None:
            # Everything the model generates after the assistant header: template-inserted text (Qwen3's empty
            # <think> block, tool calls, trimmed whitespace) included, up to the end-of-turn token.
            header_end = self._header_end(text, floor, anchor)
            start = header_end if header_end is not None else min(chat_spans.widened(f, text)[0] for f in found
                                                                  if f.located())
            spans = [(start, eot[0] if eot is not None else end)]
        else:  # piece by piece: the content's ranges, the reasoning's, the tool calls
            spans = []
            if detail is not None:
                spans += self._mapped(content, text, msg.get("content") or "", detail, i, "content")
            elif content.located():
                spans.append(chat_spans.widened(content, text))
            if reasoning.located() and key is not None:
                if reasoning_detail is not None:
                    spans += self._mapped(reasoning, text, msg[key], reasoning_detail, i, key)
                else:
                    spans.append(chat_spans.widened(reasoning, text))
            if tools.located() and chat.train_tool_calls:
                region = chat_spans.tool_region(again, chat, i, text)
                spans += [region] if region is not None else []
        if reasoning.located() and not chat.train_reasoning and reasoning_detail is None:
            # The text itself, not whitespace around it: that may be the template's own (Qwen3's '<think>\n').
            core = (reasoning.start, reasoning.end) if reasoning.start is not None and reasoning.end is not None \
                else chat_spans.widened(reasoning, text)
            spans = chat_spans.subtract(spans, core)
        if tools.located() and not chat.train_tool_calls:
            region = chat_spans.tool_region(again, chat, i, text)
            if region is not None:
                spans = chat_spans.subtract(spans, region)
        return spans

    @staticmethod
    def _mapped(f: chat_spans.Found, text: str, value: str, ranges: list[tuple[int, int]], i: int,
                key: str) -> list[tuple[int, int]]:
        mapped = chat_spans.map_ranges(f, text, value, ranges)
        if mapped is None:
            raise RowError(Reason.content_not_rendered, f"message {i} has training detail offsets (or content parts) "
                           f"in its {key}, but the template changes that text, so they cannot be mapped",
                           f"messages[{i}].{key}")
        return mapped

    def _eos_after(self, text: str, pos: int, ceiling: int) -> tuple[int, int] | None:
        """The tokenizer's EOS token right after a turn (only whitespace between), before the next message."""
        at = text.find(self.eos, pos, max(ceiling, pos) + len(self.eos))
        if at < 0 or text[pos:at].strip() or at + len(self.eos) > max(ceiling, pos + len(self.eos)):
            return None
        return at, at + len(self.eos)

    def probe(self, chat: Chat) -> dict[str, Any]:
        """Facts about this template, on one conversation: is each prefix (ending before an assistant turn,
        with the generation prompt) a prefix of the whole render, and which end-of-turn token follows each
        trained assistant turn."""
        full = self.render_text(chat.messages, False, chat.tools)
        prefix_preserving = True
        for k, msg in enumerate(chat.messages):
            if msg["role"] == "assistant" and k > 0:
                prompt = self.render_text(chat.messages[:k], True, chat.tools)
                prefix_preserving &= full.startswith(prompt)
        rendered = self.render(chat)
        eots = []
        found = chat_spans.locate(lambda m: self.render_text(m, False, chat.tools), chat, full)
        for i, msg in enumerate(chat.messages):
            if msg["role"] == "assistant" and chat.train[i]:
                ends = [chat_spans.widened(f, full)[1] for f in found[i] if f.located()]
                end = max(ends) if ends else len(full)
                eot = self._end_of_turn(full, end, chat_spans.next_anchor(found, i + 1, len(full)),
                                        whitespace_only=False)
                eots.append(None if eot is None else full[eot[0]:eot[1]])
        return {"prefix_preserving": prefix_preserving, "end_of_turn": eots, "rendered": rendered,
                "generation_prompt": self.headers[0] if self.headers else ""}

    def render_text(self, messages: list[dict[str, Any]], add_generation_prompt: bool,
                    tools: list[Any] | None = None) -> str:
        try:
            return self._render(messages, add_generation_prompt, tools)
        except TemplateLimit as e:
            reason = Reason.template_timeout if isinstance(e, TemplateTimeout) else Reason.template_too_large
            raise RowError(reason, str(e)) from None
        except jinja2.exceptions.TemplateError as e:
            raise RowError(Reason.template_error, f"the chat template raised: {e}") from None
        except Exception as e:  # a template is code: any error is this row's problem, not the run's
            raise RowError(Reason.template_error, f"the chat template failed: {type(e).__name__}: {e}") from None

    def _render(self, messages: list[dict[str, Any]], add_generation_prompt: bool, tools: list[Any] | None) -> str:
        chars = sum(len(c) for m in messages for c in m.values() if isinstance(c, str))
        extra = 0 if tools is None and not any(len(m) > 2 for m in messages) else len(json.dumps([messages, tools]))
        # tools and documents are always passed (None when absent), as transformers' apply_chat_template does.
        return render_limited(self.template, chars + extra + self._extra_chars, messages=messages, tools=tools,
                              documents=None, add_generation_prompt=add_generation_prompt,
                              **{**self.variables, **self.template_kwargs})

    def _assistant_headers(self) -> list[str]:
        """What the template writes before an assistant turn, longest candidate first: the generation prompt,
        then its prefixes that end after a special token or a newline and still contain a special token
        (Gemma 4's prompt adds an empty thought channel that past turns do not have)."""
        probe = [{"role": "user", "content": "Hi"}]
        try:
            without = self.render_text(probe, False)
            with_prompt = self.render_text(probe, True)
        except RowError as e:
            if e.reason in (Reason.template_timeout, Reason.template_too_large):
                self.limit_error = e  # the probe reports it (once, not after every render times out)
            return []
        common = len(os.path.commonprefix([without, with_prompt]))  # noqa: RUF071  (characters are what we want)
        # Back off to a boundary: Phi-3.5 ends with '<|end|>\n' + eos vs '<|end|>\n<|assistant|>\n', whose
        # common prefix ends inside '<|'.
        bounds = {0} | {i + 1 for i, ch in enumerate(with_prompt[:common]) if ch == "\n"}
        if self.special is not None:
            bounds |= {m.end() for m in self.special.finditer(with_prompt) if m.end() <= common}
        prompt = with_prompt[max(bounds):]
        if not prompt.strip():
            return []
        cuts = {len(prompt)}
        if self.special is not None:
            cuts |= {m.end() for m in self.special.finditer(prompt)}
        cuts |= {i + 1 for i, ch in enumerate(prompt) if ch == "\n"}
        candidates = [prompt[:c] for c in sorted(cuts, reverse=True)]
        has_special = [c for c in candidates if self.special is not None and self.special.search(c)]
        return has_special or [prompt]

    def _header_end(self, text: str, floor: int, anchor: int) -> int | None:
        for header in self.headers:
            at = text.rfind(header, floor, anchor)
            if at >= 0:
                return at + len(header)
        return None

    def _end_of_turn(self, text: str, end: int, ceiling: int, whitespace_only: bool) -> tuple[int, int] | None:
        """The first special token after `end` and before the next message: that turn's end-of-turn token.
        For non-assistant turns only whitespace may lie in between."""
        if self.eot is None:
            return None
        m = self.eot.search(text, end, max(ceiling, end))
        if m is None or (whitespace_only and text[end:m.start()].strip()):
            return None
        return m.start(), m.end()


def _alternation(tokens: list[str] | None) -> re.Pattern[str] | None:
    """One regex for any of these tokens, longest first."""
    if not tokens:
        return None
    return re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))


def render_segments(segments: Segments) -> Rendered:
    text, spans, pos = [], [], 0
    for part, trained in segments.parts:
        if trained and part:
            spans.append((pos, pos + len(part)))
        text.append(part)
        pos += len(part)
    # A response's first token merged with the prompt's last characters (':' + 'y' -> ':y') is trained, as
    # Axolotl trains the response it tokenizes on its own.
    return Rendered("".join(text), _merge(spans), tuple(a for a, _ in spans))


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(s for s in spans if s[1] > s[0]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out
