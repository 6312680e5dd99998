"""The optimizer and schedule keys of Axolotl configs, read as Axolotl reads them:

- adam_beta1 / adam_beta2 / adam_epsilon reach every AdamW (torch's, bitsandbytes', torchao's)
- torchao's low-bit AdamWs (adamw_torch_8bit, adamw_torch_4bit, ao_adamw_fp8; ao_adamw_8bit/4bit are Axolotl's
  old names): their quantized states, an update close to torch AdamW's, an exact resume from a saved state, a
  checkpoint that loads with weights_only, a real training run. On a CPU they run eagerly (train/optim.py).
- cosine_constant_lr_ratio and lr_quadratic_warmup: after warmup, lr_at equals Axolotl's own schedule functions,
  taken from the pinned axolotl wheel the template fixtures use (dataprep/fetch_axolotl.py). Warmup itself is
  Tessera's on purpose (never 0 at step 0; tests/train/test_setup.py).

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/train/test_optim.py -v
"""

from __future__ import annotations

import importlib.util
import io
import json
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from dataprep.fetch_axolotl import _download_wheel, cache_root
from schemas.config import ConfigError, config_from_dict, load_config
from tests.train.tiny import demo_prepared, write_config
from train.loop import train
from train.optim import build_optimizer, lr_at, make_schedule, set_lr

ao = pytest.importorskip("torchao.optim", reason="torchao is in the dev and gpu extras")

__all__ = ["demo_prepared"]  # a fixture, imported so pytest finds it

BASE = {"tokenizer_config": "t", "datasets": [{"path": "a.jsonl", "type": "alpaca"}]}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    # 64 x 64 weights: both libraries keep tensors under 4,096 values in 32-bit state, this one is quantized.
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.LayerNorm(64), torch.nn.Linear(64, 4))


def _run(keys: dict[str, Any], steps: int, batches: list[torch.Tensor] | None = None,
         state: dict[str, Any] | None = None) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = _model()
    optimizer = build_optimizer(model, config_from_dict({**BASE, "weight_decay": 0.1, "learning_rate": 1e-2,
                                                         **keys}))
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    torch.manual_seed(1)
    for x in batches or [torch.randn(8, 64) for _ in range(steps)]:
        set_lr(optimizer, 1e-2)
        model(x).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return model, optimizer


def test_adam_betas_and_epsilon_reach_the_optimizer() -> None:
    keys = {"adam_beta1": 0.8, "adam_beta2": 0.95, "adam_epsilon": 1e-6}
    for name in ("adamw_torch", "adamw_bnb_8bit", "adamw_torch_8bit"):
        optimizer = build_optimizer(_model(), config_from_dict({**BASE, "optimizer": name, **keys}))
        assert all(g["betas"] == (0.8, 0.95) and g["eps"] == 1e-6 for g in optimizer.param_groups), name
    # and they change the update, against torch's AdamW built by hand with the same values
    model, _ = _run(keys, 3)
    reference = _model()
    groups = [{"params": [p for p in reference.parameters() if p.ndim >= 2], "weight_decay": 0.1},
              {"params": [p for p in reference.parameters() if p.ndim < 2], "weight_decay": 0.0}]
    by_hand = torch.optim.AdamW(groups, lr=1e-2, betas=(0.8, 0.95), eps=1e-6)
    torch.manual_seed(1)
    for _ in range(3):
        reference(torch.randn(8, 64)).pow(2).mean().backward()
        by_hand.step()
        by_hand.zero_grad(set_to_none=True)
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    default, _ = _run({}, 3)
    assert not torch.equal(default[0].weight, model[0].weight)


@pytest.mark.parametrize(("name", "state", "tolerance"), [("adamw_torch_8bit", "OptimState8bit", 0.05),
                                                          ("ao_adamw_8bit", "OptimState8bit", 0.05),
                                                          ("adamw_torch_4bit", "OptimState4bit", 0.35),
                                                          ("ao_adamw_fp8", "OptimStateFp8", 0.05)])
def test_torchao_optimizers_step_like_adamw(name: str, state: str, tolerance: float) -> None:
    reference, _ = _run({"optimizer": "adamw_torch"}, 3)
    model, optimizer = _run({"optimizer": name}, 3)
    states = {type(s["exp_avg"]).__name__ for s in optimizer.state.values()}
    assert states == {state, "Tensor"}  # the 64 x 64 weight quantized, the small tensors in 32 bits
    start = _model()
    for (n, p), r, s in zip(model.named_parameters(), reference.parameters(), start.parameters(), strict=True):
        moved, expected = p.detach() - s.detach(), r.detach() - s.detach()
        assert moved.abs().max() > 0, n
        # the same update up to the states' quantization error (4 bits: coarse while the moments are young)
        assert float((moved - expected).norm() / expected.norm()) < tolerance, n


