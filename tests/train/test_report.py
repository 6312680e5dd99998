"""`tessera report OUTPUT_DIR` on a training run (train/report.py, dispatched by dataprep/look/html_report.py):
the page is self-contained (no scripts, nothing loaded; only relative links to the prepared directory and its
report), its numbers come from metrics.jsonl (merged and separate eval objects, re-logged steps after a resume,
a half-written last line), it draws the charts, and the CLI dispatches on what the folder is.

Most run files here are written by the test in the format train/loop.py writes (see train/report.py's
docstring), next to a real prepared directory (tests/sql/fixture.py), so that every case (resume, partial line,
every k-th step) is covered; test_report_of_a_real_run reports on a real 3-step run of train.loop.train (tiny
random-weight Qwen2 on the bundled example).

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/train/test_report.py -q
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from dataprep.cli import main
from dataprep.look.html import line_chart
from dataprep.look.html_report import default_out
from tests.dataprep.test_html_report import Tags
from train.report import build, read_metrics, short_names, total

DATASETS = ["data/alpaca.jsonl", "data/chat.jsonl"]


def _step(step: int) -> dict[str, Any]:
    loss = 3.0 + 8.0 * math.exp(-step / 12)
    return {"step": step, "epoch": round(step / 11, 4), "loss": round(loss, 4), "lr": 5e-3 * min(1, step / 5),
            "grad_norm": round(4.0 / step + 0.5, 4), "tokens": 4000 + step, "trained_tokens": 1300,
            "tokens_per_s": 2000.0 + step, "trained_tokens_per_s": 640.0 + step, "step_time_s": 2.0,
            "peak_mem_gib": 0.9 + step / 1000,
            "loss_by_dataset": {DATASETS[0]: round(loss + 0.2, 4), DATASETS[1]: round(loss - 0.3, 4)}}


def _eval(step: int) -> dict[str, Any]:
    loss = 3.4 + 8.0 * math.exp(-step / 12)
    return {"step": step, "eval_loss": round(loss, 4), "eval_tokens": 1900,
            "eval_loss_by_dataset": {DATASETS[0]: round(loss + 0.1, 4), DATASETS[1]: round(loss - 0.2, 4)}}


def _write_run(run_dir: Path, prepared: Path, lines: list[str], finished: bool = True) -> Path:
    run_dir.mkdir(parents=True)
    manifest = json.loads((prepared / "manifest.json").read_text())
    run = {"tessera_version": "0.1.0", "started": "2026-11-30T10:00:00+00:00",
           "config": {"base_model_init": "qwen2-tiny", "learning_rate": 0.005, "micro_batch_size": 2,
                      "datasets": [{"path": p} for p in DATASETS]},
           "config_file": "examples/demo.yaml", "prepared_dir": str(prepared),
           "prepared_fingerprint": manifest["fingerprint"],
           "model": {"built_from_config": "qwen2-tiny", "parameters": 19_562_752, "trainable_parameters": 19_562_752,
                     "adapter": None}, "world_size": 1, "device": "cpu"}
    (run_dir / "run.json").write_text(json.dumps(run, indent=1))
    (run_dir / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    (run_dir / "checkpoint-20").mkdir()
    (run_dir / "checkpoint-40").mkdir()
    if finished:
        (run_dir / "final").mkdir()
    return run_dir


def _lines() -> list[str]:
    lines = []
    for step in range(1, 51):
        obj = _step(step)
        if step % 10 == 0 and step != 20:
            obj.update(_eval(step))  # merged into the step's object
        lines.append(json.dumps(obj))
        if step == 20:
            lines.append(json.dumps(_eval(20)))  # a separate object with the same step
    return lines


@pytest.fixture
def run_dir(tmp_path: Path, prepared: Path) -> Path:
    return _write_run(tmp_path / "outputs" / "demo", prepared, _lines())


def test_metrics_merged_and_separate_evals_relogged_steps_and_a_partial_line(tmp_path: Path) -> None:
    lines = _lines()
    # A crash after step 33, a resume from checkpoint-30 that logs 31..50 again, then a half-written line.
    resumed = [json.dumps({**json.loads(x), "loss": json.loads(x)["loss"] + 0.01}) for x in lines[31:]]
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(lines[:34] + resumed + ['{"step": 51, "loss": 3.0', ""]))
    m = read_metrics(path)
    assert [r["step"] for r in m.train] == list(range(1, 51))
    assert [e["step"] for e in m.evals] == [10, 20, 30, 40, 50]
    assert m.relogged == 33 - 30
    assert m.train[31]["loss"] == json.loads(lines[32])["loss"] + 0.01  # step 32: the resumed run's value
    assert m.unreadable == [len(lines[:34] + resumed) + 1]
    assert "eval_loss" not in m.train[9] and m.evals[0]["eval_loss_by_dataset"][DATASETS[0]] > 0


def test_page_self_contained_with_charts_and_numbers(run_dir: Path, prepared: Path) -> None:
    page = build(run_dir)
    parser = Tags()
    parser.feed(page)
    assert parser.balanced and not parser.stack
    names = {t for t, _ in parser.tags}
    assert not names & {"script", "link", "iframe", "img"}
    hrefs = [a.get("href") for t, a in parser.tags if t == "a"]
    for tag, attrs in parser.tags:
        assert not attrs.get("src") and not attrs.get("xlink:href"), f"<{tag}> loads something"
    assert not re.search(r"https?://", page) and "url(" not in page
    # The prepared directory is linked relative to the page (written next to the run folder).
    assert len(hrefs) == 1 and not hrefs[0].startswith("/")
    page_dir = default_out(run_dir).parent
    assert (page_dir / hrefs[0]).resolve() == prepared.resolve()
    assert "unchanged since the run started" in page
    for sid in ("summary", "loss", "loss-by-dataset", "eval-by-dataset", "lr", "grad-norm", "throughput",
                "evals", "config"):
        assert f'<section id="{sid}">' in page
    assert page.count("<svg ") == 6 and page.count("<polyline ") == 2 + 2 + 2 + 1 + 1 + 2
    cards = dict((label, value) for value, label in
                 re.findall(r'<div class="card"><b[^>]*>([^<]*)</b><span>([^<]*)</span></div>', page))
    first, last = _step(1), _step(50)
    assert cards["train loss, first → last"] == f"{first['loss']:.3f} → {last['loss']:.3f}"
    assert cards["best eval loss (step 50)"] == f"{_eval(50)['eval_loss']:.3f}"
    assert cards["tokens seen"] == f"{sum(_step(i)['tokens'] for i in range(1, 51)):,}"  # per step in the file
    assert cards["trained tokens"] == f"{50 * 1300:,}"
    assert cards["final/ written"] == "finished"
    assert "checkpoints: checkpoint-20, checkpoint-40" in page
    assert "learning_rate: 0.005" in page  # the config as YAML
    assert page == build(run_dir)  # deterministic


def test_prepared_report_linked_when_present_and_change_noticed(tmp_path: Path, prepared: Path) -> None:
    copy = tmp_path / "prep"
    shutil.copytree(prepared, copy)
    run_dir = _write_run(tmp_path / "run", copy, _lines()[:5], finished=False)
    assert main(["report", str(copy)]) == 0  # the prepared report: prep.report.html
    page = build(run_dir)
    assert 'href="prep"' in page and 'href="prep.report.html"' in page
    assert "not finished" in page and "no evaluation yet" in page
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "fingerprint": "0" * 64}))
    assert "changed since (now <code>000000000000</code>)" in build(run_dir)


def test_cli_dispatches_on_the_folder(run_dir: Path, prepared: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(run_dir)]) == 0
    out = default_out(run_dir)
    assert out == run_dir.parent / "demo.report.html" and out.is_file()
    assert "Tessera training run" in out.read_text() and f"wrote {out}" in capsys.readouterr().out
    assert main(["report", str(run_dir), "--out", str(run_dir / "r.html")]) == 1
    assert "inside the training run" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 1
    assert "neither a prepared directory (manifest.json) nor a training run" in capsys.readouterr().err
    (run_dir / "run.json").write_text("{")
    assert main(["report", str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert "run.json is not valid JSON" in err and err.count("\n") == 1


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory, qwen_dir: Path) -> Path:
    from dataprep.pipeline import run_pipeline
    from dataprep.report import Progress
    from schemas.config import load_config
    from tests.train.tiny import write_config
    from train.loop import train

    tmp = tmp_path_factory.mktemp("real_run")
    path = write_config(tmp, qwen_dir, max_steps=3, eval_steps=2, save_steps=2, logging_steps=1,
                        micro_batch_size=1, learning_rate=5e-3)
    cfg = load_config(path)
    run_pipeline(cfg, path, tmp / "prepared", progress=Progress(enabled=False))
    train(cfg, tmp / "prepared", path)
    return Path(cfg.output_dir)


def test_report_of_a_real_run(real_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = [json.loads(x) for x in (real_run / "metrics.jsonl").read_text().splitlines()]
    m = read_metrics(real_run / "metrics.jsonl")
    assert [r["step"] for r in m.train] == [1, 2, 3] and [e["step"] for e in m.evals] == [2, 3]
    assert main(["report", str(real_run)]) == 0
    page = default_out(real_run).read_text()
    cards = dict((label, value) for value, label in
                 re.findall(r'<div class="card"><b[^>]*>([^<]*)</b><span>([^<]*)</span></div>', page))
    train_lines = [x for x in lines if "loss" in x]
    assert cards["train loss, first → last"] == f"{train_lines[0]['loss']:.3f} → {train_lines[-1]['loss']:.3f}"
    assert cards["tokens seen"] == f"{sum(x['tokens'] for x in train_lines):,}"
    assert cards["final/ written"] == "finished"
    best = min(m.evals, key=lambda e: e["eval_loss"])
    assert cards[f"best eval loss (step {best['step']})"] == f"{best['eval_loss']:.3f}"
    assert "unchanged since the run started" in page and "checkpoint-2" in page
    # Per-dataset lines under the datasets' file names, from the run's own loss_by_dataset keys.
    names = {Path(n).name for x in train_lines for n in x["loss_by_dataset"]}
    assert names and all(f">{n}</text>" in page for n in names)
    assert page.count("<svg ") == 6


def test_totals_from_every_k_th_step_and_short_names() -> None:
    rows = [{"step": s, "tokens": 100} for s in (5, 10, 15)]
    assert total(rows, "tokens") == (1500, False)
    assert total([{"step": 1, "tokens": 7}, {"step": 2, "tokens": 9}], "tokens") == (16, True)
    assert short_names(["/a/x/data.jsonl", "/a/y/data.jsonl", "/a/chat.jsonl"]) == {
        "/a/x/data.jsonl": "x/data.jsonl", "/a/y/data.jsonl": "y/data.jsonl", "/a/chat.jsonl": "chat.jsonl"}


def test_line_chart_scales_points_into_the_plot() -> None:
    svg = line_chart([("a", [0, 5, 10], [0.0, 0.002, 0.004], "#000000")], "step", "lr", width=300, height=200)
    points = re.search(r'points="([^"]+)"', svg).group(1).split()
    xs = [float(p.split(",")[0]) for p in points]
    ys = [float(p.split(",")[1]) for p in points]
    assert xs == sorted(xs) and ys == sorted(ys, reverse=True)  # rising line: y decreases on screen
    assert 56 <= xs[0] < xs[-1] <= 290 and 24 <= ys[-1] < ys[0] <= 200 - 36
    assert ">0.004<" in svg and ">0.002<" in svg  # small ticks are not rounded to 0.00


def test_non_finite_values_and_a_metrics_only_folder(tmp_path: Path) -> None:
    run_dir = tmp_path / "stopped"
    run_dir.mkdir()
    lines = [{"step": 1, "loss": 9.0, "tokens": 10}, {"step": 2, "loss": float("nan"), "tokens": 10},
             {"step": 2, "eval_loss": None}, {"step": 3, "eval_loss": float("inf")}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))  # NaN/Infinity as JSON
    page = build(run_dir)  # no run.json: the page says what it cannot know instead of failing
    assert "no evaluation yet" in page and "not finished" in page and "run.json has no config" in page
    assert page.count("<svg ") == 1 and page.count("nothing logged") == 5  # only the loss has a finite point
