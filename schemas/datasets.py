"""`datasets:` and `pretraining_dataset:` entries: where each dataset's rows are read from and in which format.

Key names are Axolotl's wherever the meaning is the same; keys that only Tessera has say so in their docstring.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from dataprep import instruct_types
from schemas.base import ConfigModel
from schemas.splits import parse_split

TrainOnEos = Literal["turn", "last", "all", "none"]
# Tessera's own formats; Axolotl's named instruct types (alpaca, alpaca_chat, jeopardy, ...) are in
# dataprep/instruct_types.py. `pretrain` is what pretraining_dataset entries become.
FORMAT_TYPES = ("chat_template", "input_output", "completion", "pretrain")
MAX_WEIGHT = 100  # datasets[].weight: copies are written out in full, so a typo like 1000 must not fill the disk


class CustomInstructType(ConfigModel):
    """`type:` given as a mapping: Axolotl's custom instruct format."""

    field_system: str | None = "system"
    """Column holding a per-row system prompt (optional in each row). Empty: the rows have none."""
    field_instruction: str = "instruction"
    field_input: str | None = "input"
    """Column holding the optional input. Empty: the rows have none (Axolotl's docs write `field_input:`)."""
    field_output: str = "output"
    format: str = "{instruction} {input} "
    """Prompt when the row has a non-empty input. Placeholders: {instruction}, {input}."""
    no_input_format: str = "{instruction} "
    """Prompt when the input is missing or empty. Placeholder: {instruction}."""
    system_format: str = "{system}"
    """How a system prompt is written before the prompt. Placeholder: {system}."""
    system_prompt: str = ""
    """System prompt used when the row has none."""

    @model_validator(mode="before")
    @classmethod
    def _empty_is_unset(cls, data: Any) -> Any:
        # An empty prompt key means its default, as in Axolotl; empty field_system/field_input mean "no column".
        keep = ("field_system", "field_input")
        return ({k: v for k, v in data.items() if v is not None or k in keep} if isinstance(data, dict)
                else data)

    @model_validator(mode="after")
    def _placeholders(self) -> CustomInstructType:
        problems = []
        if "{instruction}" not in self.format:
            problems.append("type.format must contain {instruction}")
        if "{instruction}" not in self.no_input_format:
            problems.append("type.no_input_format must contain {instruction}")
        if "{system}" not in self.system_format:
            problems.append("type.system_format must contain {system}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class DatasetConfig(ConfigModel):
    """One entry of `datasets:`. Local files only: Tessera never downloads data."""

    path: str = Field(min_length=1)  # "" was the config's own folder, read as data without a word
    """A file, a directory (every data file in it) or a glob. Relative paths are looked up next to the config
    file first, then in the current directory."""
    type: str | CustomInstructType | None = None
    """chat_template | input_output | completion | one of Axolotl's named instruct types (alpaca, alpaca_chat,
    alpaca:chatml, jeopardy, oasst, ...: dataprep/instruct_types.py) | a custom instruct mapping | empty for
    pre-tokenized rows (input_ids, labels, optional attention_mask). The deprecated `sharegpt` is read as
    chat_template with field_messages: conversations (from/value)."""
    ds_type: Literal["json", "jsonl", "parquet", "csv", "arrow"] | None = None
    """File format; inferred from the file extension when empty."""
    data_files: list[str] | None = None
    """Files (or globs) under `path` to read, instead of every data file in it; an entry that matches no file is
    an error, as in datasets.load_dataset."""
    split: str = "train"
    """Which split of a dataset folder to read, as `datasets` names it: `train`, `test`, … and slices in its syntax
    (`train[:20%]`, `train[100:200]`, `train[10%:20%]`, parts joined with `+`). A single file or glob is all
    `train`. Tessera makes the validation split itself (val_set_size)."""
    name: str | None = None
    """The config of a Hub dataset folder (README.md `configs:` config_name); default: its default config."""

    # mixing (README "Mixing datasets", dataprep/mix.py)
    weight: float = Field(1.0, gt=0, le=MAX_WEIGHT)
    """How much of this dataset to train on, applied after deduplication and before the split: 0.3
    keeps a seeded 30% of its kept samples (exactly round(0.3 × n), half to even), 2.5 repeats every sample
    twice plus a seeded, distinct half of them once more. A completion row cut into chunks, or a pretrain
    document, is weighted as one (its chunks go together). Axolotl 0.21 has the key for 0 < weight <= 1 (the same
    share, another random choice of rows); above 1 is Tessera's."""

    # chat_template
    field_messages: str | None = None
    """Column with the list of messages. Default `messages`; rows without it but with ShareGPT's
    `conversations` are read as ShareGPT (from/value)."""
    message_field_role: str | None = None
    """Key of a message's role. Default `role` (`from` for ShareGPT rows)."""
    message_field_content: str | None = None
    """Key of a message's text. Default `content` (`value` for ShareGPT rows)."""
    roles: dict[str, list[str]] | None = None
    """Maps template roles to the role names found in the data, e.g. {user: [human, user], assistant: [gpt]}.
    Default: system/user/assistant/tool plus ShareGPT's human/gpt."""
    roles_to_train: list[str] = Field(default_factory=lambda: ["assistant"])
    """Template roles whose content is trained."""
    train_on_eos: TrainOnEos = "turn"
    """Which end-of-turn tokens are trained: those of trained turns (turn), only the last trained turn's
    (last), every turn's (all) or none."""
    message_field_training: str | None = None
    """Per-message boolean key that overrides roles_to_train for that message."""
    message_field_training_detail: str | None = None
    """Per-message key with [{begin_offset, end_offset, train}] character ranges (end inclusive) inside the
    content; ranges not listed are not trained."""
    chat_template: str | None = None
    """This dataset's own chat template, with the values of the top-level chat_template (a library name,
    tokenizer_default, tokenizer_default_fallback_<name>, jinja); default: the top-level one. The saved
    tokenizer's default template stays the top-level one; a different template is saved next to it as a named
    template (see the manifest's probes)."""
    chat_template_jinja: str | None = None
    """Template text (or a .jinja path) for this dataset; implies chat_template: jinja when that is empty."""
    drop_system_message: bool = False
    """Drop the conversation's first message when it is a system message (a template's built-in default system
    prompt, e.g. Qwen2.5's, is still written)."""
    train_on_eot: TrainOnEos | None = None
    """Which end-of-turn tokens (`eot_tokens`) are trained, with train_on_eos's values; default: train_on_eos.
    Once this or eot_tokens is set, train_on_eos only governs the tokenizer's EOS token where it follows a
    turn as a token of its own (Axolotl's split)."""
    field_thinking: str | None = None
    """Message key with the reasoning trace. Default `reasoning_content`, or `thinking` in messages that have
    that key instead."""
    template_thinking_key: str | None = None
    """The message key the chat template reads the reasoning from (Qwen3: reasoning_content); default: the key
    it was read from."""
    split_thinking: bool = False
    """Move a <think>…</think> (or <reasoning>…</reasoning>, <|begin_of_thought|>…<|end_of_thought|>) block at
    the start of assistant content into the reasoning field, as Axolotl does."""
    field_tools: str | None = None
    """Row column with the tool definitions passed as apply_chat_template(tools=...); default `tools`. A JSON
    string is parsed."""
    tools: list[dict[str, Any]] | None = None
    """Tessera: tool definitions for every row of this dataset that has none of its own."""
    train_on_reasoning: bool = True
    """Tessera: in a trained assistant turn, train its reasoning text (reasoning_content / thinking)."""
    train_on_tool_calls: bool = True
    """Tessera: in a trained assistant turn, train the tool calls the template writes for it."""

    # instruct / completion types
    field: str | None = None
    """completion: column with the text (default `text`)."""
    conversation: str | None = None
    """alpaca_chat: the prompt style (instruct, chat, chatml, phi), as in Axolotl. sharegpt (deprecated): the
    FastChat conversation name, checked against chat_template."""

    @model_validator(mode="before")
    @classmethod
    def _legacy_sharegpt(cls, data: Any) -> Any:
        # Axolotl's removed `type: sharegpt` (and sharegpt.load_role, sharegpt:chat, ...) is ShareGPT data for a
        # chat template; Tessera reads it as chat_template (pipeline.setup prints a note saying so).
        if isinstance(data, dict) and isinstance(data.get("type"), str) and data["type"].startswith("sharegpt"):
            data = {**data, "type": "chat_template", "field_messages": data.get("field_messages") or "conversations",
                    "message_field_role": data.get("message_field_role") or "from",
                    "message_field_content": data.get("message_field_content") or "value",
                    "legacy_type": data["type"]}
        return data

    legacy_type: str | None = None
    """Tessera: the deprecated type this entry was read from (sharegpt...), for the note; set automatically."""

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str | CustomInstructType | None) -> str | CustomInstructType | None:
        if isinstance(value, str) and value not in FORMAT_TYPES and value != "" \
                and instruct_types.resolve(value) is None:
            why = instruct_types.unsupported(value)
            if why is not None:
                raise ValueError(why)
            known = [*FORMAT_TYPES, *instruct_types.names()]
            close = difflib.get_close_matches(value, known, n=1)
            if ":load_" in value:  # Axolotl's own hint (utils/data/wrappers.py)
                close = [value.replace(":load_", ".load_")]
            hint = (f"; did you mean '{close[0]}'?" if close else
                    "; see the dataset types in README.md (chat_template, alpaca, completion, input_output, ...)")
            raise ValueError(f"unknown dataset type '{value}'{hint}")
        return value or None

    @model_validator(mode="after")
    def _check_fields(self) -> DatasetConfig:
        parse_split(self.split)  # a ValueError names the bad part and the syntax
        chat_keys = ("field_messages", "message_field_role", "message_field_content", "roles",
                     "message_field_training", "message_field_training_detail", "chat_template",
                     "chat_template_jinja", "train_on_eot", "field_thinking", "template_thinking_key", "field_tools",
                     "tools")
        chat_flags = {"drop_system_message": False, "split_thinking": False, "train_on_reasoning": True,
                      "train_on_tool_calls": True}
        if self.chat_template_jinja and self.chat_template is None:
            self.chat_template = "jinja"  # Axolotl: jinja is implied by chat_template_jinja
        if self.chat_template == "jinja" and not self.chat_template_jinja:
            raise ValueError("chat_template: jinja needs chat_template_jinja (the template text or a .jinja path)")
        if self.chat_template_jinja and self.chat_template != "jinja":
            raise ValueError(f"chat_template_jinja is set but chat_template is '{self.chat_template}': "
                             "set chat_template: jinja")
        if self.type != "chat_template":
            used = [k for k in chat_keys if getattr(self, k) is not None]
            used += [k for k, default in chat_flags.items() if getattr(self, k) != default]
            if used:
                raise ValueError(f"{', '.join(used)} only apply to type: chat_template (type is {self.type!r})")
        if self.field is not None and self.type not in ("completion", "pretrain"):
            raise ValueError("`field` only applies to type: completion")
        if self.conversation is not None and self.type != "alpaca_chat" and self.legacy_type is None:
            raise ValueError(f"`conversation` only applies to type: alpaca_chat (and the deprecated sharegpt); "
                             f"type is {self.type!r}")
        if self.type == "alpaca_chat" and self.conversation not in (None, *instruct_types.STYLES):
            raise ValueError(f"conversation '{self.conversation}': alpaca_chat's prompt style is one of "
                             f"{', '.join(instruct_types.STYLES)}")
        if self.type == "chat_template" and self.roles is not None:
            missing = [r for r in self.roles_to_train if r not in self.roles]
            if missing:
                raise ValueError(f"roles_to_train names {missing}, which the `roles` mapping does not define")
        return self

    @property
    def format(self) -> str:
        """The format name used in reports: alpaca, custom_instruct, chat_template, … or pretokenized."""
        if isinstance(self.type, CustomInstructType):
            return "custom_instruct"
        return self.type or "pretokenized"


