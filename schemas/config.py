"""The run config: one pydantic tree whose field names are the YAML keys.

Key names are Axolotl's wherever the meaning is the same, so users can bring their configs. Keys that only
Tessera has say so in their docstring. Unknown keys are errors (with the closest valid key); combinations
that cannot work are errors too, raised before any data is read. `load_config` reports every problem at once,
each with its file and line.
"""

from __future__ import annotations

import copy
import datetime
import difflib
import json
import re
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from dataprep import instruct_types
from schemas import axolotl_compat
from schemas.overrides import apply_overrides
from schemas.splits import parse_split
from schemas.yaml_limits import MAX_CONFIG_BYTES, YamlLimitError, load_yaml

TrainOnEos = Literal["turn", "last", "all", "none"]
# Tessera's own formats; Axolotl's named instruct types (alpaca, alpaca_chat, jeopardy, ...) are in
# dataprep/instruct_types.py. `pretrain` is what pretraining_dataset entries become.
FORMAT_TYPES = ("chat_template", "input_output", "completion", "pretrain")
MAX_SEQUENCE_LEN = 2**24
MAX_WEIGHT = 100  # datasets[].weight: copies are written out in full, so a typo like 1000 must not fill the disk


class _Model(BaseModel):
    # allow_inf_nan=False: `.inf` / `.nan` are valid YAML floats but no setting means them.
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_default=True,
                              allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads YAML `true` as 1 for an int or float field: `sequence_len: true` was a 1-token sequence.
        if isinstance(value, bool) and info.field_name and _number_only(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"{str(value).lower()} is a yes/no value; give a number")
        return value


def _number_only(annotation: Any) -> bool:
    """Whether a field takes numbers (int, float, optionally None) but no bool."""
    kinds = set(typing.get_args(annotation)) - {type(None)} if typing.get_args(annotation) else {annotation}
    return bool(kinds) and kinds <= {int, float}


class CustomInstructType(_Model):
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


class DatasetConfig(_Model):
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
    """Files (or globs) under `path` to read, instead of every data file in it."""
    split: str = "train"
    """Which split of a dataset folder to read, as `datasets` names it: `train`, `test`, … and slices in its syntax
    (`train[:20%]`, `train[100:200]`, `train[10%:20%]`, parts joined with `+`). A single file or glob is all
    `train`. Tessera makes the validation split itself (val_set_size)."""
    name: str | None = None
    """The config of a Hub dataset folder (README.md `configs:` config_name); default: its default config."""

    # mixing (README "Mixing datasets", dataprep/mix.py)
    weight: float = Field(1.0, gt=0, le=MAX_WEIGHT)
    """Tessera: how much of this dataset to train on, applied after deduplication and before the split: 0.3
    keeps a seeded 30% of its kept samples (exactly round(0.3 × n), half to even), 2.5 repeats every sample
    twice plus a seeded, distinct half of them once more. A completion row cut into chunks, or a pretrain
    document, is weighted as one (its chunks go together)."""

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


class PretrainingDataset(_Model):
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


class NearDeduplication(_Model):
    """`dataset_near_deduplication:` (Tessera): MinHash near-duplicate removal after exact dedup, across all
    datasets (dataprep/near_dedup.py). `true` means these defaults."""

    threshold: float = Field(0.8, gt=0, le=1)
    """Estimated Jaccard similarity of the word n-gram sets at or above which two samples are duplicates."""
    num_perm: int = Field(128, ge=16, le=1024)
    """MinHash permutations (signature length; 4 bytes each per sample). More: finer estimates, slower."""
    ngram: int = Field(5, ge=1, le=64)
    """Words per shingle, after NFC, case folding and whitespace folding."""
    fields: list[str] = Field(default_factory=lambda: ["all"], min_length=1)
    """Which text is compared: `all`, or roles (system, user, assistant, tool) for chat rows, instruct fields
    (instruction, input, output, system) or column names for other types; see dataprep/dedup_text.py."""
    keep: Literal["first", "longest", "most_trained"] = "first"
    """Which sample of a cluster is kept: first (lowest sample_id), longest (most tokens), most_trained (most
    trained tokens); ties go to the lowest sample_id."""


