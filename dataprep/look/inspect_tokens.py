"""`tessera inspect DIR`: the tokens of a packed row, or of one sample, as the model sees them.

    tessera inspect prepared/demo                          # row 0 of the first shard
    tessera inspect prepared/demo --row 3 --shard val-00000
    tessera inspect prepared/demo --sample 40
    tessera inspect prepared/demo --source examples/data/alpaca.jsonl:40
    tessera inspect prepared/demo --sample 40 --plain      # no colors, for logs (also when piped)

Each packed sample gets a header line (sample id, source, its positions in the row), then two views:

Control characters in the data (ESC, CSI, OSC, BEL, CR, C1, bidi controls) are shown as \\xNN / \\uNNNN in both
views, colored or plain, so a sample cannot drive the terminal.

    text   the decoded text: trained tokens green (⟦in brackets⟧ with --plain), masked ones dim, special
           tokens bold; ↵ marks a newline
    pairs  every token as text(label, id), like Axolotl's `preprocess --debug`; label -100 = masked, and a
           label that is neither -100 nor the token itself is flagged; whitespace is visible: ␣ space,
           ↵ newline, ⇥ tab

`--source FILE:ROW` uses the same 0-based ROW as samples.parquet and quarantine messages (blank JSONL lines
are not counted).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc

from dataprep.look.near_dedup_report import cluster_note
from dataprep.look.prepared import QueryError, open_dir, read_manifest, tokenizer_file
from dataprep.look.vocab import Vocab
from dataprep.report import escape_controls
from dataprep.shards import ShardPathError, shard_path
from schemas.shard import IGNORE_INDEX

OPEN, CLOSE = "⟦", "⟧"  # trained text in plain mode
VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}

# (text, style) pieces: rich styles in color mode, ignored in plain mode.
Piece = tuple[str, str | None]


class InspectError(Exception):
    pass


@dataclass
class Segment:
    """One sample inside a packed row: tokens [start, stop) of the row."""

    sample_id: int
    start: int
    stop: int
    ids: np.ndarray
    labels: np.ndarray
    position_ids: np.ndarray
    source: dict[str, Any]  # its samples.parquet record


@dataclass
class PackedRow:
    shard: str
    split: str
    row: int
    segments: list[Segment]
    num_tokens: int
    num_trainable: int


def read_row(prepared: Path, shard: str, row: int) -> PackedRow:
    manifest = read_manifest(prepared)
    info = next(s for s in manifest["shards"] if s["file"] == shard)
    try:
        path = shard_path(prepared, shard)
    except ShardPathError as e:
        raise InspectError(str(e)) from None
    table = ipc.open_file(pa.memory_map(str(path))).read_all()
    if not 0 <= row < table.num_rows:
        raise InspectError(f"{shard} has rows 0-{table.num_rows - 1}; there is no row {row}")

    def values(column: str) -> np.ndarray:
        return np.asarray(table.column(column)[row].values.to_numpy(zero_copy_only=False))

    ids, labels, positions = values("input_ids"), values("labels"), values("position_ids")
    cu, sample_ids = values("cu_seqlens"), values("sample_ids")
    records = {r["sample_id"]: r for r in pl.scan_parquet(prepared / "samples.parquet")
               .filter(pl.col("sample_id").is_in(sample_ids.tolist())).collect().iter_rows(named=True)}
    segments = [Segment(int(sid), int(cu[k]), int(cu[k + 1]), ids[cu[k]:cu[k + 1]], labels[cu[k]:cu[k + 1]],
                        positions[cu[k]:cu[k + 1]], records.get(int(sid), {}))
                for k, sid in enumerate(sample_ids)]
    return PackedRow(shard, info["split"], row, segments, len(ids), int((labels != IGNORE_INDEX).sum()))


def resolve_shard(manifest: dict[str, Any], name: str | None) -> str:
    files = [s["file"] for s in manifest["shards"]]
    if not files:
        raise InspectError("the directory has no shards")
    if name is None:
        return files[0]
    for f in files:
        if name in (f, Path(f).name, Path(f).stem):
            return f
    raise InspectError(f"no shard {name!r}; shards: {', '.join(files)}")


def find_sample(prepared: Path, sample_id: int) -> dict[str, Any]:
    """The samples.parquet record of a kept sample; a non-kept one raises with what happened to it."""
    found = pl.scan_parquet(prepared / "samples.parquet").filter(pl.col("sample_id") == sample_id).collect()
    if found.is_empty():
        last = pl.scan_parquet(prepared / "samples.parquet").select(pl.len()).collect().item() - 1
        raise InspectError(f"no sample {sample_id}; sample ids are 0-{last}")
    rec: dict[str, Any] = found.row(0, named=True)
    where = f"{rec['source_file']}:{rec['source_row']}"
    if rec["status"] == "duplicate" and (note := cluster_note(prepared, sample_id)) is not None:
        raise InspectError(f"{note} ({where}); it was not packed: see --sample {rec['duplicate_of']}")
    if rec["status"] == "duplicate":
        raise InspectError(f"sample {sample_id} ({where}) is a duplicate of sample {rec['duplicate_of']} and was "
                           f"not packed; its tokens are those of --sample {rec['duplicate_of']}")
    if rec["status"] == "quarantined":
        q = (pl.scan_parquet(prepared / "quarantine.parquet").filter(pl.col("sample_id") == sample_id)
             .collect().row(0, named=True))
        raise InspectError(f"sample {sample_id} ({where}) was quarantined ({q['reason']}): {q['message']}\n"
                           f"original: {q['original'][:300]}")
    if rec["status"] != "kept":
        tokens = f", {rec['num_tokens']} tokens" if rec["num_tokens"] is not None else ""
        raise InspectError(f"sample {sample_id} ({where}) was {rec['status']} ({rec['reason']}{tokens}) "
                           "and has no tokens in the shards")
    return rec


def find_source(prepared: Path, spec: str) -> int:
    """FILE:ROW -> sample_id. FILE as written in samples.parquet, or any path to the same file."""
    file, sep, row_text = spec.rpartition(":")
    if not sep or not row_text.isdigit():
        raise InspectError(f"--source {spec!r}: expected FILE:ROW, e.g. examples/data/alpaca.jsonl:40 (ROW is "
                           "0-based, as in samples.parquet and quarantine messages)")
    rows = (pl.scan_parquet(prepared / "samples.parquet").filter(pl.col("source_row") == int(row_text))
            .select("sample_id", "source_file").collect())
    target = Path(file).resolve()
    matches = [r for r in rows.iter_rows(named=True)
               if r["source_file"] == file or Path(r["source_file"]).resolve() == target
               or r["source_file"].endswith("/" + file.lstrip("./"))]
    files = sorted({r["source_file"] for r in matches})
    if len(files) > 1:
        raise InspectError(f"--source {spec!r} matches several files: {', '.join(files)}; give more of the path")
    if not matches:
        known = pl.scan_parquet(prepared / "samples.parquet").select("source_file").unique().collect()
        raise InspectError(f"--source {spec!r}: no such row; source files: "
                           f"{', '.join(sorted(known['source_file'].to_list()))}")
    return int(matches[0]["sample_id"])


# ------------------------------------------------------------------------------------------------------------
# rendering


def visible(text: str) -> str:
    """Whitespace and control characters made visible, for one token in the pairs view."""
    return escape_controls("".join(VISIBLE.get(ch, ch) for ch in text))


def token_text(vocab: Vocab, token_id: int) -> str:
    """A token's text; bytes that are only part of a UTF-8 character are shown as \\xNN."""
    raw = vocab.bytes(token_id)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(f"\\x{b:02x}" for b in raw)


