"""What a finished (or interrupted) run left behind, for the after-training tools (merge-lora, generate, eval).

    weights_dir(cfg, checkpoint)   output_dir/final, or a checkpoint-<step> folder given with --checkpoint
    load_model_from(dir, cfg)      a full model (save_pretrained) or base + LoRA adapter, in fp32, eval mode; with
                                   quantized=True a QLoRA / 8-bit LoRA base is quantized as in training
    tokenizer_dir(cfg, dir)        the tokenizer (and exact chat template) the data was prepared with

A LoRA folder holds adapter_config.json, whose base_model_name_or_path the trainer wrote as an absolute path (a
real base_model, or output_dir/base_model for base_model_init); when that folder has moved, the config's own
base model is used.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from schemas.config import Config


class ArtifactError(Exception):
    """The run's outputs cannot be used as asked; the message says which folder and what to do."""


def weights_dir(cfg: Config, checkpoint: Path | None) -> Path:
    if checkpoint is not None:
        if not is_model_dir(checkpoint):
            raise ArtifactError(f"--checkpoint {checkpoint}: no model or adapter there (config.json + "
                                "model.safetensors, or adapter_config.json); give a checkpoint-<step> folder or "
                                f"{Path(cfg.output_dir) / 'final'}")
        return checkpoint
    final = Path(cfg.output_dir) / "final"
    if not is_model_dir(final):
        found = sorted(Path(cfg.output_dir).glob("checkpoint-*"))
        hint = f"; or pick a checkpoint with --checkpoint {found[-1]}" if found else ""
        raise ArtifactError(f"{final}: no finished run there (train first: tessera train CONFIG){hint}")
    return final


def is_model_dir(path: Path) -> bool:
    return (path / "adapter_config.json").is_file() or (path / "config.json").is_file()


def is_adapter(path: Path) -> bool:
    return (path / "adapter_config.json").is_file()


def base_model_dir(cfg: Config, adapter_dir: Path) -> Path:
    """The folder the adapter was trained on."""
    written = json.loads((adapter_dir / "adapter_config.json").read_text()).get("base_model_name_or_path")
    candidates = [Path(written)] if written else []
    candidates.append(Path(cfg.output_dir) / "base_model" if cfg.base_model_init is not None
                      else Path(cfg.base_model or ""))
    for c in candidates:
        if (c / "config.json").is_file():
            return c
    raise ArtifactError(f"{adapter_dir}: its base model {written or '(not recorded)'} is not a model folder; set "
                        "base_model to the folder the adapter was trained on")


def load_model_from(path: Path, cfg: Config, dtype: torch.dtype = torch.float32, quantized: bool = False,
                    device: torch.device | None = None, compute_dtype: torch.dtype | None = None
                    ) -> torch.nn.Module:
    """The model in `path` ready for inference: a full model, or the base model with the adapter on top.
    quantized: a base the run trained quantized (cfg.quantization) is quantized again the same way onto
    `device` (computing in compute_dtype, default `dtype`), so evaluation and generation see the model training
    saw; merging takes the unquantized base."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from train.model import ModelError, quantized_loading, same_4bit_kernels_on_every_cpu

    hf_logging.disable_progress_bar()
    try:
        if not is_adapter(path):
            return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype,
                                                        attn_implementation=cfg.attention).eval()
        from peft import PeftModel

        extra = quantized_loading(cfg, compute_dtype or dtype, device) if quantized else {}
        base = AutoModelForCausalLM.from_pretrained(str(base_model_dir(cfg, path)), dtype=dtype,
                                                    attn_implementation=cfg.attention, **extra)
        if extra:
            same_4bit_kernels_on_every_cpu(base)
        return PeftModel.from_pretrained(base, str(path)).eval()
    except ModelError as e:
        raise ArtifactError(str(e)) from None
    except (OSError, ValueError, ImportError) as e:
        raise ArtifactError(f"cannot load {path}: {str(e).splitlines()[0]}") from None


def tokenizer_dir(cfg: Config, weights: Path, prepared: Path | None = None) -> Path:
    """The tokenizer saved with the weights (final/tokenizer), else final/'s, else the prepared directory's:
    all three are the copy `prepare` wrote, with the chat template that rendered the training data."""
    out = Path(cfg.output_dir)
    prepared = prepared or Path(cfg.dataset_prepared_path or "")
    for candidate in (weights / "tokenizer", out / "final" / "tokenizer", prepared / "tokenizer"):
        if (candidate / "tokenizer_config.json").is_file() or (candidate / "tokenizer.json").is_file():
            return candidate
    raise ArtifactError(f"{weights}: no tokenizer/ next to it, in {out / 'final'} or in the prepared directory "
                        f"({prepared}); prepare the data again (tessera prepare CONFIG) so that prepared/…/tokenizer "
                        "exists")