def test_torchao_state_round_trip_continues_exactly() -> None:
    torch.manual_seed(1)
    batches = [torch.randn(8, 64) for _ in range(4)]
    whole, _ = _run({"optimizer": "adamw_torch_8bit"}, 4, batches)
    first, optimizer = _run({"optimizer": "adamw_torch_8bit"}, 2, batches[:2])
    saved = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": optimizer.state_dict()}, saved)
    saved.seek(0)
    state = torch.load(saved, weights_only=True)  # what train/checkpoint.py loads with
    resumed, _ = _run({"optimizer": "adamw_torch_8bit"}, 2, batches[2:], state)
    for a, b in zip(resumed.parameters(), whole.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_training_run_with_a_torchao_optimizer(tmp_path: Path, qwen_dir: Path, demo_prepared: Path) -> None:
    cfg = write_config(tmp_path, qwen_dir, dataset_prepared_path=str(demo_prepared), optimizer="adamw_torch_8bit",
                       max_steps=6, save_steps=3, learning_rate=1e-2)
    train(load_config(cfg), demo_prepared, cfg)
    out = tmp_path / "out"
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert len(losses) == 6 and losses[-1] < losses[0]
    resumed = write_config(tmp_path / "resumed", qwen_dir, dataset_prepared_path=str(demo_prepared),
                           optimizer="adamw_torch_8bit", max_steps=6, save_steps=3, learning_rate=1e-2,
                           resume_from_checkpoint=str(out / "checkpoint-3"))
    train(load_config(resumed), demo_prepared, resumed)
    again = [json.loads(line)["loss"] for line in (tmp_path / "resumed" / "out" / "metrics.jsonl").read_text()
             .splitlines() if "loss" in json.loads(line)]
    assert again == losses[3:]


def _axolotl_schedulers() -> ModuleType:
    """axolotl/utils/schedulers.py of the pinned wheel (it imports only torch), as a module."""
    wheel = _download_wheel(cache_root())
    source = zipfile.ZipFile(wheel).read("axolotl/utils/schedulers.py").decode()
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("axolotl_schedulers", loader=None))
    exec(compile(source, f"{wheel}/axolotl/utils/schedulers.py", "exec"), module.__dict__)
    return module


def _axolotl_lrs(make: Any, total: int, **kwargs: Any) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = make(optimizer, num_training_steps=total, **kwargs)
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_cosine_variants_equal_axolotls_after_warmup() -> None:
    axolotl = _axolotl_schedulers()
    total, warmup = 100, 10
    cases = [
        ({"cosine_min_lr_ratio": 0.1, "cosine_constant_lr_ratio": 0.6},
         _axolotl_lrs(axolotl.get_cosine_schedule_with_warmup_decay_constant, total, num_warmup_steps=warmup,
                      min_lr_ratio=0.1, constant_lr_ratio=0.6)),
        ({"cosine_min_lr_ratio": 0.1},
         _axolotl_lrs(axolotl.get_cosine_schedule_with_min_lr, total, num_warmup_steps=warmup, min_lr_ratio=0.1)),
        # Axolotl's choices: quadratic warmup drops the minimum; a zero constant ratio is plain min-lr cosine
        ({"lr_quadratic_warmup": True, "cosine_min_lr_ratio": 0.1},
         _axolotl_lrs(axolotl.get_cosine_schedule_with_quadratic_warmup, total, num_warmup_steps=warmup)),
        ({"cosine_min_lr_ratio": 1.0, "cosine_constant_lr_ratio": 0},
         _axolotl_lrs(axolotl.get_cosine_schedule_with_min_lr, total, num_warmup_steps=warmup, min_lr_ratio=1.0)),
    ]
    for keys, expected in cases:
        schedule = make_schedule(config_from_dict({**BASE, "learning_rate": 1.0, "warmup_steps": warmup, **keys}),
                                 total)
        ours = [lr_at(s, schedule) for s in range(total)]
        assert ours[warmup:] == pytest.approx(expected[warmup:], abs=1e-9), keys
        assert all(0 < a <= 1.0 for a in ours[:warmup]), keys
    quadratic = make_schedule(config_from_dict({**BASE, "learning_rate": 1.0, "warmup_steps": 3,
                                                "lr_quadratic_warmup": True}), 10)
    assert [lr_at(s, quadratic) for s in range(3)] == pytest.approx([1 / 16, 4 / 16, 9 / 16])


def test_optimizer_names_as_axolotl_writes_them() -> None:
    assert config_from_dict({**BASE, "optimizer": "ao_adamw_4bit"}).optimizer == "adamw_torch_4bit"
    with pytest.raises(ConfigError, match="'paged_adamw' is not available in tessera train; use paged_adamw_32bit"):
        config_from_dict({**BASE, "optimizer": "paged_adamw"})
    with pytest.raises(ConfigError, match="adam_beta2"):
        config_from_dict({**BASE, "adam_beta2": 1.5})