def text_view(seg: Segment, vocab: Vocab, plain: bool) -> list[Piece]:
    """The sample's text, decoded in runs of tokens with the same trained flag (so a character split across
    two tokens of a run comes out whole); special tokens are runs of their own. In plain mode each stretch
    of trained text, special tokens included, is put in brackets."""
    runs: list[tuple[list[int], bool, bool]] = []  # (token ids, trained, special)
    for token_id, label in zip(seg.ids.tolist(), seg.labels.tolist(), strict=True):
        trained, special = label != IGNORE_INDEX, vocab.special(token_id)
        if runs and not special and not runs[-1][2] and runs[-1][1] == trained:
            runs[-1][0].append(token_id)
        else:
            runs.append(([token_id], trained, special))
    pieces: list[Piece] = []
    in_trained = False
    for ids, trained, special in runs:
        # A character split between a masked and a trained run cannot be shown whole: its bytes are, as \xNN.
        text = b"".join(vocab.bytes(t) for t in ids).decode("utf-8", errors="backslashreplace")
        # Sample text is data: ESC, CSI, OSC, BEL, CR, C1 and bidi controls are shown escaped, never sent to the
        # terminal (colored or --plain).
        text = escape_controls(text, keep_newlines=True).replace("\n", "↵\n")
        if plain and trained != in_trained:
            pieces.append((OPEN if trained else CLOSE, None))
            in_trained = trained
        style = ("bold green" if trained else "bold magenta") if special else "green" if trained else "dim"
        pieces.append((text, style))
    if plain and in_trained:
        pieces.append((CLOSE, None))
    # A sample that ends with a newline would otherwise leave a blank line before the pairs.
    if pieces and pieces[-1][0].endswith("\n"):
        pieces[-1] = (pieces[-1][0][:-1], pieces[-1][1])
    return pieces


