"""run_pipeline(cfg): config -> a prepared directory, top to bottom.

    setup      tokenizer, chat template, probes (probes.py), input files, fingerprint: every error here
               happens before any row is read
    cache      same fingerprint as the existing output -> reuse it
    rows       read -> parse -> format -> render -> tokenize -> length, in batches (worker processes), into
               the sample table (rowpass.py, table.py)
    stages     plain functions over the table, in the order of runner.STAGES (contract: stage.py):
               exact_dedup  on normalised content, across datasets, first occurrence kept (dedup.py)
               filters      declarative SQL conditions, `filter:<name>` (curate.py, filters.py)
               decontaminate  word n-grams shared with eval texts, `contaminated` (curate.py, decontam.py)
               mix          datasets[].weight: drop or repeat whole input rows (mix.py); only when a weight != 1
               split        val_set_size, by hash(seed, sample_id) (layout.py)
               pack         best-fit decreasing (sample_packing) or one sample per row (layout.py, pack.py)
    write      shards; samples/quarantine/duplicates tables and the accounting, from the table and the layout
               on disk (outputs.py, placed.py);
               tokenizer/ (with the template used); manifest.json (manifest.py) last, then one rename

Everything is written under a temporary folder that becomes a version DIR points at in one rename (outdir_commit.py),
so a crashed run never leaves a directory that looks complete, nor loses the previous one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc
from jinja2 import TemplateError, TemplateSyntaxError

import dataprep
from dataprep import curate, outdir, outdir_commit, outputs
from dataprep.curate import Curation
from dataprep.decontam import DecontamError
from dataprep.encode import TokenizerInfo, save_tokenizer
from dataprep.errors import ConfigProblem, PrepareError
from dataprep.filters import FilterError
from dataprep.formats import type_notes
from dataprep.hf_folders import resolve_sources, select_rows
from dataprep.layout import SplitError
from dataprep.load import LINE_LIMIT_FLOOR, RawRow, file_format, read_batches
from dataprep.manifest import build_manifest
from dataprep.mix import add_mixing
from dataprep.placed import Placed
from dataprep.probes import ProbeError, TemplateLimitError, probe_dataset
from dataprep.render import TemplateNotFound, resolve_template
from dataprep.report import Progress, StageTimer
from dataprep.rowpass import BATCH_SIZE, read_rows
from dataprep.runner import run_stages
from dataprep.shards import ShardInfo, SpillReader, sha256_file, write_split
from dataprep.table import KEPT, SampleTable, large_arrays_mapped, trim_heap
from dataprep.template_names import with_default_system
from dataprep.transform import chat_encoder_for, tokenizer_for
from schemas.config import TRAINER_KEYS, Config
from schemas.reasons import Reason
from schemas.shard import FORMAT_VERSION
from schemas.shard import __file__ as SAMPLES_SCHEMA_FILE

__all__ = ["BATCH_SIZE", "ConfigProblem", "PrepareError", "Result", "Setup", "Source", "run_pipeline", "setup"]

# Config keys that do not change the prepared bytes: left out of the fingerprint. Trainer keys are the fields of
# schemas/trainer_keys.py; the tokenizer's files are hashed themselves, so its folder name is not data.
_NOT_DATA = {"dataset_prepared_path", "dataset_processes", "base_model_config", "model_type", "tokenizer_type",
             "trust_remote_code", "base_model", "tokenizer_config"} | TRAINER_KEYS


@dataclass
class Source:
    dataset_index: int
    path: Path
    display: str  # as written to samples.parquet
    fmt: str
    rows: tuple[int, int] | None = None  # a split slice's [start, stop) rows of this file; None: every row

    def batches(self, batch_size: int, max_line: int = LINE_LIMIT_FLOOR) -> Iterator[list[RawRow]]:
        return select_rows(read_batches(self.path, self.fmt, batch_size, max_line), self.rows)


@dataclass
class Setup:
    cfg: Config
    config_dir: Path
    tok: TokenizerInfo
    template_name: str | None
    template_text: str | None
    sources: list[Source]
    fingerprint: str
    probes: list[dict[str, Any]]
    warnings: list[str]
    dataset_templates: list[tuple[str, str] | None] = field(default_factory=list)  # per dataset: (name, text)
    named_templates: dict[str, str] = field(default_factory=dict)  # saved next to the default, by name
    curation: Curation | None = None  # filters / decontaminate (curate.py)

    def template_for(self, dataset_index: int) -> str | None:
        """The chat template text datasets[dataset_index] is rendered with (None: not a chat dataset)."""
        t = self.dataset_templates[dataset_index] if self.dataset_templates else None
        return t[1] if t is not None else None


@dataclass
class Result:
    out: Path
    manifest: dict[str, Any]
    cached: bool
    notes: list[str] = field(default_factory=list)  # why a cache was not reused, what was cleaned up


def setup(cfg: Config, config_path: Path) -> Setup:
    config_dir = config_path.resolve().parent
    if not cfg.datasets:
        raise ConfigProblem(f"{config_path}: `datasets` is empty: nothing to prepare; list at least one dataset "
                            "(path and type)")
    curation = None
    if curate.wanted(cfg):  # filters and eval files are checked before anything else is read
        try:
            curation = Curation(cfg, config_dir)
        except (FilterError, DecontamError) as e:
            raise ConfigProblem(str(e)) from None
    tok = tokenizer_for(cfg, config_dir)
    template_name = template_text = None
    if tok.chat_encoding is not None:  # the tokenizer encodes conversations itself (mistral-common): no template
        template_name = tok.chat_encoding.name
        unsupported = [f"datasets[{i}] ({ds.format})" for i, ds in enumerate(cfg.datasets)
                       if ds.type not in ("chat_template", None)]
        if unsupported:
            raise PrepareError(f"{', '.join(unsupported)}: a mistral: tokenizer encodes chats with mistral-common; "
                               "other formats are not supported with it yet (use type: chat_template, or the "
                               "model's HF tokenizer folder)")
    dataset_templates: list[tuple[str, str] | None] = [None] * len(cfg.datasets)
    if tok.chat_encoding is None and any(ds.type == "chat_template" for ds in cfg.datasets):
        template_name, template_text, dataset_templates = _chat_templates(cfg, tok, config_dir)
    probes = []
    for i, ds in enumerate(cfg.datasets):
        name = dataset_templates[i][0] if dataset_templates[i] else template_name
        try:
            encoder = chat_encoder_for(cfg, i, tok, dataset_templates[i][1] if dataset_templates[i] else None, name)
        except (TemplateError, RecursionError) as e:
            detail = (f"template line {e.lineno}: {e.message}" if isinstance(e, TemplateSyntaxError)
                      else f"{type(e).__name__}: {e}")
            raise ConfigProblem(f"datasets[{i}] ({ds.path}): the chat template '{name}' is not valid Jinja "
                                f"({detail}); fix it or choose another chat_template") from None
        try:
            probes.append(probe_dataset(cfg, ds, tok, encoder))
        except TemplateLimitError as e:
            raise ConfigProblem(str(e)) from None
        except ProbeError as e:
            raise PrepareError(str(e)) from None
    warnings = _token_warnings(tok, template_text) + type_notes(cfg.datasets, cfg.chat_template)
    named = _record_templates(cfg, probes, dataset_templates, template_text, warnings)
    sources = []
    for i, ds in enumerate(cfg.datasets):
        for f in resolve_sources(ds, config_dir):
            sources.append(Source(i, f.path, _display(f.path), file_format(f.path, ds), f.rows))
    if curation is not None:
        curation.sources = [s.display for s in sources]
    # Only when a dataset has a template of its own does the fingerprint list them all.
    fingerprinted = template_text if not named else [template_text, *(t and t[1] for t in dataset_templates)]
    return Setup(cfg, config_dir, tok, template_name, template_text, sources,
                 fingerprint(cfg, tok, fingerprinted, sources, curation.fingerprint() if curation else []), probes,
                 warnings, dataset_templates, named, curation)


def _chat_templates(cfg: Config, tok: TokenizerInfo, config_dir: Path
                    ) -> tuple[str | None, str | None, list[tuple[str, str] | None]]:
    """(default template name, its text, each dataset's (name, text)). The default is the top-level
    chat_template, the one the saved tokenizer serves with; when it cannot be had (a tokenizer without a
    template) but every chat dataset names its own, the first dataset's."""
    try:
        top: tuple[str, str] | None = resolve_template(cfg.chat_template, cfg.chat_template_jinja, tok.chat_template,
                                                       config_dir)
        top_error = None
        # default_system_message edits the text trained with and saved (Axolotl edits only the saved one).
        top = (top[0], with_default_system(cfg.chat_template, top[1], cfg.default_system_message))
    except TemplateNotFound as e:
        top, top_error = None, e
    per: list[tuple[str, str] | None] = []
    for i, ds in enumerate(cfg.datasets):
        if ds.type != "chat_template":
            per.append(None)
        elif ds.chat_template is None:
            if top is None:
                raise ConfigProblem(str(top_error))
            per.append(top)
        else:
            try:
                per.append(resolve_template(ds.chat_template, ds.chat_template_jinja, tok.chat_template, config_dir))
            except TemplateNotFound as e:
                raise ConfigProblem(f"datasets[{i}] ({ds.path}): {e}") from None
    default = top or next(t for t in per if t is not None)
    return default[0], default[1], per


def _record_templates(cfg: Config, probes: list[dict[str, Any]], per: list[tuple[str, str] | None],
                      default: str | None, warnings: list[str]) -> dict[str, str]:
    """Each chat dataset's template in its probe record (name, sha256, where the saved tokenizer has it);
    returns the templates saved next to the default, by name (tokenizer/additional_chat_templates/)."""
    named: dict[str, str] = {}
    for i, (probe, t) in enumerate(zip(probes, per, strict=True)):
        if t is None:
            continue
        probe["template_sha256"] = hashlib.sha256(t[1].encode()).hexdigest()
        if t[1] == default:
            probe["saved_as"] = "chat_template.jinja"
            continue
        name = next((n for n, text in named.items() if text == t[1]), None)
        if name is None:
            plain = re.fullmatch(r"[A-Za-z0-9_.-]+", t[0]) and t[0] not in (".", "..", "default")
            name = t[0] if plain and t[0] not in named else f"datasets_{i}"
            named[name] = t[1]
        probe["saved_as"] = f"additional_chat_templates/{name}.jinja"
        warnings.append(f"datasets[{i}] ({cfg.datasets[i].path}) is rendered with chat template '{t[0]}', not the "
                        f"default one the saved tokenizer serves with; it is saved as tokenizer/"
                        f"additional_chat_templates/{name}.jinja (apply_chat_template(..., chat_template='{name}'))")
    return named


def _token_warnings(tok: TokenizerInfo, template_text: str | None) -> list[str]:
    """special_tokens overrides that change what a chat template writes, or that create untrained tokens; a
    vocabulary converted from tokenizer.model."""
    warnings = list(tok.notes)
    for key, (was, now, added) in tok.overrides.items():
        token_id = tok.tokenizer.token_to_id(now)
        if template_text is not None and re.search(rf"\b{key}\b", template_text):
            warnings.append(f"special_tokens.{key}: the chat template writes {key}, which is now {now!r} (id "
                            f"{token_id}) instead of the tokenizer's {was or 'none'!r}: every rendered sample changes")
        if added:
            warnings.append(f"special_tokens.{key}: {now!r} is not in the vocabulary; it was added as id {token_id}, "
                            "whose embedding is untrained (the trainer must resize the embeddings)")
    return warnings


def fingerprint(cfg: Config, tok: TokenizerInfo, template_text: str | list[str | None] | None,
                sources: list[Source], eval_files: list[str] | None = None) -> str:
    """Everything that affects the output bytes: data config, file contents, tokenizer, template, and the
    pipeline's own code (so that a changed Tessera never reuses output of the old one)."""
    h = hashlib.sha256()
    data_cfg = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in _NOT_DATA}
    h.update(json.dumps({"format_version": FORMAT_VERSION, "tessera": dataprep.__version__, "code": _code_hash(),
                         "config": data_cfg, "tokenizer": tok.files, "template": template_text},
                        sort_keys=True).encode())
    for s in sources:
        rows = "" if s.rows is None else f":{s.rows[0]}-{s.rows[1]}"
        h.update(f"\n{s.dataset_index}:{s.display}{rows}:{sha256_file(s.path)}".encode())
    for sha in eval_files or []:  # decontaminate: a changed eval file re-prepares
        h.update(f"\neval:{sha}".encode())
    return h.hexdigest()


