"""The root config's data keys: model and tokenizer, chat template, datasets, curation. Every one of them can change
the prepared bytes, so all are part of the prepare fingerprint (except the few pipeline.py's _NOT_DATA names).

`Config` (schemas/config.py) is these keys followed by the trainer's (schemas/trainer_keys.py), in this order.
"""

from __future__ import annotations

import datetime
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from dataprep import instruct_types
from schemas.base import ConfigModel
from schemas.curation import DecontaminateSource, FilterRule, NearDeduplication
from schemas.datasets import DatasetConfig, PretrainingDataset

MAX_SEQUENCE_LEN = 2**24


# apply_chat_template's own parameters: Axolotl merges chat_template_kwargs into its call, so these would change
# how it renders (a trailing generation prompt in every training sample, another template) or crash it, rather
# than set a template variable.
_PER_ROW = "it is set per call by Tessera, as by Axolotl; remove it"
RESERVED_TEMPLATE_KWARGS = {
    "messages": "the conversation is the row's messages; remove it",
    "conversation": "the conversation is the row's messages; remove it",
    "tools": "tools come from each row (datasets[].field_tools); remove it, or add the tools to the rows",
    "documents": "documents are not available; remove it",
    "add_generation_prompt": _PER_ROW, "continue_final_message": _PER_ROW,
    "chat_template": "choose the template with the top-level chat_template key",
    **{k: "an apply_chat_template tokenizing option, not a template variable; remove it" for k in (
        "tokenize", "padding", "truncation", "max_length", "return_tensors", "return_dict",
        "return_assistant_tokens_mask", "tokenizer_kwargs", "sanitize_control_tokens")},
    # The template's functions: Jinja's own (jinja2.defaults.DEFAULT_NAMESPACE) and the two transformers adds
    # (dataprep/render.py). A render variable shadows a global, in transformers too, so a template calling one
    # fails on every row ("'int' object is not callable") or, if it never calls it, is not changed by it.
    **{k: f"shadows the template function {k}(); rename the variable (in the template too)" for k in (
        "range", "dict", "lipsum", "cycler", "joiner", "namespace", "raise_exception", "strftime_now")},
}


def _not_plain(value: Any, where: str = "") -> str | None:
    """Where `value` holds something other than YAML scalars, lists and string-keyed mappings (None: nothing)."""
    if value is None or isinstance(value, bool | int | float | str):
        return None
    if isinstance(value, list):
        return next((bad for i, v in enumerate(value) if (bad := _not_plain(v, f"{where}[{i}]")) is not None), None)
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"{where}: mapping key {k!r} is not text; quote it"
            if (bad := _not_plain(v, f"{where}.{k}")) is not None:
                return bad
        return None
    return f"{where}: {type(value).__name__} values are not allowed (use text, numbers, booleans, lists, mappings)"


class SpecialTokens(ConfigModel):
    bos_token: str | None = None
    eos_token: str | None = None
    pad_token: str | None = None
    unk_token: str | None = None



class DataKeys(ConfigModel):
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
    chat_template_kwargs: dict[str, Any] | None = None
    """Extra variables of every render of a chat template, as Axolotl passes them to apply_chat_template (e.g.
    `{enable_thinking: false}` for Qwen3); they override the tokenizer's special tokens of the same name. Values
    are YAML scalars, lists and mappings. Pass the same ones to apply_chat_template at inference (the manifest
    records them next to the template). Not with a `mistral:` tokenizer, which has no Jinja template."""
    default_system_message: str | None = None
    """As Axolotl 0.21.0: with `chat_template: chatml`, replaces "You are a helpful assistant." in the template
    text (also the one saved with the tokenizer); with any other template it has no effect. The chatml template
    (Axolotl's and Tessera's) has no default system prompt, so today it changes nothing: put a system message
    in the data instead (`prepare --explain` says so)."""
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
    min_sample_len: int | None = Field(None, ge=1)
    """Samples with fewer tokens than this are dropped (status dropped, reason too_short), as Axolotl's
    min_sample_len. Unset: none is, beyond what has nothing to train (quarantined, no_trainable_tokens). A
    completion row cut at sequence_len counts its whole length (Axolotl checks each cut piece)."""
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
    def _near_dedup_fields(self) -> DataKeys:
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
    def _sharegpt_conversation(self) -> DataKeys:
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

    @field_validator("chat_template_kwargs")
    @classmethod
    def _template_variables(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        problems = []
        for key, v in value.items():
            if key in RESERVED_TEMPLATE_KWARGS:
                problems.append(f"chat_template_kwargs.{key}: {RESERVED_TEMPLATE_KWARGS[key]}")
            elif not key.isidentifier():
                problems.append(f"chat_template_kwargs.{key!r}: a template variable name is a Python identifier "
                                "(letters, digits, _; not starting with a digit)")
            elif (bad := _not_plain(v)) is not None:
                problems.append(f"chat_template_kwargs.{key}{bad}")
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @field_validator("chat_template_date", mode="before")
    @classmethod
    def _date_as_text(cls, value: Any) -> Any:
        # `chat_template_date: 2026-01-01` unquoted is a YAML date, and means the same as the quoted text.
        return value.isoformat() if isinstance(value, datetime.date) else value
