"""`tessera golden CONFIG [--samples N]`: prove, on your own config and data, that training ids and labels are
what inference produces.

For the first N kept samples of every dataset, the training pipeline's ids and labels are compared with an
independent inference path:
- chat datasets: transformers' `apply_chat_template(messages, tools=...)` with the tokenizer that `prepare`
  saves next to the shards (the template actually used); labels expected = what the model generates after each
  generation prompt (`add_generation_prompt=True` render of the conversation so far) up to and including the
  first special token that follows (its end-of-turn token), reasoning and tool calls included; every call
  passes chat_template_kwargs, as inference must. With `--against
  base` (or `both`, the default) the ids are also compared with the base tokenizer's own chat template, which is
  what a server that loads the base model's tokenizer renders;
- chat datasets of `mistral:` tokenizers (the saved folder loads as transformers' MistralCommonBackend):
  mistral-common on its own, from its OpenAI converter (ids, and labels by encoding prefixes), and the saved
  backend's `apply_chat_template` (ids). golden_refs.py holds both references and says which rows compare
  labels;
- other formats: `tokenizer(prompt)` of the documented prompt string, labels from the trained characters.
The first divergence is printed as a token-level table; the exit code is 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from dataprep.encode import TokenizerError, save_tokenizer
from dataprep.formats import Chat, Segments, parse, to_sample
from dataprep.load import InputError
from dataprep.look.golden_refs import MistralReference, openai_messages, template_reference
from dataprep.pipeline import PrepareError, setup
from dataprep.render import render_segments
from dataprep.report import escape_controls
from dataprep.transform import RowProcessor
from schemas.config import ConfigError, load_config
from schemas.overrides import OverrideError
from schemas.shard import IGNORE_INDEX


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=Path)
    p.add_argument("--samples", type=_positive, default=20, help="kept samples per dataset to compare (default 20)")
    p.add_argument("--against", choices=("saved", "base", "both"), default="both",
                   help="inference path: the tokenizer saved with the shards, the base tokenizer's own chat "
                        "template, or both (default)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")


@dataclass
class Mismatch:
    where: str
    reference: str
    ours: tuple[list[int], list[int]]
    theirs: tuple[list[int], list[int] | None]


def _positive(text: str) -> int:
    # 0 or -5 compared one sample and reported success
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n}: compare at least 1 sample per dataset")
    return n


def main(args: argparse.Namespace) -> int:
    console = Console(width=None if Console().is_terminal else 140)
    try:
        cfg = load_config(args.config, args.overrides)
        st = setup(cfg, args.config)
    except (ConfigError, OverrideError, PrepareError, InputError, TokenizerError) as e:
        console.print(Text.assemble(("error:", "red"), " ", escape_controls(str(e), keep_newlines=True)),
                      highlight=False, soft_wrap=True)
        return 2
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp, pinned_clock(datetime.date.fromisoformat(cfg.chat_template_date)):
        save_tokenizer(st.tok, Path(tmp) / "tokenizer", st.template_text, st.named_templates)
        saved = AutoTokenizer.from_pretrained(str(Path(tmp) / "tokenizer"))
        # The saved folder says how serving encodes chats: a chat template, or mistral-common itself (its
        # tokenizer_config.json names transformers' MistralCommonBackend).
        mistral = None
        if type(saved).__name__ == "MistralCommonBackend":
            from dataprep.mistral_files import resolve_mistral_tokenizer  # mistral-common: only on this route

            mistral = MistralReference(resolve_mistral_tokenizer(f"mistral:{Path(tmp) / 'tokenizer'}", Path(tmp)))
            # transformers' wrapper of mistral-common, in the mode that accepts finished conversations.
            saved = type(saved).from_pretrained(str(Path(tmp) / "tokenizer"), mode="finetuning")
            base, base_differs = None, False
        else:
            base = AutoTokenizer.from_pretrained(str(st.tok.path))
            base_differs = bool(base.chat_template) and base.chat_template != st.template_text
        failures: list[Mismatch] = []
        compared = 0
        for di, ds in enumerate(cfg.datasets):
            processor = RowProcessor(cfg, di, st.tok, st.template_for(di))
            n = 0
            for source_display, raw, result in _kept(st, di, processor, args.samples):
                where = f"{source_display}:{raw.source_row}"
                sample = to_sample(parse(raw.payload), ds, cfg.train_on_inputs, st.tok.eos_text)
                ours = (result.input_ids.tolist(), result.labels.tolist())
                if isinstance(sample, Chat) and mistral is not None:
                    failures += _compare(where, "mistral-common encode_chat_completion", ours,
                                         *mistral.ids_and_labels(sample, ds.train_on_eos))
                    ids = list(saved.apply_chat_template(openai_messages(sample), tools=sample.tools,
                                                         tokenize=True)["input_ids"])
                    failures += _compare(where, "saved tokenizer (transformers MistralCommonBackend)", ours, ids, None)
                elif isinstance(sample, Chat):
                    if args.against in ("saved", "both"):
                        saved_as = next((p.get("saved_as", "") for p in st.probes[di:di + 1]), "")
                        named = saved_as.removeprefix("additional_chat_templates/").removesuffix(".jinja")
                        failures += _compare(where, "saved tokenizer + template", ours,
                                             *template_reference(saved, sample, named if "/" in saved_as else None,
                                                                 cfg.chat_template_kwargs))
                    if args.against in ("base", "both") and base_differs and base is not None:
                        ids = list(base.apply_chat_template(sample.messages, tokenize=True,
                                                            **(cfg.chat_template_kwargs or {}))["input_ids"])
                        failures += _compare(where, "base tokenizer's own chat template", ours, ids, None)
                elif isinstance(sample, Segments):
                    failures += _compare(where, "tokenizer(prompt)", ours, *_segments_reference(saved, sample))
                n += 1
            compared += n
            console.print(Text(escape_controls(f"{ds.path}: compared {n} samples ({ds.format})")), highlight=False)
    if not failures:
        labels = _labels_compared[0]
        console.print(f"[green]golden: {compared} samples match the inference path (ids; labels of {labels} "
                      "comparisons)[/]" if labels < compared else
                      f"[green]golden: {compared} samples match the inference path (ids and labels)[/]")
        return 0
    first = failures[0]
    console.print(Text(escape_controls(f"golden: {len(failures)} mismatch(es); first at {first.where} against the "
                                       f"{first.reference}:"), style="red"), highlight=False)
    console.print(_diff_table(first, saved))
    if first.reference.startswith("base") and not any(f.reference.startswith("saved") for f in failures):
        console.print("The configured chat_template renders differently from the base tokenizer's own template: a "
                      "server that loads the base model's tokenizer will not see the ids you train on. Serve with "
                      "the tokenizer saved in the prepared directory, or use chat_template: tokenizer_default "
                      "(or --against saved if this is intended).", highlight=False)
    return 1


def _kept(st: Any, dataset_index: int, processor: RowProcessor, limit: int) -> Iterator[tuple[str, Any, Any]]:
    found = 0
    for source in st.sources:
        if source.dataset_index != dataset_index:
            continue
        for batch in source.batches(64):
            for raw, result in zip(batch, processor.process(batch), strict=True):
                if result.status.value == "kept":
                    yield source.display, raw, result
                    found += 1
                    if found >= limit:
                        return


def _segments_reference(tok: Any, segments: Segments) -> tuple[list[int], list[int]]:
    if segments.separate:  # input_output: Axolotl's tokenizer(text, add_special_tokens=False) per segment
        ids, labels = [], []
        for text, trained in segments.parts:
            piece = list(tok(text, add_special_tokens=False)["input_ids"])
            ids += piece
            labels += piece if trained else [IGNORE_INDEX] * len(piece)
        labels[:1] = [IGNORE_INDEX] * len(labels[:1])
        return ids, labels
    rendered = render_segments(segments)
    enc = tok(rendered.text, return_offsets_mapping=True)
    labels = [t if any(a <= s < b for a, b in rendered.spans) and e > s else IGNORE_INDEX
              for t, (s, e) in zip(enc["input_ids"], enc["offset_mapping"], strict=True)]
    labels[0] = IGNORE_INDEX
    return enc["input_ids"], labels


_labels_compared = [0]


def _compare(where: str, reference: str, ours: tuple[list[int], list[int]], ids: list[int],
             labels: list[int] | None) -> list[Mismatch]:
    _labels_compared[0] += labels is not None
    if ours[0] != ids or (labels is not None and ours[1] != labels):
        return [Mismatch(where, reference, ours, (ids, labels))]
    return []


def _diff_table(m: Mismatch, tok: Any) -> Table:
    (ids, labels), (ref_ids, ref_labels) = m.ours, m.theirs
    ref_labels = ref_labels if ref_labels is not None else [None] * len(ref_ids)
    first = next((i for i in range(max(len(ids), len(ref_ids)))
                  if i >= len(ids) or i >= len(ref_ids) or ids[i] != ref_ids[i]
                  or (ref_labels[i] is not None and labels[i] != ref_labels[i])), 0)
    table = Table(title=f"first divergence at token {first}", header_style="bold")
    for col in ("pos", "training id", "piece", "trained", "inference id", "piece", "trained"):
        table.add_column(col)
    for i in range(max(0, first - 4), min(max(len(ids), len(ref_ids)), first + 8)):
        a = (ids[i], tok.convert_ids_to_tokens(ids[i]), labels[i] != IGNORE_INDEX) if i < len(ids) else None
        b = (ref_ids[i], tok.convert_ids_to_tokens(ref_ids[i]),
             None if ref_labels[i] is None else ref_labels[i] != IGNORE_INDEX) if i < len(ref_ids) else None
        style = "red" if a is None or b is None or a[0] != b[0] or (b[2] is not None and a[2] != b[2]) else ""
        cells = [str(i)]
        for side in (a, b):
            cells += ["-", "", ""] if side is None else [str(side[0]), repr(side[1]), _yes(side[2])]
        table.add_row(*(Text(escape_controls(c)) for c in cells), style=style)  # pieces like '[/INST]' are data
    return table


def _yes(flag: bool | None) -> str:
    return "?" if flag is None else ("yes" if flag else "")


@contextlib.contextmanager
def pinned_clock(date: datetime.date) -> Iterator[None]:
    """transformers' `strftime_now` reads datetime.now(); pin it to chat_template_date, as Tessera renders."""
    import transformers.utils.chat_template_utils as ctu

    class Pinned(datetime.datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Pinned:
            return cls(date.year, date.month, date.day)

    original = ctu.datetime
    ctu.datetime = Pinned
    try:
        yield
    finally:
        ctu.datetime = original
