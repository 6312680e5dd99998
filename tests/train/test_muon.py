"""`optimizer: muon` (train/muon.py), as Axolotl splits it: Muon on hidden matrices, AdamW on the rest.

- the split and weight decay of Axolotl's factory, on a real (tiny, random) Qwen2 model
- the step equals torch.optim.Muon's and torch.optim.AdamW's run by hand; a wide matrix (fan_out < fan_in) steps by
  Axolotl's lr * sqrt(fan_out / fan_in), written out here
- the state round-trips through torch.save/load(weights_only) and continues exactly
- a real `tessera train` run with muon: the loss falls, and a resume from checkpoint-3 repeats the last 3 losses

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/train/test_muon.py -v
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch.optim._muon import _zeropower_via_newtonschulz
from transformers import AutoModelForCausalLM, Qwen2Config

from schemas.config import config_from_dict, load_config
from tests.train.tiny import TINY, demo_prepared, write_config
from train.loop import train
from train.optim import build_optimizer, set_lr

__all__ = ["demo_prepared"]  # a fixture, imported so pytest finds it

BASE = {"tokenizer_config": "t", "datasets": [{"path": "a.jsonl", "type": "alpaca"}], "optimizer": "muon"}
LR, WD = 0.02, 0.1


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    # 32 -> 64 is tall (fan_out > fan_in), 64 -> 16 wide: Axolotl's scale is sqrt(2) and 1/2
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.LayerNorm(64), torch.nn.Linear(64, 16))


def _run(steps: int, batches: list[torch.Tensor], state: dict[str, Any] | None = None,
         **keys: Any) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = _model()
    optimizer = build_optimizer(model, config_from_dict({**BASE, "weight_decay": WD, "learning_rate": LR, **keys}))
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    for x in batches[:steps]:
        set_lr(optimizer, LR)
        model(x).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return model, optimizer


def test_the_split_is_axolotls() -> None:
    hf = Qwen2Config(**{k: v for k, v in TINY.items() if k != "model_type"}, vocab_size=128,
                     tie_word_embeddings=False)
    model = AutoModelForCausalLM.from_config(hf)
    optimizer = build_optimizer(model, config_from_dict({**BASE, "weight_decay": WD}))
    names = {id(p): n for n, p in model.named_parameters()}
    muon = {names[id(p)] for g in optimizer.param_groups if g["muon"] for p in g["params"]}
    plain = {names[id(p)] for g in optimizer.param_groups if not g["muon"] for p in g["params"]}
    assert "model.layers.0.self_attn.q_proj.weight" in muon and "model.layers.1.mlp.down_proj.weight" in muon
    assert {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
            "model.layers.0.self_attn.q_proj.bias"} <= plain
    assert muon == {n for n, p in model.named_parameters() if p.ndim == 2 and "embed" not in n and "lm_head" not in n}
    assert all(g["weight_decay"] == (WD if g["muon"] else 0.0) for g in optimizer.param_groups)
    # Axolotl's AdamW betas under muon: (0.9, 0.95) unless both are set
    assert all(g["betas"] == (0.9, 0.95) for g in optimizer.param_groups)
    both = build_optimizer(model, config_from_dict({**BASE, "adam_beta1": 0.8, "adam_beta2": 0.99}))
    assert all(g["betas"] == (0.8, 0.99) for g in both.param_groups)


def test_a_step_is_torch_muon_and_adamw_with_axolotls_scale() -> None:
    torch.manual_seed(1)
    batches = [torch.randn(8, 32) for _ in range(3)]
    model, _ = _run(3, batches)
    ref = _model()
    tall, norm, wide = ref[0], ref[1], ref[2]
    muon = torch.optim.Muon([tall.weight], lr=LR, weight_decay=WD, momentum=0.95, nesterov=True, eps=1e-8,
                            adjust_lr_fn="original")
    adamw = torch.optim.AdamW([tall.bias, norm.weight, norm.bias, wide.bias], lr=LR, betas=(0.9, 0.95), eps=1e-8,
                              weight_decay=0.0)
    buf = torch.zeros_like(wide.weight)
    for x in batches:
        ref(x).pow(2).mean().backward()
        muon.step()
        adamw.step()
        with torch.no_grad():  # Axolotl's rule for the wide matrix, written out
            g = wide.weight.grad
            buf.lerp_(g, 1 - 0.95)
            update = _zeropower_via_newtonschulz(g.lerp(buf, 0.95), (3.4445, -4.7750, 2.0315), 5, 1e-8)
            wide.weight.mul_(1 - LR * WD).add_(update, alpha=-LR * math.sqrt(16 / 64))
        ref.zero_grad(set_to_none=True)
    for (name, a), b in zip(model.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_state_round_trip_continues_exactly() -> None:
    torch.manual_seed(1)
    batches = [torch.randn(8, 32) for _ in range(4)]
    whole, _ = _run(4, batches)
    first, optimizer = _run(2, batches)
    saved = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": optimizer.state_dict()}, saved)
    saved.seek(0)
    state = torch.load(saved, weights_only=True)  # what train/checkpoint.py loads with
    resumed, again = _run(2, batches[2:], state)
    assert {k for s in again.state.values() for k in s} == {"momentum_buffer", "step", "exp_avg", "exp_avg_sq"}
    for a, b in zip(resumed.parameters(), whole.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_training_run_with_muon_resumes(tmp_path: Path, qwen_dir: Path, demo_prepared: Path) -> None:
    keys = {"dataset_prepared_path": str(demo_prepared), "optimizer": "muon", "max_steps": 6, "save_steps": 3,
            "learning_rate": 0.02, "weight_decay": 0.01}
    cfg = write_config(tmp_path, qwen_dir, **keys)
    train(load_config(cfg), demo_prepared, cfg)
    out = tmp_path / "out"
    losses = [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == 6 and losses[-1] < losses[0]
    resumed = write_config(tmp_path / "resumed", qwen_dir, **keys, resume_from_checkpoint=str(out / "checkpoint-3"))
    train(load_config(resumed), demo_prepared, resumed)
    again = [r["loss"] for r in map(json.loads, (tmp_path / "resumed" / "out" / "metrics.jsonl").read_text()
                                    .splitlines()) if "loss" in r]
    assert again == losses[3:]
