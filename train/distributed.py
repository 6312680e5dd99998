"""More than one process: who this process is, how the model is spread over the processes, and the few
collective operations the loop needs. Plain torch.distributed: DDP (`DistributedDataParallel`) or FSDP2
(`torch.distributed.fsdp.fully_shard`), with gloo on CPU and NCCL on GPUs.

    setup_world(cfg)        reads the launcher's environment (torchrun, `accelerate launch`, or none), starts the
                            process group and decides the parallelism: single, ddp, or fsdp2 (fsdp_config);
                            refuses a launch that differs from what the config asks (never runs unsharded
                            silently)
    wrap_model(...)         DDP, or fully_shard on each decoder layer and then the root
    Precision               autocast (bf16/fp16 on GPU) and fp16's loss scaling: backward, clip, step
    all_sum, main_first, grad_sync, barrier    what the loop and checkpoints use between processes

Launchers, as measured (accelerate 1.15, torch 2.13, CPU): torchrun sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_*;
`accelerate launch --multi_gpu --num_processes N` (and `--use_fsdp`) runs torchrun's code and sets the same;
`accelerate launch --cpu --num_processes N` starts ONE process with MASTER_ADDR but no WORLD_SIZE, which
would silently train alone: that is refused here. accelerate's own FSDP plugin falls back to DDP on CPU, so
FSDP settings are taken from the config only, and `--use_fsdp` without fsdp_config is refused too.
"""

from __future__ import annotations

import contextlib
import os
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from schemas.config import Config
from train.log import print0

LAUNCH_FIX = ("launch N processes with `torchrun --nproc_per_node N -m train CONFIG` or `accelerate launch "
              "--multi_gpu --num_processes N -m train CONFIG` (on CPU too)")


class DistributedError(Exception):
    """The processes were launched differently from what the config asks; the message says how to launch."""


@dataclass(frozen=True)
class World:
    rank: int
    local_rank: int
    size: int
    device: torch.device
    parallelism: str  # single | ddp | fsdp2
    launcher: str  # torchrun | accelerate launch | python
    backend: str | None  # gloo | nccl | None (one process)
    wrapped: dict[str, int] = field(default_factory=dict)  # fsdp2: decoder layer class -> units

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        """The start line's account of the processes, e.g. `world size 2 (fsdp2: 2 Qwen2DecoderLayer + root,
        gloo) on cpu`."""
        if self.size == 1:
            return f"world size 1 (single process) on {self.device.type}"
        how = self.parallelism
        if self.wrapped:
            how += ": " + ", ".join(f"{n} {name}" for name, n in self.wrapped.items()) + " + root"
        return f"world size {self.size} ({how}, {self.backend}; {self.launcher}) on {self.device.type}"

    def info(self) -> dict[str, Any]:
        """run.json's account of the processes."""
        return {"world_size": self.size, "parallelism": self.parallelism, "launcher": self.launcher,
                "backend": self.backend, "fsdp_units": self.wrapped or None}


def setup_world(cfg: Config) -> World:
    """This process's place among the launched ones; starts the process group once (later calls reuse it)."""
    env = os.environ
    launcher = ("accelerate launch" if "ACCELERATE_MIXED_PRECISION" in env else
                "torchrun" if "TORCHELASTIC_RUN_ID" in env else "python" if "WORLD_SIZE" not in env else "env")
    _check_launch(env, cfg)
    size = int(env.get("WORLD_SIZE", "1"))
    rank, local_rank = int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0"))
    if cfg.fsdp_on and size == 1:
        raise DistributedError("fsdp_config (or fsdp) asks for FSDP2 but this is 1 process, which would train "
                               f"unsharded: {LAUNCH_FIX} with N >= 2, or remove fsdp/fsdp_config/fsdp_version")
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    backend = None
    if size > 1:
        if cuda:
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            # CPU tensors (token counts, checkpoint bookkeeping) go over gloo even on GPUs.
            dist.init_process_group("cuda:nccl,cpu:gloo" if cuda else "gloo")
        if dist.get_world_size() != size:
            raise DistributedError(f"WORLD_SIZE is {size} but {dist.get_world_size()} processes joined")
        backend = "nccl" if cuda else "gloo"
    if cfg.fsdp_on and cfg.fsdp_settings.offload_params and not cuda:
        raise DistributedError("fsdp_config.offload_params moves parameters to CPU memory between uses; this run "
                               "is on CPU already: remove offload_params (or `offload` from fsdp)")
    parallelism = "fsdp2" if cfg.fsdp_on else "ddp" if size > 1 else "single"
    return World(rank, local_rank, size, device, parallelism, launcher, backend)


