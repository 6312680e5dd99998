"""The Jinja environment chat templates run in: transformers' sandbox, plus a time and a size limit.

A chat template is code from a config or from a downloaded `tokenizer_config.json`. The sandbox already stops
escapes (no attribute starting with `_`, no mutation of lists/dicts, `range` of at most 100,000 items); these
limits stop a template from hanging the run or exhausting memory, in the same thread (signals only reach the
main thread, and rows render on worker threads):

- time: every loop iteration, call and filter checks a deadline (`RENDER_SECONDS` after the render started).
  Jinja has no other way to spend time: no while loops, recursion ends at Python's recursion limit, and the
  rest of a template runs once per place it is written. Loops are checked by wrapping each `{% for %}`'s
  iterable when the template is parsed.
- size: the rendered text, and every intermediate string or list a template builds (`~`, `+`, `*`, `%`,
  filters, string methods), is at most `max_chars`. Operations that could allocate far more in one step
  (`'x' * 10**10`, `'x'|center(10**10)`, `'%10000000000s' % x`, `'{:>10000000000}'.format(x)`, `sep.join`,
  `replace`, `2 ** 10**10`) are checked before they run.

`render_limited` is the only way templates are rendered; a limit raises TemplateTimeout / TemplateTooLarge.
Outside `render_limited` (compile-time constant folding) only the size checks apply. Cost: about 10 us on a
70 us render of a 9-message Qwen2.5 conversation; no measurable change in `tessera prepare`'s rows stage.
"""

from __future__ import annotations

import functools
import math
import re
import string
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

RENDER_SECONDS = 5.0
"""Wall-clock limit of one render. The library templates render a 100-turn conversation in about 2 ms."""
MIN_CHARS = 1 << 20
"""Output (and intermediate value) limit for a render: this many characters, or GROWTH times the
characters of the conversation if that is more (templates repeat content at most a few times)."""
GROWTH = 8
_MAX_POWER_BITS = 1 << 16  # 2 ** 65536 is already a 19,729-digit number


class TemplateLimit(Exception):
    """A template exceeded a limit (a subclass says which)."""


class TemplateTimeout(TemplateLimit):
    pass


class TemplateTooLarge(TemplateLimit):
    pass


class _State(threading.local):
    deadline = math.inf
    max_chars = MIN_CHARS
    seconds = RENDER_SECONDS


_state = _State()


def _tick() -> None:
    if time.monotonic() > _state.deadline:
        raise TemplateTimeout(f"the chat template ran for more than {_state.seconds:g}s (an endless or huge loop?)")


def _too_large(what: str) -> TemplateTooLarge:
    return TemplateTooLarge(f"the chat template builds {what}, more than the {_state.max_chars:,} characters "
                            "allowed for this conversation")


def _check_size(value: Any) -> Any:
    if value.__class__ is str:  # the common case first: this runs for every `+` and `~` of every row
        if len(value) > _state.max_chars:
            raise _too_large(f"a string of {len(value):,} characters")
    elif isinstance(value, (list, tuple)) and _weight(value) > _state.max_chars:
        raise _too_large(f"a list of {_weight(value):,} characters")
    return value


def _weight(seq: str | list[Any] | tuple[Any, ...]) -> int:
    """Characters a sequence stands for: its length plus, for a list, the strings in it (`[big] * n` is
    small as a list and huge once joined or printed)."""
    if isinstance(seq, str):
        return len(seq)
    return len(seq) + sum(len(x) for x in seq if isinstance(x, str))


def _check_ints(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    for v in (*args, *kwargs.values()):
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) > _state.max_chars:
            raise _too_large(f"a value {v:,} characters long")


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\d*)(?:\.(\d*))?")


def _check_percent_format(fmt: str) -> None:
    for width, precision in _PERCENT_SPEC.findall(fmt):
        for n in (width, precision):
            if n and (len(n) > 12 or int(n) > _state.max_chars):
                raise _too_large(f"a %-format field {n} characters wide")


def _fields(fmt: str) -> list[tuple[str, str | None, str | None, str | None]]:
    try:
        return list(string.Formatter().parse(fmt))
    except ValueError:
        return []  # str.format raises the same error itself


def _check_brace_format(fmt: str) -> None:
    for _, _, spec, _ in _fields(fmt):
        for n in re.findall(r"\d+", spec or ""):
            if len(n) > 12 or int(n) > _state.max_chars:
                raise _too_large(f"a format field {n} characters wide")