class FilterRule(_Model):
    """One entry of `filters:` (Tessera): kept samples for which `where` is not true are quarantined with reason
    `filter:<name>` (dataprep/filters.py documents the columns)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=100)
    """Names the filter in the reason code (`filter:<name>`) and the report: letters, digits, `_`, `.`, `-`."""
    where: str = Field(min_length=1, max_length=10_000)
    """A DuckDB SQL expression over the per-sample columns, e.g. `num_trainable between 8 and 4000`. A sample is
    kept when it is true; false or NULL quarantines it. Read-only: no subqueries, no file or setting access."""


class DecontaminateSource(_Model):
    """One entry of `decontaminate:` (Tessera): an evaluation file whose texts training samples must not share
    a word n-gram with (dataprep/decontam.py)."""

    path: str = Field(min_length=1)
    """An evaluation data file (jsonl, json, parquet, csv, arrow), relative to the config file."""
    field: str
    """The eval rows' top-level text field, or a list of messages (`messages`: every message's content)."""
    ngram: int = Field(13, ge=1, le=1000)
    """Words per n-gram: a training sample sharing any n consecutive (normalised) words with an eval text is
    quarantined as `contaminated`. An eval text shorter than n words matches a sample equal to it."""


class SpecialTokens(_Model):
    bos_token: str | None = None
    eos_token: str | None = None
    pad_token: str | None = None
    unk_token: str | None = None


class FsdpConfig(_Model):
    """Trainer: `fsdp_config:`, Axolotl's keys. Tessera shards with FSDP2 (torch's `fully_shard`): each decoder
    layer is one unit, then the root (embeddings, final norm, output layer). The old `fsdp_`-prefixed names
    (`fsdp_offload_params`, ...) are accepted; giving both spellings with different values is an error."""

    fsdp_version: Literal[1, 2] | None = None
    """Same as the top-level `fsdp_version` (Axolotl's canonical place); `version` is accepted here too."""
    reshard_after_forward: bool = True
    """Free each layer's gathered parameters after its forward pass (gather again for backward): less memory,
    more communication. false keeps them until backward (ZeRO-2-like)."""
    offload_params: bool = False
    """Keep parameters, gradients and optimizer states in CPU memory between uses (GPU runs only)."""
    state_dict_type: Literal["FULL_STATE_DICT", "SHARDED_STATE_DICT"] = "FULL_STATE_DICT"
    """What a checkpoint holds besides the sharded state it resumes from (torch.distributed.checkpoint, always
    written): FULL_STATE_DICT adds the consolidated model (or adapter), loadable with transformers/peft;
    SHARDED_STATE_DICT only the shards (faster for big models). final/ is always consolidated."""
    auto_wrap_policy: Literal["TRANSFORMER_BASED_WRAP", "SIZE_BASED_WRAP"] = "TRANSFORMER_BASED_WRAP"
    """TRANSFORMER_BASED_WRAP: one FSDP unit per decoder layer (SIZE_BASED_WRAP is not supported)."""
    transformer_layer_cls_to_wrap: str | None = None
    """Class name(s) of the decoder layer, comma-separated (e.g. Qwen2DecoderLayer); default: the model's
    `_no_split_modules`."""
    activation_checkpointing: bool = False
    """Recompute each layer's activations in backward instead of storing them (same as gradient_checkpointing)."""
    cpu_ram_efficient_loading: bool = False
    """Only rank 0 loads the weights; the other ranks build the model without memory and receive them
    (one copy of the model in CPU RAM per machine instead of one per process)."""

    @model_validator(mode="before")
    @classmethod
    def _unprefix(cls, data: Any) -> Any:
        """Axolotl's old names (fsdp_offload_params, ...) and `version` map to the current ones."""
        if not isinstance(data, dict):
            return data
        out: dict[str, Any] = {}
        problems = []
        for key, value in data.items():
            name = key
            if key in ("version", "fsdp_version"):
                name = "fsdp_version"
            elif isinstance(key, str) and key.startswith("fsdp_"):
                name = key.removeprefix("fsdp_")
            if name in out and out[name] != value:
                problems.append(f"fsdp_config gives {name} twice with different values ({out[name]!r} and "
                                f"{key}: {value!r}): keep one")
            out[name] = value
        if problems:
            raise ValueError("; ".join(problems))
        return out

    @model_validator(mode="after")
    def _supported(self) -> FsdpConfig:
        if self.auto_wrap_policy == "SIZE_BASED_WRAP":
            raise ValueError("auto_wrap_policy: SIZE_BASED_WRAP is not supported (Tessera makes each decoder layer "
                             "one FSDP unit): use TRANSFORMER_BASED_WRAP")
        return self


class Config(_Model):
    # ---- model and tokenizer
    base_model: str | None = None
    """Local folder of the model (or only its tokenizer files, for preparing). Tessera never downloads."""
    base_model_config: str | None = None
    """Trainer: local folder with the model's config.json, when it differs from base_model."""
    model_type: str | None = None
    """Trainer: e.g. AutoModelForCausalLM (accepted for Axolotl compatibility)."""
    tokenizer_type: str | None = None
    """Accepted for Axolotl compatibility; Tessera always loads the fast tokenizer (tokenizer.json)."""
    tokenizer_config: str | None = None
    """Folder with tokenizer.json (and tokenizer_config.json); defaults to base_model. `fixture:<family>`
    names a tokenizer built offline by `python -m dataprep.fetch_tokenizers` (Tessera only)."""
    trust_remote_code: bool = False
    special_tokens: SpecialTokens | None = None
    """Override the tokenizer's bos/eos/pad/unk tokens (each must already be in the vocabulary)."""
    tokens: list[str] | None = None
    """Extra tokens to add to the vocabulary before tokenizing."""

    # ---- chat template
    chat_template: str = "tokenizer_default"
    """tokenizer_default | tokenizer_default_fallback_<name> | jinja | a template from dataprep/templates/
    (e.g. chatml)."""
    chat_template_jinja: str | None = None
    """Template text (or a path to a .jinja file) when chat_template: jinja."""
    eot_tokens: list[str] | None = None
    """Tokens that end a turn (each one token of the vocabulary), trained per datasets[].train_on_eot; default:
    the first special token after a turn's content."""
    chat_template_date: str = "2026-01-01"
    """Tessera: the date `strftime_now` returns while rendering (Llama 3.1+ put it in the system header), pinned
    so that prepared ids do not change from day to day. ISO format."""

    # ---- data
    datasets: list[DatasetConfig] = Field(default_factory=list)
    sequence_len: int = Field(2048, gt=0, le=MAX_SEQUENCE_LEN)
    """Tokens per row (packed or not), at most 16,777,216 (2^24): shard offsets, lengths and positions are
    int32 columns, and a reader holds a whole row (ids, labels, positions: 12 bytes a token, 200 MB at the
    bound) in memory; that is longer than any released model's context."""
    sample_packing: bool = False
    train_on_inputs: bool = False
    """Train on prompts too: instruct and input_output types train everything; chat_template trains every
    message (a message's own training flag or offsets still decide) with its end-of-turn token, not the
    template's role headers, as Axolotl does."""
    val_set_size: float = Field(0.0, ge=0, le=2**53)
    """Validation split: a fraction of the kept samples if < 1, else a count (a finite number, a whole one
    at most 2^53 so that a float holds it exactly). It must leave at least one sample for training."""
    dataset_prepared_path: str | None = None
    """Where `tessera prepare` writes its output (default prepared/<config file stem>)."""
    dataset_exact_deduplication: bool = True
    """Drop rows whose normalised content equals an earlier row's, across all datasets."""
    dataset_near_deduplication: NearDeduplication | None = None
    """Tessera: also remove near duplicates (MinHash LSH), off by default; `true` for the defaults, or a mapping
    {threshold, num_perm, ngram, fields, keep}."""
    dataset_processes: int = Field(1, ge=1)
    """Worker processes for parsing, rendering and tokenizing (the CLI's --workers). Output is identical for
    any value."""
    excess_length_strategy: Literal["drop", "truncate", "raise"] = "drop"
    """Samples longer than sequence_len are dropped (status dropped, reason too_long), cut, or stop the run
    (raise: one line naming the first such row's file and row, exit 1; nothing is written)."""
    quarantine_max_fraction: float = Field(0.25, ge=0, le=1)
    """Tessera: fail the run when more than this share of input rows is quarantined (usually a wrong field
    mapping rather than dirty data)."""
    seed: int = Field(42, ge=0, le=2**32 - 1)
    """Seed of the validation split and the trainer: 0 to 2^32-1, the range numpy's and torch's seeding
    accept on every platform."""
    pretraining_dataset: list[PretrainingDataset] | None = None
    """Raw text to pre-train on (a list like datasets, or one path): the documents are concatenated with EOS
    between them and cut into rows of sequence_len tokens, all in the train split. Validation moves each entry
    into `datasets` as `type: pretrain` (so the resolved config lists it there)."""

    @field_validator("dataset_near_deduplication", mode="before")
    @classmethod
    def _near_dedup_switch(cls, value: Any) -> Any:
        return {} if value is True else None if value is False else value

    @model_validator(mode="after")
    def _near_dedup_fields(self) -> Config:
        if self.dataset_near_deduplication is not None:
            from dataprep.dedup_text import field_problems  # dataprep's formats import this module

            # pretraining_dataset entries join `datasets` in a later validator
            datasets = [*self.datasets, *(p.as_dataset() for p in self.pretraining_dataset or [])]
            problems = field_problems(datasets, self.dataset_near_deduplication.fields)
            if problems:
                raise ValueError("; ".join(problems))
        return self

    @field_validator("pretraining_dataset", mode="before")
    @classmethod
    def _pretraining_path(cls, value: Any) -> Any:
        return [{"path": value}] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _sharegpt_conversation(self) -> Config:
        # `type: sharegpt` + `conversation: chatml` rendered with that format in Axolotl: with chat_template left
        # at its default, use the library template of that name (a differing explicit chat_template wins, and
        # pipeline.setup says so).
        wanted = {instruct_types.CONVERSATION_TEMPLATES.get(ds.conversation or "") for ds in self.datasets
                  if ds.legacy_type is not None and ds.conversation}
        if len(wanted) == 1 and None not in wanted and "chat_template" not in self.model_fields_set:
            self.chat_template = wanted.pop()
        return self

    # ---- curation: declarative filters and decontamination (data keys: they change the prepared bytes)
    filters: list[FilterRule] | None = None
    """Tessera: per-sample SQL conditions, applied in order after deduplication; the first failing one names the
    quarantine reason (`filter:<name>`)."""
    decontaminate: list[DecontaminateSource] | None = None
    """Tessera: evaluation files to keep out of training (reason `contaminated`); their sha256 is part of the
    fingerprint, so a changed eval file re-prepares."""

    @field_validator("filters")
    @classmethod
    def _unique_filter_names(cls, value: list[FilterRule] | None) -> list[FilterRule] | None:
        names = [f.name for f in value or []]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"filter names must be unique; {', '.join(twice)} appear more than once")
        return value

    # ---- trainer (read by `tessera train`; preparing ignores them: every key from here to the end of the
    # class must be in TRAINER_KEYS, which keeps them out of the prepare fingerprint; a test checks it)
    output_dir: str = "./outputs"
    """Trainer: where run.json, metrics.jsonl, checkpoint-<step>/ and final/ go."""
    base_model_init: dict[str, Any] | None = None
    """Tessera: build the model from a transformers config with random weights instead of loading base_model,
    e.g. {model_type: qwen2, hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4,
    num_key_value_heads: 2, intermediate_size: 128}. `model_type` is required; vocab_size defaults to the
    prepared tokenizer's size. The initial weights (from `seed`) are saved to output_dir/base_model/ so that
    an adapter's base_model_name_or_path resolves. For the demo and tests."""
    adapter: Literal["lora", "qlora"] | None = None
    """Trainer: lora, qlora (LoRA over a base quantized to 4-bit nf4 by bitsandbytes; needs load_in_4bit), or
    empty for a full fine-tune."""
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = 16
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_target_modules: list[str] | str | None = None
    """Module names (or suffixes) that get LoRA, e.g. [q_proj, v_proj]; or one string, a regular expression the
    whole module path must match (peft's rule), e.g. 'model.layers.[\\d]+.(mlp|self_attn).(q|v)_proj'."""
    lora_target_linear: bool = False
    """LoRA on every linear layer except the output layer (added to lora_target_modules)."""
    lora_modules_to_save: list[str] | None = None
    """Modules trained in full next to the adapter and saved with it, e.g. [embed_tokens, lm_head] when tokens
    were added."""
    load_in_4bit: bool = False
    """Trainer: with adapter: qlora, the frozen base weights are bitsandbytes nf4 with double quantization."""
    load_in_8bit: bool = False
    """Trainer: with adapter: lora, the frozen base weights are bitsandbytes int8 (LLM.int8)."""
    bnb_config_kwargs: dict[str, Any] | None = None
    """Trainer: passed to transformers' BitsAndBytesConfig over the defaults (as Axolotl does), e.g.
    {bnb_4bit_quant_type: fp4, bnb_4bit_use_double_quant: false}."""
    micro_batch_size: int = Field(1, ge=1)
    """Packed rows per forward pass (per process)."""
    gradient_accumulation_steps: int = Field(1, ge=1)
    """Micro-batches per optimizer step; the loss is normalised by the trained tokens of the whole step."""
    num_epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    """Optimizer steps; overrides num_epochs when set."""
    learning_rate: float = Field(2e-5, gt=0)
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    """After warmup: cosine decay to cosine_min_lr_ratio * learning_rate, linear decay to 0, or constant
    (constant_with_warmup, transformers' name, is the same: every schedule warms up first)."""
    cosine_min_lr_ratio: float | None = Field(None, ge=0, le=1)
    """lr_scheduler: cosine ends at this fraction of learning_rate (default 0)."""
    cosine_constant_lr_ratio: float | None = Field(None, ge=0, le=1)
    """With cosine_min_lr_ratio (both non-zero, as Axolotl reads them): the cosine reaches the minimum at this
    fraction of the total steps and stays there (continual pre-training's re-warm recipe)."""
    lr_quadratic_warmup: bool = False
    """lr_scheduler: cosine warms up quadratically instead of linearly; as in Axolotl, cosine_min_lr_ratio is
    then ignored (the trainer warns)."""
    warmup_steps: int | None = Field(None, ge=0)
    warmup_ratio: float | None = Field(None, ge=0, lt=1)
    """Warmup as a fraction of the total optimizer steps."""
    optimizer: Literal["adamw_torch", "adamw_torch_fused", "adamw_bnb_8bit", "adamw_8bit", "paged_adamw_8bit",
                       "paged_adamw_32bit", "adamw_torch_8bit", "adamw_torch_4bit", "ao_adamw_fp8"] = "adamw_torch"
    """AdamW, all of them. adamw_torch(_fused): torch's. adamw_bnb_8bit (= adamw_8bit), paged_adamw_8bit,
    paged_adamw_32bit: bitsandbytes', with 8-bit states (blocks of 2,048) or paged states (CUDA unified memory,
    evicted to CPU under memory pressure). adamw_torch_8bit, adamw_torch_4bit, ao_adamw_fp8: torchao's, states
    in 8 bits, 4 bits or float8 (blocks of 256/128; the one Axolotl advises under FSDP2); compiled on a GPU, run
    eagerly on a CPU. Tensors under 4,096 values keep 32-bit states in both libraries."""
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.999, ge=0, lt=1)
    adam_epsilon: float = Field(1e-8, ge=0)
    """AdamW's betas and epsilon (transformers' defaults), for every optimizer above."""
    weight_decay: float = Field(0.0, ge=0)

    @field_validator("optimizer", mode="before")
    @classmethod
    def _optimizer_alternative(cls, value: Any) -> Any:
        """Axolotl's deprecated spellings of torchao's optimizers are read as their new names; for optimizers
        Axolotl configs name that Tessera does not build, say which one gives the same thing."""
        renamed = {"ao_adamw_8bit": "adamw_torch_8bit", "ao_adamw_4bit": "adamw_torch_4bit"}
        closest = {"adamw_hf": "adamw_torch", "adamw_apex_fused": "adamw_torch_fused",
                   "paged_adamw": "paged_adamw_32bit", "adamw_bnb": "adamw_bnb_8bit"}
        if isinstance(value, str) and value in closest:
            raise ValueError(f"'{value}' is not available in tessera train; use {closest[value]}")
        return renamed.get(value, value) if isinstance(value, str) else value

    max_grad_norm: float = Field(1.0, ge=0)
    """Clip the gradient norm to this; 0 turns clipping off (the norm is still logged)."""
    bf16: bool | Literal["auto"] = "auto"
    """auto: bf16 when the GPU supports it, else fp32 (always fp32 on CPU)."""
    fp16: bool = False
    tf32: bool = False
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] | None = None
    """transformers' attention kernel; default sdpa (flash_attention_2 when flash_attention: true). Axolotl's
    `xformers` and `flex_attention` are read as sdpa (the same exact attention, packed rows masked the same way;
    PyTorch picks its own memory-efficient kernel), and a Hub FlashAttention kernel
    (`kernels-community/vllm-flash-attn3`) as flash_attention_2, the flash-attn package's varlen kernel (Tessera
    downloads nothing at train time)."""

    @field_validator("attn_implementation", mode="before")
    @classmethod
    def _axolotl_kernels(cls, value: Any) -> Any:
        if value in ("xformers", "flex_attention"):
            return "sdpa"
        if isinstance(value, str) and value.startswith("kernels-community/") and "flash-attn" in value:
            return "flash_attention_2"
        return value

    flash_attention: bool = False
    """Same as attn_implementation: flash_attention_2 (needs a GPU and flash-attn)."""
    sdp_attention: bool = False
    """Same as attn_implementation: sdpa."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer in backward instead of keeping its activations. Axolotl's `offload` and
    `offload_disk` (activation offloading) are read as true: Tessera checkpoints without offloading."""

    @field_validator("gradient_checkpointing", mode="before")
    @classmethod
    def _offload_is_checkpointing(cls, value: Any) -> Any:
        return True if value in ("offload", "offload_disk") else value

    logging_steps: int = Field(1, ge=1)
    eval_steps: int | float | None = Field(None, gt=0)
    """Evaluate on the val split every N optimizer steps (a float < 1: that fraction of the total steps), and
    always at the end. Default: once per epoch (evals_per_epoch: 1) when there is a val split."""
    evals_per_epoch: int | None = Field(None, ge=0)
    """Evaluations per epoch, instead of eval_steps; 0: none during the run (as in Axolotl), only at the end."""
    save_steps: int | float | None = Field(None, gt=0)
    """Checkpoint every N optimizer steps (a float < 1: that fraction of the total steps). Default: once per
    epoch when neither save_steps nor saves_per_epoch is set."""
    saves_per_epoch: int | None = Field(None, ge=1)
    """Checkpoints per epoch, instead of save_steps."""
    save_total_limit: int | None = Field(None, ge=1)
    """Keep only the newest N checkpoints."""
    resume_from_checkpoint: str | None = None
    """A checkpoint-<step> folder to continue from (weights, optimizer, RNG and data position)."""
    auto_resume_from_checkpoints: bool = False
    """Continue from the newest complete checkpoint in output_dir, if there is one."""
    fsdp: list[str] | None = None
    """Trainer, Axolotl's old FSDP switch, e.g. [full_shard, auto_wrap] (`offload` = fsdp_config.offload_params).
    Prefer fsdp_config; either one turns FSDP2 on."""
    fsdp_config: FsdpConfig | None = None
    """Trainer: shard parameters, gradients and optimizer states over the processes (FSDP2) instead of replicating
    them (DDP, the default with more than one process). Needs more than one process (torchrun/accelerate launch)."""
    fsdp_version: Literal[1, 2] | None = None
    """Trainer: 2 (FSDP2, torch's fully_shard) is the only version Tessera runs; FSDP1 is refused. Default 2
    when fsdp_config or fsdp is set."""
    wandb_project: str | None = None
    """Log to Weights & Biases when wandb is installed and this is set."""

    # What load_config did with Axolotl keys that are not fields (not used, renamed): schemas/axolotl_compat.py.
    # Private, so never part of the dump, the manifest or the fingerprint.
    _keys: axolotl_compat.KeyReport | None = PrivateAttr(default=None)

    @field_validator("chat_template_date", mode="before")
    @classmethod
    def _date_as_text(cls, value: Any) -> Any:
        # `chat_template_date: 2026-01-01` unquoted is a YAML date, and means the same as the quoted text.
        return value.isoformat() if isinstance(value, datetime.date) else value

    @model_validator(mode="after")
    def _check(self) -> Config:
        if self.pretraining_dataset:
            # Moved, not copied: re-validating the dumped config (worker processes) must not add them twice.
            self.datasets = [*self.datasets, *(p.as_dataset() for p in self.pretraining_dataset)]
            self.pretraining_dataset = None
        problems = []
        if self.chat_template == "jinja" and not self.chat_template_jinja:
            problems.append("chat_template: jinja needs chat_template_jinja (the template text or a .jinja path)")
        if self.chat_template_jinja and self.chat_template != "jinja":
            problems.append(f"chat_template_jinja is set but chat_template is '{self.chat_template}': "
                            "set chat_template: jinja")
        if not self.base_model and not self.tokenizer_config:
            problems.append("set base_model or tokenizer_config (a local folder with tokenizer.json)")
        if self.val_set_size >= 1 and self.val_set_size != int(self.val_set_size):
            problems.append(f"val_set_size {self.val_set_size}: a fraction must be < 1, a count a whole number")
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            problems.append("set warmup_steps or warmup_ratio, not both")
        if self.adapter == "qlora" and not self.load_in_4bit:
            problems.append("adapter: qlora needs load_in_4bit: true")
        if self.load_in_4bit and self.load_in_8bit:
            problems.append("load_in_4bit and load_in_8bit are exclusive")
        if self.quantization == "int8" and self.fsdp_on:
            problems.append("FSDP over an int8 (load_in_8bit) base is not supported: use adapter: qlora with "
                            "load_in_4bit, or DDP (torchrun without fsdp_config)")
        if self.bf16 is True and self.fp16:
            problems.append("bf16 and fp16 are exclusive")
        problems += self._trainer_problems()
        problems += self._fsdp_problems()
        try:
            datetime.date.fromisoformat(self.chat_template_date)
        except ValueError:
            problems.append(f"chat_template_date '{self.chat_template_date}' is not an ISO date (YYYY-MM-DD)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _trainer_problems(self) -> list[str]:
        """Trainer combinations that cannot work: caught here, before any data is read or a model loaded."""
        problems = []
        if self.base_model_init is not None:
            if self.base_model:
                problems.append("base_model_init builds a model with random weights and base_model loads one: "
                                "set only one (the tokenizer then comes from tokenizer_config)")
            if not isinstance(self.base_model_init.get("model_type"), str):
                problems.append("base_model_init needs model_type (e.g. qwen2, llama)")
        if self.eval_steps is not None and self.evals_per_epoch is not None:
            problems.append("set eval_steps or evals_per_epoch, not both")
        if self.save_steps is not None and self.saves_per_epoch is not None:
            problems.append("set save_steps or saves_per_epoch, not both")
        for key in ("eval_steps", "save_steps"):
            value = getattr(self, key)
            if isinstance(value, float) and value >= 1 and value != int(value):
                problems.append(f"{key} {value}: a fraction of the total steps must be < 1, a count a whole number")
        if isinstance(self.lora_target_modules, str):
            try:
                re.compile(self.lora_target_modules)
            except re.error as e:
                problems.append(f"lora_target_modules '{self.lora_target_modules}': not a regular expression ({e})")
        if self.cosine_min_lr_ratio is not None and self.lr_scheduler != "cosine":
            problems.append(f"cosine_min_lr_ratio only applies to lr_scheduler: cosine (it is {self.lr_scheduler})")
        attn = {"flash_attention": "flash_attention_2", "sdp_attention": "sdpa"}
        chosen = {v for k, v in attn.items() if getattr(self, k)}
        if self.attn_implementation:
            chosen.add(self.attn_implementation)
        if len(chosen) > 1:
            problems.append(f"attention kernels conflict ({', '.join(sorted(chosen))}): set one of "
                            "attn_implementation, flash_attention, sdp_attention")
        if self.adapter is not None and not self.lora_target_modules and not self.lora_target_linear:
            problems.append(f"adapter: {self.adapter} needs lora_target_modules (e.g. [q_proj, v_proj]) or "
                            "lora_target_linear: true")
        return problems

    def _fsdp_problems(self) -> list[str]:
        """FSDP keys: which version, old and new spellings agreeing, and what FSDP2 cannot do here."""
        problems = []
        inner = self.fsdp_config.fsdp_version if self.fsdp_config else None
        if self.fsdp_version is not None and inner is not None and inner != self.fsdp_version:
            problems.append(f"fsdp_version {self.fsdp_version} and fsdp_config.fsdp_version {inner} differ: keep one")
        if 1 in (self.fsdp_version, inner):
            problems.append("fsdp_version: 1 (FSDP1) is not supported: set fsdp_version: 2 (the same sharding with "
                            "torch's fully_shard; the fsdp_config keys are the same)")
        if (self.fsdp_version is not None or inner is not None) and not self.fsdp_on:
            problems.append("fsdp_version is set but FSDP is not: add fsdp_config (e.g. fsdp_config: "
                            "{reshard_after_forward: true}) or remove fsdp_version")
        unknown = sorted(set(self.fsdp or []) - {"full_shard", "auto_wrap", "offload"})
        if unknown:
            problems.append(f"fsdp: {unknown} not supported: FSDP2 shards fully (full_shard), wraps each decoder layer "
                            "(auto_wrap) and offloads with offload; use fsdp_config for the rest")
        if self.fsdp_on and self.fp16:
            problems.append("fp16 with FSDP is not supported (its loss scaling is not shard-aware here): use bf16")
        return problems

    @property
    def quantization(self) -> Literal["nf4", "int8"] | None:
        """The base weights' bitsandbytes quantization, read as Axolotl reads the keys: nf4 for adapter: qlora
        with load_in_4bit, int8 for adapter: lora with load_in_8bit; load_in_4bit under lora and load_in_8bit
        without an adapter quantize nothing (the trainer warns)."""
        if self.adapter == "qlora" and self.load_in_4bit:
            return "nf4"
        if self.adapter == "lora" and self.load_in_8bit:
            return "int8"
        return None

    @property
    def fsdp_on(self) -> bool:
        """FSDP2 was asked for: fsdp_config or the old `fsdp` list (Axolotl's signals)."""
        return self.fsdp_config is not None or bool(self.fsdp)

    @property
    def fsdp_settings(self) -> FsdpConfig:
        """fsdp_config with the old `fsdp: [..., offload]` list folded in (defaults when only `fsdp` is given)."""
        settings = self.fsdp_config or FsdpConfig()
        if "offload" in (self.fsdp or []):
            settings = settings.model_copy(update={"offload_params": True})
        return settings

    @property
    def attention(self) -> str:
        """The transformers attn_implementation the trainer uses."""
        if self.flash_attention:
            return "flash_attention_2"
        return self.attn_implementation or "sdpa"


# Keys only the trainer reads (Config's trainer section, output_dir to the end; tests/schemas/test_config.py
# checks that the two agree). They never change the prepared bytes, so the prepare fingerprint leaves them out:
# a trainer key missing here would make every `tessera train --set learning_rate=...` re-prepare the data, and
# a data key put here would let stale shards be reused.
TRAINER_KEYS = frozenset({
    "output_dir", "base_model_init", "adapter", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules",
    "lora_target_linear", "lora_modules_to_save", "load_in_4bit", "load_in_8bit", "bnb_config_kwargs",
    "micro_batch_size",
    "gradient_accumulation_steps", "num_epochs", "max_steps", "learning_rate", "lr_scheduler", "cosine_min_lr_ratio",
    "cosine_constant_lr_ratio", "lr_quadratic_warmup", "warmup_steps", "warmup_ratio", "optimizer", "adam_beta1",
    "adam_beta2", "adam_epsilon", "weight_decay", "max_grad_norm", "bf16", "fp16", "tf32",
    "attn_implementation", "flash_attention", "sdp_attention", "gradient_checkpointing", "logging_steps",
    "eval_steps", "evals_per_epoch", "save_steps", "saves_per_epoch", "save_total_limit", "resume_from_checkpoint",
    "auto_resume_from_checkpoints", "fsdp", "fsdp_config", "fsdp_version", "wandb_project",
})


class ConfigError(Exception):
    """Every problem found in a config, one per line, each with file:line and the fix."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("config is not valid:\n" + "\n".join(f"  - {p}" for p in problems))


# Values where whitespace is content: a prompt's trailing space changes the tokens of every sample.
_WHITESPACE_KEYS = {"format", "no_input_format", "system_format", "system_prompt", "chat_template_jinja",
                    "bos_token", "eos_token", "pad_token", "unk_token"}


def load_config(path: str | Path, overrides: list[str] | None = None, warnings: list[str] | None = None,
                for_prepare: bool = False) -> Config:
    """Validate a YAML config. Problems raise ConfigError (all of them); YAML traps that are legal but almost
    certainly unintended are appended to `warnings`. `for_prepare`: a trainer key's bad value is a warning (into
    `warnings`), not an error, since preparing does not use it."""
    path = Path(path)
    text = _read_config(path)
    try:
        raw, root = load_yaml(text)
    except yaml.YAMLError as e:
        raise ConfigError([f"{path}: not valid YAML: {' '.join(str(e).split())}"]) from None
    except YamlLimitError as e:
        raise ConfigError([f"{path}: the YAML {e}"]) from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}"])
    if warnings is not None:
        warnings += _yaml_traps(root, text, path)
    overridden = apply_overrides(raw, overrides or [])
    return _validate(raw, path, root, overridden, warnings if for_prepare and warnings is not None else None)


def _read_config(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError([f"{path}: {path.stat().st_size:,} bytes; a config is a few KB (at most "
                               f"{MAX_CONFIG_BYTES // 1024} KiB): is this the right file?"])
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"{path}: cannot read config ({e.strerror or e})"]) from None
    except UnicodeDecodeError as e:
        line = e.object[:e.start].count(b"\n") + 1
        raise ConfigError([f"{path}:{line}: the config is not UTF-8 text (byte 0x{e.object[e.start]:02x}); "
                           "save it as UTF-8"]) from None


def _yaml_traps(node: yaml.Node | None, text: str, path: Path, key: str = "",
                seen: set[int] | None = None) -> list[str]:
    """Plain (unquoted) scalars cannot end in whitespace: YAML silently drops the spaces typed after
    `format: ### Response: `. Find such values in whitespace-sensitive keys and say how to keep them.
    Each node is visited once: an alias repeats a node, not its text."""
    seen = set() if seen is None else seen
    if node is None or id(node) in seen:
        return []
    seen.add(id(node))
    found = []
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            found += _yaml_traps(v, text, path, str(k.value), seen)
    elif isinstance(node, yaml.SequenceNode):
        for v in node.value:
            found += _yaml_traps(v, text, path, key, seen)
    elif isinstance(node, yaml.ScalarNode) and key in _WHITESPACE_KEYS and node.style is None:
        rest = text[node.end_mark.index:].split("\n", 1)[0]
        if rest and not rest.strip():
            found.append(f"{path}:{node.end_mark.line + 1}: {key}: YAML dropped the {len(rest)} trailing "
                         f"whitespace character(s) after {node.value!r} (unquoted values cannot end in spaces); "
                         f"if they are part of the prompt, quote it: {key}: {json.dumps(node.value + rest)}")
    elif isinstance(node, yaml.ScalarNode) and key in _WHITESPACE_KEYS and node.style == ">":
        found.append(f"{path}:{node.start_mark.line + 1}: {key}: a folded block (>) turns newlines into spaces; "
                     "use a literal block (|) to keep the prompt's line breaks")
    return found


def config_from_dict(raw: dict[str, Any]) -> Config:
    """For tests and library use: validate a mapping, with the same error messages (no line numbers)."""
    return _validate(copy.deepcopy(raw), Path("<dict>"), None, set())


def key_report(cfg: Config) -> axolotl_compat.KeyReport:
    """The Axolotl keys load_config read under another name or does not use (empty for a Config built directly)."""
    return cfg._keys or axolotl_compat.KeyReport()


def unused_keys_note(cfg: Config, command: Literal["prepare", "train"]) -> str | None:
    """One line naming the keys `command` does not use: Axolotl's keys Tessera does not implement first, then,
    for prepare, the trainer's keys. None when there are none."""
    report = key_report(cfg)

    def top(key: str) -> str:
        return key.split(".")[0].split("[")[0]

    def written(keys: list[str]) -> list[str]:
        return sorted(keys, key=lambda k: report.order.get(top(k), len(report.order)))

    trainer = written([k for k in cfg.model_fields_set if k in TRAINER_KEYS]) if command == "prepare" else []
    # a trainer section (fsdp_config) is named once, not with its keys
    unused = written([k for k in report.not_used if top(k) not in trainer])
    keys = unused + trainer
    if not keys:
        return None
    shown = ", ".join(keys[:12]) + (", …" if len(keys) > 12 else "")
    count = f"{len(keys)} key{'s' if len(keys) > 1 else ''}"
    if unused and trainer:
        count += f": {len(unused)} Tessera does not implement, {len(trainer)} read by tessera train"
    return f"not used by tessera {command}: {shown} ({count}; `tessera prepare --explain` lists them)"