def pairs_view(seg: Segment, vocab: Vocab) -> list[Piece]:
    pieces: list[Piece] = []
    for i, (token_id, label) in enumerate(zip(seg.ids.tolist(), seg.labels.tolist(), strict=True)):
        if i:
            pieces.append((" ", None))
        trained = label != IGNORE_INDEX
        wrong = trained and label != token_id  # labels are aligned with input_ids: anything else is a bug
        style = "bold red" if wrong else "bold green" if trained and vocab.special(token_id) else \
            "green" if trained else "bold magenta" if vocab.special(token_id) else "dim"
        pieces.append((visible(token_text(vocab, token_id)), style))
        pieces.append((f"({label}, {token_id})" + (" ≠" if wrong else ""), style))
    return pieces


def segment_header(seg: Segment, k: int, n: int) -> str:
    src = seg.source
    where = (escape_controls(f"{src.get('dataset')} · {src.get('source_file')}:{src.get('source_row')}") if src
             else "not in samples")
    if src and src.get("repeat_of") is not None:  # a copy made by datasets[].weight > 1
        where += f" · copy of sample {src['repeat_of']}"
    trained = int((seg.labels != IGNORE_INDEX).sum())
    return (f"── sample {seg.sample_id} ({k + 1} of {n}) · {where} · positions {seg.start}-{seg.stop - 1} "
            f"({seg.stop - seg.start} tokens, {trained} trained) ──")


def render(row: PackedRow, vocab: Vocab, plain: bool, only: int | None = None,
           sequence_len: int | None = None) -> list[list[Piece]]:
    """Lines of pieces: a row header, a legend, then per sample its header, text view and pairs view."""
    capacity = f" of {sequence_len}" if sequence_len else ""
    share = row.num_trainable / row.num_tokens if row.num_tokens else 0.0
    lines: list[list[Piece]] = [
        [(f"{escape_controls(row.shard)} row {row.row} ({row.split}): "
          f"{len(row.segments)} sample{'s' * (len(row.segments) != 1)}, "
          f"{row.num_tokens}{capacity} "
          f"tokens, {row.num_trainable} trained ({share:.1%})", "bold")],
        legend(plain),
    ]
    for k, seg in enumerate(row.segments):
        if only is not None and seg.sample_id != only:
            continue
        lines.append([("", None)])
        lines.append([(segment_header(seg, k, len(row.segments)), "bold cyan")])
        if not np.array_equal(seg.position_ids, np.arange(len(seg.ids))):
            lines.append([("warning: position_ids do not run 0, 1, 2, ... in this sample", "bold red")])
        lines.append(text_view(seg, vocab, plain))
        lines.append([("pairs: ", "bold"), *pairs_view(seg, vocab)])
    return lines


