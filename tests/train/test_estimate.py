"""`tessera estimate` (issue 11, item 4): predicted GPU memory of a training process from the model's config.

- two configs computed by hand, every line's arithmetic written out below: a tiny Qwen2 full fine-tune in fp32
  with foreach AdamW (sdpa, packed) and a LoRA (q_proj, v_proj) bf16 run with gradient checkpointing and fused
  AdamW; then the same LoRA config sharded by FSDP over 2 GPUs;
- against real tensors on CPU: after one optimizer step of the trainer's own model and optimizer, the bytes of the
  weights, gradients and AdamW states equal the estimate exactly (full fine-tune and LoRA);
- activations against what autograd really saves: every tensor saved for backward during the trainer's forward
  pass (torch.autograd.graph.saved_tensors_hooks, unique storages, parameters excluded) on real packed rows
  (ids folded into a 1000-token vocabulary so that the logits do not dominate), fp32 and CPU bf16 autocast,
  sdpa and eager, full and LoRA, equals the activation estimate (+ autocast's weight copies). The allocator's
  own peak is not measured: the CPU allocator keeps no peak statistics
  (torch.cuda.max_memory_allocated is the GPU check, bench/RESULTS.md). LoRA dropout is 0 there: on CPU dropout
  saves an fp32 noise tensor where CUDA's fused kernel saves a 1-byte mask (the estimate is for CUDA).
- the CLI prints the table and --json.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/train/test_estimate.py -v
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from dataprep.cli import main as tessera
from schemas.config import config_from_dict
from tests.train.tiny import VOCAB, demo_prepared, shard_rows, to_batch
from train.estimate import estimate
from train.model import load_model, token_losses
from train.optim import build_optimizer

__all__ = ["demo_prepared"]  # a fixture, imported so pytest finds it

# h 64, intermediate 160, 4 heads of 16 (2 KV heads), 2 layers, vocab 1000, untied output layer.
MODEL = {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000, "tie_word_embeddings": False}


def _cfg(**keys: Any) -> Any:
    return config_from_dict({"tokenizer_config": "unused", "datasets": [{"path": "x"}], "sample_packing": True,
                             "base_model_init": MODEL, **keys})


def test_full_fine_tune_fp32_by_hand() -> None:
    est = estimate(_cfg(bf16=False, micro_batch_size=2, sequence_len=128, optimizer="adamw_torch"),
                   trained_fraction=0.5)
    # parameters: embed 1000*64 = 64000; per layer q 64*64+64 = 4160, k and v 64*32+32 = 2080 each, o 4096,
    # gate/up/down 64*160 = 10240 each, 2 norms 128 -> 43264; final norm 64; lm_head 64000
    total = 64000 + 2 * 43264 + 64 + 64000
    assert est.parameters == {"total": total, "trainable": 214592, "lora": 0, "frozen_linear": 0, "frozen_other": 0}
    # embed; per layer q/k/v weights and biases, o, gate, up, down, 2 norms; final norm, lm_head
    tensors = 1 + 2 * 12 + 2
    lines = est.lines
    assert lines["weights: trained (fp32)"] == 4 * total == 858368
    assert lines["gradients (fp32)"] == 4 * total
    assert lines["optimizer states"] == 8 * total + 4 * tensors  # exp_avg + exp_avg_sq, 4-byte step per tensor
    assert lines["optimizer step temporaries"] == 4 * total  # foreach AdamW's sqrt(exp_avg_sq) list
    assert lines["autocast weight copies (none in fp32)"] == 0
    T, K, h, i, V, s, b = 256, 128, 64, 160, 1000, 128, 2  # tokens, logit positions (0.5 of T)
    norm = 4 * T * h + 4 * T + 4 * T * h  # fp32 input, rsqrt, normalised input (the norm weight is trained)
    qkv = 4 * T * h  # one shared input in fp32
    attention = 4 * T * 64 + 2 * 4 * T * 64 + 4 * T * 64 + 4 * 4 * T + 4 * b * s * s  # q, k+v repeated, out, lse, mask
    mlp = 3 * 4 * T * i + 4 * T * i + 4 * T * h  # gate out, SiLU out, up out, down input; gate/up input
    layer = 2 * norm + qkv + attention + mlp  # o_proj's input is the saved sdpa output (a view)
    assert layer == 1447936
    # ids, cos/sin, final norm, output layer input + keep mask, log-softmax + targets
    outside = 8 * T + 2 * 4 * T * 16 + norm + (4 * K * h + T) + (4 * K * V + 8 * K)
    assert lines["activations (saved for backward)"] == 2 * layer + outside == 3608832
    assert lines["logits + loss at backward start"] == 8 * K * V  # > the output layer's gradient 4 * 64000
    persistent = 4 * total + 8 * total + 4 * tensors
    assert est.peak == persistent + max(3608832 + 8 * K * V, 4 * total + 4 * total) == 7208044
    assert est.phase == "backward"
    checkpointed = 2 * 4 * T * h + layer + outside  # each layer's input, one layer recomputed
    assert est.peak_other == persistent + checkpointed + 8 * K * V == 5891180


def _lora(**keys: Any) -> Any:
    return _cfg(adapter="lora", lora_r=8, lora_alpha=16, lora_dropout=0.05, lora_target_modules=["q_proj", "v_proj"],
                bf16=True, micro_batch_size=1, sequence_len=256, gradient_checkpointing=True,
                optimizer="adamw_torch_fused", **keys)


def test_lora_bf16_with_checkpointing_by_hand() -> None:
    est = estimate(_lora(), trained_fraction=0.25)
    # LoRA per layer: q A 8*64 + B 64*8 = 1024, v A 8*64 + B 32*8 = 768 -> 1792, x2 layers = 3584 (8 tensors)
    lora = 2 * (8 * 64 + 64 * 8 + 8 * 64 + 32 * 8)
    linear = 2 * (64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 160)  # frozen decoder Linear weights: 86016
    other = 214592 - linear  # embeddings, lm_head, biases, norms: 128576
    assert est.parameters == {"total": 214592 + lora, "trainable": lora, "lora": lora, "frozen_linear": linear,
                              "frozen_other": other}
    lines = est.lines
    assert lines["weights: LoRA adapters (fp32)"] == 4 * lora
    assert lines["weights: frozen (fp32)"] == 4 * linear  # the trainer loads frozen weights in fp32
    assert lines["weights: frozen, not quantised (fp32)"] == 4 * other
    assert lines["optimizer states"] == 8 * lora + 4 * 8
    assert lines["optimizer step temporaries"] == 0  # fused AdamW
    assert lines["gradients (fp32)"] == 4 * lora
    T, K, h, i, V, s, rank = 256, 64, 64, 160, 1000, 256, 8
    norms = 2 * (4 * T * h + 4 * T)  # frozen norm weights: fp32 input and rsqrt only
    adapted = T * h + 2 * T * h + 2 * T * rank  # dropout mask (1 B), bf16 cast of A's input, A's output
    attention = 2 * T * 64 + 2 * 2 * T * 64 + 2 * T * 64 + 4 * 4 * T + 2 * s * s  # bf16 q, k+v repeated, out, lse, mask
    layer = norms + 2 * adapted + attention + 3 * 2 * T * i  # + gate out, SiLU out, up out (bf16)
    assert layer == 751616
    # cos/sin, final norm, keep mask, log-softmax + targets
    outside = 2 * 4 * T * 16 + (4 * T * h + 4 * T) + T + (4 * K * V + 8 * K)
    activations = 2 * 4 * T * h + layer + outside  # checkpointed layer inputs + one recomputed layer
    assert lines["activations (saved for backward)"] == activations == 1238784
    copies = 2 * (64000 + linear // 2 + lora)  # bf16 copies: lm_head, one layer's Linears (checkpointing), LoRA
    assert lines["autocast weight copies (bf16)"] == copies == 221184
    assert lines["logits + loss at backward start"] == 8 * K * V
    persistent = 4 * lora + 4 * linear + 4 * other + 8 * lora + 32
    assert est.peak == persistent + activations + copies + 8 * K * V == 2873376


def test_fsdp_shards_weights_gradients_and_optimizer() -> None:
    one = estimate(_lora(), trained_fraction=0.25)
    two = estimate(_lora(fsdp_config={}), gpus=2, trained_fraction=0.25)
    for line in ("weights: LoRA adapters (fp32)", "weights: frozen (fp32)", "gradients (fp32)", "optimizer states"):
        assert two.lines[line] == one.lines[line] // 2, line
    assert two.lines["activations (saved for backward)"] == one.lines["activations (saved for backward)"]
    # gathered: the root (embeddings, final norm, lm_head: 128064) and two of the largest decoder layer, fp32
    layer = 64 * 64 + 64 + 2 * (64 * 32 + 32) + 64 * 64 + 3 * 64 * 160 + 128 + 1792
    assert two.lines["FSDP all-gather (unsharded layers)"] == 4 * (128064 + 2 * layer)
    ddp = estimate(_lora(), gpus=2, trained_fraction=0.25)
    assert ddp.lines["DDP gradient buckets"] == 4 * 3584
    assert ddp.lines["optimizer states"] == one.lines["optimizer states"]


def _real_step(tmp_path: Path, demo_prepared: Path, **keys: Any) -> tuple[Any, dict[str, int]]:
    """One optimizer step of the trainer's model and optimizer on a real packed row; bytes of the tensors."""
    model_keys = {**MODEL, "vocab_size": VOCAB}
    cfg = config_from_dict({"tokenizer_config": "unused", "datasets": [{"path": "x"}], "base_model_init": model_keys,
                            "bf16": False, "sequence_len": 256, **keys})
    model = load_model(cfg, VOCAB, tmp_path).model
    optimizer = build_optimizer(model, cfg)
    b = to_batch(shard_rows(demo_prepared)[:1])
    losses, _ = token_losses(model, b["input_ids"], b["labels"], b["position_ids"], b["sample_ids"], "sdpa")
    losses.mean().backward()
    optimizer.step()
    params = list(model.parameters())  # unique: tied weights once
    states = [t for st in optimizer.state.values() for t in st.values() if isinstance(t, torch.Tensor)]
    # torchao's quantized states are tensor subclasses: what they hold is their inner tensors
    inner = [getattr(t, a) for t in states if hasattr(t, "__tensor_flatten__") for a in t.__tensor_flatten__()[0]]
    plain = [t for t in states if not hasattr(t, "__tensor_flatten__")]
    return cfg, {"weights": sum(p.numel() * p.element_size() for p in params),
                 "gradients": sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None),
                 "optimizer": sum(t.numel() * t.element_size() for t in plain + inner)}


