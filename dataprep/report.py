"""Feedback: a progress bar per stage on a terminal (one plain line per stage otherwise), stage timings, and
the final summary table printed from the manifest.

Text from configs, paths and data is printed as rich `Text`, never parsed as markup (`[INST]`, `[/INST]` are
data), and `escape_controls` shows control characters as escapes so data cannot drive the terminal.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress
from rich.table import Table
from rich.text import Text

# Bidirectional overrides and isolates reorder what a terminal shows ("Trojan Source"); line and paragraph
# separators break lines. Other format characters (ZWJ in emoji, soft hyphens) are shown as they are.
_INVISIBLE = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029")


def escape_controls(text: str, keep_newlines: bool = False) -> str:
    """C0 and C1 control characters (ESC, CSI, OSC, BEL, CR, ...), DEL, bidi controls and lone surrogates as
    \\xNN / \\uNNNN, so that printing data cannot move the cursor, recolor, retitle or hide text. Tabs stay;
    newlines stay when `keep_newlines`."""
    if text.isprintable() and not any(ch in _INVISIBLE for ch in text):
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if (ch == "\n" and keep_newlines) or ch == "\t":
            out.append(ch)
        elif code < 0x20 or 0x7F <= code <= 0x9F or ch in _INVISIBLE or 0xD800 <= code <= 0xDFFF:
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


@dataclass
class _Stage:
    name: str
    start: float
    seconds: float = 0.0
    rows: int | None = None


class StageTimer:
    def __init__(self, on_end: Callable[[_Stage], None] | None = None) -> None:
        self.stages: list[_Stage] = []
        self.on_end = on_end

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[_Stage]:
        stage = _Stage(name, time.perf_counter())
        self.stages.append(stage)
        try:
            yield stage
        finally:
            stage.seconds = time.perf_counter() - stage.start
        if self.on_end is not None:  # only for stages that finished: a failed one is reported by its error
            self.on_end(stage)

    def seconds(self) -> dict[str, float]:
        return {s.name: round(s.seconds, 3) for s in self.stages}


class _Bar:
    def __init__(self, progress: RichProgress | None, task: Any):
        self.progress, self.task = progress, task

    def advance(self, n: int) -> None:
        if self.progress is not None:
            self.progress.advance(self.task, n)


class Progress:
    """Rich progress bars when stderr is a terminal; otherwise (CI, log files) one plain line per stage as it
    ends: `stage rows: 327 rows in 0.19s`."""

    def __init__(self, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.console = Console(stderr=True)

    @contextlib.contextmanager
    def bar(self, name: str, total: int | None) -> Iterator[_Bar]:
        if not self.enabled:
            yield _Bar(None, None)
            return
        columns = [SpinnerColumn(), TextColumn(f"{name:<6}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn()]
        with RichProgress(*columns, console=self.console, transient=False) as progress:
            yield _Bar(progress, progress.add_task(name, total=total))

    def stage_done(self, stage: _Stage) -> None:
        if self.enabled:
            return  # the bar already showed it
        rows = f"{stage.rows:,} rows in " if stage.rows is not None else ""
        print(f"stage {stage.name}: {rows}{stage.seconds:.2f}s", file=sys.stderr, flush=True)

    def log(self, message: str) -> None:
        self.console.print(Text(escape_controls(message)), highlight=False)


def summary_table(manifest: dict[str, Any]) -> Table:
    acc, stats = manifest["accounting"], manifest["stats"]
    table = Table(title="tessera prepare", show_header=True, header_style="bold")
    table.add_column("dataset", no_wrap=True)
    for col in ("rows in", "kept", "quarantined", "duplicates", "dropped", "tokens", "trained"):
        table.add_column(col, justify="right")
    for name, d in stats["per_dataset"].items():
        tokens = d.get("tokens", 0)
        table.add_row(Text(escape_controls(name)), f"{d.get('rows_in', 0):,}", f"{d.get('kept', 0):,}",
                      f"{d.get('quarantined', 0):,}",
                      f"{d.get('duplicate', 0):,}", f"{d.get('dropped', 0):,}", f"{tokens:,}",
                      f"{d.get('trainable', 0) / tokens:.1%}" if tokens else "-")
    table.add_row("[bold]total", f"{acc['input_rows']:,}", f"{acc['kept']:,}", f"{acc['quarantined']:,}",
                  f"{acc['duplicates']:,}", f"{acc['dropped']:,}", f"{stats['tokens']:,}",
                  f"{stats['trainable_share']:.1%}", end_section=True)
    return table


def summary_lines(manifest: dict[str, Any]) -> list[str]:
    stats = manifest["stats"]
    reasons = ", ".join(f"{k} {v}" for k, v in stats["by_reason"].items()) or "none"
    seconds = ", ".join(f"{k} {v:.2f}s" for k, v in stats["seconds"].items())
    splits = ", ".join(f"{k} {v:,}" for k, v in stats["rows_by_split"].items() if v)
    packing = "packed" if stats["sample_packing"] else "unpacked"
    probes = "; ".join(dict.fromkeys(
        f"'{p['template']}' closes turns with {', '.join(p['end_of_turn']) or 'nothing'}, "
        + {True: "prefix-preserving", False: "not prefix-preserving", None: "encoded by mistral-common"}[
            p["prefix_preserving"]]
        for p in manifest.get("probes", []) if p.get("format") == "chat_template"))
    stages = ", ".join(
        f"{r['name']} {r['rows_in']:,}" + (f" -> {r['rows_out']:,} ("
                                           + ", ".join(f"{k} {v:,}" for k, v in r["rejected_by_reason"].items())
                                           + ")" if r["rows_out"] != r["rows_in"] else "")
        for r in manifest.get("stages", []))
    return [
        *([f"templates: {probes}"] if probes else []),
        f"reasons: {reasons}",
        *([f"stages: {stages}"] if stages else []),
        *_curation_lines(manifest),
        f"rows: {splits} ({packing}, sequence_len {stats['sequence_len']}, "
        f"packing efficiency {stats['packing_efficiency']:.2%}, longest sample {stats['longest_sample']})",
        f"shards: {len(manifest['shards'])}; seconds: {seconds}",
        *mixing_lines(manifest),
    ]


def _curation_lines(manifest: dict[str, Any]) -> list[str]:
    """`filters: no_refusals 3, length_bounds 0; decontaminate: eval.jsonl 2 rejected` (curate.py)."""
    cur = manifest.get("curation") or {}
    parts = []
    if cur.get("filters"):
        parts.append("filters: " + ", ".join(f"{f['name']} {f['rejected']:,}" for f in cur["filters"]))
    if cur.get("decontaminate"):
        parts.append("decontaminate: " + ", ".join(f"{d['path']} {d['rejected']:,}" for d in cur["decontaminate"]))
    return ["; ".join(parts) + " rejected"] if parts else []

def weights_by_dataset(manifest: dict[str, Any]) -> dict[str, list[float]]:
    """datasets[].weight by dataset name (path), from the resolved config; empty when every weight is 1."""
    weights: dict[str, list[float]] = {}
    for ds in manifest.get("config", {}).get("datasets", []):
        weights.setdefault(ds["path"], []).append(ds.get("weight", 1.0))
    return weights if any(w != 1 for ws in weights.values() for w in ws) else {}


def mixing_lines(manifest: dict[str, Any]) -> list[str]:
    """The effect of datasets[].weight (stats.mixing), one line per dataset; nothing when every weight is 1."""
    weights, stats = weights_by_dataset(manifest), manifest["stats"]
    if not weights or "mixing" not in stats:
        return []
    out = stats["by_reason"].get("weighted_out", 0)
    lines = [f"mixing: {out:,} rows weighted out, {stats['repeated_samples']:,} copies added; rows (a chunked "
             "row once) and share of trained tokens, before -> after weighting:"]
    for name, m in stats["mixing"].items():
        w = "/".join(f"{x:g}" for x in weights.get(name, [1.0]))
        lines.append(f"  {name} (weight {w}): {m['samples_before']:,} -> {m['samples_after']:,} rows, "
                     f"{m['share_before']:.1%} -> {m['share_after']:.1%} of trained tokens")
    return lines
