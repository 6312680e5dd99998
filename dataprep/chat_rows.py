"""type: chat_template rows -> a `Chat`: messages as `apply_chat_template(messages, tools=...)` receives them,
plus what is trained in each.

What reaches the template, per message: `role` (mapped through `roles`), `content` (a string; a list of
`{type: text, text, train|weight}` parts is joined into one string, as Axolotl does), the reasoning trace
(read from `field_thinking`, default `reasoning_content` or `thinking`, and passed under
`template_thinking_key`, default the same key), `tool_calls` (OpenAI shape; `function.arguments` given as a
JSON string is parsed into a mapping, as Axolotl does, because templates such as Qwen2.5's and Llama 3.1's
`tojson` it), `name` and `tool_call_id`. A key the row does not have is not added (Llama 3.1 tests
`'tool_calls' in message`). Other message keys (training flags, ids, metadata) are not passed. The row's
tool definitions (`field_tools`, default `tools`; a JSON string is parsed, so are string `parameters`) or
else the dataset's `tools` are passed as `tools=`.

What is trained is decided here per message (roles_to_train, message_field_training, detail offsets and
content parts) and located in the render by render.py.
"""

from __future__ import annotations

import json
from typing import Any

from dataprep.formats import DEFAULT_ROLES, Chat, RowError
from schemas.config import DatasetConfig
from schemas.reasons import Reason

# Axolotl's split_thinking delimiters: a reasoning block, then optionally a solution block holding the answer.
THINKING_PAIRS = (("<think>", "</think>"), ("<reasoning>", "</reasoning>"),
                  ("<|begin_of_thought|>", "<|end_of_thought|>"))
SOLUTION_PAIRS = (("<|begin_of_solution|>", "<|end_of_solution|>"),)
PASSED_KEYS = ("tool_calls", "name", "tool_call_id")
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")  # transformers' names for it
Parts = list[tuple[int, int, bool | None]]