@pytest.mark.parametrize("keys", [{}, {"adapter": "lora", "lora_target_linear": True, "lora_r": 4},
                                  {"optimizer": "adamw_torch_8bit"}, {"optimizer": "adamw_torch_4bit"},
                                  {"optimizer": "ao_adamw_fp8"}, {"optimizer": "muon"},
                                  {"optimizer": "muon", "adapter": "lora", "lora_target_linear": True, "lora_r": 4}],
                         ids=["full", "lora", "torchao-8bit", "torchao-4bit", "torchao-fp8", "muon", "muon-lora"])
def test_weights_gradients_optimizer_equal_real_tensors(keys: dict[str, Any], tmp_path: Path,
                                                        demo_prepared: Path) -> None:
    cfg, real = _real_step(tmp_path, demo_prepared, **keys)
    est = estimate(cfg, gpu_bf16=False)
    weights = sum(v for k, v in est.lines.items() if k.startswith("weights"))
    assert weights == real["weights"]
    assert est.lines["gradients (fp32)"] == real["gradients"]
    assert est.lines["optimizer states"] == real["optimizer"]


def _saved_bytes(model: torch.nn.Module, batch: dict[str, torch.Tensor], attention: str, bf16: bool) -> int:
    """Bytes of every distinct storage autograd saves for backward in the trainer's forward pass."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", torch.bfloat16,
                                                                                     enabled=bf16):
        token_losses(model, batch["input_ids"], batch["labels"], batch["position_ids"], batch["sample_ids"], attention)
    return sum(seen.values())


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_activations_equal_what_autograd_saves(attention: str, bf16: bool, lora: bool, tmp_path: Path,
                                               demo_prepared: Path) -> None:
    keys: dict[str, Any] = {"adapter": "lora", "lora_target_linear": True, "lora_r": 4, "lora_dropout": 0.0} \
        if lora else {}
    cfg = config_from_dict({"tokenizer_config": "unused", "datasets": [{"path": "x"}], "sample_packing": True,
                            "base_model_init": MODEL, "attn_implementation": attention,
                            "bf16": bf16, "micro_batch_size": 2, "sequence_len": 256, **keys})
    model = load_model(cfg, 1000, tmp_path).model.train()
    batch = to_batch(shard_rows(demo_prepared)[:2], pad_to=256)  # 2 x 256 = 512 tokens, as the estimate assumes
    # ids folded into the model's 1000-token vocabulary, so the logits do not drown the layers' terms
    batch["input_ids"] %= 1000
    batch["labels"] = torch.where(batch["labels"] < 0, batch["labels"], batch["labels"] % 1000)
    kept = int((batch["labels"][:, 1:] != -100).sum())
    est = estimate(cfg, trained_fraction=kept / 512)
    assert est.assumptions["logit_positions"] == kept
    predicted = est.lines["activations (saved for backward)"] + sum(v for k, v in est.lines.items()
                                                                    if k.startswith("autocast weight copies"))
    measured = _saved_bytes(model, batch, attention, bf16)
    # exact to the loss's 4-byte scalar, except LoRA under autocast, within 1%: the first layer's frozen q/k/v
    # weights need no saved bf16 copy (their input needs no gradient), which the estimate does not single out
    assert predicted == pytest.approx(measured, rel=1e-2 if bf16 and lora else 1e-5)


def test_cli_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"tokenizer_config": "unused", "datasets": [{"path": "x"}], "base_model_init": MODEL,
                                   "sequence_len": 128, "bf16": False}))
    assert tessera(["estimate", str(cfg), "--json", "--trained-fraction", "0.5"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["peak"] == estimate(_cfg(sequence_len=128, bf16=False, sample_packing=False),
                                    trained_fraction=0.5).peak
    assert tessera(["estimate", str(cfg)]) == 0
    text = capsys.readouterr().out
    assert "peak allocated (" in text and "activations by term" in text and "214,592 parameters" in text
    assert tessera(["estimate", str(cfg), "--trained-fraction", "2"]) == 2
    assert "--trained-fraction 2" in capsys.readouterr().err
