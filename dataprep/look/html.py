"""The HTML pieces the reports are made of: the page style, inline SVG charts (bars, lines, share bars), tables
and cards. `tessera report` on a prepared directory (html_report.py, near_dedup_report.py) and on a training
run (train/report.py) use them, so both pages look alike. No scripts, nothing loaded: a page renders offline.
"""

from __future__ import annotations

import html
import math
from typing import Any

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


def nice_ticks(top: float, n: int = 5) -> list[float]:
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
    ticks = nice_ticks(max((v for _, values, _ in series for v in values), default=0))
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
    x_ticks = nice_ticks(max((x for _, xs, _, _ in series for x in xs), default=0))
    y_ticks = nice_ticks(max((y for _, _, ys, _ in series for y in ys), default=0))
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


def esc(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return esc(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.1%}" if 0 <= v <= 1 else f"{v:,.2f}"
    if isinstance(v, list):
        return esc(", ".join(str(x) for x in v))
    return esc(v)


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]], wrap: frozenset[str] = frozenset(),
          code: frozenset[str] = frozenset()) -> str:
    """columns: (key, heading). Numbers are right-aligned; shares (floats in [0, 1]) shown as percentages;
    `wrap` columns break long text, `code` ones are monospaced (and wrap)."""
    if not rows:
        return '<p class="meta">none</p>'
    numeric = {k for k, _ in columns if all(isinstance(r[k], int | float) and not isinstance(r[k], bool)
                                            for r in rows if r[k] is not None)}
    head = "".join(f'<th class="n">{esc(h)}</th>' if k in numeric else f"<th>{esc(h)}</th>" for k, h in columns)
    body = []
    for r in rows:
        cells = []
        for k, _ in columns:
            cls = (' class="n"' if k in numeric else ' class="wrap code"' if k in code
                   else ' class="wrap"' if k in wrap else "")
            cells.append(f"<td{cls}>{fmt(r[k])}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def card(value: str, label: str, cls: str = "") -> str:
    return f'<div class="card"><b class="{cls}">{value}</b><span>{esc(label)}</span></div>'


def src(*names: str) -> str:
    files = ", ".join(f"<code>sql/{n}.sql</code>" for n in names)
    return f'<p class="src">from {files}</p>'
