"""`train(cfg, prepared_dir)`: the training loop, in one function, top to bottom.

Setup (named functions below and in model.py/optim.py/checkpoint.py/distributed.py): the processes (rank, world
size, device, DDP or FSDP2), precision, the prepared data (train/data.py), the model, the optimizer, the step
counts and an optional resume. Then, per optimizer step: the lr from lr_at(step), `gradient_accumulation_steps`
micro-batches whose token losses are summed and divided by the step's trained-token count (all ranks), clip,
a stop on a non-finite loss or grad norm, the update, log, and at their steps evaluation and a checkpoint.
At the end: a last evaluation with the final weights and `final/` (model or adapter + tokenizer/).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

import dataprep
from schemas.config import Config
from train.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, save_checkpoint, save_weights
from train.data import (
    Batch,
    LoaderState,
    PreparedData,
    batches_per_epoch,
    check_tokenizer,
    iterate_batches,
    open_prepared,
)
from train.distributed import (
    Precision,
    World,
    all_sum,
    barrier,
    grad_sync,
    loads_empty,
    main_first,
    setup_world,
    wrap_model,
)
from train.log import RunLog, peak_memory_gib, print0
from train.model import load_model, token_losses
from train.optim import build_optimizer, lr_at, make_schedule, set_lr


class TrainingError(Exception):
    """The run cannot go on (non-finite loss, nothing to train on, ...); one line saying where and what to do."""


@dataclass
class Plan:
    """Step counts derived from the config and the data (all in optimizer steps)."""

    steps_per_epoch: int
    total: int
    eval_every: int | None
    save_every: int | None


@dataclass
class Trained:
    """What train() returns: final/ and the trained model as the processes hold it (DDP-wrapped or sharded)."""

    final: Path
    model: torch.nn.Module
    world: World


def train(cfg: Config, prepared_dir: Path, config_file: Path | None = None) -> Trained:
    """Train on prepared_dir's shards (every launched process calls this); final/ is output_dir/final."""
    world = setup_world(cfg)
    precision = Precision(cfg, world.device)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    resume = _resume_path(cfg, out)  # a wrong path fails before the model is loaded
    data = open_prepared(prepared_dir)
    plan = _plan(cfg, data, world.size, world.is_main)  # too little data fails before the model is loaded, too
    vocab_size = int(data.manifest["tokenizer"]["vocab_size"])
    with main_first(world):  # rank 0 writes base_model/ (base_model_init), the others load it
        loaded = load_model(cfg, vocab_size, out, is_main=world.is_main, empty=loads_empty(cfg, world),
                            device=world.device, compute_dtype=precision.dtype)
    check_tokenizer(data, loaded.model.get_input_embeddings().num_embeddings, _model_tokenizer(cfg))
    model, world = wrap_model(loaded.model, cfg, world)
    if world.size > 1:
        torch.manual_seed(cfg.seed + world.rank)  # dropout: each rank its own stream, the same on every run
    optimizer = build_optimizer(model, cfg)
    schedule = make_schedule(cfg, plan.total)
    if cfg.lr_quadratic_warmup and cfg.cosine_min_lr_ratio and cfg.lr_scheduler == "cosine":
        print0("warning: lr_quadratic_warmup with cosine_min_lr_ratio: the cosine decays to 0, as in Axolotl "
               "(it uses quadratic warmup and ignores the minimum)", world.is_main)
    step, loader, trained_total = _resume(resume, cfg, model, optimizer, world)
    _write_run_json(out, cfg, config_file, data, loaded.info, world, precision, resumed_at=step)
    base = f"{loaded.info['quantization']} base, " if loaded.info["quantization"] else ""
    print0(f"training {loaded.info['architecture']} ({base}{loaded.info['trainable_parameters']:,} of "
           f"{loaded.info['parameters']:,} parameters trained) on {_shown(prepared_dir, data.dir)}: "
           f"{plan.total} steps, {plan.steps_per_epoch} per epoch, {world.describe()}", world.is_main)
    log = RunLog(out, plan.total, step, world.is_main, cfg.wandb_project, cfg.model_dump(mode="json"))
    batches = iterate_batches(data, "train", cfg.micro_batch_size, seed=cfg.seed, rank=world.rank,
                              world_size=world.size, start=loader)
    per_epoch = batches_per_epoch(data, "train", cfg.micro_batch_size, world.size)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = LossGroups(data)
    model.train()
    last_eval = -1
    while step < plan.total:
        t0 = time.perf_counter()
        lr = lr_at(step, schedule)
        set_lr(optimizer, lr)
        micro = [next(batches) for _ in range(cfg.gradient_accumulation_steps)]
        loader = micro[-1][1]
        # Normalise by the trained tokens of the whole step over all ranks, not per micro-batch: a mean per
        # micro-batch weights a short micro-batch's tokens more (the gradient-accumulation bug).
        counts = all_sum(torch.tensor([sum(b.num_trainable for b, _ in micro),
                                       sum(b.num_tokens for b, _ in micro)], dtype=torch.float64), world)
        trained, tokens = int(counts[0]), int(counts[1])
        by_group = groups.zeros()
        for i, (batch, _) in enumerate(micro):
            with grad_sync(model, enabled=i == len(micro) - 1):  # reduce over ranks once, after the last
                losses, sample_ids = _forward(model, batch, cfg, world, precision)
                # DDP/FSDP2 average gradients over ranks; times world size makes that a sum over all ranks' tokens.
                precision.backward(losses.sum() * world.size / max(trained, 1))
            groups.add(by_group, losses.detach(), sample_ids)
        by_group = all_sum(by_group, world)  # the logged loss is the global one, as one process would see it
        loss = groups.total(by_group)[0] / max(trained, 1)
        grad_norm = precision.clip(params, optimizer, cfg.max_grad_norm or float("inf"))
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            raise TrainingError(f"step {step + 1}: loss {loss} / grad norm {grad_norm} is not finite; stopped "
                                f"before the update (last checkpoint: {_newest(out)}). Lower learning_rate, "
                                "set max_grad_norm, or use bf16 instead of fp16")
        precision.step(optimizer)
        optimizer.zero_grad(set_to_none=True)
        step += 1
        trained_total += trained
        dt = time.perf_counter() - t0
        metrics = {"step": step, "epoch": round(loader.epoch + loader.index / per_epoch, 4), "loss": loss,
                   "lr": lr, "grad_norm": grad_norm, "tokens": tokens, "trained_tokens": trained,
                   "tokens_per_s": tokens / dt, "trained_tokens_per_s": trained / dt, "step_time_s": dt,
                   "peak_mem_gib": peak_memory_gib(world.device),
                   "mfu": _mfu(loaded.info, tokens / world.size, dt, world.device), **groups.losses(by_group)}
        log.step(metrics, logged=step % cfg.logging_steps == 0 or step == plan.total)
        if plan.eval_every and (step % plan.eval_every == 0 or step == plan.total):
            log.eval({"step": step, **evaluate(model, data, cfg, world, precision)})
            last_eval = step
        if plan.save_every and step % plan.save_every == 0 and step < plan.total:
            save_checkpoint(out, step, model, optimizer,
                            {"loader": loader.to_dict(), "trained_tokens": trained_total,
                             "schedule": schedule.__dict__}, cfg.model_dump(mode="json"), world,
                            cfg.save_total_limit, full_weights=cfg.fsdp_settings.state_dict_type == "FULL_STATE_DICT")
    if data.num_rows("val") and last_eval != step:
        log.eval({"step": step, **evaluate(model, data, cfg, world, precision)})
    log.close()
    final = _save_final(out, model, data.dir, world)
    print0(f"wrote {final}", world.is_main)
    return Trained(final, model, world)


