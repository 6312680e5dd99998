"""Trainer setup without training: the pure lr schedule (warmup, cosine to cosine_min_lr_ratio, linear, constant),
the optimizer's weight-decay groups, base_model_init errors and LoRA targets (lora_target_linear skips the
output layer, lora_modules_to_save).

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/train/test_setup.py -v
"""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.config import Config, config_from_dict
from tests.train.tiny import TINY, VOCAB
from train.model import ModelError, load_model
from train.optim import Schedule, build_optimizer, lr_at, make_schedule


def _cfg(**keys: object) -> Config:
    return config_from_dict({"tokenizer_config": "t", "datasets": [{"path": "a", "type": "alpaca"}], **keys})


def test_lr_schedule() -> None:
    cosine = make_schedule(_cfg(learning_rate=1.0, warmup_steps=4, cosine_min_lr_ratio=0.1), total_steps=104)
    assert cosine == Schedule(1.0, 4, 104, "cosine", 0.1)
    assert [lr_at(s, cosine) for s in range(4)] == [0.2, 0.4, 0.6, 0.8]  # warmup never starts at 0
    assert lr_at(4, cosine) == 1.0
    assert lr_at(54, cosine) == pytest.approx(0.55)  # half way: the middle of peak and floor
    assert lr_at(103, cosine) == pytest.approx(0.1, abs=1e-3)
    assert all(lr_at(s, cosine) >= lr_at(s + 1, cosine) for s in range(4, 103))
    linear = make_schedule(_cfg(learning_rate=1.0, lr_scheduler="linear", warmup_ratio=0.1), total_steps=50)
    assert linear.warmup == 5 and lr_at(5, linear) == 1.0 and lr_at(49, linear) == pytest.approx(1 / 45)
    constant = make_schedule(_cfg(learning_rate=0.5, lr_scheduler="constant"), total_steps=10)
    assert {lr_at(s, constant) for s in range(10)} == {0.5}
    # transformers' name for it; Axolotl configs use it with warmup_steps
    warm = make_schedule(_cfg(learning_rate=0.5, lr_scheduler="constant_with_warmup", warmup_steps=1), 10)
    assert [lr_at(s, warm) for s in range(3)] == [0.25, 0.5, 0.5]


def test_base_model_init_typos_fail_before_anything_is_built(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"base_model_init\.hidden_sise: not a field of Qwen2Config; "
                                         r"did you mean 'hidden_size'"):
        load_model(_cfg(base_model_init={**TINY, "hidden_sise": 8}), VOCAB, tmp_path)
    assert not (tmp_path / "base_model").exists()
    with pytest.raises(ModelError, match="no model: set base_model"):
        load_model(_cfg(), VOCAB, tmp_path)


def test_lora_targets_and_optimizer_groups(tmp_path: Path) -> None:
    cfg = _cfg(base_model_init=TINY, adapter="lora", lora_target_linear=True, lora_modules_to_save=["embed_tokens"],
               weight_decay=0.1)
    loaded = load_model(cfg, VOCAB, tmp_path)
    model = loaded.model
    assert set(model.peft_config["default"].target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                                "up_proj", "down_proj"}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any("lm_head" in n for n in trainable)
    assert any("embed_tokens.modules_to_save" in n for n in trainable)
    assert loaded.info["trainable_parameters"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert len(build_optimizer(model, cfg).param_groups) == 1  # LoRA matrices only: all 2-D
    full = _cfg(base_model_init=TINY, weight_decay=0.1)
    optimizer = build_optimizer(load_model(full, VOCAB, tmp_path / "full").model, full)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim < 2 for p in no_decay["params"])


def test_lora_target_modules_as_one_regular_expression(tmp_path: Path) -> None:
    # peft's rule for a string: it must match the whole module path; here q/v of layer 1 only
    cfg = _cfg(base_model_init=TINY, adapter="lora", lora_target_modules=r"model\.layers\.1\.self_attn\.(q|v)_proj")
    adapted = {n.removesuffix(".lora_A.default") for n, _ in load_model(cfg, VOCAB, tmp_path).model.named_modules()
               if n.endswith(".lora_A.default")}
    assert {a.rsplit("model.", 1)[1] for a in adapted} == {"layers.1.self_attn.q_proj", "layers.1.self_attn.v_proj"}
    # with lora_target_linear the names of every linear layer are one more alternative
    both = _cfg(base_model_init=TINY, adapter="lora", lora_target_linear=True,
                lora_target_modules=r"model\.layers\.1\.self_attn\.(q|v)_proj")
    model = load_model(both, VOCAB, tmp_path / "both").model
    assert sum(n.endswith(".lora_A.default") for n, _ in model.named_modules()) == 7 * TINY["num_hidden_layers"]
    with pytest.raises(ModelError, match="lora_target_modules"):
        load_model(_cfg(base_model_init=TINY, adapter="lora", lora_target_modules=r"nothing\.here"), VOCAB,
                   tmp_path / "none")
