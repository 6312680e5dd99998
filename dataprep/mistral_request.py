"""A Chat as mistral-common's ChatCompletionRequest, and which Chat messages each normalised message holds.

The request is built with mistral-common's own classes, the way its `encode_chat_completion` expects them:
- `tools` (the row's or the dataset's) -> `Tool(function=Function(name, description, parameters))`;
- an assistant message's `tool_calls` -> `ToolCall(id, function=FunctionCall(name, arguments as JSON))`, its
  reasoning (`reasoning_content` / `thinking`) -> a `ThinkChunk` before its text, as mistral-common's
  `AssistantMessage.from_openai` puts it;
- a `tool` message -> `ToolMessage(content, tool_call_id, name)` (v2 writes the name, v3 and later the id).

Rows a tokenizer version cannot encode are quarantined here, with the field and the fix, before mistral-common
validates them with its own (shorter) words:
- tools need v2 or later ([AVAILABLE_TOOLS], [TOOL_CALLS], [TOOL_RESULTS]); v1 has no tool tokens;
- tool call ids: v3 to v11 take exactly 9 letters or digits (mistral-common's `^[a-zA-Z0-9]{9}$`); the last
  assistant message may leave them out. v13 and later take any id but "null". v2 writes none;
- an assistant message with both content and tool calls needs v7 or later;
- reasoning needs a tokenizer with [THINK] tokens (v13 and later, e.g. Magistral's); mistral-common before v13
  cannot encode a ThinkChunk.
"""

from __future__ import annotations

import json
import re
from typing import Any

from mistral_common.protocol.instruct.chunk import TextChunk, ThinkChunk
from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, ToolMessage, UserMessage
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.protocol.instruct.tool_calls import Function, FunctionCall, Tool, ToolCall
from mistral_common.tokens.tokenizers.base import TokenizerVersion

from dataprep.formats import Chat, RowError
from schemas.reasons import Reason

V = TokenizerVersion
NINE_ALNUM = re.compile(r"[a-zA-Z0-9]{9}")
NULL_ID = "null"  # mistral-common's ToolCall.id when none is given


def build_request(chat: Chat, version: TokenizerVersion, can_think: bool) -> ChatCompletionRequest:
    """The request for `chat`; RowError (template_error) for what this version cannot encode."""
    if chat.tools is not None and version < V.v2:
        raise RowError(Reason.template_error, f"the row has tool definitions, but a mistral-common {version.value} "
                       "tokenizer has no tool tokens (tools need v2 or later)", "tools")
    last_assistant = max((i for i, m in enumerate(chat.messages) if m["role"] == "assistant"), default=-1)
    messages: list[Any] = []
    for i, m in enumerate(chat.messages):
        role, content = m["role"], m.get("content")
        if role not in ("system", "user", "assistant", "tool"):
            raise RowError(Reason.template_error, f"message {i} has role '{role}'; mistral: tokenizers take system, "
                           "user, assistant and tool messages", f"messages[{i}]")
        key = chat.reasoning_key(i)
        if key is not None and role != "assistant":
            raise RowError(Reason.template_error, f"message {i} ({role}) has {key}; only assistant messages carry "
                           "reasoning in mistral-common", f"messages[{i}].{key}")
        if role == "user":
            messages.append(UserMessage(content=content or ""))
        elif role == "system":
            messages.append(SystemMessage(content=content or ""))
        elif role == "tool":
            messages.append(_tool_message(chat, i, version))
        else:
            messages.append(_assistant_message(chat, i, version, can_think, i == last_assistant))
    tools = [_tool(t, j, version) for j, t in enumerate(chat.tools)] if chat.tools else None
    return ChatCompletionRequest(messages=messages, tools=tools)


def _assistant_message(chat: Chat, i: int, version: TokenizerVersion, can_think: bool, last: bool
                       ) -> AssistantMessage:
    m = chat.messages[i]
    where = f"messages[{i}]"
    calls = m.get("tool_calls") or []
    if calls and version < V.v2:
        raise RowError(Reason.template_error, f"message {i} has tool_calls, but a mistral-common {version.value} "
                       "tokenizer has no tool tokens (tool calls need v2 or later)", f"{where}.tool_calls")
    text = m.get("content") or ""
    if calls and text and version < V.v7:
        raise RowError(Reason.template_error, f"message {i} has both content and tool_calls; mistral-common "
                       f"{version.value} encodes an assistant message as one or the other (both need v7 or later): "
                       "move the content into an assistant message of its own or drop it", f"{where}.content")
    tool_calls = [_tool_call(c, i, j, version, last) for j, c in enumerate(calls)]
    content: Any = text
    key = chat.reasoning_key(i)
    if key is not None:
        if not can_think:
            raise RowError(Reason.template_error, f"message {i} has reasoning ({key}), but a mistral-common "
                           f"{version.value} tokenizer has no [THINK] tokens to encode it (thinking needs v13 or "
                           "later with [THINK]/[/THINK], e.g. Magistral's tekken.json); remove the reasoning, or "
                           "point field_thinking at a column the rows do not have to train the answers without it",
                           f"{where}.{key}")
        content = [ThinkChunk(thinking=m[key], closed=True), *([TextChunk(text=text)] if text else [])]
    return AssistantMessage(content=content or None, tool_calls=tool_calls or None)


