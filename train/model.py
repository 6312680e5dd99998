"""The model: `load_model` (a local HF folder, or random weights from `base_model_init`, plus peft LoRA) and
`token_losses`, the one forward pass the loop and evaluation use.

Packed rows need no attention mask: transformers (5.x) builds a block-diagonal causal mask from position_ids
that restart at 0, but only when no `attention_mask` is passed AND there is no KV cache (`use_cache=False`);
with the default cache the samples of a row silently attend to each other. flash_attention_2 instead takes
the micro-batch flattened to one row plus cu_seqlens (global offsets) and the longest sequence.

The output layer is the expensive part of a small model on a large vocabulary (151,936 x hidden for Qwen):
`logits_to_keep` gets a boolean mask of the positions whose next token is trained, so the projection and the
cross-entropy run only there (~3x cheaper on the demo, identical loss; tests/train/test_loss.py).
"""

from __future__ import annotations

import difflib
import json
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel
from transformers.utils import logging as hf_logging

from schemas.config import Config
from schemas.shard import IGNORE_INDEX
from train.log import print0

# peft reads the property transformers 5 renamed (is_gradient_checkpointing) when it wraps a model: noise in every
# run's output, not the user's to fix.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.* is deprecated", category=FutureWarning)


class ModelError(Exception):
    """The model cannot be set up as configured; the message says how to fix it."""


@dataclass
class LoadedModel:
    model: torch.nn.Module
    info: dict[str, Any]  # run.json's "model" entry
    base_dir: Path | None  # a loadable folder with the base weights (adapter's base_model_name_or_path)


