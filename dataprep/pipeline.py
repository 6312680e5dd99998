"""run_pipeline(cfg): config -> a prepared directory, top to bottom.

    setup      tokenizer, chat template, probes (probes.py), input files, fingerprint: every error here
               happens before any row is read
    cache      same fingerprint as the existing output -> reuse it
    rows       read -> parse -> format -> render -> tokenize -> length, in batches (worker processes)
    dedup      exact, on normalised content, across datasets, in input order (first occurrence is kept)
    split      val_set_size, by hash(seed, sample_id)
    pack       best-fit decreasing (sample_packing) or one sample per row
    write      shards, samples/quarantine/duplicates tables, tokenizer/ (with the template used),
               manifest.json last, then one rename

Everything is written under a temporary folder that becomes a version DIR points at in one rename (outdir.py),
so a crashed run never leaves a directory that looks complete, nor loses the previous one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing as mp
import os
import re
import shutil
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from jinja2 import TemplateError, TemplateSyntaxError

import dataprep
from dataprep import outdir
from dataprep.chunks import Stream, split_row, stream_rows
from dataprep.encode import TokenizerInfo, save_tokenizer
from dataprep.formats import type_notes
from dataprep.hf_folders import resolve_sources, select_rows
from dataprep.load import LINE_LIMIT_FLOOR, RawRow, file_format, line_limit, read_batches
from dataprep.pack import choose_validation, one_per_row, pack_best_fit
from dataprep.probes import ProbeError, TemplateLimitError, probe_dataset
from dataprep.render import TemplateNotFound, resolve_template
from dataprep.report import Progress, StageTimer
from dataprep.shards import Placement, ShardInfo, TokenSpill, sha256_file, write_split
from dataprep.transform import (
    CHUNK_TEXT_FACTOR,
    RowProcessor,
    RowResult,
    chat_encoder_for,
    init_worker,
    process_in_worker,
    text_limit,
    tokenizer_for,
)
from schemas.config import TRAINER_KEYS, Config
from schemas.reasons import Reason, Status
from schemas.shard import DUPLICATES_SCHEMA, FORMAT_VERSION, QUARANTINE_SCHEMA, SAMPLES_SCHEMA
from schemas.shard import __file__ as SAMPLES_SCHEMA_FILE

BATCH_SIZE = 512
# Config keys that do not change the prepared bytes: left out of the fingerprint. Trainer keys are listed next to
# their fields in schemas/config.py; the tokenizer's files are hashed themselves, so its folder name is not data.
_NOT_DATA = {"dataset_prepared_path", "dataset_processes", "base_model_config", "model_type", "tokenizer_type",
             "trust_remote_code", "base_model", "tokenizer_config"} | TRAINER_KEYS


class PrepareError(Exception):
    """The run cannot produce trustworthy output (unreadable input, too much quarantined, ...)."""

    exit_code = 1


class ConfigProblem(PrepareError):
    """A config that validates but cannot work, found during setup or split (e.g. a template that hits its
    limits, a validation split that leaves nothing to train on): exit 2, like an invalid config."""

    exit_code = 2


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

    def template_for(self, dataset_index: int) -> str | None:
        """The chat template text datasets[dataset_index] is rendered with (None: not a chat dataset)."""
        t = self.dataset_templates[dataset_index] if self.dataset_templates else None
        return t[1] if t is not None else None


@dataclass
class Counts:
    rows_in: int = 0
    kept: int = 0
    quarantined: int = 0
    duplicates: int = 0
    dropped: int = 0
    truncated: int = 0
    samples: int = 0  # kept samples: kept rows, with a chunked row counted once per chunk
    chunked: int = 0  # kept rows split into several samples (completion, pretrain)
    by_reason: Counter[str] = field(default_factory=Counter)
    per_dataset: dict[str, Counter[str]] = field(default_factory=dict)


@dataclass
class Result:
    out: Path
    manifest: dict[str, Any]
    cached: bool
    notes: list[str] = field(default_factory=list)  # why a cache was not reused, what was cleaned up


def setup(cfg: Config, config_path: Path) -> Setup:
    config_dir = config_path.resolve().parent
    if not cfg.datasets:
        raise PrepareError(f"{config_path}: `datasets` is empty: nothing to prepare")
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
    # Only when a dataset has a template of its own does the fingerprint list them all.
    fingerprinted = template_text if not named else [template_text, *(t and t[1] for t in dataset_templates)]
    return Setup(cfg, config_dir, tok, template_name, template_text, sources,
                 fingerprint(cfg, tok, fingerprinted, sources), probes, warnings, dataset_templates, named)


def _chat_templates(cfg: Config, tok: TokenizerInfo, config_dir: Path
                    ) -> tuple[str | None, str | None, list[tuple[str, str] | None]]:
    """(default template name, its text, each dataset's (name, text)). The default is the top-level
    chat_template, the one the saved tokenizer serves with; when it cannot be had (a tokenizer without a
    template) but every chat dataset names its own, the first dataset's."""
    try:
        top: tuple[str, str] | None = resolve_template(cfg.chat_template, cfg.chat_template_jinja, tok.chat_template,
                                                       config_dir)
        top_error = None
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
                sources: list[Source]) -> str:
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
    """Output handling (refusals, lock, cache, atomic swap) is outdir.py's: see its docstring."""
    progress = progress or Progress()
    timer = StageTimer(progress.stage_done)
    with timer("setup"):
        st = setup(cfg, config_path)
    outdir.check_location(out, config_path, [s.path for s in st.sources])
    notes: list[str] = []
    try:
        with outdir.claim(out, notes, wait=wait, log=wait_log) as claim:
            if not force and (cached := outdir.reusable(out, st.fingerprint, verify, notes)) is not None:
                return Result(out, cached, cached=True, notes=notes)
            tmp = claim.new_tmp()
            (tmp / "shards").mkdir()
            (tmp / "_work").mkdir()
            manifest = _build(st, tmp, workers, progress, timer)
            claim.publish()
            return Result(out, manifest, cached=False, notes=notes)
    except (OSError, pl.exceptions.PolarsError) as e:
        if (full := outdir.disk_full(e, out)) is not None:
            raise full from None
        raise


