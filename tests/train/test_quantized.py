"""QLoRA, 8-bit LoRA and bitsandbytes' optimizers (issue 11, item 3), run for real on CPU: bitsandbytes >= 0.48
quantizes (nf4, int8) and steps its 8-bit and paged optimizers without a GPU, so these need no device.

- `adapter: qlora` + `load_in_4bit`: the frozen base is bitsandbytes nf4 with double quantization (Axolotl's
  defaults, bnb_config_kwargs on top), LoRA trains in fp32 over it, the loss falls, checkpoints resume exactly,
  `tessera eval` of final/ (base quantized again) equals the run's final eval_loss, and `merge-lora` merges
  into the unquantized base;
- packed rows under a 4-bit base: the loss and LoRA gradients of a packed micro-batch equal those of its samples
  one by one;
- `adapter: lora` + `load_in_8bit`: int8 base (LLM.int8), trains;
- optimizers adamw_bnb_8bit / adamw_8bit / paged_adamw_8bit / paged_adamw_32bit: the 32-bit one takes torch
  AdamW's step, the 8-bit ones a step close to it, weight decay only where torch's would apply it, and a state
  dict round trip continues exactly.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/train/test_quantized.py -v
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from dataprep.cli import main as tessera
from schemas.config import config_from_dict, load_config
from tests.train.tiny import TINY, demo_prepared, samples_of, shard_rows, to_batch, write_config
from train.loop import train
from train.model import load_model, token_losses
from train.optim import build_optimizer

bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes is in the dev and gpu extras")

__all__ = ["demo_prepared"]  # a fixture, imported so pytest finds it

QLORA = {"adapter": "qlora", "load_in_4bit": True, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
         "lora_target_linear": True, "learning_rate": 1e-2}


def _metrics(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def qlora_run(tmp_path_factory: pytest.TempPathFactory, qwen_dir: Path, demo_prepared: Path) -> Path:
    tmp = tmp_path_factory.mktemp("qlora")
    cfg = write_config(tmp, qwen_dir, dataset_prepared_path=str(demo_prepared), max_steps=8, save_steps=4,
                       eval_steps=4, **QLORA)
    train(load_config(cfg), demo_prepared, cfg)
    return cfg


def test_qlora_quantizes_the_base_and_trains_the_adapter(qlora_run: Path, demo_prepared: Path) -> None:
    cfg = load_config(qlora_run)
    out = Path(cfg.output_dir)
    model = load_model(cfg, 151_665, out).model
    linears = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(linears) == 7 * TINY["num_hidden_layers"]  # q k v o gate up down; lm_head stays unquantized
    state = linears[0].weight.quant_state
    assert linears[0].weight.dtype == torch.uint8 and state.quant_type == "nf4" and state.nested  # double quant
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n for n in trained)
    run = json.loads((out / "run.json").read_text())
    assert run["model"]["quantization"] == "nf4"
    assert run["model"]["parameters"] > sum(p.numel() for p in model.parameters())  # 4-bit: 2 weights a byte
    losses = [m["loss"] for m in _metrics(out) if "loss" in m]
    assert len(losses) == 8 and losses[-1] < losses[0]
    assert (out / "final" / "adapter_model.safetensors").is_file()


def test_qlora_resumes_exactly(qlora_run: Path, tmp_path: Path, qwen_dir: Path, demo_prepared: Path) -> None:
    whole = Path(load_config(qlora_run).output_dir)
    cfg = write_config(tmp_path, qwen_dir, dataset_prepared_path=str(demo_prepared), max_steps=8, save_steps=4,
                       eval_steps=4, resume_from_checkpoint=str(whole / "checkpoint-4"), **QLORA)
    train(load_config(cfg), demo_prepared, cfg)
    resumed = {m["step"]: m["loss"] for m in _metrics(tmp_path / "out") if "loss" in m}
    expected = {m["step"]: m["loss"] for m in _metrics(whole) if "loss" in m and m["step"] > 4}
    assert resumed == expected


def test_eval_of_a_qlora_run_quantizes_the_base_again(qlora_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logged = [m for m in _metrics(Path(load_config(qlora_run).output_dir)) if "eval_loss" in m][-1]
    assert tessera(["eval", str(qlora_run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["eval_loss"] == pytest.approx(logged["eval_loss"], rel=1e-6)


def test_merge_of_a_qlora_adapter_uses_the_unquantized_base(qlora_run: Path, demo_prepared: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = load_config(qlora_run)
    assert tessera(["merge-lora", str(qlora_run)]) == 0
    merged = AutoModelForCausalLM.from_pretrained(str(Path(cfg.output_dir) / "merged")).eval()
    base = AutoModelForCausalLM.from_pretrained(str(Path(cfg.output_dir) / "base_model"))
    reference = PeftModel.from_pretrained(base, str(Path(cfg.output_dir) / "final")).eval()
    ids = torch.from_numpy(shard_rows(demo_prepared, "val")[0]["input_ids"][None, :64])
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, reference(input_ids=ids).logits, rtol=1e-4,
                                   atol=1e-4)


def test_packed_rows_under_a_4bit_base_equal_their_samples(tmp_path: Path, qwen_dir: Path,
                                                           demo_prepared: Path) -> None:
    cfg = load_config(write_config(tmp_path, qwen_dir, **QLORA))
    model = load_model(cfg, 151_665, tmp_path / "out").model
    with torch.no_grad():  # B starts at 0, which would make A's gradients trivially 0
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    rows = shard_rows(demo_prepared)[:2]
    packed = to_batch(rows)
    losses = token_losses(model, packed["input_ids"], packed["labels"], packed["position_ids"],
                          packed["sample_ids"], "sdpa")[0]
    losses.sum().backward()
    packed_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    one_by_one = []
    for sample in (s for r in rows for s in samples_of(r)):
        b = to_batch([sample])
        part = token_losses(model, b["input_ids"], b["labels"], b["position_ids"], b["sample_ids"], "sdpa")[0]
        part.sum().backward()
        one_by_one.append(part.detach())
    torch.testing.assert_close(losses.detach(), torch.cat(one_by_one), rtol=1e-5, atol=1e-5)
    assert packed_grads
    for name, g in packed_grads.items():
        torch.testing.assert_close(g, dict(model.named_parameters())[name].grad, rtol=1e-4, atol=1e-6)


def test_lora_over_an_int8_base_trains(tmp_path: Path, qwen_dir: Path, demo_prepared: Path) -> None:
    cfg = write_config(tmp_path, qwen_dir, dataset_prepared_path=str(demo_prepared), max_steps=3,
                       **{**QLORA, "adapter": "lora", "load_in_4bit": False, "load_in_8bit": True})
    train(load_config(cfg), demo_prepared, cfg)
    losses = [m["loss"] for m in _metrics(tmp_path / "out") if "loss" in m]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    model = load_model(load_config(cfg), 151_665, tmp_path / "out").model
    assert sum(isinstance(m, bnb.nn.Linear8bitLt) for m in model.modules()) == 7 * TINY["num_hidden_layers"]


def test_lora_with_load_in_4bit_quantizes_nothing_as_in_axolotl(tmp_path: Path, qwen_dir: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    cfg = load_config(write_config(tmp_path, qwen_dir, **{**QLORA, "adapter": "lora"}))
    model = load_model(cfg, 151_665, tmp_path / "out").model
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    assert "warning: load_in_4bit quantizes nothing with adapter: lora" in capsys.readouterr().out


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    # 64 x 64 weights: bitsandbytes keeps tensors under 4,096 values in 32-bit state, this one is 8-bit.
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.LayerNorm(64), torch.nn.Linear(64, 4))


def _steps(optimizer_name: str, steps: int, weight_decay: float = 0.1,
           state: dict[str, Any] | None = None) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = _model()
    cfg = config_from_dict({"tokenizer_config": "t", "datasets": [{"path": "a.jsonl", "type": "alpaca"}],
                            "optimizer": optimizer_name, "weight_decay": weight_decay, "learning_rate": 1e-2})
    optimizer = build_optimizer(model, cfg)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    torch.manual_seed(1)
    for _ in range(steps):
        model(torch.randn(8, 64)).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return model, optimizer


@pytest.mark.parametrize("name", ["adamw_bnb_8bit", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit"])
def test_bitsandbytes_optimizers_step_like_adamw(name: str) -> None:
    reference, _ = _steps("adamw_torch", 3)
    model, optimizer = _steps(name, 3)
    assert isinstance(optimizer, bnb.optim.optimizer.Optimizer8bit)
    start = _model()
    for (n, p), r, s in zip(model.named_parameters(), reference.parameters(), start.parameters(), strict=True):
        moved, expected = p.detach() - s.detach(), r.detach() - s.detach()
        assert moved.abs().max() > 0, n
        if name.endswith("32bit"):
            torch.testing.assert_close(moved, expected, rtol=1e-4, atol=1e-6, msg=lambda m, n=n: f"{name} {n}: {m}")
        else:  # 8-bit states: the same update up to their quantization error
            assert float((moved - expected).norm() / expected.norm()) < 0.05, n


def test_8bit_optimizer_state_round_trip_continues_exactly() -> None:
    whole, _ = _steps("adamw_bnb_8bit", 4)
    first, optimizer = _steps("adamw_bnb_8bit", 2)
    state = {"model": {k: v.clone() for k, v in first.state_dict().items()}, "optimizer": optimizer.state_dict()}
    # the second half: a new model and optimizer from the saved states, the same batches as steps 3-4
    model = _model()
    cfg = config_from_dict({"tokenizer_config": "t", "datasets": [{"path": "a.jsonl", "type": "alpaca"}],
                            "optimizer": "adamw_bnb_8bit", "weight_decay": 0.1, "learning_rate": 1e-2})
    resumed = build_optimizer(model, cfg)
    model.load_state_dict(state["model"])
    resumed.load_state_dict(state["optimizer"])
    torch.manual_seed(1)
    batches = [torch.randn(8, 64) for _ in range(4)]
    for x in batches[2:]:
        model(x).pow(2).mean().backward()
        resumed.step()
        resumed.zero_grad(set_to_none=True)
    for a, b in zip(model.parameters(), whole.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_evaluation_computes_4bit_layers_as_training_does(tmp_path: Path, qwen_dir: Path,
                                                          demo_prepared: Path) -> None:
    """Evaluation (eval mode, no gradients) gives exactly the losses of a training-mode forward, and leaves the
    weights as they were: on a CPU with AVX512-BF16, bitsandbytes would otherwise repack each 4-bit weight at the
    first such call and switch kernels (and fail outright on the tiny model's 16-wide layers)."""
    cfg = load_config(write_config(tmp_path, qwen_dir, **QLORA))
    model = load_model(cfg, 151_665, tmp_path / "out").model
    linears = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert linears and not any(m.support_avx512bf16_for_cpu for m in linears)
    before = [m.weight.data.clone() for m in linears]
    b = to_batch(shard_rows(demo_prepared)[:2])
    args = (b["input_ids"], b["labels"], b["position_ids"], b["sample_ids"], "sdpa")
    model.train()
    trained = token_losses(model, *args)[0].detach()
    model.eval()
    with torch.no_grad():
        evaluated = token_losses(model, *args)[0]
    assert torch.equal(trained, evaluated)
    assert all(torch.equal(m.weight.data, w) for m, w in zip(linears, before, strict=True))
