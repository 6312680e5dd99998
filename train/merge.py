"""`tessera merge-lora CONFIG [--checkpoint DIR]`: the LoRA adapter folded into its base model.

peft's `merge_and_unload` adds scaling * B @ A to every adapted weight (and puts modules_to_save in place), which
leaves a plain transformers model: output_dir/merged/ holds it (save_pretrained, safetensors) plus tokenizer/,
and loads with AutoModelForCausalLM.from_pretrained alone, no peft needed. The merge runs in fp32 (the trainer's
weights) so the merged logits equal base + adapter to float rounding.

Atomic: written to output_dir/.merged.tmp and renamed; an existing merged/ is replaced only once the new one is
complete, so a killed merge leaves the previous merged/ (or none), never a partial one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from schemas.config import Config
from train.artifacts import ArtifactError, is_adapter, load_model_from, tokenizer_dir


def merge_lora(cfg: Config, weights: Path, prepared: Path | None = None) -> Path:
    """Write output_dir/merged/ from the adapter in `weights`; returns its path."""
    if not is_adapter(weights):
        raise ArtifactError(f"{weights}: a full model, not a LoRA adapter (no adapter_config.json): it loads "
                            "with AutoModelForCausalLM as it is, there is nothing to merge")
    tokenizer = tokenizer_dir(cfg, weights, prepared)
    model = load_model_from(weights, cfg, dtype=torch.float32)
    merged = model.merge_and_unload()
    out = Path(cfg.output_dir)
    tmp, final, old = out / ".merged.tmp", out / "merged", out / ".merged.old"
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    merged.save_pretrained(tmp, safe_serialization=True)
    shutil.copytree(tokenizer, tmp / "tokenizer")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final
