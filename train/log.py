"""What a run shows and records: `print0`, one fixed-format line per logged step (or a progress bar on a
terminal), `metrics.jsonl` (one JSON object per logged step, read by `tessera report OUTPUT_DIR`) and wandb
when it is installed and `wandb_project` is set (never a dependency).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

_console = Console(stderr=False, highlight=False, soft_wrap=True)


def print0(message: str, is_main: bool = True) -> None:
    """Print on rank 0 only (the other ranks would repeat the same line)."""
    if is_main:
        _console.print(message, markup=False)


def step_line(m: dict[str, Any], total_steps: int) -> str:
    """`step 12/50 | loss 4.1234 | lr 4.80e-03 | grad 1.234 | tok/s 1,234 | trained tok/s 456 | 310 ms | 0.42 GiB`"""
    width = len(str(total_steps))
    parts = [f"step {m['step']:>{width}}/{total_steps}", f"loss {m['loss']:.4f}", f"lr {m['lr']:.2e}",
             f"grad {m['grad_norm']:.3f}", f"tok/s {m['tokens_per_s']:,.0f}",
             f"trained tok/s {m['trained_tokens_per_s']:,.0f}", f"{m['step_time_s'] * 1000:.0f} ms",
             f"{m['peak_mem_gib']:.2f} GiB"]
    if m.get("mfu") is not None:
        parts.append(f"mfu {m['mfu']:.1%}")
    return " | ".join(parts)


def eval_line(m: dict[str, Any]) -> str:
    per = ", ".join(f"{k} {v:.4f}" for k, v in m["eval_loss_by_dataset"].items())
    return f"eval step {m['step']} | eval_loss {m['eval_loss']:.4f} | {m['eval_tokens']:,} tokens | {per}"


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    # ru_maxrss is KiB on Linux: the process's peak resident memory (model, optimizer, activations).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class RunLog:
    """metrics.jsonl + terminal output + optional wandb, on rank 0."""

    def __init__(self, output_dir: Path, total_steps: int, start_step: int, is_main: bool,
                 wandb_project: str | None, config: dict[str, Any]):
        self.path = output_dir / "metrics.jsonl"
        self.total = total_steps
        self.is_main = is_main
        self.bar: Progress | None = None
        self.wandb = None
        if not is_main:
            return
        _truncate_after(self.path, start_step)
        if sys.stdout.isatty():
            self.bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                TimeRemainingColumn(), TextColumn("{task.description}"), console=_console)
            self.bar.start()
            self.task = self.bar.add_task("", total=total_steps, completed=start_step)
        if wandb_project:
            try:
                import wandb
            except ImportError:
                print0("wandb_project is set but wandb is not installed: logging to metrics.jsonl only")
            else:
                self.wandb = wandb.init(project=wandb_project, config=config)

    def step(self, m: dict[str, Any], logged: bool) -> None:
        if not self.is_main:
            return
        if self.bar is not None:
            self.bar.update(self.task, completed=m["step"], description=f"loss {m['loss']:.4f} lr {m['lr']:.2e}")
        if logged:
            self._write(m)
            if self.bar is None:
                print0(step_line(m, self.total))

    def eval(self, m: dict[str, Any]) -> None:
        if not self.is_main:
            return
        self._write(m)
        if self.bar is not None:
            self.bar.console.print(eval_line(m), markup=False)
        else:
            print0(eval_line(m))

    def _write(self, m: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(m) + "\n")
        if self.wandb is not None:
            flat = {k: v for k, v in m.items() if not isinstance(v, dict)}
            for key in ("loss_by_dataset", "eval_loss_by_dataset"):
                flat.update({f"{key}/{d}": v for d, v in m.get(key, {}).items()})
            self.wandb.log(flat, step=m["step"])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
        if self.wandb is not None:
            self.wandb.finish()


def _truncate_after(path: Path, step: int) -> None:
    """On resume from checkpoint-<step>: drop what the killed run logged after it, since those steps run again."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            break  # a line cut by the kill: it and anything after are from the lost steps
    path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
