"""The text near-dedup compares, per dataset type (`dataset_near_deduplication.fields`).

`fields: [all]` (the default) takes all of a sample's own text; names pick parts of it. What each name means:

    type                          all                                     names
    chat_template (and sharegpt)  every message's content, in order       system, user, assistant, tool (roles
                                                                          after the `roles` mapping), any key of
                                                                          `roles`
    alpaca, other named instruct  the row's system (the *_w_system        instruction, input, output, system
    types                         types), instruction, input, output
    custom instruct mapping       the same four, from its field_* columns instruction, input, output, system, or
                                                                          the column names field_* give
    input_output                  every segment's text                    input (segments with label: false),
                                                                          output (label: true)
    completion, pretrain          the text column                         text, or the column `field` names
    pre-tokenized (no type)       the input_ids, as words                 (all only)

Prompt templates, chat-template markup and fixed system prompts are never part of it: two rows are near
duplicates for what their authors wrote, whatever format they came in. Parts are joined with a line break
(normalisation folds it), so an alpaca row and a chat row with the same words compare as equal. Reasoning
traces, tool calls and tool definitions are left out. A name that means nothing for any dataset of the config,
or a dataset none of whose names apply, is a config error (`field_problems`); a name that applies to some
datasets only is used where it applies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dataprep import instruct_types
from dataprep.instruct_types import FieldError, fill_field

if TYPE_CHECKING:
    from dataprep.formats import Sample
    from schemas.config import CustomInstructType, DatasetConfig

CHAT_ROLES = ("system", "user", "assistant", "tool")
INSTRUCT_FIELDS = ("instruction", "input", "output", "system")


def known_fields(ds: DatasetConfig) -> tuple[str, ...]:
    """The names `fields` may use for this dataset (besides `all`)."""
    from schemas.config import CustomInstructType

    if ds.type == "chat_template":
        return tuple(dict.fromkeys([*CHAT_ROLES, *(ds.roles or {})]))
    if isinstance(ds.type, CustomInstructType):
        columns = [ds.type.field_instruction, ds.type.field_input, ds.type.field_output, ds.type.field_system]
        return tuple(dict.fromkeys([*INSTRUCT_FIELDS, *(c for c in columns if c)]))
    if ds.type == "input_output":
        return ("input", "output")
    if ds.type in ("completion", "pretrain"):
        return tuple(dict.fromkeys(["text", ds.field or "text"]))
    if ds.type is None:
        return ()
    return INSTRUCT_FIELDS


def field_problems(datasets: list[DatasetConfig], fields: list[str]) -> list[str]:
    """Config errors of `dataset_near_deduplication.fields` against the datasets (empty: none)."""
    if "all" in fields:
        return [] if fields == ["all"] else [f"dataset_near_deduplication.fields: `all` already takes every field; "
                                             f"remove the others ({', '.join(f for f in fields if f != 'all')})"]
    problems = []
    known = [known_fields(ds) for ds in datasets]
    for name in fields:
        if not any(name in k for k in known):
            kinds = sorted({f for k in known for f in k})
            problems.append(f"dataset_near_deduplication.fields: '{name}' is not a field of any dataset here; "
                            f"use all, or {', '.join(kinds) if kinds else 'nothing else (pre-tokenized rows)'}")
    for i, (ds, k) in enumerate(zip(datasets, known, strict=True)):
        if not any(name in k for name in fields) and all(any(n in kk for kk in known) for n in fields):
            problems.append(f"dataset_near_deduplication.fields: none of {', '.join(fields)} applies to datasets[{i}] "
                            f"({ds.path}, type {_type_name(ds)}): add one of {', '.join(k) or 'nothing'}, or use all")
    return problems


def dedup_text(record: dict[str, Any], sample: Sample, ds: DatasetConfig, fields: list[str]) -> str:
    """The text of one parsed row that near-dedup shingles (see the module docstring)."""
    from dataprep.formats import Chat, Tokens
    from schemas.config import CustomInstructType

    everything = fields == ["all"]
    if isinstance(sample, Chat):
        return "\n".join(m["content"] for m in sample.messages
                         if isinstance(m.get("content"), str) and (everything or m["role"] in fields))
    if isinstance(sample, Tokens):
        return " ".join(map(str, sample.input_ids))
    if ds.type == "input_output":
        wanted = {True: everything or "output" in fields, False: everything or "input" in fields}
        return "\n".join(seg["text"] for seg in record["segments"] if wanted[seg.get("label", True) is not False])
    if ds.type in ("completion", "pretrain"):
        return _str(record.get(ds.field or "text"))
    if isinstance(ds.type, CustomInstructType):
        return "\n".join(_str(record.get(column)) for name, column in _custom_columns(ds.type)
                         if column and (everything or name in fields or column in fields))
    named = instruct_types.resolve(str(ds.type))
    if named is None:
        return ""
    templates = {"system": named.system, "instruction": named.instruction, "input": named.input,
                 "output": named.output}
    return "\n".join(_filled(templates[name], record) for name in ("system", "instruction", "input", "output")
                     if templates[name] and (everything or name in fields))


def _custom_columns(fmt: CustomInstructType) -> list[tuple[str, str | None]]:
    return [("system", fmt.field_system), ("instruction", fmt.field_instruction), ("input", fmt.field_input),
            ("output", fmt.field_output)]


def _filled(template: str | None, record: dict[str, Any]) -> str:
    if not template:
        return ""
    try:
        return fill_field(template, record)
    except FieldError:  # an optional part the row lacks (the row itself was valid: to_sample read it)
        return ""


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _type_name(ds: DatasetConfig) -> str:
    return ds.type if isinstance(ds.type, str) else "custom" if ds.type is not None else "pre-tokenized"