def chat_sample(record: dict[str, Any], ds: DatasetConfig, train_on_inputs: bool) -> Chat:
    field, role_key, content_key = ds.field_messages, ds.message_field_role, ds.message_field_content
    if field is None:
        # OpenAI style by default; ShareGPT rows (conversations/from/value) are recognised as such.
        field = "messages" if "messages" in record or "conversations" not in record else "conversations"
        sharegpt = field == "conversations"
        role_key = role_key or ("from" if sharegpt else "role")
        content_key = content_key or ("value" if sharegpt else "content")
    role_key, content_key = role_key or "role", content_key or "content"
    raw = record.get(field)
    if raw is None:
        raise RowError(Reason.missing_field, f"no field '{field}'; set field_messages to the column with the "
                       "messages", field)
    if not isinstance(raw, list) or not raw:
        raise RowError(Reason.wrong_type if not isinstance(raw, list) else Reason.empty_content,
                       f"'{field}' must be a non-empty list of messages", field)
    lookup = {name: role for role, names in (ds.roles or DEFAULT_ROLES).items() for name in names}
    messages: list[dict[str, Any]] = []
    train, detail, reasoning_detail = [], [], []
    for i, msg in enumerate(raw):
        where = f"{field}[{i}]"
        if not isinstance(msg, dict):
            raise RowError(Reason.wrong_type, f"'{where}' must be an object", where)
        name = msg.get(role_key)
        if not isinstance(name, str):
            reason = Reason.missing_field if name is None else Reason.wrong_type
            raise RowError(reason, f"'{where}.{role_key}' must be a role name", f"{where}.{role_key}")
        role = lookup.get(name)
        if role is None:
            raise RowError(Reason.unknown_role, f"'{where}' has role '{name}', not in the roles mapping "
                           f"({', '.join(sorted(lookup))}); add it under `roles`", f"{where}.{role_key}")
        out: dict[str, Any] = {"role": role}
        content, parts = _field_text(msg, content_key, f"{where}.{content_key}")
        thinking_in = ds.field_thinking or next((k for k in REASONING_FIELDS if msg.get(k) is not None),
                                                "reasoning_content")
        reasoning, reasoning_parts = _field_text(msg, thinking_in, f"{where}.{thinking_in}")
        if ds.split_thinking and role == "assistant" and content:
            content, split = _split_thinking(content)
            if split is not None:
                # Parts offsets and flags no longer apply to the split texts.
                reasoning, parts, reasoning_parts = split, None, None
        tool_calls = msg.get("tool_calls")
        if tool_calls is not None:
            out["tool_calls"] = _tool_calls(tool_calls, f"{where}.tool_calls")
        for key in PASSED_KEYS[1:]:
            if msg.get(key) is not None:
                if not isinstance(msg[key], str):
                    raise RowError(Reason.wrong_type, f"'{where}.{key}' must be text", f"{where}.{key}")
                out[key] = msg[key]
        extra = role == "assistant" and bool(tool_calls or reasoning)
        if content is None:
            if not extra:
                present = content_key in msg
                raise RowError(Reason.empty_content if present else Reason.missing_field,
                               f"'{where}.{content_key}' is empty" if present else
                               f"no field '{content_key}' in '{where}'; check the dataset's field mapping",
                               f"{where}.{content_key}")
            if content_key in msg:  # null stays null, as apply_chat_template would receive it
                out["content"] = msg[content_key]
        elif content == "" and not (role == "system" or extra):
            # An empty system prompt is a real case (templates treat it differently from none); empty turns are not.
            raise RowError(Reason.empty_content, f"'{where}.{content_key}' is empty", f"{where}.{content_key}")
        else:
            out["content"] = content
        if reasoning is not None:
            # As transformers passes it: under every name templates read it by (gpt-oss reads `thinking`).
            out = {"thinking": reasoning, **out, "reasoning_content": reasoning}
            if ds.template_thinking_key:
                out[ds.template_thinking_key] = reasoning
        # Axolotl's should_train: the message's own flag, else its detail, else train_on_inputs or its role.
        trained = train_on_inputs or role in ds.roles_to_train
        flag = None
        if ds.message_field_training and msg.get(ds.message_field_training) is not None:
            flag = msg[ds.message_field_training]
            if not isinstance(flag, bool):
                raise RowError(Reason.wrong_type, f"'{where}.{ds.message_field_training}' must be true or false",
                               f"{where}.{ds.message_field_training}")
            trained = flag
        ranges = None
        if ds.message_field_training_detail and msg.get(ds.message_field_training_detail) is not None:
            ranges = _detail(msg[ds.message_field_training_detail], len(content or ""),
                             f"{where}.{ds.message_field_training_detail}")
            trained = bool(ranges)
        if flag is not False and (parts is not None or reasoning_parts is not None):
            # Parts with a train/weight flag decide for themselves; the others follow the message.
            ranges = _resolve(parts, trained) if parts is not None else ranges
            reasoning_ranges = _resolve(reasoning_parts, trained) if reasoning_parts is not None else None
            trained = trained or bool(ranges) or bool(reasoning_ranges)
        else:
            reasoning_ranges = None
        messages.append(out)
        train.append(trained)
        detail.append(ranges)
        reasoning_detail.append(reasoning_ranges)
    if ds.drop_system_message and messages[0]["role"] == "system":
        del messages[0], train[0], detail[0], reasoning_detail[0]
        if not messages:
            raise RowError(Reason.empty_content, f"'{field}' holds only a system message (drop_system_message)",
                           field)
    tools = _tools(record, ds)
    keys = ("reasoning_content", "thinking", *([ds.template_thinking_key] if ds.template_thinking_key else []))
    return Chat(messages, train, detail, tools=tools, thinking_keys=keys,
                reasoning_detail=reasoning_detail if any(r is not None for r in reasoning_detail) else None,
                train_reasoning=ds.train_on_reasoning, train_tool_calls=ds.train_on_tool_calls)


def _field_text(msg: dict[str, Any], key: str, where: str) -> tuple[str | None, Parts | None]:
    """(text or None when absent/null, the (start, end, train flag) of content parts when any part has a flag)."""
    value = msg.get(key)
    if value is None:
        return None, None
    if isinstance(value, str):
        return value, None
    if isinstance(value, list):
        return _parts(value, where)
    raise RowError(Reason.wrong_type, f"'{where}' is a {type(value).__name__}, expected text or a list of "
                   "{type: text, text} parts", where)