def load_model(cfg: Config, vocab_size: int, output_dir: Path, dtype: torch.dtype = torch.float32,
               is_main: bool = True, empty: bool = False, device: torch.device | None = None,
               compute_dtype: torch.dtype | None = None) -> LoadedModel:
    """The base model (loaded, or built from base_model_init with `seed`), quantized by bitsandbytes onto
    `device` for QLoRA / 8-bit LoRA (computing in compute_dtype, default `dtype`), gradient checkpointing, LoRA.
    empty: build it on the meta device without reading the weights (FSDP2's cpu_ram_efficient_loading: ranks
    other than 0 get theirs from rank 0 after sharding, train/distributed.py)."""
    hf_logging.disable_progress_bar()  # "Loading weights" bars; the run prints its own progress
    attention = cfg.attention
    _warn_unquantized(cfg, is_main)
    quantized = quantized_loading(cfg, compute_dtype or dtype, device)
    if cfg.base_model_init is not None:
        base_dir = output_dir / "base_model"
        fields = {"vocab_size": vocab_size, **cfg.base_model_init}
        recipe = json.dumps({"config": fields, "seed": cfg.seed}, sort_keys=True)
        # Saved once and reloaded on resume, so a restarted run trains the same initial weights; rebuilt when
        # output_dir holds another init (a changed base_model_init or seed).
        if not (base_dir / "tessera_init.json").is_file() or (base_dir / "tessera_init.json").read_text() != recipe:
            config = config_from(fields)
            torch.manual_seed(cfg.seed)
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            if is_main:
                tmp = output_dir / ".base_model.tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                model.save_pretrained(tmp)
                (tmp / "tessera_init.json").write_text(recipe)
                shutil.rmtree(base_dir, ignore_errors=True)
                tmp.rename(base_dir)
        source: dict[str, Any] = {"built_from_config": cfg.base_model_init, "saved_to": str(base_dir)}
    elif cfg.base_model:
        base_dir = Path(cfg.base_model)
        if not (base_dir / "config.json").is_file():
            raise ModelError(f"base_model {base_dir}: no config.json there; base_model must be a local folder "
                             "with config.json and *.safetensors (Tessera never downloads)")
        source = {"base_model": str(base_dir)}
    else:
        raise ModelError("no model: set base_model (a local HF folder) or base_model_init (a config for random "
                         "weights)")
    try:
        if empty:
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(base_dir.resolve())),
                                                         dtype=dtype, attn_implementation=attention)
        else:
            model = AutoModelForCausalLM.from_pretrained(str(base_dir.resolve()), dtype=dtype,
                                                         attn_implementation=attention, **quantized)
    except (OSError, ValueError, ImportError) as e:
        raise ModelError(f"cannot load {base_dir}: {str(e).splitlines()[0]}") from None
    if quantized:
        same_4bit_kernels_on_every_cpu(model)
    if model.get_input_embeddings().num_embeddings < vocab_size:
        raise ModelError(f"the model has {model.get_input_embeddings().num_embeddings} token embeddings but the "
                         f"prepared data uses ids up to {vocab_size - 1}: use the model's own tokenizer")
    if quantized:
        from peft import prepare_model_for_kbit_training

        # Freezes the base and casts its unquantized weights (norms, embeddings) to fp32 for stable training;
        # checkpointing is set up below as for every model (non-reentrant needs no input grads).
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if cfg.gradient_checkpointing or (cfg.fsdp_on and cfg.fsdp_settings.activation_checkpointing):
        # Non-reentrant: works with frozen embeddings (LoRA) without enable_input_require_grads. transformers 5
        # renamed the method (the old name warns); 4.x only has the old one.
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if cfg.adapter in ("lora", "qlora"):
        # LoRA's initial weights come from the seed, not from whatever the RNG did before: the same on every
        # rank (FSDP2 keeps each rank's own shard of them) and on every run.
        torch.manual_seed(cfg.seed)
        model = add_lora(model, cfg)
    params = sum(_numel(p) for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    info = {**source, "parameters": params, "trainable_parameters": trainable, "adapter": cfg.adapter,
            "architecture": type(model.get_base_model() if cfg.adapter else model).__name__,
            "attn_implementation": attention, "quantization": cfg.quantization}
    return LoadedModel(model, info, base_dir)


def same_4bit_kernels_on_every_cpu(model: torch.nn.Module) -> None:
    """bitsandbytes (0.49+) repacks a 4-bit layer's weight in place the first time the layer runs on a CPU with
    AVX512-BF16 in eval mode without gradients (evaluation, generation), and computes with another kernel from
    then on: eval_loss, and the training after it, would depend on the CPU model, and a layer whose out_features
    is not a multiple of 32 fails ("N must be divisible by block_n"). Switched off, every 4-bit layer dequantizes
    the same way on every machine (GPUs never take that path)."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def _numel(p: torch.Tensor) -> int:
    """Weights a parameter holds: a bitsandbytes 4-bit one packs two in a byte (its quant_state has the shape)."""
    state = getattr(p, "quant_state", None)
    return int(torch.Size(state.shape).numel()) if state is not None else p.numel()


def quantization_config(cfg: Config, compute_dtype: torch.dtype) -> Any:
    """transformers' BitsAndBytesConfig for cfg.quantization, with Axolotl's defaults (nf4, double quant,
    int8 threshold 6) under the user's bnb_config_kwargs; None when the base stays unquantized."""
    if cfg.quantization is None:
        return None
    try:
        import bitsandbytes  # noqa: F401  (transformers' own message on a missing package is less direct)
    except ImportError:
        raise ModelError(f"adapter: {cfg.adapter} with load_in_{'4' if cfg.quantization == 'nf4' else '8'}bit "
                         "needs bitsandbytes: pip install -e '.[gpu]' (bitsandbytes >= 0.48 also runs on CPU)"
                         ) from None
    from transformers import BitsAndBytesConfig

    if cfg.quantization == "int8":
        fields: dict[str, Any] = {"load_in_8bit": True}
    else:
        fields = {"load_in_4bit": True, "llm_int8_threshold": 6.0, "llm_int8_has_fp16_weight": False,
                  "bnb_4bit_compute_dtype": compute_dtype, "bnb_4bit_use_double_quant": True,
                  "bnb_4bit_quant_type": "nf4"}
    if cfg.fsdp_on:
        # FSDP2 shards the packed 4-bit weights as ordinary tensors of the storage dtype: the model's (fp32 here)
        # lets them share a unit with the unquantized weights, as Axolotl's bf16 storage does for its bf16 models.
        fields["bnb_4bit_quant_storage"] = torch.float32
    fields.update(cfg.bnb_config_kwargs or {})
    try:
        return BitsAndBytesConfig(**fields)
    except (TypeError, ValueError) as e:
        raise ModelError(f"bnb_config_kwargs {cfg.bnb_config_kwargs}: {str(e).splitlines()[0]}") from None


def quantized_loading(cfg: Config, compute_dtype: torch.dtype, device: torch.device | None) -> dict[str, Any]:
    """from_pretrained's extra arguments: the quantization and the device the weights are quantized onto (bnb
    quantizes while loading; a quantized model is not moved afterwards); {} for an unquantized base."""
    config = quantization_config(cfg, compute_dtype)
    if config is None:
        return {}
    return {"quantization_config": config, "device_map": {"": device or torch.device("cpu")}}


def _warn_unquantized(cfg: Config, is_main: bool) -> None:
    if (cfg.load_in_4bit or cfg.load_in_8bit) and cfg.quantization is None:
        key = "load_in_4bit" if cfg.load_in_4bit else "load_in_8bit"
        print0(f"warning: {key} quantizes nothing with adapter: {cfg.adapter or 'none'} (as in Axolotl): the base "
               f"is not quantized; set adapter: {'qlora' if cfg.load_in_4bit else 'lora'} to quantize it", is_main)


def config_from(fields: dict[str, Any]) -> Any:
    """A transformers config from base_model_init; unknown fields are errors (transformers would keep a typo
    like hidden_sise silently as an extra attribute)."""
    fields = dict(fields)
    model_type = fields.pop("model_type")
    try:
        config = AutoConfig.for_model(model_type)
    except ValueError:
        raise ModelError(f"base_model_init.model_type '{model_type}' is not a transformers model type "
                         "(e.g. qwen2, llama, mistral)") from None
    known = set(config.to_dict())
    for key in fields:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ModelError(f"base_model_init.{key}: not a field of {type(config).__name__}{hint}")
    return AutoConfig.for_model(model_type, **fields)


def add_lora(model: PreTrainedModel, cfg: Config) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    pattern = cfg.lora_target_modules if isinstance(cfg.lora_target_modules, str) else None
    targets = set() if pattern else set(cfg.lora_target_modules or [])
    if cfg.lora_target_linear:
        output_layer = model.get_output_embeddings()
        targets |= {name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                    if isinstance(m, torch.nn.Linear) and m is not output_layer}
    target: str | list[str] = sorted(targets)
    if pattern:  # peft full-matches one string against every module path: the names become one more alternative
        names = "|".join(re.escape(t) for t in sorted(targets))
        target = f"(?:{pattern})|(?:.*\\.(?:{names}))" if targets else pattern
    # target_parameters: peft wraps each named parameter (MoE experts as 3-D tensors) in a ParamWrapper
    parameters = [cfg.lora_target_parameters] if isinstance(cfg.lora_target_parameters, str) \
        else cfg.lora_target_parameters
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=target, target_parameters=parameters, modules_to_save=cfg.lora_modules_to_save,
                      task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, lora)
    except ValueError as e:
        keys = f"lora_target_modules {target}" + (f", lora_target_parameters {parameters}" if parameters else "")
        raise ModelError(f"{keys}: {str(e).splitlines()[0]}") from None