def _build(st: Setup, tmp: Path, workers: int, progress: Progress, timer: StageTimer) -> dict[str, Any]:
    cfg = st.cfg
    counts = Counts()
    spill = TokenSpill(tmp / "_work")
    seen: dict[str, int] = {}  # content hash -> sample_id of the kept row
    samples_w = pq.ParquetWriter(tmp / "_work" / "samples.parquet", SAMPLES_SCHEMA)
    quarantine_w = pq.ParquetWriter(tmp / "quarantine.parquet", QUARANTINE_SCHEMA)
    duplicates_w = pq.ParquetWriter(tmp / "duplicates.parquet", DUPLICATES_SCHEMA)
    next_id = 0
    stream = Stream(cfg.sequence_len)  # pretrain rows: one stream of documents, cut into sequence_len rows
    chunk_of: dict[int, int] = {}  # sample_id of a completion chunk after the first -> the first chunk's
    with timer("rows") as stage, progress.bar("rows", total=None) as bar:
        for source, batch, results in _processed(st, workers, bar):
            ds = cfg.datasets[source.dataset_index]
            sample_rows, quarantine_rows, dup_rows = [], [], []
            for raw, r in zip(batch, results, strict=True):
                sid = next_id
                next_id += 1
                dup_of = None
                if r.status is Status.kept and cfg.dataset_exact_deduplication:
                    assert r.content_hash is not None
                    dup_of = seen.get(r.content_hash)
                    if dup_of is None:
                        seen[r.content_hash] = sid
                    else:
                        r.status, r.reason = Status.duplicate, Reason.duplicate
                        dup_rows.append({"sample_id": sid, "kept_sample_id": dup_of, "content_hash": r.content_hash})
                pieces: list[tuple[int, int]] | None = None
                if r.status is Status.kept:
                    assert r.input_ids is not None and r.labels is not None
                    pieces = stream.cut(len(r.input_ids)) if ds.type == "pretrain" else r.chunks
                    if pieces is not None and len(pieces) == 1:
                        pieces = None
                    if pieces is None:
                        spill.add(sid, r.input_ids, r.labels)
                        counts.samples += 1
                        if ds.type == "pretrain":
                            stream.sample_ids.append(sid)
                elif r.status is Status.quarantined:
                    quarantine_rows.append({"sample_id": sid, "dataset": ds.path, "source_file": source.display,
                                            "source_row": raw.source_row, "reason": str(r.reason),
                                            "field": r.field, "message": r.message, "original": r.original})
                if r.reason is Reason.too_long and cfg.excess_length_strategy == "raise":
                    raise PrepareError(f"{source.display}:{raw.source_row}: {r.message} (excess_length_strategy: "
                                       "raise); raise sequence_len, shorten or remove the row, or set "
                                       "excess_length_strategy to drop or truncate")
                _count(counts, ds.path, r)
                if pieces is None:
                    sample_rows.append(_sample_row(sid, source, ds.path, ds.format, raw, r, dup_of))
                    continue
                counts.chunked += 1
                for k, (chunk_ids, chunk_labels, chunk_row) in enumerate(split_row(
                        r.input_ids, r.labels, pieces, _sample_row(sid, source, ds.path, ds.format, raw, r, None))):
                    spill.add(sid + k, chunk_ids, chunk_labels)
                    sample_rows.append({**chunk_row, "sample_id": sid + k})
                counts.samples += len(pieces)
                next_id = sid + len(pieces)
                if ds.type == "pretrain":
                    stream.sample_ids.extend(range(sid, next_id))
                else:
                    chunk_of.update((i, sid) for i in range(sid + 1, next_id))
            samples_w.write_table(pa.Table.from_pylist(sample_rows, SAMPLES_SCHEMA))
            if quarantine_rows:
                quarantine_w.write_table(pa.Table.from_pylist(quarantine_rows, QUARANTINE_SCHEMA))
            if dup_rows:
                duplicates_w.write_table(pa.Table.from_pylist(dup_rows, DUPLICATES_SCHEMA))
        stage.rows = counts.rows_in
    for w in (samples_w, quarantine_w, duplicates_w):
        w.close()
    _check_quarantine_share(cfg, counts, tmp / "quarantine.parquet")
    if counts.kept == 0:
        raise PrepareError("no row was kept: see the summary above and quarantine reasons; nothing to train on")

    with timer("split+pack") as stage:
        sample_ids, offsets, ids, labels = spill.finish()
        lengths = np.diff(offsets)
        in_stream = np.isin(sample_ids, np.asarray(stream.sample_ids, dtype=np.int64))
        is_val = np.zeros(len(sample_ids), dtype=bool)  # pretrain documents are all train, as in Axolotl
        # The split is chosen per input row: a chunked row's chunks go together (no train/val leak).
        if chunk_of:
            rows_of, row = np.unique([chunk_of.get(i, i) for i in sample_ids[~in_stream].tolist()],
                                     return_inverse=True)
            is_val[~in_stream] = choose_validation(rows_of.astype(np.int64), cfg.val_set_size, cfg.seed)[row]
        else:
            is_val[~in_stream] = choose_validation(sample_ids[~in_stream], cfg.val_set_size, cfg.seed)
        if len(sample_ids) and is_val.all():
            raise ConfigProblem(f"val_set_size {cfg.val_set_size:g} puts all {len(sample_ids):,} kept samples in "
                                "the validation split and none in train; lower val_set_size (a fraction < 1, or "
                                f"a count below {len(sample_ids):,})")
        placement = Placement.empty(len(sample_ids))
        layouts = {}
        for split, mask in (("train", ~is_val), ("val", is_val)):
            idx = np.flatnonzero(mask & ~in_stream)
            rows = [] if len(idx) == 0 else (pack_best_fit(lengths[idx], sample_ids[idx], cfg.sequence_len)
                                              if cfg.sample_packing else one_per_row(sample_ids[idx]))
            layout = [[int(idx[i]) for i in row] for row in rows]
            layout += stream_rows(np.flatnonzero(mask & in_stream), lengths, cfg.sequence_len)
            if layout:
                layouts[split] = layout
        stage.rows = len(sample_ids)
    shards: list[ShardInfo] = []
    with timer("write") as stage, progress.bar("write", total=len(layouts)) as bar:
        for split, rows in layouts.items():
            shards += write_split(tmp / "shards", split, rows, sample_ids, offsets, ids, labels, placement)
            bar.advance(1)
        _finish_samples(tmp, sample_ids, is_val, placement)
        stage.rows = sum(s.rows for s in shards)
    del ids, labels  # release the memmaps before the work folder is deleted
    shutil.rmtree(tmp / "_work")
    saved = save_tokenizer(st.tok, tmp / "tokenizer", st.template_text, st.named_templates)
    manifest = _manifest(st, counts, shards, lengths, timer, saved)
    # Written last: its presence means the directory is complete.
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def _processed(st: Setup, workers: int, bar: Any) -> Iterator[tuple[Source, list[RawRow], list[RowResult]]]:
    max_line = line_limit(text_limit(st.tok, st.cfg.sequence_len))
    # completion / pretrain rows may be many sequences long (they are split, not dropped): transform.py
    chunked_line = line_limit(text_limit(st.tok, st.cfg.sequence_len) * CHUNK_TEXT_FACTOR)

    def jobs() -> Iterator[tuple[Source, list[RawRow]]]:
        for source in st.sources:
            chunked = st.cfg.datasets[source.dataset_index].type in ("completion", "pretrain")
            for batch in source.batches(BATCH_SIZE, chunked_line if chunked else max_line):
                yield source, batch
                bar.advance(len(batch))

    if workers <= 1:
        # Two batches in flight on threads: one renders (Python, holding the GIL) while the other is inside
        # encode_batch, which releases it. Results are taken in order, so the output is the same.
        processors: dict[int, RowProcessor] = {}
        with ThreadPoolExecutor(2) as pool:
            window: deque[tuple[Source, list[RawRow], Future[list[RowResult]]]] = deque()
            for source, batch in jobs():
                if source.dataset_index not in processors:
                    processors[source.dataset_index] = RowProcessor(st.cfg, source.dataset_index, st.tok,
                                                                    st.template_for(source.dataset_index))
                window.append((source, batch, pool.submit(processors[source.dataset_index].process, batch)))
                if len(window) >= 2:
                    source, batch, future = window.popleft()
                    yield source, batch, future.result()
            while window:
                source, batch, future = window.popleft()
                yield source, batch, future.result()
        return
    # spawn, not fork: the parent's tokenizer may already have started its thread pool. At most two batches
    # per worker are in flight (Pool.imap would read the whole input ahead), and results are taken in order.
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=init_worker,
                  initargs=(st.cfg.model_dump_json(), str(st.config_dir),
                                [st.template_for(i) for i in range(len(st.cfg.datasets))])) as pool:
        window: deque[tuple[Source, list[RawRow], Any]] = deque()
        for source, batch in jobs():
            window.append((source, batch, pool.apply_async(process_in_worker, ((source.dataset_index, batch),))))
            if len(window) >= 2 * workers:
                source, batch, pending = window.popleft()
                yield source, batch, pending.get()
        while window:
            source, batch, pending = window.popleft()
            yield source, batch, pending.get()


