"""Probes: facts about each template/tokenizer pair, checked on a synthetic sample before any row is read.

A probe failure stops the run with the fix, before any shard is written, for problems that would otherwise
silently ruin every sample:
- a trained assistant turn whose end-of-turn token is not trained (the model never learns to stop), usually
  a template whose turn delimiters are not special tokens of this tokenizer (e.g. a Llama 3 template on a
  Qwen tokenizer);
- a double BOS (a template or prompt format that writes BOS while the tokenizer adds it too);
- a sample with no trained token at all;
- a format that needs an EOS the tokenizer does not have.
Whether the template is prefix-preserving (each generation prompt is a prefix of the whole conversation; not
true for Gemma 4 or for Qwen3 with reasoning) is reported, not enforced: Tessera's labels come from one render
of the whole conversation either way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dataprep import instruct_types
from dataprep.encode import TokenizerInfo, encode, encode_parts
from dataprep.formats import Chat, RowError, Segments, to_sample
from dataprep.render import ChatRenderer, render_segments
from schemas.config import Config, CustomInstructType, DatasetConfig
from schemas.reasons import Reason
from schemas.shard import IGNORE_INDEX

if TYPE_CHECKING:
    from dataprep.chat_encoder import ChatEncoder

PROBE_MESSAGES = [
    {"role": "system", "content": "You are a careful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris is the capital of France."},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome."},
]
PROBE_ROW = {"instruction": "Name a prime number.", "input": "", "output": "Seven.", "text": "A probe sentence.",
             "segments": [{"text": "Prompt: ", "label": False}, {"text": "answer.", "label": True}]}


class ProbeError(Exception):
    pass


class TemplateLimitError(ProbeError):
    """The template hits a time or size limit on a plain conversation: a config error (exit 2)."""


_LIMITS = (Reason.template_timeout, Reason.template_too_large)


def _limit_error(e: RowError, template_name: str | None, where: str) -> TemplateLimitError:
    source = ("it comes from the tokenizer's tokenizer_config.json / chat_template.jinja"
              if template_name == "tokenizer_default" else f"chat_template: {template_name}")
    return TemplateLimitError(
        f"{where}: the chat template '{template_name}' cannot render a 5-message probe conversation: {e.message} "
        f"({source}). Fix the template's loops and repetitions, or set chat_template to a library template "
        "(e.g. chatml) or your own (jinja + chat_template_jinja)")


def probe_dataset(cfg: Config, ds: DatasetConfig, tok: TokenizerInfo, encoder: ChatEncoder | None) -> dict[str, Any]:
    """`encoder`: the chat dataset's encoder (None for other formats), which probes itself."""
    where = f"datasets[{cfg.datasets.index(ds)}] ({ds.path})"
    if encoder is not None:
        return encoder.probe(where)
    if ds.type is None:
        return {"dataset": ds.path, "format": "pretokenized"}
    if not tok.eos_text:
        raise ProbeError(f"{where}: type {ds.format} appends the tokenizer's EOS after each output, but the "
                         "tokenizer has no eos_token; set special_tokens.eos_token in the config")
    sample = to_sample(_probe_row(ds), ds, cfg.train_on_inputs, tok.eos_text)
    assert isinstance(sample, Segments)
    if sample.separate:
        ids, labels = encode_parts(tok.tokenizer, sample.parts)
    else:
        [(ids, labels)] = encode(tok.tokenizer, [render_segments(sample)], add_special_tokens=tok.adds_bos)
    check_bos(tok, ids.tolist(), where, "the prompt format")
    if not (labels != IGNORE_INDEX).any():
        raise ProbeError(f"{where}: a probe sample has no trained token")
    return {"dataset": ds.path, "format": ds.format, "eos": tok.eos_text, "adds_bos": tok.adds_bos}


def _check_eot_tokens(cfg: Config, ds: DatasetConfig, tok: TokenizerInfo, where: str) -> None:
    """Axolotl's rules: each of eot_tokens is one token of the vocabulary, and when the EOS token is one of
    them, train_on_eos and train_on_eot cannot disagree."""
    for token in cfg.eot_tokens or []:
        ids = tok.tokenizer.encode(token, add_special_tokens=False).ids
        if len(ids) != 1:
            raise ProbeError(f"eot_tokens: {token!r} is {len(ids)} tokens of this tokenizer, not one; add it as a "
                             "token (tokens: / special_tokens) or remove it from eot_tokens")
    if (cfg.eot_tokens and tok.eos_text in cfg.eot_tokens and ds.train_on_eot is not None
            and ds.train_on_eot != ds.train_on_eos):
        raise ProbeError(f"{where}: the EOS token {tok.eos_text!r} is one of eot_tokens, so train_on_eos "
                         f"({ds.train_on_eos}) and train_on_eot ({ds.train_on_eot}) must agree; set one of them")