def _code_hash() -> str:
    h = hashlib.sha256()
    for package in (Path(dataprep.__file__).parent, Path(SAMPLES_SCHEMA_FILE).parent):
        for path in sorted(package.rglob("*")):
            if path.suffix in (".py", ".jinja") and "__pycache__" not in path.parts:
                h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def run_pipeline(cfg: Config, config_path: Path, out: Path, workers: int = 1, force: bool = False,
                 progress: Progress | None = None, verify: bool = False, wait: bool = True,
                 wait_log: Callable[[str], None] | None = None) -> Result:
    """Output handling (refusals, lock, cache, atomic swap) is outdir.py's and outdir_commit.py's: see
    outdir.py's docstring."""
    progress = progress or Progress()
    timer = StageTimer(progress.stage_done)
    with timer("setup"):
        st = setup(cfg, config_path)
    outdir.check_location(out, config_path, [s.path for s in st.sources])
    notes: list[str] = []
    try:
        with outdir_commit.claim(out, notes, wait=wait, log=wait_log) as claim:
            if not force and (cached := outdir.reusable(out, st.fingerprint, verify, notes)) is not None:
                return Result(out, cached, cached=True, notes=notes)
            tmp = claim.new_tmp()
            (tmp / "shards").mkdir()
            (tmp / "_work").mkdir()
            manifest = _build(st, tmp, workers, progress, timer)
            claim.publish()
            return Result(out, manifest, cached=False, notes=notes)
    except (OSError, pl.exceptions.PolarsError) as e:
        if (full := outdir_commit.disk_full(e, out)) is not None:
            raise full from None
        raise


