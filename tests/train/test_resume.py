"""Exact resume after SIGKILL (issue 8, item 7): `python -m train` with LoRA and dropout on (LoRA dropout and
attention dropout) is killed with SIGKILL after a checkpoint, restarted with auto_resume_from_checkpoints, and
reproduces the uninterrupted run's loss curve step for step (bit for bit on CPU). Also: `tessera train` prepares
first only when needed, and save_total_limit keeps the newest checkpoints.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/train/test_resume.py -v
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from schemas.config import load_config
from tests.train.tiny import ROOT, TINY, demo_prepared, write_config
from train.loop import train

__all__ = ["demo_prepared"]  # a fixture, imported so pytest finds it

KEYS = {"base_model_init": {**TINY, "attention_dropout": 0.1}, "adapter": "lora", "lora_r": 4, "lora_alpha": 8,
        "lora_dropout": 0.1, "lora_target_modules": ["q_proj", "v_proj", "gate_proj"], "learning_rate": 1e-2,
        "max_steps": 12, "save_steps": 3, "save_total_limit": 2, "logging_steps": 1}


def _cmd(cfg: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "train", str(cfg), *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _losses(out: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_sigkill_then_auto_resume_reproduces_the_loss_curve(tmp_path: Path, qwen_dir: Path,
                                                            demo_prepared: Path) -> None:
    prepared = {"dataset_prepared_path": str(demo_prepared)}
    whole_cfg = write_config(tmp_path / "whole", qwen_dir, output_dir=str(tmp_path / "whole" / "out"),
                             **prepared, **KEYS)
    train(load_config(whole_cfg), demo_prepared, whole_cfg)  # in-process: the same code, one start-up less
    whole = _losses(tmp_path / "whole" / "out")
    assert sorted(whole) == list(range(1, 13))
    kept = sorted(p.name for p in (tmp_path / "whole" / "out").glob("checkpoint-*"))
    assert kept == ["checkpoint-6", "checkpoint-9"]  # save_total_limit: 2 (no checkpoint at the last step)

    out = tmp_path / "killed" / "out"
    cfg = write_config(tmp_path / "killed", qwen_dir, output_dir=str(out), **prepared, **KEYS)
    proc = subprocess.Popen(_cmd(cfg), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, env=_env())
    try:
        deadline = time.monotonic() + 300
        while not (out / "checkpoint-6" / "trainer_state.json").is_file():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert not (out / "final").exists(), "killed before the end"
    assert max(_losses(out)) < 12

    rerun = subprocess.run(_cmd(cfg, "--set", "auto_resume_from_checkpoints=true"), capture_output=True, text=True,
                           cwd=ROOT, env=_env(), timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "up to date" in rerun.stdout  # same data config: prepare's cache is reused, nothing rebuilt
    assert "resumed from" in rerun.stdout and "checkpoint-" in rerun.stdout
    assert _losses(out) == whole  # every step, bit for bit, including those before the kill
    assert (out / "final" / "adapter_model.safetensors").is_file()


def test_tessera_train_refuses_a_bad_checkpoint_path_in_one_line(tmp_path: Path, qwen_dir: Path,
                                                                 demo_prepared: Path) -> None:
    cfg = write_config(tmp_path, qwen_dir, dataset_prepared_path=str(demo_prepared), max_steps=1,
                       resume_from_checkpoint=str(tmp_path / "nowhere"))
    run = subprocess.run([sys.executable, "-m", "dataprep", "train", str(cfg)], capture_output=True, text=True,
                         cwd=ROOT, env=_env(), timeout=600)
    assert run.returncode == 1
    # Off a terminal prepare prints one `stage ...` line per stage to stderr; the error is the one other line.
    lines = [line for line in run.stderr.strip().splitlines() if not line.startswith("stage ")]
    assert lines == [f"error: resume_from_checkpoint {tmp_path / 'nowhere'}: no such folder"]