def evaluate(model: torch.nn.Module, data: PreparedData, cfg: Config, world: World,
             precision: Precision) -> dict[str, Any]:
    """Mean cross-entropy per trained token of the val split (every row once over all ranks), overall and per
    dataset: the same definition as the training loss, with the same packed attention."""
    model.eval()
    groups = LossGroups(data)
    by_group = groups.zeros()
    with torch.no_grad():
        for batch, _ in iterate_batches(data, "val", cfg.micro_batch_size, seed=cfg.seed, rank=world.rank,
                                        world_size=world.size, shuffle=False, epochs=1):
            losses, sample_ids = _forward(model, batch, cfg, world, precision)
            groups.add(by_group, losses, sample_ids)
    model.train()
    by_group = all_sum(by_group, world)
    loss_sum, n = groups.total(by_group)
    return {"eval_loss": loss_sum / max(n, 1), "eval_tokens": int(n), **groups.losses(by_group, "eval_")}


def _forward(model: torch.nn.Module, batch: Batch, cfg: Config, world: World,
             precision: Precision) -> tuple[torch.Tensor, ...]:
    dev = world.device
    with precision.autocast():
        return token_losses(model, batch.input_ids.to(dev), batch.labels.to(dev), batch.position_ids.to(dev),
                            batch.sample_ids.to(dev), cfg.attention, batch.cu_seqlens, batch.max_seqlen)


