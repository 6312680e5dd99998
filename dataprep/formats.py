"""Formats: one parsed row -> a format-neutral sample, or a RowError with a reason code.

Three sample shapes come out of here:
- `Chat`: messages for a chat template (type chat_template), rendered later by render.py;
- `Segments`: text pieces, each trained or not (alpaca, custom instruct, input_output, completion);
- `Tokens`: ids and labels given by the user (pre-tokenized rows).

Prompt strings are Axolotl's, so that a model trained here is prompted the way users already prompt it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from dataprep import instruct_types
from dataprep.instruct_types import FieldError, InstructType, fill_field
from dataprep.load import Unreadable
from schemas.config import CustomInstructType, DatasetConfig
from schemas.reasons import Reason

# Alpaca's prompts as a custom mapping (tests/golden compare the `alpaca` chat template with them). `type: alpaca`
# itself is instruct_types.TYPES["alpaca"], which, like Axolotl, never reads a row's system column.
ALPACA = CustomInstructType(
    system_prompt="",
    format=(
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
    ),
    no_input_format=(
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Response:\n"
    ),
    system_format="{system}\n\n",
)

DEFAULT_ROLES = {
    "system": ["system"],
    "user": ["user", "human"],
    "assistant": ["assistant", "gpt", "model"],
    "tool": ["tool", "function", "ipython"],
}


class RowError(Exception):
    def __init__(self, reason: Reason, message: str, field: str | None = None):
        super().__init__(message)
        self.reason, self.message, self.field = reason, message, field


@dataclass(slots=True)
class Chat:
    # As the template receives them: role, content (text, or null/absent in a tool-call message) and, where the
    # row has them, the reasoning key, tool_calls, name, tool_call_id (see chat_rows.py).
    messages: list[dict[str, Any]]
    train: list[bool]  # per message: is it trained
    detail: list[list[tuple[int, int]] | None]  # per message: trained char ranges [begin, end) in content
    tools: list[Any] | None = None  # apply_chat_template(tools=...)
    thinking_keys: tuple[str, ...] = ("reasoning_content", "thinking")  # message keys holding reasoning text
    reasoning_detail: list[list[tuple[int, int]] | None] | None = None  # per message: trained ranges in reasoning
    train_reasoning: bool = True  # in trained assistant turns
    train_tool_calls: bool = True

    def reasoning_key(self, i: int) -> str | None:
        return next((k for k in self.thinking_keys if isinstance(self.messages[i].get(k), str)), None)


@dataclass(slots=True)
class Segments:
    parts: list[tuple[str, bool]]  # (text, trained); concatenated, then tokenized once
    # input_output: each part is tokenized on its own, with no BOS (Axolotl's RawInputOutputStrategy), so that
    # part edges are token edges; the ids are those of the parts' ids concatenated.
    separate: bool = False


@dataclass(slots=True)
class Tokens:
    input_ids: list[int]
    labels: list[int]


Sample = Chat | Segments | Tokens


# A JSON escape of a UTF-16 surrogate: only such text can put a lone surrogate into a parsed string.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def parse(payload: bytes | dict[str, Any] | Unreadable) -> dict[str, Any]:
    if isinstance(payload, dict):
        return payload
    if isinstance(payload, Unreadable):
        raise RowError(payload.reason, payload.message, payload.field)
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        message = f"bytes {e.start}-{e.end} are not UTF-8; re-encode the file as UTF-8"
        raise RowError(Reason.invalid_utf8, message) from None
    try:
        # A BOM starting a line in mid-file: JSON Lines files joined with `cat`, each with its own BOM
        value = json.loads(text.removeprefix("\ufeff"))
    except json.JSONDecodeError as e:
        raise RowError(Reason.malformed_json, f"not valid JSON: {e.msg} at column {e.colno}") from None
    except RecursionError:
        raise RowError(Reason.too_deep, "JSON nested deeper than Python's parser reads (~1,000 levels); "
                       "flatten the row or remove the deep field") from None
    except ValueError as e:  # int() of over 4,300 digits (sys.get_int_max_str_digits)
        raise RowError(Reason.number_too_large, f"{str(e).split(';')[0]}; write such numbers as strings") from None
    if not isinstance(value, dict):
        raise RowError(Reason.not_an_object, f"a JSON {type(value).__name__}, expected an object {{...}}")
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        where = _lone_surrogate(value)
        if where is not None:
            raise RowError(Reason.invalid_unicode, f"'{where}' holds a lone UTF-16 surrogate (a \\uD800-\\uDFFF "
                           "escape without its pair), which is not text; fix the source or drop the character",
                           where)
    return value


def _lone_surrogate(value: Any) -> str | None:
    """The path of the first key or string with a lone surrogate. Iterative: rows may nest ~1,000 deep."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, str):
            if not v.isascii():
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError:
                    return where or "(row)"
        elif isinstance(v, dict):
            for k, item in reversed(v.items()):
                key_path = f"{where}.{k}" if where else str(k)
                stack += [(key_path, k), (key_path, item)]
        elif isinstance(v, list):
            stack += [(f"{where}[{i}]", item) for i, item in reversed(list(enumerate(v)))]
    return None