def _validate(raw: dict[str, Any], path: Path, root: yaml.Node | None, overridden: set[str],
              warnings: list[str] | None = None) -> Config:
    """Axolotl's spellings first (renamed, not used, not supported, empty = unset), then the tree; the problems
    of both are reported together. With `warnings` (tessera prepare), values of trainer keys the trainer would
    reject (`optimizer: adamw_bnb_8bit`) are warnings instead: prepare does not use them, `tessera train` stops."""
    compat = axolotl_compat.normalise(raw, Config)
    found = [_where(loc, path, root, overridden) + f": {msg}" for loc, msg in compat.problems]
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        described = _describe_all(e.errors(), path, root, overridden, compat.origins)
        cfg = None if found or warnings is None else _without_trainer_problems(raw, e)
        if cfg is None:
            raise ConfigError(found + described) from None
        warnings += [f"{p} (tessera prepare does not use this trainer setting and goes on; tessera train will stop "
                     "on it)" for p in described]
    if found:
        raise ConfigError(found)
    cfg._keys = compat.report
    return cfg


def _without_trainer_problems(raw: dict[str, Any], error: ValidationError) -> Config | None:
    """The config without the trainer keys that fail (then without every trainer key, for cross-field problems),
    if that is valid; else None."""
    failing = {e["loc"][0] for e in error.errors() if e["loc"] and e["loc"][0] in TRAINER_KEYS}
    for drop in (failing, set(TRAINER_KEYS)):
        try:
            return Config.model_validate({k: v for k, v in raw.items() if k not in drop})
        except ValidationError as e:
            if any(err["loc"] for err in e.errors()):  # a data key fails: the config is invalid for prepare too
                return None
    return None


