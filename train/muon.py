"""`optimizer: muon`: Muon on the hidden weight matrices, AdamW on everything else, as Axolotl splits them.

Axolotl 0.21 builds it with axolotl-contribs-mit's MuonOptimizerFactory (Microsoft's Dion implementation):

    AdamW  embed_tokens, lm_head, peft's modules_to_save copies (weight decay 0), tensors that are not 2-D
    Muon   every other trainable 2-D tensor (LoRA's A and B included), weight decay `weight_decay`
    one learning rate for both (the schedule's), AdamW's betas (0.9, 0.95) unless the config sets both
    adam_beta1 and adam_beta2; momentum 0.95 with Nesterov; lr * sqrt(fan_out / fan_in) per matrix ("spectral_norm")

Tessera runs the same split with torch's own Muon update (torch.optim.Muon's functional step) and torch's AdamW
step, in one Optimizer so that checkpoints, FSDP's state dicts and set_lr treat it like any other. Where it
differs from Axolotl's, on purpose: the Newton-Schulz iteration is torch's (Keller Jordan's coefficients, 5
steps) where Dion uses five per-step quintic coefficients (both in bf16, both approximating the same
orthogonalisation). 3-D tensors (MoE experts stored as one tensor) get AdamW: torch's Muon takes matrices only,
where Dion treats them as a batch of matrices. Under FSDP2 each rank gathers the whole matrix to orthogonalise
it (the update of a shard is not the shard of the update) and keeps its own rows of the result; Dion spreads
the matrices over the ranks instead (less work per rank, the same result).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim._muon import muon as muon_update
from torch.optim.adamw import adamw as adamw_update

MOMENTUM = 0.95  # Axolotl's `mu`
EMBEDDING_NAMES = ("embed_tokens", "lm_head")


def takes_muon(name: str, param: torch.Tensor) -> bool:
    """Whether Axolotl's factory gives this parameter Muon (else AdamW)."""
    if name.endswith("modules_to_save.default.weight") or any(e in name for e in EMBEDDING_NAMES):
        return False
    return param.ndim == 2


def muon_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Param groups tagged `muon: True/False`, in Axolotl's split and weight-decay choices."""
    muon, adamw_decay, adamw_plain = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if takes_muon(name, p):
            muon.append(p)
        elif p.ndim > 2 and not any(e in name for e in EMBEDDING_NAMES):
            adamw_decay.append(p)  # 3-D expert weights: decayed, as Dion decays them under Muon
        else:
            adamw_plain.append(p)  # embeddings, output layer, biases and norms: no decay (Axolotl's groups)
    groups = [{"params": muon, "muon": True, "weight_decay": weight_decay},
              {"params": adamw_decay, "muon": False, "weight_decay": weight_decay},
              {"params": adamw_plain, "muon": False, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


class MuonWithAdamW(torch.optim.Optimizer):
    """One optimizer over Muon groups and AdamW groups (`muon` in each group). State: Muon's `momentum_buffer`;
    AdamW's `step`, `exp_avg`, `exp_avg_sq`, the names torch's optimizers use."""

    def __init__(self, groups: list[dict[str, Any]], lr: float, betas: tuple[float, float], eps: float):
        super().__init__(groups, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": 0.0, "muon": False})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        assert closure is None, "the training loop never passes a closure"
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params and group["muon"]:
                for p in params:
                    self._muon_step(p, group)
            elif params:
                self._adamw_step(params, group)

    def _muon_step(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p)
        grad, buf, local = p.grad, state["momentum_buffer"], p
        full = _is_dtensor(p)
        if full:  # FSDP2: the momentum stays sharded (elementwise); Newton-Schulz needs the whole matrix
            grad, buf, local = p.grad.full_tensor(), buf.full_tensor(), p.full_tensor()
        lr, decay = _spectral_norm_lr(group["lr"], group["weight_decay"], p.shape)
        muon_update([local], [grad], [buf], lr=lr, weight_decay=decay, momentum=MOMENTUM, nesterov=True,
                    ns_coefficients=(3.4445, -4.7750, 2.0315), ns_steps=5, eps=group["eps"], adjust_lr_fn=None,
                    has_complex=False)
        if full:  # keep this rank's part of the updated weight and momentum
            p.to_local().copy_(_local_part(local, p))
            state["momentum_buffer"].to_local().copy_(_local_part(buf, p))

    def _adamw_step(self, params: list[torch.Tensor], group: dict[str, Any]) -> None:
        steps, avgs, sqs = [], [], []
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            steps.append(state["step"])
            avgs.append(state["exp_avg"])
            sqs.append(state["exp_avg_sq"])
        beta1, beta2 = group["betas"]
        adamw_update(params, [p.grad for p in params], avgs, sqs, [], steps, foreach=None, amsgrad=False,
                     beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"],
                     maximize=False, has_complex=False)


def _spectral_norm_lr(lr: float, weight_decay: float, shape: torch.Size) -> tuple[float, float]:
    """torch's Muon scales the step by sqrt(max(1, fan_out / fan_in)); Axolotl's by sqrt(fan_out / fan_in), also
    below 1 (down projections). Pass lr * min(1, sqrt(fan_out / fan_in)) to get Axolotl's step, and the weight
    decay rescaled so that lr * decay, the decoupled decay torch applies, stays the schedule's lr * decay."""
    scale = min(1.0, math.sqrt(shape[0] / shape[1]))
    return lr * scale, weight_decay / scale


def _is_dtensor(t: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def _local_part(full: torch.Tensor, like: Any) -> torch.Tensor:
    """This rank's shard of `full`, laid out as the DTensor `like` (FSDP2 shards dim 0)."""
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full, like.device_mesh, like.placements, src_data_rank=None).to_local()
