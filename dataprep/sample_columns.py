"""Per-sample text columns for `filters:` and `decontaminate:`, computed in the row workers.

A filter's `where` (dataprep/filters.py) sees one row per kept sample with these columns:

    dataset         datasets[].path as written in the config
    source_file     the input file (as in samples.parquet)
    source_row      0-based row in that file
    num_tokens      tokens of the sample (after truncation)
    num_trainable   tokens whose label is trained
    turns           messages in a chat; 1 for every other type
    system_text     contents of the messages of that role, joined with "\\n" ('' when there are none)
    user_text
    assistant_text
    text            every message's content in order, joined with "\\n" (tool messages too)
    <field>         each top-level field of the input row, by its own name: scalars with their JSON type
                    (string VARCHAR, integer BIGINT, number DOUBLE, true/false BOOLEAN), lists and objects as
                    JSON text (use DuckDB's json functions); a field some rows lack is NULL there. A field
                    named like one of the columns above is `field_<name>` (e.g. a completion row's own `text`).

Per type, for the role columns: chat_template rows use the mapped roles (ShareGPT's human/gpt are user/
assistant) and message contents only (no reasoning, tool calls or template text). Instruct types (alpaca,
custom mappings, ...): instruction and input (joined with "\\n") are user_text, the output is assistant_text, the
row's system field is system_text (a configured system_prompt is format, not content). input_output: segments
with label false are user_text, label true assistant_text. completion and pretrain: the text is
assistant_text. Pre-tokenized rows have no text: every text column is ''. `text` is system, user and assistant
text joined with "\\n" (the non-empty ones) for every type but chats.

Only the top-level fields a filter names are kept (as one JSON object per sample, typed by DuckDB over the whole
table when the filters run), so rows with large unused fields cost nothing extra.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from dataprep import instruct_types
from dataprep.formats import Chat, Segments, Tokens
from schemas.config import CustomInstructType, DatasetConfig

# The columns every sample has; a filter naming anything else names a top-level field of the rows.
BUILTIN_COLUMNS = {
    "dataset": "VARCHAR", "source_file": "VARCHAR", "source_row": "BIGINT", "num_tokens": "BIGINT",
    "num_trainable": "BIGINT", "turns": "INTEGER", "system_text": "VARCHAR", "user_text": "VARCHAR",
    "assistant_text": "VARCHAR", "text": "VARCHAR",
}
# Computed in the worker (the rest are the sample table's own columns); `fields` is the JSON object of the
# top-level fields filters name.
WORKER_COLUMNS = ("turns", "system_text", "user_text", "assistant_text", "text", "fields")
SHADOWED_PREFIX = "field_"


def field_key(column: str) -> str:
    """The top-level field a filter column names: `field_text` is the row's `text` (shadowed by the column)."""
    rest = column.removeprefix(SHADOWED_PREFIX)
    return rest if column.startswith(SHADOWED_PREFIX) and rest in BUILTIN_COLUMNS else column


def sample_columns(record: dict[str, Any], sample: Chat | Segments | Tokens, ds: DatasetConfig,
                   fields: tuple[str, ...]) -> dict[str, Any]:
    """The worker-computed columns of one sample; `fields`: the top-level fields the filters name."""
    if isinstance(sample, Chat):
        by_role: dict[str, list[str]] = {"system": [], "user": [], "assistant": []}
        every = []
        for m in sample.messages:
            content = m.get("content")
            if isinstance(content, str) and content:
                every.append(content)
                if m["role"] in by_role:
                    by_role[m["role"]].append(content)
        out = {"turns": len(sample.messages), "system_text": "\n".join(by_role["system"]),
               "user_text": "\n".join(by_role["user"]), "assistant_text": "\n".join(by_role["assistant"]),
               "text": "\n".join(every)}
    else:
        system, user, assistant = _roles(record, ds) if not isinstance(sample, Tokens) else ("", "", "")
        out = {"turns": 1, "system_text": system, "user_text": user, "assistant_text": assistant,
               "text": "\n".join(t for t in (system, user, assistant) if t)}
    out["fields"] = _fields_json(record, fields)
    return out


def _roles(record: dict[str, Any], ds: DatasetConfig) -> tuple[str, str, str]:
    """(system, user, assistant) text of a non-chat row that formats.to_sample has already accepted."""
    t = ds.type
    if isinstance(t, CustomInstructType):
        return (_text(record, t.field_system), _join(_text(record, t.field_instruction), _text(record, t.field_input)),
                _text(record, t.field_output))
    if t == "input_output":
        segments = record["segments"]
        user = [s["text"] for s in segments if not s.get("label", True)]
        assistant = [s["text"] for s in segments if s.get("label", True)]
        return "", "\n".join(user), "\n".join(assistant)
    if t in ("completion", "pretrain"):
        return "", "", _text(record, ds.field or "text")
    named = instruct_types.resolve(str(t))
    assert named is not None, f"unhandled type {t!r}"
    system = instruct_types.fill_field(named.system, record) if named.system else ""
    instruction = instruct_types.fill_field(named.instruction, record)
    return system, _join(instruction, instruct_types.fill_field(named.input, record)), \
        instruct_types.fill_field(named.output, record)


def _text(record: dict[str, Any], key: str | None) -> str:
    value = record.get(key) if key else None
    return value if isinstance(value, str) else ""


def _join(*parts: str) -> str:
    return "\n".join(p for p in parts if p)


def _fields_json(record: dict[str, Any], fields: tuple[str, ...]) -> str | None:
    if not fields:
        return None
    picked = {k: record[k] for k in fields if k in record}
    return json.dumps(picked, ensure_ascii=False, default=_json_value, separators=(",", ":"))


def _json_value(value: Any) -> Any:
    """A Parquet value JSON has no type for: a decimal is a number (filters compare it as one; a float holds
    it to ~16 digits), dates and bytes are text."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return str(value)