class LossGroups:
    """Where each trained token's loss is summed: its dataset (loss_by_dataset) and, when some dataset reads
    several files and there are at most MAX_SOURCES files in all, its source file (loss_by_source). A sample's
    group comes from its sample_id (samples.parquet), so this works with packing."""

    MAX_SOURCES = 16

    def __init__(self, data: PreparedData):
        self.data = data
        self.names = list(data.dataset_names)
        self.n_datasets = len(self.names)
        self.source_of: torch.Tensor | None = None
        table = pq.read_table(data.dir / "samples.parquet", columns=["sample_id", "source_file"])
        files = sorted(set(table["source_file"].to_pylist()))
        if self.n_datasets < len(files) <= self.MAX_SOURCES:
            index = {f: self.n_datasets + i for i, f in enumerate(files)}
            ids = table["sample_id"].to_numpy()
            source_of = np.full(int(ids.max()) + 1, -1, np.int64)
            source_of[ids] = [index[f] for f in table["source_file"].to_pylist()]
            self.source_of = torch.from_numpy(source_of)
            self.names += files

    def zeros(self) -> torch.Tensor:
        """Row 0: summed loss per group, row 1: trained tokens per group."""
        return torch.zeros(2, len(self.names), dtype=torch.float64)

    def add(self, sums: torch.Tensor, losses: torch.Tensor, sample_ids: torch.Tensor) -> None:
        sample_ids, losses = sample_ids.cpu(), losses.detach().cpu().double()
        index = [self.data.token_datasets(sample_ids)]
        if self.source_of is not None:
            index.append(self.source_of[sample_ids])
        for idx in index:
            sums[0].index_add_(0, idx, losses)
            sums[1].index_add_(0, idx, torch.ones_like(losses))

    def total(self, sums: torch.Tensor) -> tuple[float, float]:
        """(loss sum, trained tokens) over all datasets (each token counted once)."""
        return float(sums[0, :self.n_datasets].sum()), float(sums[1, :self.n_datasets].sum())

    def losses(self, sums: torch.Tensor, prefix: str = "") -> dict[str, dict[str, float]]:
        def means(lo: int, hi: int) -> dict[str, float]:
            return {self.names[i]: float(sums[0, i] / sums[1, i]) for i in range(lo, hi) if sums[1, i] > 0}

        out = {f"{prefix}loss_by_dataset": means(0, self.n_datasets)}
        if self.source_of is not None:
            out[f"{prefix}loss_by_source"] = means(self.n_datasets, len(self.names))
        return out


def _model_tokenizer(cfg: Config) -> Path | None:
    """The model's own tokenizer folder, to check the shards were prepared with the same tokenizer."""
    if cfg.base_model and (Path(cfg.base_model) / "tokenizer.json").is_file():
        return Path(cfg.base_model)
    return None


