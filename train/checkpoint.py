"""Checkpoints: everything an exact resume needs, written atomically, by every process.

    output_dir/checkpoint-<step>/
        model.safetensors + config.json      full fine-tune (save_pretrained; under FSDP2 gathered from the shards
                                             unless fsdp_config.state_dict_type is SHARDED_STATE_DICT)
        adapter_model.safetensors + adapter_config.json    LoRA (peft save_pretrained), the same way
        optimizer.pt                         AdamW moments (one process or DDP: every rank holds the same)
        sharded/                             FSDP2 only: each rank's shards of the trained weights and their
                                             optimizer state (torch.distributed.checkpoint), what FSDP2 resumes from
        rng_state-<rank>.pt                  torch CPU and CUDA, numpy, python RNG of each rank
        trainer_state.json                   step, schedule, loader position of each rank (epoch, index), token
                                             counts, world size and parallelism
        config.yaml                          the resolved config

A checkpoint is written under `.checkpoint-<step>.tmp` and renamed by rank 0 once every rank has written its
part, so a folder named `checkpoint-<step>` is always whole; a run killed mid-save leaves only a temp folder,
ignored and removed later. With several machines output_dir must be on a filesystem they share. The schedule is a
pure function of the step (optim.lr_at), so the step is the scheduler's whole state.
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

from train.distributed import World, all_gather_object, barrier, unwrap

_NAME = re.compile(r"checkpoint-(\d+)")
SHARDED = "sharded"


class CheckpointError(Exception):
    """A checkpoint cannot be resumed from; the message says which file and what to do."""


def save_checkpoint(output_dir: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict[str, Any], config: dict[str, Any], world: World, limit: int | None = None,
                    full_weights: bool = True) -> Path:
    """Write checkpoint-<step>; every rank calls this (state["loader"] is this rank's position)."""
    final = output_dir / f"checkpoint-{step}"
    tmp = output_dir / f".checkpoint-{step}.tmp"
    if world.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(world)
    if world.parallelism == "fsdp2":
        _save_sharded(tmp / SHARDED, model, optimizer)
        if full_weights:
            save_weights(tmp, model, world)
    elif world.is_main:
        unwrap(model).save_pretrained(tmp)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(rng_states(), tmp / f"rng_state-{world.rank}.pt")
    loaders = all_gather_object(state["loader"], world)
    barrier(world)  # every rank's files are in tmp
    if world.is_main:
        record = {"step": step, **state, "loader_by_rank": loaders, "world_size": world.size,
                  "parallelism": world.parallelism}
        (tmp / "trainer_state.json").write_text(json.dumps(record, indent=1) + "\n")
        (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
        if final.exists():  # the same step saved by an earlier, killed attempt of this run
            shutil.rmtree(final)
        tmp.rename(final)
        if limit:
            for old in list_checkpoints(output_dir)[:-limit]:
                shutil.rmtree(old, ignore_errors=True)
        for leftover in output_dir.glob(".checkpoint-*.tmp"):
            shutil.rmtree(leftover, ignore_errors=True)
    barrier(world)
    return final


def save_weights(directory: Path, model: torch.nn.Module, world: World) -> None:
    """save_pretrained of the whole model (or the adapter) by rank 0, loadable with transformers/peft. Under
    FSDP2 the shards are gathered first, so every rank must call this."""
    if world.parallelism == "fsdp2":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if world.is_main:
            model.save_pretrained(directory, state_dict=full)
    elif world.is_main:
        unwrap(model).save_pretrained(directory)


def _sharded_options() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # LoRA: the frozen base weights are not saved again; they come from base_model on resume.
    return StateDictOptions(ignore_frozen_params=True)


def _save_sharded(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer, options=_sharded_options())
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=directory)


def _load_sharded(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(model, optimizer, options=_sharded_options())
    states = {"model": model_state, "optimizer": optim_state}
    dcp.load(states, checkpoint_id=directory)
    set_state_dict(model, optimizer, model_state_dict=states["model"], optim_state_dict=states["optimizer"],
                   options=_sharded_options())


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    found = [(int(m.group(1)), p) for p in output_dir.glob("checkpoint-*")
             if (m := _NAME.fullmatch(p.name)) and (p / "trainer_state.json").is_file()]
    return [p for _, p in sorted(found)]


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, adapter: bool,
                    world: World) -> dict[str, Any]:
    """Restore weights, optimizer and this rank's RNG from `path` in place; returns trainer_state.json with
    "loader" set to this rank's position."""
    state_file = path / "trainer_state.json"
    if not state_file.is_file():
        raise CheckpointError(f"{path}: not a complete checkpoint (no trainer_state.json); point "
                              "resume_from_checkpoint at a checkpoint-<step> folder of an earlier run")
    state = json.loads(state_file.read_text())
    saved_size = state.get("world_size", 1)
    saved = state.get("parallelism", "single" if saved_size == 1 else "ddp")
    if saved_size != world.size:
        raise CheckpointError(f"{path}: saved by {saved_size} process(es), this run has {world.size}: the data order "
                              f"and each rank's RNG and loader position depend on it; resume with {saved_size}")
    if (saved == "fsdp2") != (world.parallelism == "fsdp2"):
        raise CheckpointError(f"{path}: saved under {saved}, this run is {world.parallelism}: resume with the same "
                              "fsdp/fsdp_config (the optimizer state is sharded differently)")
    if world.parallelism == "fsdp2":
        _load_sharded(path / SHARDED, model, optimizer)
    else:
        _load_weights(path, unwrap(model), adapter)
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    rng = path / f"rng_state-{world.rank}.pt"
    if not rng.is_file():
        raise CheckpointError(f"{rng}: missing; the checkpoint is incomplete or from an older Tessera that saved "
                              "rank 0's RNG only: resume with one process or start fresh")
    set_rng_states(torch.load(rng, weights_only=False))
    state["loader"] = state.get("loader_by_rank", [state["loader"]])[world.rank]
    return state


def _load_weights(path: Path, model: torch.nn.Module, adapter: bool) -> None:
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