def token_losses(model: torch.nn.Module, input_ids: torch.Tensor, labels: torch.Tensor,
                 position_ids: torch.Tensor, sample_ids: torch.Tensor, attention: str,
                 cu_seqlens: torch.Tensor | None = None, max_seqlen: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy (fp32, unreduced) of every trained token of a micro-batch, and the sample it belongs to.

    labels are aligned with input_ids (not shifted): the logits at position t predict labels[t + 1]. The shards
    never train the first token of a sample, so no target crosses from one packed sample into the next.
    """
    kwargs: dict[str, Any] = {}
    if attention == "flash_attention_2":
        # One row of B*T tokens: cu_seqlens are global offsets over the flattened micro-batch.
        input_ids, labels, position_ids, sample_ids = (t.reshape(1, -1) for t in
                                                       (input_ids, labels, position_ids, sample_ids))
        assert cu_seqlens is not None, "flash_attention_2 needs the batch's cu_seqlens"
        cu = cu_seqlens.to(device=input_ids.device, dtype=torch.int32)
        kwargs = {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": max_seqlen, "max_length_k": max_seqlen}
    targets = labels[:, 1:]
    trained = targets != IGNORE_INDEX
    keep = F.pad(trained, (0, 1), value=False)  # input positions whose next token is trained
    out = model(input_ids=input_ids, position_ids=position_ids, use_cache=False, logits_to_keep=keep, **kwargs)
    losses = F.cross_entropy(out.logits.float(), targets[trained], reduction="none")
    return losses, sample_ids[:, 1:][trained]