def _check_launch(env: os._Environ[str] | dict[str, str], cfg: Config) -> None:
    """Launches that would run something else than the config says, refused before anything is loaded."""
    if "ACCELERATE_MIXED_PRECISION" in env and "MASTER_ADDR" in env and "WORLD_SIZE" not in env:
        # accelerate's simple launcher (used for --cpu, or when it finds no GPUs) starts one process and only
        # exports MASTER_ADDR/PORT when asked for more than one.
        raise DistributedError("accelerate launch was asked for more than one process but started only this one "
                               "(its --cpu launcher runs a single process): " + LAUNCH_FIX)
    if env.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        raise DistributedError("DeepSpeed is not supported: use fsdp_config (FSDP2) in the config instead")
    if env.get("ACCELERATE_USE_FSDP", "").lower() == "true" and not cfg.fsdp_on:
        raise DistributedError("accelerate launch --use_fsdp, but the config has no fsdp_config: Tessera takes "
                               "FSDP settings from the config only; add `fsdp_version: 2` and `fsdp_config:` to it "
                               "(or launch without --use_fsdp for DDP)")


def close_world() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def loads_empty(cfg: Config, world: World) -> bool:
    """cpu_ram_efficient_loading: this rank builds the model on the meta device; rank 0 sends the weights."""
    return world.parallelism == "fsdp2" and _ram_efficient(cfg) and not world.is_main


def _ram_efficient(cfg: Config) -> bool:
    """cpu_ram_efficient_loading, except over a quantized base (nf4, int8): an empty model cannot be quantized, so
    there every process loads and quantizes the base itself (more CPU memory while loading, the same training)."""
    return cfg.fsdp_settings.cpu_ram_efficient_loading and cfg.quantization is None


def wrap_model(model: torch.nn.Module, cfg: Config, world: World) -> tuple[torch.nn.Module, World]:
    """On the device: DDP, or FSDP2 with one unit per decoder layer and then the root; the model as-is for one
    process. Returns the world with the FSDP units recorded (for the start line and run.json)."""
    if world.parallelism != "fsdp2":
        model = model.to(world.device)
    if world.parallelism == "ddp":
        ids = [world.device.index] if world.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids), world
    if world.parallelism != "fsdp2":
        return model, world
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

    settings = cfg.fsdp_settings
    efficient = _ram_efficient(cfg)
    if settings.cpu_ram_efficient_loading and not efficient:
        print0(f"warning: fsdp_config.cpu_ram_efficient_loading does not apply to a quantized ({cfg.quantization}) "
               "base: every process loads and quantizes it", world.is_main)
    if efficient:
        # Rank 0's whole model, before sharding; the other ranks hold an empty (meta) model.
        full = model.state_dict() if world.is_main else {}
    else:
        # DDP starts from rank 0's weights; FSDP2 keeps each rank's own shard, so make them rank 0's first.
        model = model.to(world.device)
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor.data, src=0)
    if cfg.quantization == "int8":
        keep_int8_scales(model)
    names = _layer_classes(model, settings.transformer_layer_cls_to_wrap)
    kwargs: dict[str, Any] = {"reshard_after_forward": settings.reshard_after_forward,
                              "offload_policy": CPUOffloadPolicy() if settings.offload_params else OffloadPolicy()}
    wrapped: dict[str, int] = {}
    for module in list(model.modules()):
        name = type(module).__name__
        if name in names:
            fully_shard(module, **kwargs)
            wrapped[name] = wrapped.get(name, 0) + 1
    if not wrapped:
        found = sorted({type(m).__name__ for m in model.modules() if "Layer" in type(m).__name__})
        raise DistributedError(f"fsdp_config.transformer_layer_cls_to_wrap {sorted(names)}: no such module in "
                               f"{_model_name(model)} (its layer classes: {', '.join(found) or 'none'})")
    fully_shard(model, **kwargs)  # the root: embeddings, final norm and the (possibly tied) output layer
    if efficient:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        if not world.is_main:  # fully_shard moved rank 0's real weights to the device already
            model = model.to_empty(device=world.device)
        set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
        for buffer in model.buffers():  # not in the state dict when non-persistent (rotary inv_freq)
            dist.broadcast(buffer.data, src=0)
    return model, World(**{**world.__dict__, "wrapped": wrapped})


