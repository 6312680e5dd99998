"""Checkpoints: everything an exact resume needs, written atomically.

    output_dir/checkpoint-<step>/
        model.safetensors + config.json      full fine-tune (save_pretrained)
        adapter_model.safetensors + adapter_config.json    LoRA (peft save_pretrained)
        optimizer.pt                         AdamW moments
        rng_state-<rank>.pt                  torch CPU and CUDA, numpy, python RNG of each rank
        trainer_state.json                   step, schedule, loader position (epoch, index), token counts
        config.yaml                          the resolved config

A checkpoint is written under `.checkpoint-<step>.tmp` and renamed when complete, so a folder named
`checkpoint-<step>` is always whole; a run killed mid-save leaves only a temp folder, ignored and removed later.
The schedule is a pure function of the step (optim.lr_at), so the step is the scheduler's whole state.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import load_file

_NAME = re.compile(r"checkpoint-(\d+)")


class CheckpointError(Exception):
    """A checkpoint cannot be resumed from; the message says which file and what to do."""


def save_checkpoint(output_dir: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict[str, Any], config: dict[str, Any], limit: int | None = None) -> Path:
    """Write checkpoint-<step> (single process; ranks > 0 only add their RNG file in a later issue)."""
    final = output_dir / f"checkpoint-{step}"
    tmp = output_dir / f".checkpoint-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(rng_states(), tmp / "rng_state-0.pt")
    (tmp / "trainer_state.json").write_text(json.dumps({"step": step, **state}, indent=1) + "\n")
    (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    if final.exists():  # the same step saved by an earlier, killed attempt of this run
        shutil.rmtree(final)
    tmp.rename(final)
    if limit:
        for old in list_checkpoints(output_dir)[:-limit]:
            shutil.rmtree(old, ignore_errors=True)
    for leftover in output_dir.glob(".checkpoint-*.tmp"):
        shutil.rmtree(leftover, ignore_errors=True)
    return final


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    found = [(int(m.group(1)), p) for p in output_dir.glob("checkpoint-*")
             if (m := _NAME.fullmatch(p.name)) and (p / "trainer_state.json").is_file()]
    return [p for _, p in sorted(found)]


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    adapter: bool) -> dict[str, Any]:
    """Restore weights, optimizer and RNG from `path` in place; returns trainer_state.json."""
    state_file = path / "trainer_state.json"
    if not state_file.is_file():
        raise CheckpointError(f"{path}: not a complete checkpoint (no trainer_state.json); point "
                              "resume_from_checkpoint at a checkpoint-<step> folder of an earlier run")
    if adapter:
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(model, load_file(path / "adapter_model.safetensors"))
        unexpected = result.unexpected_keys
    else:
        weights = load_file(path / "model.safetensors")
        missing, unexpected = model.load_state_dict(weights, strict=False)
        # save_pretrained writes tied weights once (lm_head tied to embed_tokens): missing is fine only for those.
        untied = [k for k in missing if not _is_tied(model, k)]
        if untied:
            raise CheckpointError(f"{path}: the weights lack {untied[:3]}: the checkpoint is of another model; "
                                  "use the same base_model/base_model_init as the run that wrote it")
    if unexpected:
        raise CheckpointError(f"{path}: weights {unexpected[:3]} are not in this model: the checkpoint is of "
                              "another model or adapter configuration")
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    set_rng_states(torch.load(path / "rng_state-0.pt", weights_only=False))
    return json.loads(state_file.read_text())


def _is_tied(model: torch.nn.Module, key: str) -> bool:
    params = dict(model.named_parameters(remove_duplicate=False))
    if key not in params:
        return False
    ptr = params[key].data_ptr()
    return any(p.data_ptr() == ptr for k, p in params.items() if k != key)


def rng_states() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