def _parts(parts: list[Any], where: str) -> tuple[str, Parts | None]:
    """Axolotl's content parts: the texts joined; parts with `train` or `weight` make the message's trained
    ranges (a part without either follows the message). Only text parts: the template sees one string."""
    texts, flags = [], []
    for j, part in enumerate(parts):
        at = f"{where}[{j}]"
        if not isinstance(part, dict) or part.get("type", "text") != "text":
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise RowError(Reason.wrong_type, f"'{at}' is a {kind!r} part; only {{type: text, text}} parts are "
                           "supported (the template receives their joined text)", at)
        text = next((part[k] for k in ("text", "content", "value") if part.get(k) is not None), "")
        if not isinstance(text, str):
            raise RowError(Reason.wrong_type, f"'{at}.text' must be text", f"{at}.text")
        train, weight = part.get("train"), part.get("weight")
        if train is not None and not isinstance(train, bool):
            raise RowError(Reason.wrong_type, f"'{at}.train' must be true or false", f"{at}.train")
        if weight is not None and (isinstance(weight, bool) or weight not in (0, 1)):
            raise RowError(Reason.wrong_type, f"'{at}.weight' must be 0 or 1", f"{at}.weight")
        texts.append(text)
        flags.append(train if train is not None else (None if weight is None else weight == 1))
    if all(f is None for f in flags):
        return "".join(texts), None
    spans, pos = [], 0
    for text, flag in zip(texts, flags, strict=True):
        if text:
            spans.append((pos, pos + len(text), flag))
        pos += len(text)
    return "".join(texts), spans


def _resolve(parts: list[tuple[int, int, bool | None]], turn_trained: bool) -> list[tuple[int, int]]:
    return [(a, b) for a, b, flag in parts if flag or (flag is None and turn_trained)]


def _split_thinking(content: str) -> tuple[str, str | None]:
    """Axolotl's split_thinking: (content, reasoning), reasoning None when no delimited block is found."""
    for open_, close in THINKING_PAIRS:
        start, end = content.find(open_), content.find(close)
        if start >= 0 and end > start:
            thinking = content[start + len(open_):end].strip()
            rest = content[end + len(close):].lstrip()
            for s_open, s_close in SOLUTION_PAIRS:
                a, b = rest.find(s_open), rest.find(s_close)
                if a >= 0 and b > a:
                    return rest[a + len(s_open):b].strip(), thinking
            return rest, thinking
    return content, None


def _tool_calls(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise RowError(Reason.wrong_type, f"'{where}' must be a list of {{type, function: {{name, arguments}}}}",
                       where)
    calls = []
    for j, call in enumerate(value):
        at = f"{where}[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise RowError(Reason.wrong_type, f"'{at}' must be {{type: function, function: {{name, arguments}}}} "
                           "(OpenAI's shape)", at)
        call = {k: v for k, v in call.items() if v is not None}
        args = function.get("arguments")
        if isinstance(args, str):
            call["function"] = {**function, "arguments": _json(args, f"{at}.function.arguments", "arguments")}
        calls.append(call)
    return calls


def _tools(record: dict[str, Any], ds: DatasetConfig) -> list[Any] | None:
    key = ds.field_tools or "tools"
    value = record.get(key)
    if value is None:
        return ds.tools
    if isinstance(value, str):
        value = _json(value, key, "tools")
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise RowError(Reason.wrong_type, f"'{key}' must be a list of tool definitions "
                       "({type: function, function: {name, description, parameters}})", key)
    tools = []
    for j, tool in enumerate(value):
        function = tool.get("function")
        if isinstance(function, dict) and isinstance(function.get("parameters"), str):
            params = _json(function["parameters"], f"{key}[{j}].function.parameters", "parameters")
            tool = {**tool, "function": {**function, "parameters": params}}
        tools.append(tool)
    return tools


def _json(text: str, where: str, what: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        message = e.msg if isinstance(e, json.JSONDecodeError) else "nested too deep"
        raise RowError(Reason.wrong_type, f"'{where}' is a string but not JSON ({message}); give {what} as an "
                       "object or a JSON string", where) from None


def _detail(value: Any, length: int, where: str) -> list[tuple[int, int]]:
    if not isinstance(value, list):
        raise RowError(Reason.bad_training_detail, f"'{where}' must be a list of "
                       "{begin_offset, end_offset, train}", where)
    ranges = []
    for j, d in enumerate(value):
        ok = isinstance(d, dict) and all(isinstance(d.get(k), int) for k in ("begin_offset", "end_offset"))
        if not ok or not (0 <= d["begin_offset"] <= d["end_offset"] < length):
            raise RowError(Reason.bad_training_detail, f"'{where}[{j}]' needs 0 <= begin_offset <= end_offset < "
                           f"{length} (the content length; end_offset is inclusive)", f"{where}[{j}]")
        if d.get("train", False):
            ranges.append((d["begin_offset"], d["end_offset"] + 1))
    return ranges
