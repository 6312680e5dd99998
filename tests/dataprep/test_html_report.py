"""`tessera report`: one self-contained HTML file (nothing loaded from anywhere, no scripts) with the summary
numbers, the charts and each section's source query; written next to the prepared directory, never into it.
Rendering in a real browser is checked by bench/report_screenshot.py (headless Chromium), not here.

    .venv/bin/python -m pytest tests/dataprep/test_html_report.py -v
"""

from __future__ import annotations

import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pyarrow.ipc as ipc
import pytest

from dataprep.cli import main
from dataprep.look.html import nice_ticks
from dataprep.look.html_report import build, default_out


@pytest.fixture(scope="module")
def page(prepared: Path) -> str:
    return build(prepared)


class Tags(HTMLParser):
    """Every tag with its attributes, and whether the open/close structure balances."""

    VOID = frozenset({"meta", "br", "img", "input", "link", "hr"})

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []
        self.balanced = True

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.balanced = False


def test_self_contained(page: str) -> None:
    parser = Tags()
    parser.feed(page)
    assert parser.balanced and not parser.stack
    names = {t for t, _ in parser.tags}
    assert "script" not in names and "link" not in names and "iframe" not in names and "img" not in names
    for tag, attrs in parser.tags:
        for key in ("src", "href", "xlink:href", "action"):
            assert not attrs.get(key), f"<{tag} {key}=...>: the report must not load anything"
    assert not re.search(r"https?://", page)
    assert "url(" not in page and "@import" not in page
    assert page.startswith("<!doctype html>") and '<meta charset="utf-8">' in page


def test_summary_numbers(page: str, prepared: Path) -> None:
    samples = pl.read_parquet(prepared / "samples.parquet")
    status = samples["status"].value_counts().to_dicts()
    counts = {d["status"]: d["count"] for d in status}
    tables = [ipc.open_file(f).read_all() for f in sorted((prepared / "shards").glob("*.arrow"))]
    tokens = sum(sum(t.column("num_tokens").to_pylist()) for t in tables)
    trained = sum(sum(t.column("num_trainable").to_pylist()) for t in tables)
    rows = sum(t.num_rows for t in tables)
    cards = dict((label, value) for value, label in
                 re.findall(r'<div class="card"><b[^>]*>([^<]*)</b><span>([^<]*)</span></div>', page))
    assert cards["input rows"] == f"{len(samples):,}" == "18"
    assert cards["kept"] == f"{counts['kept']} ({counts['kept'] / len(samples):.1%})"
    assert cards["quarantined"].startswith(f"{counts['quarantined']} (")
    assert cards["duplicates"].startswith(f"{counts['duplicate']} (")
    assert cards["tokens"] == f"{tokens:,}"
    assert cards["trained tokens"] == f"{trained:,}"
    assert cards["trained share"] == f"{trained / tokens:.1%}"
    assert cards["packing efficiency"] == f"{tokens / (rows * 128):.1%}"
    assert cards["samples not ending with end-of-turn"] == "2"  # the two input_output rows
    # Per-source table, quarantine reasons and duplicate clusters are all there.
    for name in ("alpaca.jsonl", "chat.jsonl", "io.jsonl"):
        assert name in page
    for reason in ("malformed_json", "missing_field", "empty_content", "unknown_role", "no_trainable_tokens"):
        assert reason in page
    assert "Duplicates: 3 rows removed, 2 clusters" in page
    assert "Quarantine: 6 rows" in page


def test_sections_charts_and_sources(page: str) -> None:
    for section in ("summary", "lengths", "trained", "packing", "quarantine", "duplicates"):
        assert f'<section id="{section}">' in page
    assert page.count("<svg ") == 3  # lengths, trained share, row fill
    for name in ("summary", "token_length_histogram", "trained_share_by_source", "packing_efficiency",
                 "quarantine_reasons", "duplicate_clusters", "missing_end_of_turn"):
        assert f"<code>sql/{name}.sql</code>" in page
    # Data is escaped: the malformed row's original text shows its quotes as entities, not raw markup.
    assert "{&quot;instruction&quot;: &quot;Broken row&quot;" in page


def test_cli_writes_next_to_the_directory(prepared: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in prepared.rglob("*") if p.is_file()}
    out = tmp_path / "r.html"
    assert main(["report", str(prepared), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert out.read_text(encoding="utf-8") == build(prepared)  # deterministic: no timestamps
    assert main(["report", str(prepared), "--out", str(prepared / "report.html")]) == 1
    assert "inside the prepared directory" in capsys.readouterr().err
    assert default_out(prepared) == prepared.parent.resolve() / "prepared.report.html"  # next to the link
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in prepared.rglob("*") if p.is_file()}
    assert after == before


def test_nice_ticks() -> None:
    assert nice_ticks(112) == [0, 50, 100, 150]
    assert nice_ticks(21) == [0, 5, 10, 15, 20, 25]
    assert nice_ticks(0) == [0, 1]