_UNION_TAGS = {"str", "int", "float", "bool", "none", "list", "dict"}


def _describe_all(errors: list[Any], path: Path, root: yaml.Node | None, overridden: set[str],
                  origins: dict[tuple[Any, ...], tuple[Any, ...]]) -> list[str]:
    # A mapping given where `str | Model` is allowed fails both branches; the str branch's error is noise.
    errors = [e for e in errors if not (e["loc"] and e["loc"][-1] == "str" and isinstance(e["input"], dict))]
    return [_describe(e, path, root, overridden, origins) for e in errors]


def _describe(err: Any, path: Path, root: yaml.Node | None, overridden: set[str],
              origins: dict[tuple[Any, ...], tuple[Any, ...]]) -> str:
    # pydantic puts union branch tags ('str', 'CustomInstructType', "literal['auto']") into loc.
    loc = [p for p in err["loc"] if not (isinstance(p, str) and (p in _UNION_TAGS or "[" in p or p[:1].isupper()))]
    if err["type"] == "extra_forbidden" and err["loc"] and (not loc or loc[-1] != err["loc"][-1]):
        loc.append(err["loc"][-1])  # the unknown key as typed, even when it looks like a tag (`Learning-Rate`)
    read_as = ""
    for n in range(len(loc), 0, -1):  # a value read from another spelling is named as written
        if tuple(loc[:n]) in origins:
            read_as = f" (read as {_show_loc(loc)})"
            loc = list(origins[tuple(loc[:n])]) + loc[n:]
            break
    shown = _show_loc(loc)
    where = _where(tuple(loc), path, root, overridden)
    if err["type"] == "extra_forbidden":
        key = str(loc[-1])
        close = axolotl_compat.hint(axolotl_compat.section_of(tuple(loc[:-1])), key, _valid_keys(loc[:-1]))
        hint = f"did you mean '{close}'?" if close else "see the keys documented in schemas/config.py"
        return f"{where}: unknown key '{shown}'; {hint}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{where}: {shown or '(top level)'}{read_as}: {msg}"


def _where(loc: tuple[Any, ...], path: Path, root: yaml.Node | None, overridden: set[str]) -> str:
    dotted = ".".join(str(p) for p in loc)
    where = f"{path}:{_line_of(root, list(loc))}" if root is not None else str(path)
    if dotted.split(".")[0] in overridden or dotted in overridden:
        where = f"{where} (--set {dotted})"
    return where


def _show_loc(loc: list[Any]) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _valid_keys(parent: list[Any]) -> list[str]:
    model: type[BaseModel] = Config
    for p in parent:
        if isinstance(p, int):
            continue
        if str(p) not in model.model_fields or (sub := axolotl_compat.submodel(model, str(p))) is None:
            break
        model = sub
    return list(model.model_fields)


def _line_of(root: yaml.Node | None, loc: list[Any]) -> int:
    node = root
    line = 1 if root is None else root.start_mark.line + 1
    for p in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == p:
                    line, node = k.start_mark.line + 1, v
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(p, int) and p < len(node.value):
            node = node.value[p]
            line = node.start_mark.line + 1
        else:
            return line
    return line