def to_sample(record: dict[str, Any], ds: DatasetConfig, train_on_inputs: bool, eos: str) -> Sample:
    """`eos` is the tokenizer's EOS text, appended (and trained) after outputs. BOS is not part of segments:
    the tokenizer adds it the way `tokenizer(prompt)` does (see encode.py); input_output adds none."""
    if ds.type is None:
        return _pretokenized(record)
    if ds.type == "chat_template":
        return _chat(record, ds, train_on_inputs)
    if isinstance(ds.type, CustomInstructType):
        return _instruct(record, ds.type, train_on_inputs, eos)
    if ds.type == "input_output":
        return _input_output(record, train_on_inputs)
    if ds.type in ("completion", "pretrain"):
        return Segments([(_text(record, ds.field or "text"), True), (eos, True)])
    named = instruct_types.resolve(ds.type)
    if named is not None:
        if ds.type == "alpaca_chat":
            named = instruct_types.with_conversation(named, ds.conversation)
        return _named(record, named, train_on_inputs, eos)
    raise AssertionError(f"unhandled type {ds.type!r}")  # config validation rejects other types


def type_notes(datasets: list[DatasetConfig], chat_template: str) -> list[str]:
    """What setup says about dataset types read differently from how they were written (deprecated sharegpt)."""
    notes = []
    for i, ds in enumerate(datasets):
        if ds.legacy_type is None:
            continue
        note = (f"datasets[{i}] ({ds.path}): type: {ds.legacy_type} is deprecated (Axolotl now rejects it); read as "
                f"type: chat_template with field_messages: {ds.field_messages}, message_field_role: "
                f"{ds.message_field_role}, message_field_content: {ds.message_field_content}")
        if ds.conversation:
            template = instruct_types.CONVERSATION_TEMPLATES.get(ds.conversation)
            if template is None:
                note += (f"; conversation: {ds.conversation} has no clear library template, so chat_template "
                         f"({chat_template}) renders it: set chat_template to the format you want")
            elif template != chat_template:
                note += (f"; conversation: {ds.conversation} would be chat_template: {template}, but chat_template is "
                         f"{chat_template}, which renders it")
            else:
                note += f"; conversation: {ds.conversation} -> chat_template: {template}"
        notes.append(note)
    return notes


def _named(record: dict[str, Any], t: InstructType, train_on_inputs: bool, eos: str) -> Segments:
    """One of Axolotl's named instruct types (instruct_types.TYPES): its prompt, then its response + EOS."""
    try:
        instruction = fill_field(t.instruction, record)
        inp = fill_field(t.input, record)
        output = fill_field(t.output, record)
        system = fill_field(t.system, record) if t.system is not None else ""
    except FieldError as e:
        reason = {"missing": Reason.missing_field, "empty": Reason.empty_content}.get(e.kind, Reason.wrong_type)
        hint = "; check the dataset's type (its row shape is in the README's dataset-types table)"
        raise RowError(reason, e.message + (hint if e.kind == "missing" else ""), e.column) from None
    if t.system is None:
        system = t.system_prompt if inp else t.system_no_input_prompt
    values = {"instruction": instruction, "input": inp, "system": system}
    prompt = _fill(t.turn_format if inp else t.turn_no_input_format, values)
    if system:
        prompt = _fill(t.system_format, values) + prompt
    # Metharme: three EOS, one fewer when the generation already ends with it (metharme.py::_tokenize).
    eos_count = t.eos - 1 if t.eos > 1 and eos and output.endswith(eos) else t.eos
    return Segments([(prompt, train_on_inputs), (output, True), *[(eos, True)] * eos_count])