def _str_method_precheck(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Checks (and for `join`, materialises) the arguments of a str method call before it runs."""
    owner = getattr(method, "__self__", None)
    name = getattr(method, "__name__", "")
    if not isinstance(owner, str):
        return args
    if name in ("center", "ljust", "rjust", "zfill", "expandtabs"):
        _check_ints(args, kwargs)  # a width: the result is at least that long
    elif name in ("format", "format_map"):
        _check_brace_format(owner)
        if "{" in "".join(spec or "" for _, _, spec, _ in _fields(owner)):
            _check_ints(args, kwargs)  # a nested width `{:>{w}}` comes from the arguments
    elif name == "join" and args:
        items = list(args[0])
        total = sum(len(x) for x in items if isinstance(x, str)) + len(owner) * len(items)
        if total > _state.max_chars:
            raise _too_large(f"a joined string of {total:,} characters")
        args = (items, *args[1:])
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        _check_replace(owner, args[0], args[1])
    return args


def _check_replace(s: str, old: str, new: str) -> None:
    grows = len(new) - len(old)
    if grows > 0:
        count = len(s) + 1 if old == "" else s.count(old)
        if len(s) + count * grows > _state.max_chars:
            raise _too_large(f"a replaced string of {len(s) + count * grows:,} characters")


# Filters whose result can be far larger than their input: their arguments are checked before they run.
_AMPLIFIERS = frozenset({"center", "indent", "format", "join", "replace", "tojson"})
_WIDTH_FILTERS = frozenset({"center", "indent", "tojson"})  # an int argument is a width or an indent


def _guard_filter(name: str, f: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(f)  # keeps jinja_pass_arg (pass_context / pass_eval_context)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        if name not in _AMPLIFIERS:
            return _check_size(f(*args, **kwargs))
        values = [a for a in args if not isinstance(a, (jinja2.runtime.Context, jinja2.nodes.EvalContext,
                                                        jinja2.Environment))]
        if name in _WIDTH_FILTERS:
            _check_ints(tuple(values[1:]), kwargs)
        if name == "format" and values and isinstance(values[0], str):
            _check_percent_format(values[0])
            if "*" in values[0]:  # `%*s`: the width is an argument
                _check_ints(tuple(values[1:]), kwargs)
        if name == "join" and values:
            items = list(values[0]) if not isinstance(values[0], str) else values[0]
            sep = values[1] if len(values) > 1 else kwargs.get("d", "")
            total = sum(len(x) for x in items if isinstance(x, str)) + len(str(sep)) * len(items)
            if total > _state.max_chars:
                raise _too_large(f"a joined string of {total:,} characters")
            args = tuple(items if a is values[0] else a for a in args)
        if name == "replace" and len(values) >= 3 and all(isinstance(v, str) for v in values[:3]):
            _check_replace(values[0], values[1], values[2])
        return _check_size(f(*args, **kwargs))

    return guarded


class _GuardedIterable:
    """A `{% for %}` iterable that checks the deadline at each item (and keeps len() for loop.length)."""

    __slots__ = ("inner",)

    def __init__(self, inner: Any):
        self.inner = inner

    def __iter__(self) -> Iterator[Any]:
        for item in self.inner:
            _tick()
            yield item

    def __len__(self) -> int:
        return len(self.inner)


class LimitedEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.filters = {name: _guard_filter(name, f) for name, f in self.filters.items()}
        self.filters["_tessera_loop"] = _GuardedIterable
        self.filters["_tessera_size"] = _check_size

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        return _AddChecks().visit(super()._parse(source, name, filename))

    def set_filter(self, name: str, f: Callable[..., Any]) -> None:
        self.filters[name] = _guard_filter(name, f)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            seq, n = (left, right) if isinstance(right, int) else (right, left)
            if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and _weight(seq) * n > _state.max_chars:
                raise _too_large(f"{'a string' if isinstance(seq, str) else 'a list'} of {_weight(seq) * n:,} "
                                 "characters")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int):
            if abs(left) > 1 and right > 0 and abs(left).bit_length() * right > _MAX_POWER_BITS:
                raise _too_large(f"a number of about {abs(left).bit_length() * right:,} bits ({left} ** {right})")
        elif operator == "%" and isinstance(left, str):
            _check_percent_format(left)
            if "*" in left:  # `%*s`: the width is an argument
                _check_ints(right if isinstance(right, tuple) else (right,), {})
        return _check_size(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _tick()
        target = getattr(__obj, "__wrapped__", __obj)  # str.format arrives wrapped by the sandbox
        args = _str_method_precheck(target, args, kwargs)
        if __obj is __self.globals.get("lipsum"):
            _check_ints(args, kwargs)
        return _check_size(super().call(__context, __obj, *args, **kwargs))


class _AddChecks(NodeTransformer):
    """Each `{% for %}` iterates a _GuardedIterable; each `a ~ b` and `a + b` result passes the size check."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        node = self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, "_tessera_loop", [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        node = self.generic_visit(node)
        return nodes.Filter(node, "_tessera_size", [], [], None, None, lineno=node.lineno)

    def visit_Add(self, node: nodes.Add) -> nodes.Node:
        # `+` is checked here rather than intercepted (environment.call_binop): templates build every turn with
        # it. Only a chain's result is checked: `a + b + c` is no longer than its result.
        stack = [node]
        while stack:
            add = stack.pop()
            for side in ("left", "right"):
                child = getattr(add, side)
                if isinstance(child, nodes.Add):
                    stack.append(child)
                else:
                    setattr(add, side, self.visit(child))
        return nodes.Filter(node, "_tessera_size", [], [], None, None, lineno=node.lineno)


def render_limited(template: jinja2.Template, content_chars: int, **variables: Any) -> str:
    """template.render(**variables) within RENDER_SECONDS and max(MIN_CHARS, GROWTH * content_chars)."""
    _state.deadline = time.monotonic() + RENDER_SECONDS
    _state.seconds = RENDER_SECONDS
    _state.max_chars = max(MIN_CHARS, GROWTH * content_chars)
    try:
        out, size = [], 0
        # root_render_func is what Template.render/generate run, minus their traceback rewriting (errors are
        # reported as messages) and one generator layer per chunk.
        for chunk in template.root_render_func(template.new_context(variables)):
            size += len(chunk)
            if size > _state.max_chars:
                raise _too_large(f"a text of more than {size:,} characters")
            out.append(chunk)
        return "".join(out)
    finally:
        _state.deadline = math.inf
        _state.max_chars = MIN_CHARS
