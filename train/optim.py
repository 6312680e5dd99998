"""The optimizer and the learning-rate schedule.

`lr_at(step, schedule)` is a pure function of the 0-based optimizer step (nanoGPT's `get_lr`), so resuming needs
no scheduler object: the step alone gives the rate.

    1. warmup: linear from peak/(warmup+1) up to peak over `warmup` steps (never 0: step 0 still learns)
    2. then, over the remaining steps, by `lr_scheduler`:
       cosine    peak -> cosine_min_lr_ratio * peak, half a cosine
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


def make_schedule(cfg: Config, total_steps: int) -> Schedule:
    if cfg.warmup_steps is not None:
        warmup = cfg.warmup_steps
    elif cfg.warmup_ratio is not None:
        warmup = math.ceil(cfg.warmup_ratio * total_steps)
    else:
        warmup = 0
    return Schedule(cfg.learning_rate, min(warmup, total_steps), total_steps, cfg.lr_scheduler,
                    cfg.cosine_min_lr_ratio or 0.0)


def lr_at(step: int, s: Schedule) -> float:
    # 1) linear warmup
    if step < s.warmup:
        return s.peak * (step + 1) / (s.warmup + 1)
    if s.kind in ("constant", "constant_with_warmup"):
        return s.peak
    # 2) decay over what is left; progress is 0 at the first step after warmup and < 1 at the last step
    progress = min((step - s.warmup) / max(1, s.total - s.warmup), 1.0)
    if s.kind == "linear":
        return s.peak * (1.0 - progress)
    floor = s.min_ratio * s.peak
    return floor + (s.peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class OptimizerError(Exception):
    """The optimizer asked for cannot be built here; the message says how to fix it."""


# optimizer name -> bitsandbytes AdamW's (optim_bits, is_paged), the names transformers and Axolotl use.
BNB_OPTIMIZERS = {"adamw_bnb_8bit": (8, False), "adamw_8bit": (8, False), "paged_adamw_8bit": (8, True),
                  "paged_adamw_32bit": (32, True)}


def build_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; no weight decay on biases and norm weights (1-D tensors), as HF
    Trainer and nanoGPT do. torch's AdamW, or bitsandbytes' with 8-bit or paged states (`optimizer`)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    # The lr is set by the loop from lr_at before every step.
    if cfg.optimizer in BNB_OPTIMIZERS:
        bits, paged = BNB_OPTIMIZERS[cfg.optimizer]
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise OptimizerError(f"optimizer: {cfg.optimizer} needs bitsandbytes: pip install -e '.[gpu]' "
                                 "(bitsandbytes >= 0.48 also runs on CPU), or use adamw_torch") from None
        # weight_decay=0 for the groups that set none: bnb's own default is 0.01.
        return bnb.optim.AdamW(groups, lr=cfg.learning_rate, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                               optim_bits=bits, is_paged=paged)
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(0.9, 0.999), eps=1e-8,
                             fused=cfg.optimizer == "adamw_torch_fused" or None)
