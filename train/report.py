"""`tessera report OUTPUT_DIR` for a training run: one self-contained HTML page, in the prepare report's style.

    tessera report outputs/demo                   # writes outputs/demo.report.html

It reads what the trainer writes into output_dir (never writing there):

    run.json        at start: tessera_version, started, config (resolved), config_file, prepared_dir,
                    prepared_fingerprint, model {base_model | built_from_config, parameters,
                    trainable_parameters, adapter}, world_size, device
    metrics.jsonl   one object per logged step: step, epoch, loss, lr, grad_norm, tokens, trained_tokens (that step),
                    tokens_per_s, trained_tokens_per_s, step_time_s, peak_mem_gib, loss_by_dataset; evaluation
                    steps add eval_loss, eval_tokens, eval_loss_by_dataset, merged into the step's object or
                    as a separate object with the same step (both are read)
    checkpoint-<step>/, final/    listed; final/ present = the run finished

A run resumed from a checkpoint logs again the steps after that checkpoint; the last value of a step wins (the
resumed run's), and the page says how many were replaced. A line that is not JSON (a run killed mid-write) is
skipped and counted. Charts: loss with eval loss, loss per dataset (train and eval), learning rate, grad norm,
tokens/s. The page links the prepared directory the run trained on, and that directory's report when it
exists; the links are relative to where the page is written. No scripts, nothing loaded.
"""

from __future__ import annotations

import html
import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dataprep.look.html import ALL, CSS, TRAINED, card, esc, line_chart, table
from dataprep.look.html_report import default_out

EVAL = "#e8590c"
RUN_CSS = """
pre.code { font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: #f8f9fa;
           padding: 8px 10px; margin: 0; max-height: 420px; overflow: auto; }
a { color: #1c7ed6; }
"""
PALETTE = ("#4263eb", "#2f9e44", "#e8590c", "#ae3ec9", "#1098ad", "#f08c00", "#c2255c", "#5c940d", "#495057")
EVAL_KEYS = ("eval_loss", "eval_tokens", "eval_loss_by_dataset")


class RunReportError(Exception):
    """A training output_dir that cannot be reported on; the message names the file and the fix."""


@dataclass
class Metrics:
    train: list[dict[str, Any]] = field(default_factory=list)  # by step, last logged value wins
    evals: list[dict[str, Any]] = field(default_factory=list)
    unreadable: list[int] = field(default_factory=list)  # 1-based line numbers
    relogged: int = 0  # train steps logged twice (a resume after a crash re-logs steps after its checkpoint)


