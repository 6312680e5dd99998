"""`tessera eval CONFIG [--checkpoint DIR]`: val loss (overall and per dataset) of final/ or any checkpoint.

It calls the trainer's own `train.loop.evaluate` (same batches, same packed attention, same loss: mean
cross-entropy per trained token of the val split), so the number equals the eval_loss the run logged at that
step. The prepared directory is the config's (or --prepared); when its fingerprint differs from the one the run
trained on (run.json), a note says so: the val split may then hold other rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schemas.config import Config
from train.artifacts import ArtifactError, load_model_from
from train.data import open_prepared


def evaluate_weights(cfg: Config, weights: Path, prepared: Path) -> tuple[dict[str, Any], list[str]]:
    """The eval metrics of the model in `weights` on prepared's val split, and notes for the user."""
    from train.loop import evaluate

    data = open_prepared(prepared)
    if not data.num_rows("val"):
        raise ArtifactError(f"{prepared}: no val split (val_set_size is 0); set val_set_size and prepare again")
    notes = []
    run_file = Path(cfg.output_dir) / "run.json"
    if run_file.is_file():
        trained_on = json.loads(run_file.read_text()).get("prepared_fingerprint")
        if trained_on and trained_on != data.manifest.get("fingerprint"):
            notes.append(f"{prepared} was prepared again since this run trained (fingerprint "
                         f"{data.manifest.get('fingerprint', '')[:12]}, the run used {trained_on[:12]}): the val "
                         "split may hold other rows than the run's evaluations")
    from train.distributed import Precision, setup_world

    world = setup_world(cfg)
    precision = Precision(cfg, world.device)
    model = load_model_from(weights, cfg, quantized=True, device=world.device,
                            compute_dtype=precision.dtype).to(world.device)
    return evaluate(model, data, cfg, world, precision), notes


def step_of(weights: Path) -> int | None:
    """The optimizer step a checkpoint was saved at (final/: the run's last step, from metrics.jsonl)."""
    state = weights / "trainer_state.json"
    if state.is_file():
        return int(json.loads(state.read_text())["step"])
    metrics = weights.parent / "metrics.jsonl"
    if weights.name == "final" and metrics.is_file():
        steps = []
        for line in metrics.read_text().splitlines():
            try:
                steps.append(json.loads(line).get("step"))
            except (json.JSONDecodeError, AttributeError):  # a line cut by a kill
                continue
        return max((s for s in steps if isinstance(s, int)), default=None)
    return None


def eval_report(metrics: dict[str, Any], weights: Path, step: int | None) -> str:
    at = f" (step {step})" if step is not None else ""
    lines = [f"{weights}{at}: eval_loss {metrics['eval_loss']:.4f} over {metrics['eval_tokens']:,} trained tokens"]
    for key, title in (("eval_loss_by_dataset", "dataset"), ("eval_loss_by_source", "source file")):
        for name, value in metrics.get(key, {}).items():
            lines.append(f"  {title} {name}: {value:.4f}")
    return "\n".join(lines)
