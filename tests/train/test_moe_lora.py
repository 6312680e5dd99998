"""`lora_target_parameters`: LoRA on MoE experts stored as 3-D tensors (peft's target_parameters), as Axolotl's
MiniMax-M2 and DeepSeek-V4 examples use it, on a tiny Qwen3-MoE built from a config (random weights, 4 experts).

- only the experts' adapters train (the attention and router stay frozen), lora_dropout defaults to 0 and another
  value is refused with the fix (peft's ParamWrapper has no dropout);
- a real `tessera train` run: the loss falls, final/ holds the experts' adapter, and PeftModel.from_pretrained over
  the saved base gives the trained model's logits exactly.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/train/test_moe_lora.py -v
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from schemas.config import ConfigError, config_from_dict, load_config
from tests.train.tiny import demo_prepared, samples_of, shard_rows, to_batch, write_config
from train.loop import train

__all__ = ["demo_prepared"]  # a fixture, imported so pytest finds it

MOE = {"model_type": "qwen3_moe", "hidden_size": 16, "intermediate_size": 32, "moe_intermediate_size": 8,
       "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "num_local_experts": 4,
       "num_experts_per_tok": 2, "max_position_embeddings": 512}
EXPERTS = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]
BASE = {"tokenizer_config": "t", "datasets": [{"path": "a.jsonl", "type": "alpaca"}], "adapter": "lora"}


def test_target_parameters_alone_are_enough_and_dropout_is_zero() -> None:
    cfg = config_from_dict({**BASE, "lora_target_parameters": EXPERTS})
    assert cfg.lora_dropout == 0.0  # Tessera's default is 0.05; peft's ParamWrapper has none
    assert config_from_dict({**BASE, "lora_target_parameters": EXPERTS, "lora_dropout": 0}).lora_dropout == 0
    with pytest.raises(ConfigError, match=r"lora_dropout 0\.1 with lora_target_parameters.*set lora_dropout: 0"):
        config_from_dict({**BASE, "lora_target_parameters": EXPERTS, "lora_dropout": 0.1})


def test_experts_lora_trains_saves_and_loads_with_peft(tmp_path: Path, qwen_dir: Path, demo_prepared: Path) -> None:
    from peft import PeftModel

    cfg_path = write_config(tmp_path, qwen_dir, dataset_prepared_path=str(demo_prepared), base_model_init=MOE,
                            adapter="lora", lora_r=4, lora_alpha=8, lora_target_parameters=EXPERTS,
                            learning_rate=1e-2, max_steps=4)
    done = train(load_config(cfg_path), demo_prepared, cfg_path)
    trained = {n for n, p in done.model.named_parameters() if p.requires_grad}
    assert trained and all("mlp.experts" in n and "lora_" in n for n in trained)
    assert len(trained) == 2 * 2 * 2  # 2 layers x (gate_up_proj, down_proj) x (lora_A, lora_B)
    out = tmp_path / "out"
    losses = [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == 4 and losses[-1] < losses[0]

    saved = load_file(out / "final" / "adapter_model.safetensors")
    assert saved and all("mlp.experts" in k for k in saved)
    assert all(t.abs().sum() > 0 for k, t in saved.items() if "lora_B" in k)  # B starts at 0: these trained
    adapter = json.loads((out / "final" / "adapter_config.json").read_text())
    assert sorted(adapter["target_parameters"]) == sorted(EXPERTS)

    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(out / "base_model"), out / "final")
    base = AutoModelForCausalLM.from_pretrained(out / "base_model")
    b = to_batch([samples_of(shard_rows(demo_prepared, "val")[0])[0]])
    with torch.no_grad():
        logits = [m.eval()(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False).logits
                  for m in (done.model, loaded, base)]
    torch.testing.assert_close(logits[1], logits[0], rtol=0, atol=0)
    assert not torch.allclose(logits[2], logits[0])  # the adapter changes the experts' output