def read_metrics(path: Path) -> Metrics:
    m = Metrics()
    train: dict[int, dict[str, Any]] = {}
    evals: dict[int, dict[str, Any]] = {}
    if not path.is_file():
        return m
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            step = int(obj["step"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            m.unreadable.append(n)
            continue
        if "eval_loss" in obj:
            evals[step] = {"step": step, **{k: obj.get(k) for k in EVAL_KEYS}}
        if "loss" in obj:
            m.relogged += step in train
            train[step] = {k: v for k, v in obj.items() if k not in EVAL_KEYS}
    m.train = [train[s] for s in sorted(train)]
    m.evals = [evals[s] for s in sorted(evals)]
    return m


def _finite(v: Any) -> bool:
    # A run stopped on a non-finite loss may have logged one; charts skip such points (the cards show them).
    return isinstance(v, int | float) and math.isfinite(v)


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    pairs = [(r["step"], float(r[key])) for r in rows if _finite(r.get(key))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def short_names(names: list[str]) -> dict[str, str]:
    """Each dataset path by its shortest unique tail (file name, then parent/file, ...), for legends."""
    out = {}
    for name in names:
        parts = Path(name).parts
        for k in range(1, len(parts) + 1):
            tail = "/".join(parts[-k:])
            if sum(1 for n in names if "/".join(Path(n).parts[-k:]) == tail) == 1:
                break
        out[name] = tail if parts else name
    return out


def total(rows: list[dict[str, Any]], key: str) -> tuple[int, bool]:
    """(sum over all steps of a per-step count, exact): with logging_steps > 1 only every k-th step is logged,
    and each logged value stands for the steps since the previous logged one (estimate)."""
    value, last, exact = 0.0, 0, True
    for r in rows:
        if isinstance(r.get(key), int | float):
            gap = r["step"] - last
            exact &= gap == 1
            value += r[key] * gap
        last = r["step"]
    return round(value), exact


def _by_dataset(rows: list[dict[str, Any]], key: str) -> dict[str, tuple[list[float], list[float]]]:
    out: dict[str, tuple[list[float], list[float]]] = {}
    for r in rows:
        for name, loss in (r.get(key) or {}).items():
            if _finite(loss):
                xs, ys = out.setdefault(name, ([], []))
                xs.append(r["step"])
                ys.append(float(loss))
    return out


def _chart_section(sid: str, title: str, chart: str | None, note: str = "") -> str:
    body = chart if chart else '<p class="meta">nothing logged</p>'
    return f'<section id="{sid}"><h2>{esc(title)}</h2>{body}{note}</section>'


def _lines(series: list[tuple[str, tuple[list[float], list[float]], str]], y_title: str,
           wide: bool = False) -> str | None:
    """A half-width chart, or a full-width one (drawn wider, not scaled up, so its text keeps its size)."""
    kept = [(name, xs, ys, color) for name, (xs, ys), color in series if xs]
    size = {"width": 1100, "height": 260} if wide else {}
    return line_chart(kept, "step", y_title, **size) if kept else None


def _link(target: Path, page: Path, text: str) -> str:
    # Relative to the page, so the pair can be moved or archived together; file names are percent-free here.
    href = os.path.relpath(target.resolve(), page.resolve().parent).replace(os.sep, "/")
    return f'<a href="{html.escape(href)}">{esc(text)}</a>'


def build(run_dir: Path, out: Path | None = None) -> str:
    """The page for the run in run_dir, with links relative to `out` (default: run_dir.report.html)."""
    out = out or default_out(run_dir)
    run_path = run_dir / "run.json"
    run: dict[str, Any] = {}
    if run_path.is_file():
        try:
            run = json.loads(run_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise RunReportError(f"{run_path} is not valid JSON ({e}); it is written at the start of tessera "
                                 "train: rerun it, or delete run.json to report on metrics.jsonl alone") from None
    metrics = read_metrics(run_dir / "metrics.jsonl")
    name = run_dir.resolve().name
    return "\n".join([
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Tessera run: {esc(name)}</title><style>{CSS}{RUN_CSS}</style></head><body><main>",
        _header(run_dir, run),
        _summary(run_dir, run, metrics, out),
        _charts(metrics),
        _evals(metrics),
        _config(run),
        f'<p class="meta">Generated by <code>tessera report</code> from {esc(run_dir)}/run.json and '
        "metrics.jsonl.</p>",
        "</main></body></html>",
    ]) + "\n"


def _header(run_dir: Path, run: dict[str, Any]) -> str:
    model = run.get("model") or {}
    built = model.get("built_from_config")
    if isinstance(built, dict):  # the base_model_init keys: model_type first, then the sizes
        built = ", ".join([str(built.get("model_type", "?")),
                           *(f"{k} {v}" for k, v in built.items() if k != "model_type")])
    source = model.get("base_model") or (f"built from config ({built}), random weights" if built else "?")
    adapter = model.get("adapter") or "full fine-tune"
    params = model.get("parameters")
    trainable = model.get("trainable_parameters")
    sizes = (f"{params:,} parameters, {trainable:,} trainable" if isinstance(params, int)
             and isinstance(trainable, int) else "")
    parts = [f"tessera {esc(run.get('tessera_version', '?'))}", f"started {esc(run.get('started', '?'))}",
             f"model {esc(source)} ({esc(adapter)}{', ' + sizes if sizes else ''})",
             f"device {esc(run.get('device', '?'))} × {esc(run.get('world_size', '?'))}",
             f"config <code>{esc(run.get('config_file', '?'))}</code>"]
    return f"<header><h1>Tessera training run · {esc(run_dir)}</h1><p class=\"meta\">{' · '.join(parts)}</p></header>"


def _summary(run_dir: Path, run: dict[str, Any], m: Metrics, out: Path) -> str:
    last = m.train[-1] if m.train else {}
    first_loss = m.train[0].get("loss") if m.train else None
    scored = [e for e in m.evals if _finite(e.get("eval_loss"))]
    best = min(scored, key=lambda e: e["eval_loss"]) if scored else None
    speeds = [r["tokens_per_s"] for r in m.train if isinstance(r.get("tokens_per_s"), int | float)]
    peak = max((r["peak_mem_gib"] for r in m.train if isinstance(r.get("peak_mem_gib"), int | float)), default=None)
    seen, seen_exact = total(m.train, "tokens")  # per step in metrics.jsonl
    trained, trained_exact = total(m.train, "trained_tokens")
    finished = (run_dir / "final").is_dir()
    checkpoints = sorted((p.name for p in run_dir.glob("checkpoint-*") if p.is_dir()),
                         key=lambda s: int(s.rsplit("-", 1)[-1]) if s.rsplit("-", 1)[-1].isdigit() else -1)
    cards = "".join([
        card("finished" if finished else "not finished", "final/ written" if finished else "no final/ yet",
              "ok" if finished else "bad"),
        card(f"{last.get('step', 0):,}", f"last logged step (epoch {last.get('epoch', 0):.2f})"
              if isinstance(last.get("epoch"), int | float) else "last logged step"),
        card(f"{first_loss:.3f} → {last['loss']:.3f}" if isinstance(first_loss, int | float) else "–",
              "train loss, first → last"),
        card(f"{best['eval_loss']:.3f}" if best else "–", f"best eval loss (step {best['step']:,})" if best
              else "no evaluation yet"),
        card(f"{seen:,}", "tokens seen" if seen_exact else "tokens seen (estimated from logged steps)"),
        card(f"{trained:,}", "trained tokens" if trained_exact else "trained tokens (estimated)"),
        card(f"{statistics.median(speeds):,.0f}" if speeds else "–", "tokens/s (median)"),
        card(f"{peak:.2f} GiB" if peak is not None else "–", "peak memory"),
    ])
    prepared = run.get("prepared_dir")
    lines = []
    if prepared:
        pdir = Path(prepared)
        if not pdir.is_absolute():  # recorded relative to where tessera train ran; try the run's parent too
            pdir = next((c for c in (Path.cwd() / pdir, run_dir.resolve().parent / pdir) if c.is_dir()), pdir)
        fp = str(run.get("prepared_fingerprint") or "")
        now = _fingerprint(pdir)
        state = ("missing now" if now is None else "unchanged since the run started" if now == fp
                 else f"changed since (now <code>{esc(now[:12])}</code>)")
        report = default_out(pdir)
        link = _link(pdir, out, prepared) if pdir.is_dir() else f"<code>{esc(prepared)}</code>"
        extra = f" · {_link(report, out, 'its report')}" if report.is_file() else ""
        lines.append(f"<p>Trained on {link} (fingerprint <code>{esc(fp[:12])}</code>, {state}){extra}</p>")
    lines.append(f"<p class=\"meta\">checkpoints: {esc(', '.join(checkpoints) or 'none')}</p>")
    if m.relogged:
        lines.append(f'<p class="meta">{m.relogged} step(s) were logged again after a resume; the resumed run\'s '
                     "values are shown.</p>")
    if m.unreadable:
        shown = ", ".join(map(str, m.unreadable[:10])) + (" …" if len(m.unreadable) > 10 else "")
        lines.append(f'<p class="bad">metrics.jsonl: {len(m.unreadable)} line(s) skipped, not a JSON object with '
                     f"a step (line {shown}; a run killed mid-write leaves one)</p>")
    return f'<section id="summary"><h2>Summary</h2><div class="cards">{cards}</div>{"".join(lines)}</section>'


def _fingerprint(prepared: Path) -> str | None:
    try:
        return str(json.loads((prepared / "manifest.json").read_text(encoding="utf-8")).get("fingerprint"))
    except (OSError, json.JSONDecodeError):
        return None


def _charts(m: Metrics) -> str:
    train_ds = _by_dataset(m.train, "loss_by_dataset")
    eval_ds = _by_dataset(m.evals, "eval_loss_by_dataset")
    names = list(dict.fromkeys([*train_ds, *eval_ds]))
    color = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}
    short = short_names(names)
    return "\n".join([
        _chart_section("loss", "Loss (mean cross-entropy per trained token)",
                       _lines([("train loss", _series(m.train, "loss"), ALL),
                               ("eval loss", _series(m.evals, "eval_loss"), EVAL)], "loss", wide=True)),
        '<div class="grid">',
        _chart_section("loss-by-dataset", "Train loss per dataset",
                       _lines([(short[n], train_ds[n], color[n]) for n in names if n in train_ds], "loss")),
        _chart_section("eval-by-dataset", "Eval loss per dataset",
                       _lines([(short[n], eval_ds[n], color[n]) for n in names if n in eval_ds], "eval loss")),
        _chart_section("lr", "Learning rate", _lines([("lr", _series(m.train, "lr"), ALL)], "lr")),
        _chart_section("grad-norm", "Gradient norm (before clipping)",
                       _lines([("grad norm", _series(m.train, "grad_norm"), ALL)], "grad norm")),
        "</div>",
        _chart_section("throughput", "Throughput",
                       _lines([("tokens/s", _series(m.train, "tokens_per_s"), ALL),
                               ("trained tokens/s", _series(m.train, "trained_tokens_per_s"), TRAINED)],
                              "tokens / s", wide=True)),
    ])


def _evals(m: Metrics) -> str:
    names = list(dict.fromkeys(n for e in m.evals for n in (e.get("eval_loss_by_dataset") or {})))
    rows = [{"step": e["step"], "eval_loss": _round(e.get("eval_loss")), "eval_tokens": e.get("eval_tokens"),
             **{n: _round((e.get("eval_loss_by_dataset") or {}).get(n)) for n in names}} for e in m.evals]
    short = short_names(names)
    columns = [("step", "step"), ("eval_loss", "eval loss"), ("eval_tokens", "eval tokens"),
               *((n, short[n]) for n in names)]
    return f'<section id="evals"><h2>Evaluations</h2>{table(rows, columns)}</section>'


def _round(v: Any) -> Any:
    # Losses are shown as numbers, not as shares: table() formats floats in [0, 1] as percentages.
    return f"{v:.4f}" if isinstance(v, int | float) else v


def _config(run: dict[str, Any]) -> str:
    cfg = run.get("config")
    body = (f"<pre class=\"code\">{esc(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))}</pre>"
            if cfg else '<p class="meta">run.json has no config</p>')
    return f'<section id="config"><h2>Config (resolved)</h2>{body}</section>'
