"""`tessera report DIR`: one self-contained HTML file about a prepared directory.

    tessera report prepared/demo                  # writes prepared/demo.report.html
    tessera report prepared/demo --out report.html

Sections: summary (where every input row went, tokens, trained share, packing), sample length distributions
(all tokens vs trained tokens), trained share per dataset, packing efficiency per shard and how full the rows
are, quarantine reasons with an example each, duplicate clusters, and the stages after the row pass.

Every number comes from the sql/ library run through `dataprep.query` (the same SQL a person runs with
`tessera query`), and each section names its file. The page has no scripts and loads nothing: styles are
inline and the charts are inline SVG, so it renders offline, from an e-mail attachment or a CI artifact. It
is written next to the directory, never into it.
"""

from __future__ import annotations

import argparse
import html
import math
import sys
from pathlib import Path
from typing import Any

from dataprep import near_dedup_report
from dataprep.outdir import absolute
from dataprep.query import QueryError, connect, open_dir, read_manifest, run, run_file
from dataprep.report import weights_by_dataset

TRAINED, ALL, MUTED = "#2f9e44", "#4263eb", "#868e96"

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #212529; margin: 0;
       background: #f8f9fa; }
main { max-width: 1180px; margin: 0 auto; padding: 20px 24px 40px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 0 0 10px; }
.meta, .src { color: #6c757d; font-size: 12px; }
.src { margin: 8px 0 0; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; white-space: nowrap; }
section { background: #fff; border: 1px solid #dee2e6; border-radius: 6px; padding: 14px 16px; margin: 14px 0; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 14px; }
.grid > section { margin: 0; }
.cards { display: flex; flex-wrap: wrap; gap: 8px; margin-bottom: 12px; }
.card { border: 1px solid #dee2e6; border-radius: 6px; padding: 6px 12px; min-width: 96px; }
.card b { display: block; font-size: 18px; }
.card span { color: #6c757d; font-size: 12px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid #e9ecef; vertical-align: top; }
th { font-weight: 600; background: #f1f3f5; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
td.wrap { max-width: 420px; overflow-wrap: anywhere; }
td.code { font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.ok { color: #2f9e44; } .bad { color: #c92a2a; }
svg text { font: 11px system-ui, sans-serif; fill: #495057; }
"""


# ------------------------------------------------------------------------------------------------------------
# charts (inline SVG)


def _nice_ticks(top: float, n: int = 5) -> list[float]:
    """0 and round steps (1, 2 or 5 x 10^k) up to at least `top`."""
    if top <= 0:
        return [0, 1]
    raw = top / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    return [i * step for i in range(math.ceil(top / step) + 1)]


def _num(v: float) -> str:
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.2f}"


def bar_chart(labels: list[str], series: list[tuple[str, list[float], str]], x_title: str, y_title: str,
              width: int = 540, height: int = 250) -> str:
    """Vertical bars, one group per label, one bar per series, with a y axis and a legend."""
    left, right, top, bottom = 52, 10, 24, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    ticks = _nice_ticks(max((v for _, values, _ in series for v in values), default=0))
    y_max = ticks[-1]
    group_w = plot_w / max(len(labels), 1)
    bar_w = max(group_w * 0.8 / len(series), 1)
    out = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{html.escape(y_title)}">']
    for t in ticks:
        y = top + plot_h - plot_h * t / y_max
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e9ecef"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_num(t)}</text>')
    for i, label in enumerate(labels):
        x0 = left + i * group_w + group_w * 0.1
        for j, (name, values, color) in enumerate(series):
            v = values[i]
            h = plot_h * v / y_max
            out.append(f'<rect x="{x0 + j * bar_w:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w:.1f}" '
                       f'height="{h:.1f}" fill="{color}"><title>{html.escape(name)} {html.escape(label)}: '
                       f'{_num(v)}</title></rect>')
        # Every label when they fit, else every k-th: long histograms stay readable.
        every = max(1, math.ceil(len(labels) * 34 / plot_w))
        if i % every == 0:
            out.append(f'<text x="{left + (i + 0.5) * group_w:.1f}" y="{top + plot_h + 14}" '
                       f'text-anchor="middle">{html.escape(label)}</text>')
    out.append(f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#adb5bd"/>')
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle">{html.escape(x_title)}'
               '</text>')
    out.append(f'<text x="12" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
               f'transform="rotate(-90 12 {top + plot_h / 2:.1f})">{html.escape(y_title)}</text>')
    x = left
    for name, _, color in series:
        out.append(f'<rect x="{x}" y="6" width="10" height="10" fill="{color}"/>'
                   f'<text x="{x + 14}" y="15">{html.escape(name)}</text>')
        x += 24 + 7 * len(name)
    out.append("</svg>")
    return "".join(out)


def _tick(v: float) -> str:
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:.3g}"


def line_chart(series: list[tuple[str, list[float], list[float], str]], x_title: str, y_title: str,
               width: int = 540, height: int = 230) -> str:
    """Lines over a shared x axis from 0, one per (name, xs, ys, colour); points are marked when few."""
    left, right, top, bottom = 56, 10, 24, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    x_ticks = _nice_ticks(max((x for _, xs, _, _ in series for x in xs), default=0))
    y_ticks = _nice_ticks(max((y for _, _, ys, _ in series for y in ys), default=0))
    x_max, y_max = x_ticks[-1], y_ticks[-1]

    def at(x: float, y: float) -> tuple[float, float]:
        return left + plot_w * x / x_max, top + plot_h - plot_h * y / y_max

    out = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{html.escape(y_title)}">']
    for t in y_ticks:
        y = top + plot_h - plot_h * t / y_max
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e9ecef"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_tick(t)}</text>')
    for t in x_ticks:
        out.append(f'<text x="{left + plot_w * t / x_max:.1f}" y="{top + plot_h + 14}" '
                   f'text-anchor="middle">{_tick(t)}</text>')
    for name, xs, ys, color in series:
        points = " ".join(f"{px:.1f},{py:.1f}" for px, py in (at(x, y) for x, y in zip(xs, ys, strict=True)))
        out.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="1.8">'
                   f"<title>{html.escape(name)}</title></polyline>")
        if len(xs) <= 40:  # sparse series (evaluations) get visible points with their values
            out.extend(f'<circle cx="{at(x, y)[0]:.1f}" cy="{at(x, y)[1]:.1f}" r="2.6" fill="{color}">'
                       f"<title>{html.escape(name)} at {_tick(x)}: {y:.4g}</title></circle>"
                       for x, y in zip(xs, ys, strict=True))
    out.append(f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#adb5bd"/>'
               f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle">{html.escape(x_title)}'
               f'</text><text x="12" y="{top + plot_h / 2:.1f}" text-anchor="middle" '
               f'transform="rotate(-90 12 {top + plot_h / 2:.1f})">{html.escape(y_title)}</text>')
    x = left
    for name, _, _, color in series:
        out.append(f'<rect x="{x}" y="6" width="10" height="10" fill="{color}"/>'
                   f'<text x="{x + 14}" y="15">{html.escape(name)}</text>')
        x += 24 + 7 * len(name)
    out.append("</svg>")
    return "".join(out)


def share_bars(rows: list[tuple[str, float, str]], width: int = 540) -> str:
    """Horizontal bars for shares in [0, 1]: (label, share, note shown after the bar)."""
    label_w, row_h, top = 170, 26, 6
    bar_max = width - label_w - 130
    height = top + row_h * len(rows) + 18
    out = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="trained share">']
    for i, (label, share, note) in enumerate(rows):
        y = top + i * row_h
        short = label if len(label) <= 28 else "…" + label[-27:]
        out.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{html.escape(short)}'
                   f'<title>{html.escape(label)}</title></text>'
                   f'<rect x="{label_w}" y="{y + 3}" width="{bar_max}" height="16" fill="#e9ecef"/>'
                   f'<rect x="{label_w}" y="{y + 3}" width="{bar_max * share:.1f}" height="16" fill="{TRAINED}"/>'
                   f'<text x="{label_w + bar_max + 6}" y="{y + 15}">{share:.1%} {html.escape(note)}</text>')
    y = top + row_h * len(rows) + 12
    for frac in (0, 0.5, 1):
        out.append(f'<text x="{label_w + bar_max * frac:.1f}" y="{y}" text-anchor="middle">{frac:.0%}</text>')
    out.append("</svg>")
    return "".join(out)


# ------------------------------------------------------------------------------------------------------------
# HTML pieces


def _esc(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return _esc(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.1%}" if 0 <= v <= 1 else f"{v:,.2f}"
    if isinstance(v, list):
        return _esc(", ".join(str(x) for x in v))
    return _esc(v)


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]], wrap: frozenset[str] = frozenset(),
          code: frozenset[str] = frozenset()) -> str:
    """columns: (key, heading). Numbers are right-aligned; shares (floats in [0, 1]) shown as percentages;
    `wrap` columns break long text, `code` ones are monospaced (and wrap)."""
    if not rows:
        return '<p class="meta">none</p>'
    numeric = {k for k, _ in columns if all(isinstance(r[k], int | float) and not isinstance(r[k], bool)
                                            for r in rows if r[k] is not None)}
    head = "".join(f'<th class="n">{_esc(h)}</th>' if k in numeric else f"<th>{_esc(h)}</th>" for k, h in columns)
    body = []
    for r in rows:
        cells = []
        for k, _ in columns:
            cls = (' class="n"' if k in numeric else ' class="wrap code"' if k in code
                   else ' class="wrap"' if k in wrap else "")
            cells.append(f"<td{cls}>{_fmt(r[k])}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _card(value: str, label: str, cls: str = "") -> str:
    return f'<div class="card"><b class="{cls}">{value}</b><span>{_esc(label)}</span></div>'


def _src(*names: str) -> str:
    files = ", ".join(f"<code>sql/{n}.sql</code>" for n in names)
    return f'<p class="src">from {files}</p>'


# ------------------------------------------------------------------------------------------------------------
# the report


def build(prepared: Path) -> str:
    version = open_dir(prepared)  # every query below reads this one version, even if DIR is replaced meanwhile
    manifest = read_manifest(version)
    con = connect(version)
    summary = run_file(con, "summary").to_pylist()[0]
    sources = run_file(con, "trained_share_by_source").to_pylist()
    hist = run_file(con, "token_length_histogram").to_pylist()
    packing = run_file(con, "packing_efficiency").to_pylist()
    quarantine = run_file(con, "quarantine_reasons").to_pylist()
    clusters = run_file(con, "duplicate_clusters").to_pylist()
    missing_eot = run_file(con, "missing_end_of_turn").num_rows
    # Row fill in tenths of sequence_len: how the packing efficiency is spread over rows.
    fill = {r["tenth"]: r["rows"] for r in run(con, """
        select least(packed.num_tokens * 10 // manifest.sequence_len, 9) as tenth, count(*) as rows,
        from packed, manifest
        group by all
    """).to_pylist()}
    name = absolute(prepared).name
    prepared = _display(prepared)
    return "\n".join([
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Tessera report: {_esc(name)}</title><style>{CSS}</style></head><body><main>",
        _header(prepared, manifest),
        _summary(summary, sources, missing_eot),
        _stages(manifest),
        '<div class="grid">',
        _lengths(hist),
        _trained_share(sources),
        "</div>",
        _packing(packing, fill, summary),
        _quarantine(quarantine, summary),
        _curation(manifest.get("curation") or {}),
        _duplicates(clusters, summary),
        near_dedup_report.section(con, manifest),
        _mixing(manifest),
        f'<p class="meta">Generated by <code>tessera report</code>. Reproduce any number with '
        f"<code>tessera query {_esc(prepared)} sql/NAME.sql</code>; see tokens with "
        f"<code>tessera inspect {_esc(prepared)} --sample ID</code>.</p>",
        "</main></body></html>",
    ]) + "\n"


def _header(prepared: Path, manifest: dict[str, Any]) -> str:
    tok, stats = manifest.get("tokenizer", {}), manifest.get("stats", {})
    template = (manifest.get("chat_template") or {}).get("name") or "none"
    tokenizer = Path(tok.get("path", "?")).name
    packing = "packed" if stats.get("sample_packing") else "one sample per row"
    return (f"<header><h1>Tessera report · {_esc(prepared)}</h1><p class=\"meta\">tessera "
            f"{_esc(manifest.get('tessera_version'))} · format {_esc(manifest.get('format_version'))} · "
            f"fingerprint <code>{_esc(str(manifest.get('fingerprint'))[:12])}</code> · tokenizer {_esc(tokenizer)} "
            f"({_fmt(tok.get('vocab_size'))} tokens, eos <code>{_esc(tok.get('eos_token'))}</code>) · chat template "
            f"{_esc(template)} · sequence_len {_fmt(stats.get('sequence_len'))}, {packing}</p></header>")


def _summary(s: dict[str, Any], sources: list[dict[str, Any]], missing_eot: int) -> str:
    def share(n: int) -> str:
        return f"{n:,} ({n / s['input_rows']:.1%})" if s["input_rows"] else f"{n:,}"

    cards = "".join([
        _card(f"{s['input_rows']:,}", "input rows"),
        _card(share(s["kept"]), "kept"),
        _card(share(s["quarantined"]), "quarantined", "bad" if s["quarantined"] else ""),
        _card(share(s["duplicates"]), "duplicates"),
        _card(share(s["dropped"]), "dropped (too long)"),
        _card(f"{s['tokens']:,}", "tokens"),
        _card(f"{s['trained_tokens']:,}", "trained tokens"),
        _card(f"{s['trained_share']:.1%}", "trained share"),
        _card(f"{s['packing_efficiency']:.1%}", "packing efficiency"),
        _card(f"{s['packed_rows']:,}", f"rows (train {s['train_rows']:,}, val {s['val_rows']:,})"),
        _card(f"{s['longest_sample']:,}", "longest sample"),
        _card(f"{missing_eot:,}", "samples not ending with end-of-turn", "bad" if missing_eot else "ok"),
    ])
    columns = [("dataset", "dataset"), ("source_file", "source file"), ("rows_in", "rows in"), ("kept", "kept"),
               ("quarantined", "quarantined"), ("duplicates", "duplicates"), ("dropped", "dropped"),
               ("tokens", "tokens"), ("trained_tokens", "trained"), ("trained_share", "trained share")]
    return (f'<section id="summary"><h2>Summary</h2><div class="cards">{cards}</div>{table(sources, columns)}'
            f"{_src('summary', 'trained_share_by_source', 'missing_end_of_turn')}</section>")


def _stages(manifest: dict[str, Any]) -> str:
    """The manifest's stage rows: how many samples each stage after the row pass received and kept, and why it
    removed the others (any reason a stage writes, as written)."""
    rows = [{**r, "rejected": ", ".join(f"{k} {v:,}" for k, v in r["rejected_by_reason"].items()) or "-",
             "seconds": f"{r['seconds']:.2f}"} for r in manifest.get("stages", [])]
    if not rows:
        return ""  # prepared before stages were recorded
    columns = [("name", "stage"), ("rows_in", "rows in"), ("rows_out", "rows out"), ("rejected", "removed"),
               ("seconds", "seconds")]
    return (f'<section id="stages"><h2>Stages</h2>{table(rows, columns)}<p class="meta">manifest.json '
            "<code>stages</code>: one row per stage after the row pass, in order</p></section>")


def _lengths(hist: list[dict[str, Any]]) -> str:
    labels = [str(r["tokens_from"]) for r in hist]
    chart = bar_chart(labels, [("all tokens", [r["samples_by_length"] for r in hist], ALL),
                               ("trained tokens", [r["samples_by_trained"] for r in hist], TRAINED)],
                      x_title="tokens per sample (bin start)", y_title="kept samples")
    return f'<section id="lengths"><h2>Sample lengths</h2>{chart}{_src("token_length_histogram")}</section>'


def _trained_share(sources: list[dict[str, Any]]) -> str:
    per_dataset: dict[str, list[int]] = {}
    for r in sources:
        acc = per_dataset.setdefault(r["dataset"], [0, 0])
        acc[0] += r["tokens"]
        acc[1] += r["trained_tokens"]
    rows = [(name, trained / tokens if tokens else 0.0, f"of {tokens:,}")
            for name, (tokens, trained) in per_dataset.items()]
    return (f'<section id="trained"><h2>Trained share per dataset</h2>{share_bars(rows)}'
            f"{_src('trained_share_by_source')}</section>")


def _packing(packing: list[dict[str, Any]], fill: dict[int, int], s: dict[str, Any]) -> str:
    columns = [("shard", "shard"), ("split", "split"), ("rows", "rows"), ("samples", "samples"),
               ("samples_per_row", "samples / row"), ("tokens", "tokens"), ("capacity", "capacity"),
               ("efficiency", "efficiency"), ("emptiest_row", "emptiest row"), ("fullest_row", "fullest row")]
    labels = [f"{10 * t}–{10 * t + 10}%" for t in range(10)]
    chart = bar_chart(labels, [("rows", [fill.get(t, 0) for t in range(10)], ALL)],
                      x_title="row fill (tokens / sequence_len)", y_title="packed rows", width=1100, height=170)
    return (f'<section id="packing"><h2>Packing: {s["packing_efficiency"]:.1%} of {s["packed_rows"]:,} rows × '
            f'{s["sequence_len"]:,} tokens is data</h2>{table(packing, columns)}{chart}'
            f"{_src('packing_efficiency')}</section>")


def _quarantine(rows: list[dict[str, Any]], s: dict[str, Any]) -> str:
    columns = [("reason", "reason"), ("rows", "rows"), ("example_location", "example"),
               ("example_message", "message"), ("example_original", "original (start)")]
    return (f'<section id="quarantine"><h2>Quarantine: {s["quarantined"]:,} rows</h2>'
            f"{table(rows, columns, wrap=frozenset({'example_message'}), code=frozenset({'example_original'}))}"
            f"{_src('quarantine_reasons')}</section>")


def _curation(cur: dict[str, Any]) -> str:
    """Each filter and eval file with the samples it rejected (manifest `curation`, dataprep/curate.py)."""
    if not cur:
        return ""
    rows = [{"what": f"filter:{f['name']}", "rule": f["where"], "rejected": f["rejected"]}
            for f in cur.get("filters", [])]
    rows += [{"what": "contaminated", "rule": f"{d['ngram']}-grams of {d['path']} ({d['rows']:,} rows, sha256 "
              f"{d['sha256'][:12]}…)", "rejected": d["rejected"]} for d in cur.get("decontaminate", [])]
    columns = [("what", "reason"), ("rule", "rule"), ("rejected", "rejected")]
    return (f'<section id="curation"><h2>Filters and decontamination: {sum(r["rejected"] for r in rows):,} '
            f"samples set aside</h2>{table(rows, columns, wrap=frozenset({'rule'}))}</section>")


def _duplicates(clusters: list[dict[str, Any]], s: dict[str, Any]) -> str:
    shown = clusters[:20]
    more = f'<p class="meta">… and {len(clusters) - 20:,} more clusters</p>' if len(clusters) > 20 else ""
    columns = [("kept_location", "kept row"), ("copies", "copies"), ("duplicate_locations", "removed copies")]
    return (f'<section id="duplicates"><h2>Duplicates: {s["duplicates"]:,} rows removed, {len(clusters):,} '
            f"clusters</h2>{table(shown, columns, wrap=frozenset({'duplicate_locations'}))}{more}"
            f"{_src('duplicate_clusters')}</section>")


def _mixing(manifest: dict[str, Any]) -> str:
    """datasets[].weight's effect (stats.mixing): each dataset's samples and share of trained tokens before and
    after weighting. Nothing when every weight is 1."""
    weights, stats = weights_by_dataset(manifest), manifest.get("stats", {})
    if not weights or "mixing" not in stats:
        return ""
    rows = [{"dataset": name, "weight": "/".join(f"{w:g}" for w in weights.get(name, [1.0])), **m}
            for name, m in stats["mixing"].items()]
    columns = [("dataset", "dataset"), ("weight", "weight"), ("samples_before", "rows before"),
               ("samples_after", "after"), ("trained_tokens_before", "trained tokens before"),
               ("trained_tokens_after", "after"), ("share_before", "share before"), ("share_after", "after")]
    bars = share_bars([(r["dataset"], r["share_after"], f"(was {r['share_before']:.1%})") for r in rows])
    out = stats.get("by_reason", {}).get("weighted_out", 0)
    query = "tessera query DIR &quot;select * from samples where repeat_of is not null&quot;"
    return (f'<section id="mixing"><h2>Mixing: {out:,} rows weighted out, {stats.get("repeated_samples", 0):,} '
            f'copies added</h2>{table(rows, columns)}<p class="meta">share of trained tokens after weighting</p>'
            f'{bars}<p class="src">from manifest.json stats.mixing; the copies: <code>{query}</code></p></section>')


def _display(path: Path) -> Path:
    """Relative to the current directory when inside it: the commands the page suggests then work as shown."""
    try:
        return absolute(path).relative_to(Path.cwd().resolve())
    except ValueError:
        return path


# ------------------------------------------------------------------------------------------------------------
# CLI


def default_out(prepared: Path) -> Path:
    where = absolute(prepared)  # DIR is a link to a version folder: name the report after DIR, next to it
    return where.parent / f"{where.name}.report.html"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="a prepared directory (tessera prepare's output) or a training run's "
                   "output_dir (run.json, metrics.jsonl)")
    p.add_argument("--out", type=Path, help="the HTML file to write (default: DIR.report.html, next to DIR)")


def main(args: argparse.Namespace) -> int:
    out: Path = args.out or default_out(args.dir)
    is_run = (args.dir / "run.json").is_file() or (args.dir / "metrics.jsonl").is_file()
    try:
        if out.resolve().is_relative_to(args.dir.resolve()):
            what = "the training run" if is_run else "the prepared directory"
            raise QueryError(f"--out {out}: inside {what}, which tessera report reads but never writes into; "
                             "write it elsewhere")
        if is_run:
            from train.report import RunReportError
            from train.report import build as build_run  # a training run's output_dir

            try:
                page = build_run(args.dir, out)
            except RunReportError as e:
                raise QueryError(str(e)) from None
        elif (args.dir / "manifest.json").is_file() or not args.dir.is_dir():
            page = build(args.dir)
        else:
            raise QueryError(f"{args.dir}: neither a prepared directory (manifest.json) nor a training run "
                             "(run.json, metrics.jsonl); pass the folder tessera prepare or tessera train wrote")
    except QueryError as e:
        red, reset = ("\033[31m", "\033[0m") if sys.stderr.isatty() else ("", "")
        print(f"{red}error:{reset} {e}", file=sys.stderr)
        return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    print(f"wrote {_display(out)} ({len(page.encode()) / 1024:.0f} KB)")
    return 0