def _build(st: Setup, tmp: Path, workers: int, progress: Progress, timer: StageTimer) -> dict[str, Any]:
    with timer("rows") as stage, progress.bar("rows", total=None) as bar:
        table = read_rows(st, tmp / "_work", workers, bar)
        stage.rows = len(table)
    with large_arrays_mapped():
        counts, records, shards, longest = _stages_and_write(st, tmp, table, progress, timer)
    del table  # release the memmaps before the work folder is deleted
    shutil.rmtree(tmp / "_work")
    saved = save_tokenizer(st.tok, tmp / "tokenizer", st.template_text, st.named_templates)
    manifest = build_manifest(st, counts, records, shards, longest, timer, saved)
    # Written last: its presence means the directory is complete.
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def _stages_and_write(st: Setup, tmp: Path, table: SampleTable, progress: Progress, timer: StageTimer
                      ) -> tuple[dict[str, Any], list[dict[str, Any]], list[ShardInfo], int]:
    """The stages, the shards and the tables; returns the accounting, the stage records, the shards and the
    longest sample."""
    cfg, work = st.cfg, tmp / "_work"
    datasets = [ds.path for ds in cfg.datasets]
    _check_rows(cfg, outputs.counts(table, datasets), work / "quarantine.arrow")
    try:
        records, layout, removed = run_stages(table, cfg, timer, curation=st.curation)
    except (SplitError, FilterError) as e:  # FilterError: a field no row has, a filter failing on the data
        raise ConfigProblem(str(e)) from None
    assert layout is not None  # pack always runs
    if not (table.columns["status"] == KEPT).any():
        # No summary is printed for a failed run, so the message itself says what each stage removed.
        removed_by = [f"{r['name']} removed {r['rows_in'] - r['rows_out']} ("
                      + ", ".join(f"{k} {v}" for k, v in sorted(r["rejected_by_reason"].items())) + ")"
                      for r in records if r["rows_in"] > r["rows_out"]]
        raise PrepareError(f"no row was kept after the stages: {'; '.join(removed_by) or 'none removed any'}; "
                           "nothing to train on")
    table.release()  # the last stage's pages and temporaries (each stage's view released the previous ones)
    # The layout goes to disk (placed.py): the shard writer and the tables read it a block at a time.
    placed = Placed.save(work / "placed", layout)
    del layout
    trim_heap()
    spill = SpillReader(work / "ids.bin", work / "labels.bin")
    shards: list[ShardInfo] = []
    with timer("write") as stage, progress.bar("write", total=len(placed.splits)) as bar, outputs.system_pool():
        try:
            for split in placed.splits:
                shards += write_split(tmp / "shards", split, placed, spill, len(shards))
                bar.advance(1)
        finally:
            placed.close()
        placed.shard_names = [s.file for s in shards]
        table.release()
        formats = [ds.format for ds in cfg.datasets]
        sources = [s.display for s in st.sources]
        outputs.write_samples(tmp / "samples.parquet", table, placed, removed, datasets, formats, sources)
        outputs.write_duplicates(tmp / "duplicates.parquet", table, placed, removed)
        outputs.write_quarantine(tmp / "quarantine.parquet", work / "quarantine.arrow", table, placed, removed,
                                 datasets, sources)
        stage.rows = sum(s.rows for s in shards)
    counts = outputs.counts(table, datasets)
    counts["samples"] = placed.originals
    add_mixing(counts, table, datasets, placed.pieces - placed.originals)
    counts["chunked_rows"] = placed.chunked_rows
    return counts, records, shards, placed.longest


