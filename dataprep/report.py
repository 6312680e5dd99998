"""Feedback: a progress bar per stage on a terminal (one plain line per stage otherwise), stage timings, and
the final summary table printed from the manifest."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress
from rich.table import Table


@dataclass
class _Stage:
    name: str
    start: float
    seconds: float = 0.0
    rows: int = 0


class StageTimer:
    def __init__(self) -> None:
        self.stages: list[_Stage] = []

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[_Stage]:
        stage = _Stage(name, time.perf_counter())
        self.stages.append(stage)
        try:
            yield stage
        finally:
            stage.seconds = time.perf_counter() - stage.start

    def seconds(self) -> dict[str, float]:
        return {s.name: round(s.seconds, 3) for s in self.stages}


class _Bar:
    def __init__(self, progress: RichProgress | None, task: Any):
        self.progress, self.task = progress, task

    def advance(self, n: int) -> None:
        if self.progress is not None:
            self.progress.advance(self.task, n)


class Progress:
    """Rich progress bars when stderr is a terminal; silent otherwise (the summary says the rest)."""

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

    def log(self, message: str) -> None:
        self.console.print(message, highlight=False)


def summary_table(manifest: dict[str, Any]) -> Table:
    acc, stats = manifest["accounting"], manifest["stats"]
    table = Table(title="tessera prepare", show_header=True, header_style="bold")
    table.add_column("dataset", no_wrap=True)
    for col in ("rows in", "kept", "quarantined", "duplicates", "dropped", "tokens", "trained"):
        table.add_column(col, justify="right")
    for name, d in stats["per_dataset"].items():
        tokens = d.get("tokens", 0)
        table.add_row(name, f"{d.get('rows_in', 0):,}", f"{d.get('kept', 0):,}", f"{d.get('quarantined', 0):,}",
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
    return [
        *([f"templates: {probes}"] if probes else []),
        f"reasons: {reasons}",
        f"rows: {splits} ({packing}, sequence_len {stats['sequence_len']}, "
        f"packing efficiency {stats['packing_efficiency']:.2%}, longest sample {stats['longest_sample']})",
        f"shards: {len(manifest['shards'])}; seconds: {seconds}",
    ]