def _probe_row(ds: DatasetConfig) -> dict[str, Any]:
    """PROBE_ROW under the dataset's own field names (a custom instruct mapping, a named type's example row,
    completion's `field`)."""
    if isinstance(ds.type, CustomInstructType):
        row = {ds.type.field_instruction: PROBE_ROW["instruction"], ds.type.field_output: PROBE_ROW["output"]}
        if ds.type.field_input:
            row[ds.type.field_input] = ""
        return row
    named = instruct_types.resolve(ds.type) if isinstance(ds.type, str) else None
    row = {**PROBE_ROW, **named.example} if named is not None else PROBE_ROW
    if ds.type in ("completion", "pretrain") and ds.field:
        row = {**row, ds.field: PROBE_ROW["text"]}
    return row


def probe_template(cfg: Config, ds: DatasetConfig, tok: TokenizerInfo, renderer: ChatRenderer,
                   template_name: str | None, where: str) -> dict[str, Any]:
    """The template encoder's probe (template_encoder.py)."""
    _check_eot_tokens(cfg, ds, tok, where)
    messages = PROBE_MESSAGES
    if renderer.limit_error is not None:
        raise _limit_error(renderer.limit_error, template_name, where)
    try:
        renderer.render_text(messages, False)
    except RowError as e:  # some templates refuse system messages (Gemma 2): probe without one
        if e.reason in _LIMITS:
            raise _limit_error(e, template_name, where) from None
        messages = PROBE_MESSAGES[1:]
    chat = Chat([dict(m) for m in messages], _probe_train(ds, messages), [None] * len(messages))
    try:
        facts = renderer.probe(chat)
    except RowError as e:
        if e.reason in _LIMITS:
            raise _limit_error(e, template_name, where) from None
        raise ProbeError(f"{where}: the chat template '{template_name}' cannot render a plain conversation: "
                         f"{e.message}") from None
    [(ids, labels)] = encode(tok.tokenizer, [facts["rendered"]])
    template = f"chat template '{template_name}'"
    check_bos(tok, ids.tolist(), where, f"the {template}")
    if not (labels != IGNORE_INDEX).any():
        raise ProbeError(f"{where}: with roles_to_train {ds.roles_to_train}, a plain conversation has no trained "
                         f"token under the {template}")
    eots = facts["end_of_turn"]
    wanted = {"turn": eots, "all": eots, "last": eots[-1:], "none": []}[ds.train_on_eot or ds.train_on_eos]
    if any(e is None for e in wanted):
        specials = ", ".join(tok.specials[:12])
        raise ProbeError(
            f"{where}: the {template} closes assistant turns with no special token of this tokenizer, so no "
            f"end-of-turn token can be trained and the model would never learn to stop. Is the template meant for "
            f"another model? (This tokenizer's special tokens: {specials}.) Use the tokenizer's own template "
            "(chat_template: tokenizer_default), or add the template's turn delimiters as special tokens "
            "(special_tokens / tokens), or set train_on_eos: none if that is really intended.")
    return {"dataset": ds.path, "format": "chat_template", "template": template_name,
            "prefix_preserving": facts["prefix_preserving"], "end_of_turn": sorted({e for e in eots if e}),
            "generation_prompt": facts["generation_prompt"]}


def _probe_train(ds: DatasetConfig, messages: list[dict[str, str]]) -> list[bool]:
    """Which probe messages are trained: by roles_to_train, or, when that trains none and the rows carry
    their own flags (roles_to_train: [] with message_field_training), the assistant turns, as a flagged row
    would train them."""
    train = [m["role"] in ds.roles_to_train for m in messages]
    if not any(train) and (ds.message_field_training or ds.message_field_training_detail):
        train = [m["role"] == "assistant" for m in messages]
    return train


def check_bos(tok: TokenizerInfo, ids: list[int], where: str, what: str) -> None:
    bos = tok.variables.get("bos_token")
    bos_id = tok.tokenizer.token_to_id(bos) if bos else None
    if bos_id is not None and ids[:2] == [bos_id, bos_id]:
        raise ProbeError(f"{where}: {what} produces a double BOS ({bos} {bos}): the text already starts with "
                         f"{bos} and the tokenizer adds another. Remove {bos} from the format/template text.")