def _text(record: dict[str, Any], key: str, *, required: bool = True, where: str | None = None) -> str:
    where = where or key
    if key not in record:
        if required:
            raise RowError(Reason.missing_field, f"no field '{key}'; check the dataset's field mapping", where)
        return ""
    value = record[key]
    if value is None or value == "":
        if required:
            raise RowError(Reason.empty_content, f"'{where}' is empty", where)
        return ""
    if not isinstance(value, str):
        raise RowError(Reason.wrong_type, f"'{where}' is a {type(value).__name__}, expected text", where)
    return value


def _instruct(record: dict[str, Any], fmt: CustomInstructType, train_on_inputs: bool, eos: str) -> Segments:
    instruction = _text(record, fmt.field_instruction)
    inp = _text(record, fmt.field_input, required=False) if fmt.field_input else ""
    output = _text(record, fmt.field_output)
    system = (_text(record, fmt.field_system, required=False) if fmt.field_system else "") or fmt.system_prompt
    # One pass over the format, not str.format (user text and formats may hold other braces) and not chained
    # str.replace (an instruction containing "{input}" would be rewritten by the second replace).
    if inp:
        prompt = _fill(fmt.format, {"instruction": instruction, "input": inp})
    else:
        prompt = _fill(fmt.no_input_format, {"instruction": instruction})
    if system:
        prompt = _fill(fmt.system_format, {"system": system}) + prompt
    return Segments([(prompt, train_on_inputs), (output, True), (eos, True)])


def _fill(template: str, values: dict[str, str]) -> str:
    """Each {name} of `values` replaced by its value; other braces are left as they are."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def _input_output(record: dict[str, Any], train_on_inputs: bool) -> Segments:
    segments = record.get("segments")
    if segments is None:
        raise RowError(Reason.missing_field, "no field 'segments' (a list of {text, label})", "segments")
    if not isinstance(segments, list) or not segments:
        raise RowError(Reason.wrong_type, "'segments' must be a non-empty list of {text, label}", "segments")
    parts = []
    for i, seg in enumerate(segments):
        where = f"segments[{i}]"
        if not isinstance(seg, dict):
            raise RowError(Reason.wrong_type, f"'{where}' must be an object {{text, label}}", where)
        text = _text(seg, "text", where=f"{where}.text")
        label = seg.get("label", True)
        if not isinstance(label, bool):
            raise RowError(Reason.wrong_type, f"'{where}.label' must be true or false", f"{where}.label")
        parts.append((text, label or train_on_inputs))
    return Segments(parts, separate=True)


def _pretokenized(record: dict[str, Any]) -> Tokens:
    ids = record.get("input_ids")
    if ids is None:
        raise RowError(Reason.missing_field, "no field 'input_ids' (pre-tokenized rows need input_ids)",
                       "input_ids")
    if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
        raise RowError(Reason.wrong_type, "'input_ids' must be a list of integers", "input_ids")
    if not ids:
        raise RowError(Reason.empty_content, "'input_ids' is empty", "input_ids")
    labels = record.get("labels", ids)
    if not isinstance(labels, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in labels):
        raise RowError(Reason.wrong_type, "'labels' must be a list of integers", "labels")
    if len(labels) != len(ids):
        raise RowError(Reason.bad_token_ids, f"'labels' has {len(labels)} items, input_ids {len(ids)}", "labels")
    mask = record.get("attention_mask")
    if mask is not None:
        if not isinstance(mask, list) or len(mask) != len(ids) or any(m not in (0, 1) for m in mask):
            raise RowError(Reason.wrong_type, "'attention_mask' must be 0/1 values, one per input id",
                           "attention_mask")
        # Padding (mask 0) is dropped: Tessera rows are unpadded and batches are padded by the trainer.
        ids = [t for t, m in zip(ids, mask, strict=True) if m]
        labels = [t for t, m in zip(labels, mask, strict=True) if m]
    return Tokens(ids, labels)


def _chat(record: dict[str, Any], ds: DatasetConfig, train_on_inputs: bool) -> Chat:
    from dataprep.chat_rows import chat_sample  # chat_rows imports this module's Chat and RowError

    return chat_sample(record, ds, train_on_inputs)
