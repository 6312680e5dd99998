"""`tessera eval` (issue 11, item 5): the val loss of final/ or a checkpoint, computed by the trainer's own
`evaluate`, equals the eval_loss (and per-dataset losses) the run logged at that step: full fine-tune at
checkpoint-10, checkpoint-20 and final/ (step 30), LoRA at checkpoint-2 and final/ (step 4). A run without a
val split, or a prepared directory rebuilt since training, is reported in one line / a note.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/train/test_eval.py -v
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dataprep.cli import main as tessera
from schemas.config import load_config
from tests.train.after_runs import full_run, lora_run
from tests.train.tiny import demo_prepared

__all__ = ["demo_prepared", "full_run", "lora_run"]  # fixtures, imported so pytest finds them


def _logged(out: Path) -> dict[int, dict[str, Any]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if "eval_loss" in r}


def _eval(cfg: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    assert tessera(["eval", str(cfg), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("run", ["full_run", "lora_run"])
def test_eval_equals_the_logged_eval_loss(run: str, request: pytest.FixtureRequest,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    cfg = request.getfixturevalue(run)
    capsys.readouterr()  # the run's own output
    out = Path(load_config(cfg).output_dir)
    logged = _logged(out)
    checkpoints = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert checkpoints
    for extra in [("--checkpoint", str(c)) for c in checkpoints] + [()]:
        got = _eval(cfg, capsys, *extra)
        want = logged[got["step"]]
        assert got["eval_tokens"] == want["eval_tokens"]
        assert got["eval_loss"] == pytest.approx(want["eval_loss"], rel=1e-6)
        assert got["eval_loss_by_dataset"].keys() == want["eval_loss_by_dataset"].keys()
        for name, value in want["eval_loss_by_dataset"].items():
            assert got["eval_loss_by_dataset"][name] == pytest.approx(value, rel=1e-6)
    assert got["step"] == max(logged)  # final/ is the last step


def test_table_names_step_and_datasets(full_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert tessera(["eval", str(full_run)]) == 0
    text = capsys.readouterr().out
    assert "final (step 30): eval_loss " in text and "  dataset " in text and "alpaca.jsonl" in text


def test_no_val_split_is_one_line(full_run: Path, tmp_path: Path, qwen_dir: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    from dataprep.pipeline import run_pipeline
    from dataprep.report import Progress
    from tests.train.tiny import write_config

    cfg_path = write_config(tmp_path, qwen_dir, val_set_size=0, output_dir=load_config(full_run).output_dir)
    run_pipeline(load_config(cfg_path), cfg_path, tmp_path / "prepared", progress=Progress(enabled=False))
    capsys.readouterr()  # prepare's stage lines
    assert tessera(["eval", str(cfg_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no val split" in err