def _plan(cfg: Config, data: PreparedData, world_size: int, is_main: bool = True) -> Plan:
    micro = batches_per_epoch(data, "train", cfg.micro_batch_size, world_size)
    per_epoch = micro // cfg.gradient_accumulation_steps
    if per_epoch == 0:
        raise TrainingError(f"{data.dir}: {data.num_rows('train')} train rows make {micro} micro-batches per "
                            f"process, fewer than one optimizer step (micro_batch_size {cfg.micro_batch_size} x "
                            f"gradient_accumulation_steps {cfg.gradient_accumulation_steps} x {world_size} "
                            "processes): lower those or add data")
    total = cfg.max_steps or max(1, math.ceil(cfg.num_epochs * per_epoch))

    def every(steps: int | float | None, per: int | None, default_per: int | None) -> int | None:
        if steps is not None:
            return max(1, round(steps * total)) if isinstance(steps, float) and steps < 1 else int(steps)
        per = per or default_per
        return max(1, per_epoch // per) if per else None

    # Axolotl's defaults: evaluate (when there is a val split) and save once per epoch; evals_per_epoch: 0 and
    # eval settings without a val split evaluate nothing during the run, as in Axolotl.
    default_evals = 1 if cfg.evals_per_epoch is None else None
    eval_every = every(cfg.eval_steps, cfg.evals_per_epoch, default_evals) if data.num_rows("val") else None
    if (cfg.eval_steps is not None or cfg.evals_per_epoch) and not data.num_rows("val"):
        print0(f"warning: eval_steps/evals_per_epoch are set but {data.dir} has no val split (val_set_size: 0): "
               "no evaluation (set val_set_size to evaluate)", is_main)
    return Plan(per_epoch, total, eval_every, every(cfg.save_steps, cfg.saves_per_epoch, 1))


def _resume_path(cfg: Config, out: Path) -> Path | None:
    if cfg.resume_from_checkpoint:
        path = Path(cfg.resume_from_checkpoint)
        if not path.is_dir():
            raise CheckpointError(f"resume_from_checkpoint {path}: no such folder")
        return path
    found = list_checkpoints(out) if cfg.auto_resume_from_checkpoints else []
    return found[-1] if found else None


def _resume(path: Path | None, cfg: Config, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            world: World) -> tuple[int, LoaderState, int]:
    if path is None:
        return 0, LoaderState(), 0
    state = load_checkpoint(path, model, optimizer, adapter=cfg.adapter is not None, world=world)
    print0(f"resumed from {path} (step {state['step']}, data at epoch {state['loader']['epoch']} batch "
           f"{state['loader']['index']})", world.is_main)
    return state["step"], LoaderState.from_dict(state["loader"]), state.get("trained_tokens", 0)


def _newest(out: Path) -> str:
    found = list_checkpoints(out)
    return str(found[-1]) if found else "none"


def _write_run_json(out: Path, cfg: Config, config_file: Path | None, data: PreparedData, model_info: dict[str, Any],
                    world: World, precision: Precision, resumed_at: int) -> None:
    if not world.is_main:
        return
    run = {"tessera_version": dataprep.__version__, "started": datetime.now(UTC).isoformat(timespec="seconds"),
           "config": cfg.model_dump(mode="json"), "config_file": str(config_file) if config_file else None,
           "prepared_dir": str(data.dir), "prepared_fingerprint": data.manifest.get("fingerprint"),
           "model": model_info, **world.info(), "device": world.device.type, "precision": precision.name,
           "resumed_at_step": resumed_at}
    tmp = out / ".run.json.tmp"
    tmp.write_text(json.dumps(run, indent=1) + "\n")
    tmp.rename(out / "run.json")


def _shown(prepared_dir: Path, version: Path) -> str:
    """The prepared directory as the user named it, with the version folder it resolved to."""
    return str(prepared_dir) if Path(prepared_dir).resolve() == version else f"{prepared_dir} ({version.name})"


def _save_final(out: Path, model: torch.nn.Module, prepared_dir: Path, world: World) -> Path:
    """final/: the model (or adapter, gathered from the shards under FSDP2) and the exact tokenizer + chat
    template the data was prepared with. Every rank calls this; rank 0 writes."""
    tmp, final = out / ".final.tmp", out / "final"
    if world.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
    save_weights(tmp, model, world)
    if world.is_main:
        shutil.copytree(prepared_dir / "tokenizer", tmp / "tokenizer")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    barrier(world)  # final/ is complete for every rank when train() returns
    return final


# Dense bf16 peak FLOP/s of common accelerators, for MFU (None elsewhere: CPUs have no meaningful peak here).
_PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12}


def _mfu(info: dict[str, Any], tokens: float, seconds: float, device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    peak = next((v for k, v in _PEAK_FLOPS.items() if k in name), None)
    # 6 FLOPs per parameter per token (forward 2, backward 4); attention's share is left out, as in PaLM's MFU.
    return 6 * info["parameters"] * tokens / seconds / peak if peak else None