def _tool_call(call: dict[str, Any], i: int, j: int, version: TokenizerVersion, last: bool) -> ToolCall:
    where = f"messages[{i}].tool_calls[{j}]"
    function = call["function"]
    arguments = function.get("arguments")
    arguments = arguments if isinstance(arguments, str) else json.dumps(arguments if arguments is not None else {},
                                                                          ensure_ascii=False)
    call_id = call.get("id")
    if call_id is not None and not isinstance(call_id, str):
        raise RowError(Reason.wrong_type, f"'{where}.id' must be text", f"{where}.id")
    _check_id(call_id, f"{where}.id", version, missing_ok=last)
    return ToolCall(id=call_id or NULL_ID, function=FunctionCall(name=function["name"], arguments=arguments))


def _tool_message(chat: Chat, i: int, version: TokenizerVersion) -> ToolMessage:
    m = chat.messages[i]
    if version < V.v2:
        raise RowError(Reason.template_error, f"message {i} is a tool result, but a mistral-common {version.value} "
                       "tokenizer has no tool tokens (tool results need v2 or later)", f"messages[{i}]")
    call_id = m.get("tool_call_id")
    _check_id(call_id, f"messages[{i}].tool_call_id", version, missing_ok=False)
    return ToolMessage(content=m.get("content") or "", tool_call_id=call_id, name=m.get("name"))


def _check_id(call_id: str | None, field: str, version: TokenizerVersion, missing_ok: bool) -> None:
    if version < V.v3:
        return  # v2 writes no ids
    if version >= V.v13:
        if not call_id or call_id == NULL_ID:
            raise RowError(Reason.template_error, f"'{field}' is missing; mistral-common {version.value} needs a "
                           "tool call id (any text but 'null') on every call and on its result", field)
        return
    if (not call_id or call_id == NULL_ID) and missing_ok:
        return  # mistral-common's finetuning mode lets the last assistant message's calls go without ids
    if call_id is None or not NINE_ALNUM.fullmatch(call_id):
        shown = "missing" if call_id is None else f"{call_id!r}"
        raise RowError(Reason.template_error, f"'{field}' is {shown}: mistral-common {version.value} needs tool "
                       "call ids of exactly 9 letters or digits (like 'a1B2c3D4e'); rewrite each call's id and the "
                       "tool_call_id of its result to such an id (e.g. the first 9 alphanumerics of a hash of the "
                       "old one)", field)


def _tool(tool: Any, j: int, version: TokenizerVersion) -> Tool:
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise RowError(Reason.wrong_type, f"'tools[{j}]' must be {{type: function, function: {{name, description, "
                       "parameters}}}} (OpenAI's shape)", f"tools[{j}]")
    return Tool(function=Function(name=function["name"], description=function.get("description") or "",
                                  parameters=function.get("parameters") or {}))


def groups(chat: Chat, version: TokenizerVersion) -> list[tuple[str, list[int]]]:
    """Which Chat messages each normalised message holds, following mistral-common's normaliser: runs of user or
    assistant messages merge, tool messages stay one each (from v13 on, a run of them is ordered as the calls
    they answer); before v7 system messages leave the list for the system prompt, which the last user turn
    carries (v1: the first), and an empty user turn is put first when the list does not start with one."""
    runs: list[tuple[str, list[int]]] = []
    for i, msg in enumerate(chat.messages):
        if runs and runs[-1][0] == msg["role"]:
            runs[-1][1].append(i)
        else:
            runs.append((msg["role"], [i]))
    own_blocks = version >= V.v7
    out: list[tuple[str, list[int]]] = []
    systems: list[int] = []
    call_ids: list[str] = []  # the normaliser's latest_call_ids: calls since the last run of tool results
    for role, members in runs:
        if role == "tool":
            if version >= V.v13:
                order = {cid: k for k, cid in enumerate(call_ids)}
                members = sorted(members, key=lambda i: (order.get(chat.messages[i].get("tool_call_id") or NULL_ID,
                                                                   float("inf")), i))
            out.extend(("tool", [i]) for i in members)
            call_ids.clear()
        elif role == "system":
            if own_blocks:
                out.extend(("system", [i]) for i in members)
            else:
                systems += members
        else:
            out.append((role, members))
            if role == "assistant":
                call_ids += [c.get("id") or NULL_ID for i in members for c in chat.messages[i].get("tool_calls") or []]
    if not own_blocks and (not out or out[0][0] != "user"):
        out.insert(0, ("user", []))
    if systems:
        users = [members for role, members in out if role == "user"]
        carrier = users[0] if version == V.v1 else users[-1]
        carrier += systems
        carrier.sort()
    return out