def _sample_row(sid: int, source: Source, dataset: str, fmt: str, raw: RawRow, r: RowResult,
                dup_of: int | None) -> dict[str, Any]:
    return {"sample_id": sid, "dataset": dataset, "dataset_index": source.dataset_index, "format": fmt,
            "source_file": source.display, "source_row": raw.source_row, "status": str(r.status),
            "reason": str(r.reason) if r.reason else None, "duplicate_of": dup_of, "content_hash": r.content_hash,
            "num_tokens": r.num_tokens, "num_trainable": r.num_trainable, "chunk": None}


def _count(counts: Counts, dataset: str, r: RowResult) -> None:
    counts.rows_in += 1
    per = counts.per_dataset.setdefault(dataset, Counter())
    per["rows_in"] += 1
    per[str(r.status)] += 1
    if r.status is Status.kept:
        counts.kept += 1
        per["tokens"] += r.num_tokens or 0
        per["trainable"] += r.num_trainable or 0
        if r.reason is Reason.truncated:
            counts.truncated += 1
    elif r.status is Status.quarantined:
        counts.quarantined += 1
    elif r.status is Status.duplicate:
        counts.duplicates += 1
    else:
        counts.dropped += 1
    if r.reason is not None:
        counts.by_reason[str(r.reason)] += 1


