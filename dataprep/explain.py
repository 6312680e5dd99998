"""`tessera prepare --explain CONFIG`: every place where Tessera treats this config differently from Axolotl,
each with the key that changes it. Reads the config only, never the data or the tokenizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dataprep.render import resolve_template
from dataprep.template_names import AXOLOTL_DEFAULT_SYSTEM, template_differences
from schemas.config import TRAINER_KEYS, Config, key_report


def template_difference(name: str) -> str | None:
    """How the template `name` renders in Tessera vs Axolotl, or None when they agree (the template library's
    own table: dataprep/template_names.py)."""
    return template_differences(name)


def explain(cfg: Config) -> list[tuple[str, str]]:
    """(key that changes it, what Tessera does) for each difference, in the order a reader meets them."""
    out: list[tuple[str, str]] = []
    given = cfg.model_fields_set
    report = key_report(cfg)
    formats = {ds.format for ds in cfg.datasets}

    if cfg.dataset_exact_deduplication:
        why = "on by default in Tessera (off in Axolotl)" if "dataset_exact_deduplication" not in given else "on"
        out.append(("dataset_exact_deduplication", f"{why}: a row whose content, with Unicode NFC and whitespace runs "
                    "folded, equals an earlier row's (in any dataset) is left out as a duplicate pointing at the row "
                    "kept (duplicates.parquet); Axolotl compares whole tokenized rows. Set it to false to keep "
                    "every row"))
    bos = "Tessera adds no BOS or EOS of its own to chat rows: the ids are the chat template's render, tokenized " \
          "as apply_chat_template does (no second BOS)"
    if formats - {"chat_template", "pretokenized"}:
        bos += "; instruct and completion rows get the BOS that `tokenizer(text)` adds and the tokenizer's EOS " \
               "after each output (trained)"
    out.append(("chat_template", bos))
    long_rows = {"drop": f"dropped (status dropped, reason too_long, one row each in samples.parquet); set it to "
                         f"truncate to keep their first {cfg.sequence_len} tokens",
                 "truncate": f"cut to their first {cfg.sequence_len} tokens (kept, reason truncated)",
                 "raise": "an error: the run stops at the first one, naming its file and row, and writes nothing"}
    out.append(("excess_length_strategy", f"samples longer than sequence_len ({cfg.sequence_len}) are "
                f"{long_rows.get(cfg.excess_length_strategy, cfg.excess_length_strategy)}; "
                + (f"samples under min_sample_len ({cfg.min_sample_len}) tokens are dropped (reason too_short)"
                   if cfg.min_sample_len is not None else "short samples are not dropped (Axolotl drops those of "
                   "one token: here they have nothing to train and are quarantined as no_trainable_tokens)")))
    out.append(("quarantine_max_fraction", "a row that does not fit its format is quarantined (reason, file, row, "
                "original text in quarantine.parquet) and the run goes on; more than "
                f"{cfg.quarantine_max_fraction:.0%} of the rows quarantined fails the run (a Tessera key)"))
    if cfg.sample_packing:
        out.append(("sample_packing", f"samples are packed when preparing (best-fit decreasing into rows of "
                    f"{cfg.sequence_len} tokens, cu_seqlens and position_ids per sample), the validation split "
                    "too: the packed rows are fixed in the shards, unlike Axolotl's multipack sampler at train time "
                    "(sample_packing_* and eval_sample_packing are not used)"))
    if cfg.val_set_size:
        out.append(("val_set_size", "the validation samples are drawn by Tessera from `seed` after deduplication, "
                    "so they are not the rows Axolotl's train_test_split picks with the same seed"))
    out.append(("seed", "packed rows are written in a fixed order and the trainer shuffles them each epoch from "
                "`seed`; datasets are not shuffled when merged (shuffle_merged_datasets is not used)"))
    for where, name in _templates(cfg):
        if (diff := template_difference(name)) is not None:
            out.append((where, diff))
    if cfg.chat_template_kwargs:
        out.append(("chat_template_kwargs", f"{', '.join(cfg.chat_template_kwargs)}: variables of every render of "
                    "the chat template, as in Axolotl; pass the same ones to apply_chat_template at inference (the "
                    "manifest lists them under chat_template.kwargs), or the served text differs from the trained"))
    if cfg.default_system_message:
        out.append(("default_system_message", _default_system(cfg)))
    for i, ds in enumerate(cfg.datasets):
        if ds.type == "chat_template" and ds.field_messages is None:
            out.append((f"datasets[{i}].field_messages", "a row without `messages` but with ShareGPT's "
                        "`conversations` is read as ShareGPT (from/value), row by row; Axolotl reads only "
                        "field_messages with message_property_mappings"))
    if {"tokenizer_type", "tokenizer_use_fast", "tokenizer_legacy"} & ({*given} | {*report.not_used}):
        out.append(("tokenizer_type", "Tessera always reads tokenizer.json (the fast tokenizer); tokenizer_type, "
                    "tokenizer_use_fast and tokenizer_legacy do not change the ids"))
    for written, read_as in report.renamed:
        out.append((written, f"read as {read_as} (the same setting under Tessera's name)"))
    trainer = [k for k in Config.model_fields if k in given and k in TRAINER_KEYS]
    if trainer:
        out.append(("(trainer keys)", f"read by tessera train, not by prepare: {', '.join(trainer)}"))
    if report.ignored:
        out.append(("(ignored)", "keys neither Axolotl 0.21.0 nor Tessera has, ignored as Axolotl ignores them "
                    f"(check their spelling): {', '.join(report.ignored)}"))
    if report.not_used:
        out.append(("(not used)", "accepted and not used by tessera prepare or train (Axolotl trainer, "
                    f"infrastructure and logging keys): {', '.join(report.not_used)}"))
    return out


def _templates(cfg: Config) -> list[tuple[str, str]]:
    found = [("chat_template", cfg.chat_template)]
    for i, ds in enumerate(cfg.datasets):
        name: Any = getattr(ds, "chat_template", None)  # per-dataset templates, where the tree has them
        if isinstance(name, str):
            found.append((f"datasets[{i}].chat_template", name))
    return [(where, name.removeprefix("tokenizer_default_fallback_")) for where, name in found]


def _default_system(cfg: Config) -> str:
    if cfg.chat_template != "chatml":
        return (f"no effect: Axolotl applies it only with chat_template: chatml (here {cfg.chat_template}); put a "
                "system message in the rows to train with one")
    if AXOLOTL_DEFAULT_SYSTEM not in resolve_template("chatml", None, None, Path("."))[1]:
        return (f"no effect: it replaces \"{AXOLOTL_DEFAULT_SYSTEM}\" in the chatml template, which (in Axolotl "
                "0.21.0 as in Tessera) has no default system prompt; put a system message in the rows to train "
                "with one")
    return (f"replaces \"{AXOLOTL_DEFAULT_SYSTEM}\" in the chatml template, the one trained with and saved with "
            "the tokenizer (Axolotl trains with the unedited template and saves the edited one)")