def keep_int8_scales(model: torch.nn.Module) -> None:
    """FSDP2 over an int8 base: bitsandbytes' Linear8bitLt reads its int8 weights and their per-row scales from
    attributes of the weight tensor (CB, SCB) that FSDP2's gathered weight does not carry. Keep each layer's full
    row scales (every rank quantized the whole base) and, once the weight is gathered for a forward, hand both to
    the layer's matmul state as bitsandbytes' own first forward does. Axolotl patches accelerate to the same end."""
    from bitsandbytes.nn import Linear8bitLt

    for module in model.modules():
        if isinstance(module, Linear8bitLt):
            scb = module.weight.SCB if module.weight.SCB is not None else module.state.SCB
            module.register_buffer("tessera_int8_scb", scb, persistent=False)
            module.register_forward_pre_hook(_int8_state)
            # bitsandbytes adds SCB and weight_format entries to the layer's state dict, which
            # torch.distributed.checkpoint cannot map to a parameter; the scales are the base's, not trained
            module._save_to_state_dict = types.MethodType(torch.nn.Module._save_to_state_dict, module)


def _int8_state(module: torch.nn.Module, args: Any) -> None:
    module.state.CB, module.state.SCB = module.weight.data, module.tessera_int8_scb
    module.weight.CB = None  # the layer's forward then uses the state as it is (no init_8bit_state)


def _layer_classes(model: torch.nn.Module, configured: str | None) -> set[str]:
    if configured:
        return {c.strip() for c in configured.split(",") if c.strip()}
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or [])
    if not names:
        raise DistributedError(f"{_model_name(model)} does not name its decoder layer (_no_split_modules): set "
                               "fsdp_config.transformer_layer_cls_to_wrap")
    return names


def _model_name(model: torch.nn.Module) -> str:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return type(base).__name__.removeprefix("FSDP")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers/peft model under DDP (FSDP2 changes the model's class in place: it is its own)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def all_sum(t: torch.Tensor, world: World) -> torch.Tensor:
    """The sum over all processes of a small CPU tensor (token counts, loss sums)."""
    if world.size == 1:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_object(obj: Any, world: World) -> list[Any]:
    if world.size == 1:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


@contextlib.contextmanager
def main_first(world: World) -> Iterator[None]:
    """Rank 0 runs the block first (prepares data, writes base_model/), then the others (they read it)."""
    if not world.is_main:
        barrier(world)
    yield
    if world.is_main:
        barrier(world)


@contextlib.contextmanager
def grad_sync(model: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Gradient accumulation: reduce gradients over processes only after the step's last micro-batch."""
    if isinstance(model, DistributedDataParallel) and not enabled:
        with model.no_sync():
            yield
        return
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(enabled)
    yield


class Precision:
    """bf16 autocast (fp32 master weights), fp16 autocast with loss scaling, or fp32; on CPU always fp32."""

    def __init__(self, cfg: Config, device: torch.device):
        cuda = device.type == "cuda"
        if cfg.fp16 and not cuda:
            raise DistributedError("fp16 needs a GPU: remove fp16 (CPU trains in fp32)")
        bf16 = cfg.bf16 is True or (cfg.bf16 == "auto" and cuda and torch.cuda.is_bf16_supported())
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
        self.device_type = device.type
        self.dtype = torch.bfloat16 if bf16 else torch.float16 if cfg.fp16 else None
        self.scaler = torch.amp.GradScaler("cuda") if cfg.fp16 else None

    @property
    def name(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "fp32")

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def clip(self, params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer, max_norm: float) -> float:
        """Unscale (fp16), clip to max_norm, return the global gradient norm (over all shards)."""
        if self.scaler:
            self.scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor whose full value is the norm over all shards
            norm = norm.full_tensor()
        return float(norm)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