def _check_quarantine_share(cfg: Config, counts: Counts, quarantine_file: Path) -> None:
    share = counts.quarantined / max(counts.rows_in, 1)
    if share <= cfg.quarantine_max_fraction:
        return
    examples = pl.read_parquet(quarantine_file).head(3)
    lines = [f"  {r['source_file']}:{r['source_row']} {r['reason']}: {r['message']}"
             for r in examples.iter_rows(named=True)]
    reasons = ", ".join(f"{k} {v}" for k, v in counts.by_reason.most_common() if k in {x.value for x in Reason})
    raise PrepareError(
        f"{counts.quarantined} of {counts.rows_in} rows ({share:.0%}) were quarantined, more than "
        f"quarantine_max_fraction ({cfg.quarantine_max_fraction:.0%}). Reasons: {reasons}. First rows:\n"
        + "\n".join(lines) + "\nThis is usually a field mapping that does not match the data (field_messages, "
        "message_field_role, type, ...). Fix the config, or raise quarantine_max_fraction if the data is dirty.")


def _finish_samples(tmp: Path, sample_ids: np.ndarray, is_val: np.ndarray, placement: Placement) -> None:
    """samples.parquet = the rows' records joined with where each kept sample went (a lazy Polars join)."""
    names = pl.Series("shard_name", [*placement.names, None], dtype=pl.String)
    shard_idx = np.where(placement.shard >= 0, placement.shard, len(placement.names))
    where = pl.DataFrame({
        "sample_id": sample_ids,
        "split_new": np.where(is_val, "val", "train"),
        "shard_new": names.gather(shard_idx),
        "shard_row_new": placement.shard_row,
        "row_offset_new": placement.row_offset,
    })
    (pl.scan_parquet(tmp / "_work" / "samples.parquet")
     .join(where.lazy(), on="sample_id", how="left")
     .with_columns(split=pl.col("split_new"), shard=pl.col("shard_new"), shard_row=pl.col("shard_row_new"),
                   row_offset=pl.col("row_offset_new"))
     .select(SAMPLES_SCHEMA.names)
     .sort("sample_id")
     .sink_parquet(tmp / "samples.parquet"))