def _check_rows(cfg: Config, counts: dict[str, Any], quarantine_file: Path) -> None:
    """After the row pass: too much quarantined (a field mapping that does not match the data), or nothing kept."""
    acc = counts["accounting"]
    share = acc["quarantined"] / max(acc["input_rows"], 1)
    if share > cfg.quarantine_max_fraction:
        with pa.OSFile(str(quarantine_file)) as f:
            source = ipc.open_file(f)
            examples = [r for g in range(min(source.num_record_batches, 3)) for r in source.get_batch(g).to_pylist()]
        lines = [f"  {r['source_file']}:{r['source_row']} {r['reason']}: {r['message']}" for r in examples[:3]]
        by_reason = sorted(counts["by_reason"].items(), key=lambda kv: -kv[1])
        reasons = ", ".join(f"{k} {v}" for k, v in by_reason if k in {x.value for x in Reason})
        raise PrepareError(
            f"{acc['quarantined']} of {acc['input_rows']} rows ({share:.0%}) were quarantined, more than "
            f"quarantine_max_fraction ({cfg.quarantine_max_fraction:.0%}). Reasons: {reasons}. First rows:\n"
            + "\n".join(lines) + "\nThis is usually a field mapping that does not match the data (field_messages, "
            "message_field_role, type, ...). Fix the config, or raise quarantine_max_fraction if the data is dirty.")
    if acc["input_rows"] == 0:
        paths = ", ".join(ds.path for ds in cfg.datasets)
        raise PrepareError(f"no rows to prepare: the files of {paths} hold no rows (empty, only blank lines, or a "
                           "`split` slice that selects none); check each dataset's `path` and `split`")
    if acc["kept"] == 0:
        # The summary table is printed only for a finished run: the counts go in the message.
        by_reason = sorted(counts["by_reason"].items(), key=lambda kv: -kv[1])
        hint = " (raise sequence_len, or set excess_length_strategy: truncate)" if "too_long" in counts["by_reason"] \
            else ""
        raise PrepareError(f"no row was kept: of {acc['input_rows']} rows {acc['quarantined']} were quarantined, "
                           f"{acc['dropped']} dropped and {acc['duplicates']} duplicates; reasons: "
                           f"{', '.join(f'{k} {v}' for k, v in by_reason)}{hint}; nothing to train on")


def _display(path: Path) -> str:
    shown = str(path.resolve())
    with contextlib.suppress(ValueError):
        shown = str(path.resolve().relative_to(Path.cwd().resolve()))
    # A file name that is not UTF-8 (kept by Python as surrogates) is shown with \x escapes: Parquet, JSON and
    # the terminal need text.
    return os.fsencode(shown).decode("utf-8", errors="backslashreplace")

