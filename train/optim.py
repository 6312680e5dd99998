"""The optimizer and the learning-rate schedule.

`lr_at(step, schedule)` is a pure function of the 0-based optimizer step (nanoGPT's `get_lr`), so resuming needs
no scheduler object: the step alone gives the rate.

    1. warmup: linear from peak/(warmup+1) up to peak over `warmup` steps (never 0: step 0 still learns);
       quadratic (the square of that fraction) with lr_quadratic_warmup and cosine
    2. then, over the remaining steps, by `lr_scheduler`:
       cosine    peak -> cosine_min_lr_ratio * peak, half a cosine; with cosine_constant_lr_ratio c as well, the
                 half cosine ends at step c * total and the minimum holds from there (Axolotl's
                 get_cosine_schedule_with_warmup_decay_constant)
       linear    peak -> 0
       constant  peak
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from schemas.config import Config


@dataclass(frozen=True)
class Schedule:
    peak: float
    warmup: int
    total: int
    kind: str  # cosine | linear | constant (or constant_with_warmup, the same)
    min_ratio: float = 0.0
    decay_end: int | None = None  # cosine: the step the minimum is reached (default: total)
    quadratic: bool = False  # quadratic warmup


def make_schedule(cfg: Config, total_steps: int) -> Schedule:
    if cfg.warmup_steps is not None:
        warmup = cfg.warmup_steps
    elif cfg.warmup_ratio is not None:
        warmup = math.ceil(cfg.warmup_ratio * total_steps)
    else:
        warmup = 0
    cosine = cfg.lr_scheduler == "cosine"
    quadratic = cosine and cfg.lr_quadratic_warmup
    # As Axolotl chooses: quadratic warmup drops the minimum, and the constant tail needs both ratios non-zero.
    min_ratio = 0.0 if quadratic else cfg.cosine_min_lr_ratio or 0.0
    constant = cfg.cosine_constant_lr_ratio if cosine and not quadratic and min_ratio else None
    return Schedule(cfg.learning_rate, min(warmup, total_steps), total_steps, cfg.lr_scheduler, min_ratio,
                    int(total_steps * constant) if constant else None, quadratic)


def lr_at(step: int, s: Schedule) -> float:
    # 1) warmup
    if step < s.warmup:
        return s.peak * ((step + 1) / (s.warmup + 1)) ** (2 if s.quadratic else 1)
    if s.kind in ("constant", "constant_with_warmup"):
        return s.peak
    # 2) decay over what is left; progress is 0 at the first step after warmup and < 1 at the last step
    end = s.total if s.decay_end is None else s.decay_end
    progress = min((step - s.warmup) / max(1, end - s.warmup), 1.0)
    if s.kind == "linear":
        return s.peak * (1.0 - progress)
    floor = s.min_ratio * s.peak
    return floor + (s.peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class OptimizerError(Exception):
    """The optimizer asked for cannot be built here; the message says how to fix it."""


# optimizer name -> bitsandbytes AdamW's (optim_bits, is_paged), the names transformers and Axolotl use.
BNB_OPTIMIZERS = {"adamw_bnb_8bit": (8, False), "adamw_8bit": (8, False), "paged_adamw_8bit": (8, True),
                  "paged_adamw_32bit": (32, True)}
# optimizer name -> torchao.optim class, as transformers (adamw_torch_4bit/8bit) and Axolotl (ao_adamw_fp8) map them.
TORCHAO_OPTIMIZERS = {"adamw_torch_8bit": "AdamW8bit", "adamw_torch_4bit": "AdamW4bit", "ao_adamw_fp8": "AdamWFp8"}


def build_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; no weight decay on biases and norm weights (1-D tensors), as HF
    Trainer and nanoGPT do. torch's AdamW, bitsandbytes' with 8-bit or paged states, or torchao's with 8-bit,
    4-bit or float8 states (`optimizer`); or Muon on the hidden matrices with AdamW on the rest (train/muon.py)."""
    if cfg.optimizer == "muon":
        from train.muon import MuonWithAdamW, muon_groups

        # Axolotl's Muon factory: AdamW betas (0.9, 0.95) unless the config gives both
        both = {"adam_beta1", "adam_beta2"} <= cfg.model_fields_set
        betas = (cfg.adam_beta1, cfg.adam_beta2) if both else (0.9, 0.95)
        return MuonWithAdamW(muon_groups(model, cfg.weight_decay), cfg.learning_rate, betas, cfg.adam_epsilon)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    # The lr is set by the loop (set_lr) from lr_at before every step. weight_decay=0 for groups that set none:
    # bitsandbytes' and torchao's own defaults are 0.01.
    adam = {"lr": cfg.learning_rate, "betas": (cfg.adam_beta1, cfg.adam_beta2), "eps": cfg.adam_epsilon,
            "weight_decay": 0.0}
    if cfg.optimizer in BNB_OPTIMIZERS:
        bits, paged = BNB_OPTIMIZERS[cfg.optimizer]
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise OptimizerError(f"optimizer: {cfg.optimizer} needs bitsandbytes: pip install -e '.[gpu]' "
                                 "(bitsandbytes >= 0.48 also runs on CPU), or use adamw_torch") from None
        return bnb.optim.AdamW(groups, **adam, optim_bits=bits, is_paged=paged)
    if cfg.optimizer in TORCHAO_OPTIMIZERS:
        return _torchao(cfg.optimizer, groups, adam, on_cpu=all(p.device.type == "cpu" for p in params))
    return torch.optim.AdamW(groups, **adam, fused=cfg.optimizer == "adamw_torch_fused" or None)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """torchao keeps each group's lr in a tensor, so that a new value does not recompile its step: fill it."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def _torchao(name: str, groups: list[dict], adam: dict, on_cpu: bool) -> torch.optim.Optimizer:
    try:
        import torchao.optim as ao
    except ImportError:
        raise OptimizerError(f"optimizer: {name} is torchao's: pip install -e '.[gpu]' (torchao also runs on "
                             "CPU), or use adamw_bnb_8bit (bitsandbytes' 8-bit AdamW)") from None
    cls = getattr(ao, TORCHAO_OPTIMIZERS[name])
    if on_cpu:
        # torchao compiles its per-parameter step (torch.compile, one graph per parameter shape): on a CPU that
        # takes 30-80 s a shape, minutes for a small model, so there the same function runs eagerly.
        cls = type(cls.__name__, (_EagerStep, cls), {})
    return cls(groups, **adam)


class _EagerStep(torch.optim.Optimizer):
    """torchao's _AdamBase.step with single_param_adam called directly instead of through torch.compile: the
    same update, the same state tensors (so checkpoints are interchangeable), no compilation."""

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def,override]
        from torchao.optim.adam import single_param_adam

        assert closure is None, "the training loop never passes a closure"
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = self._new_buffer(p, True)  # type: ignore[attr-defined]
                    state["exp_avg_sq"] = self._new_buffer(p, False)  # type: ignore[attr-defined]
                state["step"] += 1
                single_param_adam(p.detach(), p.grad, state["step"], state["exp_avg"], state["exp_avg_sq"], None,
                                  group["lr"], group["betas"][0], group["betas"][1], group["weight_decay"],
                                  group["eps"], self.is_adamw, False)  # type: ignore[attr-defined]
        return None