def _manifest(st: Setup, counts: Counts, shards: list[ShardInfo], lengths: np.ndarray,
              timer: StageTimer, saved_tokenizer: dict[str, str]) -> dict[str, Any]:
    cfg = st.cfg
    total_tokens = sum(s.tokens for s in shards)
    trainable = sum(s.trainable for s in shards)
    rows = sum(s.rows for s in shards)
    return {
        "tessera_version": dataprep.__version__,
        "format_version": FORMAT_VERSION,
        "fingerprint": st.fingerprint,
        "config": cfg.model_dump(mode="json"),
        "tokenizer": {"path": str(st.tok.path), "files": st.tok.files, "vocab_size": st.tok.vocab_size,
                      "bos_token": st.tok.variables.get("bos_token"), "eos_token": st.tok.eos_text,
                      "adds_bos": st.tok.adds_bos, "saved": saved_tokenizer},
        "chat_template": None if st.template_text is None else {
            "name": st.template_name, "sha256": hashlib.sha256(st.template_text.encode()).hexdigest(),
            "text": st.template_text, "date": cfg.chat_template_date},
        "probes": st.probes,
        "warnings": st.warnings,
        "sources": [{"dataset": cfg.datasets[s.dataset_index].path, "file": s.display, "format": s.fmt,
                     "sha256": sha256_file(s.path), **({"rows": list(s.rows)} if s.rows else {})}
                    for s in st.sources],
        "shards": [asdict(s) for s in shards],
        "accounting": {"input_rows": counts.rows_in, "kept": counts.kept, "quarantined": counts.quarantined,
                       "duplicates": counts.duplicates, "dropped": counts.dropped,
                       "balanced": counts.rows_in == counts.kept + counts.quarantined + counts.duplicates
                       + counts.dropped},
        "stats": {
            "by_reason": dict(sorted(counts.by_reason.items())),
            "per_dataset": {k: dict(sorted(v.items())) for k, v in counts.per_dataset.items()},
            "truncated": counts.truncated,
            "samples": counts.samples,
            "chunked_rows": counts.chunked,
            "tokens": total_tokens,
            "trainable_tokens": trainable,
            "trainable_share": trainable / total_tokens if total_tokens else 0.0,
            "rows": rows,
            "rows_by_split": {sp: sum(s.rows for s in shards if s.split == sp) for sp in ("train", "val")},
            "sequence_len": cfg.sequence_len,
            "sample_packing": cfg.sample_packing,
            "packing_efficiency": total_tokens / (rows * cfg.sequence_len) if rows else 0.0,
            "longest_sample": int(lengths.max()) if len(lengths) else 0,
            "seconds": timer.seconds(),
        },
    }


def _display(path: Path) -> str:
    shown = str(path.resolve())
    with contextlib.suppress(ValueError):
        shown = str(path.resolve().relative_to(Path.cwd().resolve()))
    # A file name that is not UTF-8 (kept by Python as surrogates) is shown with \x escapes: Parquet, JSON and
    # the terminal need text.
    return os.fsencode(shown).decode("utf-8", errors="backslashreplace")