class PretrainingDataset(ConfigModel):
    """One entry of `pretraining_dataset:` (Axolotl's key): raw text documents, concatenated with EOS between
    them and cut into rows of exactly sequence_len tokens. Local files only (Axolotl streams from the Hub)."""

    path: str = Field(min_length=1)
    """A file, a directory or a glob, as in datasets[]."""
    type: Literal["pretrain", "completion"] = "pretrain"
    """pretrain; `completion` (an SFT-style entry, as Axolotl also accepts here) means the same: documents
    concatenated and cut into sequence_len rows."""
    text_column: str = "text"
    """Column with each document's text."""
    field: str | None = None
    """Same as text_column (the name a completion entry uses)."""
    split: str = "train"
    name: str | None = None
    data_files: list[str] | None = None
    ds_type: Literal["json", "jsonl", "parquet", "csv", "arrow"] | None = None
    skip: Literal[0] | None = None
    """Axolotl's streaming skip; only 0 (none) is supported: slice with `split: train[N:]` instead."""
    trust_remote_code: bool = False
    """Accepted for Axolotl compatibility; nothing is downloaded or run."""
    weight: float = Field(1.0, gt=0, le=MAX_WEIGHT)
    """Tessera: as datasets[].weight (README "Mixing datasets"); a document is weighted whole."""

    def as_dataset(self) -> DatasetConfig:
        return DatasetConfig(path=self.path, type="pretrain", field=self.field or self.text_column, split=self.split,
                             name=self.name, data_files=self.data_files, ds_type=self.ds_type, weight=self.weight)

