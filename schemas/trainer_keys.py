"""The root config's trainer keys: read by `tessera train`, never by `tessera prepare`.

They never change the prepared bytes, so the prepare fingerprint leaves them out (TRAINER_KEYS). A key added here
is a trainer key by construction; a key that changes the prepared bytes belongs in schemas/data_keys.py, or
stale shards would be reused.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator

from schemas.base import ConfigModel
from schemas.fsdp import FsdpConfig


class TrainerKeys(ConfigModel):
    output_dir: str = "./outputs"
    """Trainer: where run.json, metrics.jsonl, checkpoint-<step>/ and final/ go."""
    base_model_init: dict[str, Any] | None = None
    """Tessera: build the model from a transformers config with random weights instead of loading base_model,
    e.g. {model_type: qwen2, hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4,
    num_key_value_heads: 2, intermediate_size: 128}. `model_type` is required; vocab_size defaults to the
    prepared tokenizer's size. The initial weights (from `seed`) are saved to output_dir/base_model/ so that
    an adapter's base_model_name_or_path resolves. For the demo and tests."""
    adapter: Literal["lora", "qlora"] | None = None
    """Trainer: lora, qlora (LoRA over a base quantized to 4-bit nf4 by bitsandbytes; needs load_in_4bit), or
    empty for a full fine-tune."""
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = 16
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_target_modules: list[str] | str | None = None
    """Module names (or suffixes) that get LoRA, e.g. [q_proj, v_proj]; or one string, a regular expression the
    whole module path must match (peft's rule), e.g. 'model.layers.[\\d]+.(mlp|self_attn).(q|v)_proj'."""
    lora_target_linear: bool = False
    """LoRA on every linear layer except the output layer (added to lora_target_modules)."""
    lora_target_parameters: list[str] | str | None = None
    """Parameters (not modules) that get LoRA, by name suffix: MoE experts stored as one 3-D tensor per layer, e.g.
    [mlp.experts.gate_up_proj, mlp.experts.down_proj] (peft's target_parameters; with or without
    lora_target_modules). peft adapts such a parameter without dropout: lora_dropout defaults to 0 then, and
    another value is an error (as in Axolotl)."""
    lora_modules_to_save: list[str] | None = None
    """Modules trained in full next to the adapter and saved with it, e.g. [embed_tokens, lm_head] when tokens
    were added."""
    load_in_4bit: bool = False
    """Trainer: with adapter: qlora, the frozen base weights are bitsandbytes nf4 with double quantization."""
    load_in_8bit: bool = False
    """Trainer: with adapter: lora, the frozen base weights are bitsandbytes int8 (LLM.int8)."""
    bnb_config_kwargs: dict[str, Any] | None = None
    """Trainer: passed to transformers' BitsAndBytesConfig over the defaults (as Axolotl does), e.g.
    {bnb_4bit_quant_type: fp4, bnb_4bit_use_double_quant: false}."""
    micro_batch_size: int = Field(1, ge=1)
    """Packed rows per forward pass (per process)."""
    gradient_accumulation_steps: int = Field(1, ge=1)
    """Micro-batches per optimizer step; the loss is normalised by the trained tokens of the whole step."""
    num_epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    """Optimizer steps; overrides num_epochs when set."""
    learning_rate: float = Field(2e-5, gt=0)
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    """After warmup: cosine decay to cosine_min_lr_ratio * learning_rate, linear decay to 0, or constant
    (constant_with_warmup, transformers' name, is the same: every schedule warms up first)."""
    cosine_min_lr_ratio: float | None = Field(None, ge=0, le=1)
    """lr_scheduler: cosine ends at this fraction of learning_rate (default 0)."""
    cosine_constant_lr_ratio: float | None = Field(None, ge=0, le=1)
    """With cosine_min_lr_ratio (both non-zero, as Axolotl reads them): the cosine reaches the minimum at this
    fraction of the total steps and stays there (continual pre-training's re-warm recipe)."""
    lr_quadratic_warmup: bool = False
    """lr_scheduler: cosine warms up quadratically instead of linearly; as in Axolotl, cosine_min_lr_ratio is
    then ignored (the trainer warns)."""
    warmup_steps: int | None = Field(None, ge=0)
    """Warmup in optimizer steps, a whole number."""

    @field_validator("warmup_steps", mode="before")
    @classmethod
    def _steps_not_a_fraction(cls, value: Any) -> Any:
        # Axolotl's own examples write `warmup_steps: 0.1` (4 of them); Axolotl's schema (an int) refuses it too.
        if isinstance(value, float) and math.isfinite(value) and not value.is_integer():
            hint = (f"for {value:g} of the total steps write warmup_ratio: {value:g}" if 0 < value < 1
                    else f"write a whole number ({math.floor(value)} or {math.ceil(value)})")
            raise ValueError(f"{value:g} is not a whole number of steps (Axolotl's schema refuses it too); {hint}")
        return value

    warmup_ratio: float | None = Field(None, ge=0, lt=1)
    """Warmup as a fraction of the total optimizer steps."""
    optimizer: Literal["adamw_torch", "adamw_torch_fused", "adamw_bnb_8bit", "adamw_8bit", "paged_adamw_8bit",
                       "paged_adamw_32bit", "adamw_torch_8bit", "adamw_torch_4bit", "ao_adamw_fp8",
                       "muon"] = "adamw_torch"
    """AdamW, all of them. adamw_torch(_fused): torch's. adamw_bnb_8bit (= adamw_8bit), paged_adamw_8bit,
    paged_adamw_32bit: bitsandbytes', with 8-bit states (blocks of 2,048) or paged states (CUDA unified memory,
    evicted to CPU under memory pressure). adamw_torch_8bit, adamw_torch_4bit, ao_adamw_fp8: torchao's, states
    in 8 bits, 4 bits or float8 (blocks of 256/128; the one Axolotl advises under FSDP2); compiled on a GPU, run
    eagerly on a CPU. Tensors under 4,096 values keep 32-bit states in both libraries. muon: Muon (torch's) on
the hidden weight matrices and AdamW on embeddings, the output layer, norms and biases, with one learning rate,
as Axolotl splits them (train/muon.py: momentum 0.95, Nesterov, AdamW betas 0.9/0.95 unless both adam_beta1 and
adam_beta2 are set); Muon's usual learning rate is about 0.02."""
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.999, ge=0, lt=1)
    adam_epsilon: float = Field(1e-8, ge=0)
    """AdamW's betas and epsilon (transformers' defaults), for every optimizer above."""
    weight_decay: float = Field(0.0, ge=0)

    @field_validator("optimizer", mode="before")
    @classmethod
    def _optimizer_alternative(cls, value: Any) -> Any:
        """Axolotl's deprecated spellings of torchao's optimizers are read as their new names; for optimizers
        Axolotl configs name that Tessera does not build, say which one gives the same thing."""
        renamed = {"ao_adamw_8bit": "adamw_torch_8bit", "ao_adamw_4bit": "adamw_torch_4bit"}
        closest = {"adamw_hf": "adamw_torch", "adamw_apex_fused": "adamw_torch_fused",
                   "paged_adamw": "paged_adamw_32bit", "adamw_bnb": "adamw_bnb_8bit"}
        if isinstance(value, str) and value in closest:
            raise ValueError(f"'{value}' is not available in tessera train; use {closest[value]}")
        return renamed.get(value, value) if isinstance(value, str) else value

    max_grad_norm: float = Field(1.0, ge=0)
    """Clip the gradient norm to this; 0 turns clipping off (the norm is still logged)."""
    bf16: bool | Literal["auto"] = "auto"
    """auto: bf16 when the GPU supports it, else fp32 (always fp32 on CPU)."""
    fp16: bool = False
    tf32: bool = False
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] | None = None
    """transformers' attention kernel; default sdpa (flash_attention_2 when flash_attention: true). Axolotl's
    `xformers` and `flex_attention` are read as sdpa (the same exact attention, packed rows masked the same way;
    PyTorch picks its own memory-efficient kernel), and a Hub FlashAttention kernel
    (`kernels-community/vllm-flash-attn3`) as flash_attention_2, the flash-attn package's varlen kernel (Tessera
    downloads nothing at train time)."""

    @field_validator("attn_implementation", mode="before")
    @classmethod
    def _axolotl_kernels(cls, value: Any) -> Any:
        if value in ("xformers", "flex_attention"):
            return "sdpa"
        if isinstance(value, str) and value.startswith("kernels-community/") and "flash-attn" in value:
            return "flash_attention_2"
        return value

    flash_attention: bool = False
    """Same as attn_implementation: flash_attention_2 (needs a GPU and flash-attn)."""
    sdp_attention: bool = False
    """Same as attn_implementation: sdpa."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer in backward instead of keeping its activations. Axolotl's `offload` and
    `offload_disk` (activation offloading) are read as true: Tessera checkpoints without offloading."""

    @field_validator("gradient_checkpointing", mode="before")
    @classmethod
    def _offload_is_checkpointing(cls, value: Any) -> Any:
        return True if value in ("offload", "offload_disk") else value

    logging_steps: int = Field(1, ge=1)
    eval_steps: int | float | None = Field(None, gt=0)
    """Evaluate on the val split every N optimizer steps (a float < 1: that fraction of the total steps), and
    always at the end. Default: once per epoch (evals_per_epoch: 1) when there is a val split."""
    evals_per_epoch: int | None = Field(None, ge=0)
    """Evaluations per epoch, instead of eval_steps; 0: none during the run (as in Axolotl), only at the end."""
    save_steps: int | float | None = Field(None, gt=0)
    """Checkpoint every N optimizer steps (a float < 1: that fraction of the total steps). Default: once per
    epoch when neither save_steps nor saves_per_epoch is set."""
    saves_per_epoch: int | None = Field(None, ge=1)
    """Checkpoints per epoch, instead of save_steps."""
    save_total_limit: int | None = Field(None, ge=1)
    """Keep only the newest N checkpoints."""
    resume_from_checkpoint: str | None = None
    """A checkpoint-<step> folder to continue from (weights, optimizer, RNG and data position)."""
    auto_resume_from_checkpoints: bool = False
    """Continue from the newest complete checkpoint in output_dir, if there is one."""
    fsdp: list[str] | None = None
    """Trainer, Axolotl's old FSDP switch, e.g. [full_shard, auto_wrap] (`offload` = fsdp_config.offload_params).
    Prefer fsdp_config; either one turns FSDP2 on."""
    fsdp_config: FsdpConfig | None = None
    """Trainer: shard parameters, gradients and optimizer states over the processes (FSDP2) instead of replicating
    them (DDP, the default with more than one process). Needs more than one process (torchrun/accelerate launch)."""
    fsdp_version: Literal[1, 2] | None = None
    """Trainer: 2 (FSDP2, torch's fully_shard) is the only version Tessera runs; FSDP1 is refused. Default 2
    when fsdp_config or fsdp is set."""
    wandb_project: str | None = None
    """Log to Weights & Biases when wandb is installed and this is set."""



# Keys only the trainer reads: the prepare fingerprint leaves them out (dataprep/pipeline.py's _NOT_DATA), so
# `tessera train --set learning_rate=...` reuses the prepared data. tests/schemas/test_config.py checks that they
# are Config's keys from output_dir to the end.
TRAINER_KEYS = frozenset(TrainerKeys.model_fields)