def legend(plain: bool) -> list[Piece]:
    if plain:
        return [(f"legend: {OPEN}trained{CLOSE}, masked as is, special tokens as <|...|>, ↵ newline; pairs are "
                 "text(label, id), label -100 = masked, ␣ space", None)]
    return [("legend: ", None), ("trained", "green"), (", ", None), ("masked", "dim"), (", ", None),
            ("special", "bold magenta"), (", ", None), ("special trained", "bold green"),
            (", ↵ newline; pairs are text(label, id), label -100 = masked, ␣ space", None)]


def to_plain(lines: list[list[Piece]]) -> str:
    return "\n".join("".join(text for text, _ in line) for line in lines) + "\n"


def print_lines(lines: list[list[Piece]], color: bool) -> None:
    if not color:
        sys.stdout.write(to_plain(lines))
        return
    from rich.console import Console
    from rich.text import Text

    console = Console(force_terminal=True, highlight=False)
    for line in lines:
        text = Text()
        for piece, style in line:
            text.append(piece, style=style or "")
        console.print(text, soft_wrap=True)  # the terminal wraps; rich would break tokens apart


# ------------------------------------------------------------------------------------------------------------
# CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="a prepared directory (tessera prepare's output)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--row", type=int, help="packed row N of --shard (default: row 0 of the first shard)")
    which.add_argument("--sample", type=int, metavar="ID", help="the sample with this sample_id (samples.parquet)")
    which.add_argument("--source", metavar="FILE:ROW", help="the sample read from this source row (ROW 0-based, "
                       "as in samples.parquet and quarantine messages)")
    p.add_argument("--shard", help="with --row: the shard, e.g. val-00000 (default: the first one)")
    p.add_argument("--plain", action="store_true", help=f"no colors: trained text in {OPEN}{CLOSE} (the default "
                   "when stdout is not a terminal)")


def main(args: argparse.Namespace) -> int:
    color = not args.plain and sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    try:
        lines = build(args.dir, row=args.row, shard=args.shard, sample=args.sample, source=args.source,
                      plain=not color)
    except (InspectError, QueryError) as e:
        red, reset = ("\033[31m", "\033[0m") if sys.stderr.isatty() else ("", "")
        print(f"{red}error:{reset} {escape_controls(str(e), keep_newlines=True)}", file=sys.stderr)
        return 1
    print_lines(lines, color)
    return 0


def build(prepared: Path, row: int | None = None, shard: str | None = None, sample: int | None = None,
          source: str | None = None, plain: bool = True) -> list[list[Piece]]:
    prepared = open_dir(prepared)  # one version for every file read below
    manifest = read_manifest(prepared)
    if shard is not None and row is None:
        row = 0
    if source is not None:
        sample = find_source(prepared, source)
    if sample is not None:
        rec = find_sample(prepared, sample)
        shard_file, row_index = rec["shard"], rec["shard_row"]
    else:
        shard_file, row_index = resolve_shard(manifest, shard), row or 0
    packed = read_row(prepared, shard_file, row_index)
    lines = render(packed, Vocab(tokenizer_file(prepared)), plain, only=sample,
                   sequence_len=manifest.get("stats", {}).get("sequence_len"))
    note = cluster_note(prepared, sample) if sample is not None else None
    return lines if note is None else [[(note, "bold")], *lines]
