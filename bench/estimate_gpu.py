"""`tessera estimate` against a real GPU: peak `torch.cuda.max_memory_allocated()` of the trainer's own model,
optimizer and forward/backward (3 optimizer steps on random packed rows) vs the estimate, for a few configs.

    PYTHONPATH=$PWD .venv/bin/python bench/estimate_gpu.py            # on a CUDA machine; prints a markdown table
    PYTHONPATH=$PWD .venv/bin/python bench/estimate_gpu.py --smoke    # CPU: tiny configs, checks the script runs

Models are Qwen2-architecture configs with random weights (Qwen2.5-0.5B and -1.5B shapes); nothing is
downloaded. Goal (issue 11): within 15%.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

# The repository first: bench/train.py would otherwise shadow the train package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from schemas.config import config_from_dict
from train.estimate import GiB, estimate
from train.model import load_model, token_losses
from train.optim import build_optimizer

QWEN_05B = {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
            "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True}
QWEN_15B = {**QWEN_05B, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
            "num_attention_heads": 12}
TINY = {**QWEN_05B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "vocab_size": 4096}
LORA = {"adapter": "lora", "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "lora_target_linear": True}
QLORA = {**LORA, "adapter": "qlora", "load_in_4bit": True}  # bitsandbytes quantizes onto the device while loading
CONFIGS = {
    "0.5B full, bf16, seq 4096": (QWEN_05B, {"sequence_len": 4096}),
    "0.5B full, bf16, seq 4096, checkpointing": (QWEN_05B, {"sequence_len": 4096, "gradient_checkpointing": True}),
    "0.5B LoRA, bf16, seq 4096": (QWEN_05B, {"sequence_len": 4096, **LORA}),
    "1.5B LoRA, bf16, seq 2048 x 2, checkpointing": (QWEN_15B, {"sequence_len": 2048, "micro_batch_size": 2,
                                                               "gradient_checkpointing": True, **LORA}),
    "1.5B QLoRA nf4, bf16, seq 4096": (QWEN_15B, {"sequence_len": 4096, **QLORA}),
    "1.5B QLoRA nf4, bf16, seq 4096, checkpointing, adamw_bnb_8bit": (
        QWEN_15B, {"sequence_len": 4096, "gradient_checkpointing": True, "optimizer": "adamw_bnb_8bit", **QLORA}),
}


def measure(model_cfg: dict[str, Any], keys: dict[str, Any], device: torch.device, trained: float) -> int:
    cfg = config_from_dict({"tokenizer_config": "unused", "datasets": [{"path": "x"}], "sample_packing": True,
                            "base_model_init": model_cfg, "optimizer": "adamw_torch", **keys})
    compute = torch.bfloat16 if device.type == "cuda" else None
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(cfg, model_cfg["vocab_size"], Path(tmp), device=device, compute_dtype=compute).model
        model = model.to(device)
    optimizer = build_optimizer(model, cfg)
    b, s = cfg.micro_batch_size, cfg.sequence_len
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        ids = torch.randint(0, model_cfg["vocab_size"], (b, s), generator=gen)
        positions = torch.cat([torch.arange(s // 2), torch.arange(s - s // 2)]).repeat(b, 1)  # two samples a row
        labels = ids.clone()
        labels[torch.rand(b, s, generator=gen) > trained] = -100
        labels[:, 0] = labels[:, s // 2] = -100
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            losses, _ = token_losses(model, ids.to(device), labels.to(device), positions.to(device),
                                     torch.zeros_like(ids).to(device), cfg.attention)
        losses.mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny configs on CPU (no memory numbers)")
    args = parser.parse_args()
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    trained = 0.3
    print("| config | estimate (GiB) | max_memory_allocated (GiB) | error |\n|---|---|---|---|")
    for name, (model_cfg, keys) in CONFIGS.items():
        if args.smoke:
            model_cfg, keys = TINY, {**keys, "sequence_len": 128}
        cfg = config_from_dict({"tokenizer_config": "unused", "datasets": [{"path": "x"}], "sample_packing": True,
                                "base_model_init": model_cfg, "optimizer": "adamw_torch", **keys})
        predicted = estimate(cfg, trained_fraction=trained, gpu_bf16=device.type == "cuda").peak
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        real = measure(model_cfg, keys, device, trained)
        error = f"{(predicted - real) / real:+.1%}" if real else "n/a (CPU)"
        print(f"| {name} | {predicted / GiB:.2f} | {real / GiB:.2f} | {error} |", flush=True)


if __name__ == "__main__":
    main()
