"""The run config: one pydantic tree whose field names are the YAML keys.

Key names are Axolotl's wherever the meaning is the same, so users can bring their configs. Keys that only
Tessera has say so in their docstring. Unknown keys are errors (with the closest valid key); combinations
that cannot work are errors too, raised before any data is read. `load_config` reports every problem at once,
each with its file and line.

The tree, by meaning (every name is importable from here, as callers always have):
    schemas/base.py          ConfigModel: unknown keys forbidden, field docstrings are the reference
    schemas/datasets.py      datasets[] and pretraining_dataset[] entries, the custom instruct `type:` mapping
    schemas/curation.py      dataset_near_deduplication, filters[], decontaminate[]
    schemas/fsdp.py          fsdp_config
    schemas/data_keys.py     the root's data keys (model, tokenizer, chat template, data, curation)
    schemas/trainer_keys.py  the root's trainer keys and TRAINER_KEYS (left out of the prepare fingerprint)
    schemas/config.py        Config: data keys then trainer keys, and the checks that span both
    schemas/load.py          load_config, config_from_dict, ConfigError: YAML in, every problem with file:line
"""

from __future__ import annotations

import datetime
import re
from typing import Literal

from pydantic import PrivateAttr, model_validator

from schemas import axolotl_compat
from schemas.base import ConfigModel
from schemas.curation import DecontaminateSource, FilterRule, NearDeduplication
from schemas.data_keys import MAX_SEQUENCE_LEN, DataKeys, SpecialTokens
from schemas.datasets import FORMAT_TYPES, MAX_WEIGHT, CustomInstructType, DatasetConfig, PretrainingDataset, TrainOnEos
from schemas.fsdp import FsdpConfig
from schemas.load import (
    ConfigError,
    config_from_dict,
    ignored_keys_warning,
    key_report,
    load_config,
    unused_keys_note,
)
from schemas.trainer_keys import TRAINER_KEYS, TrainerKeys

__all__ = [
    "FORMAT_TYPES", "MAX_SEQUENCE_LEN", "MAX_WEIGHT", "TRAINER_KEYS", "Config", "ConfigError", "ConfigModel",
    "CustomInstructType", "DataKeys", "DatasetConfig", "DecontaminateSource", "FilterRule", "FsdpConfig",
    "NearDeduplication", "PretrainingDataset", "SpecialTokens", "TrainOnEos", "TrainerKeys", "config_from_dict",
    "ignored_keys_warning", "key_report", "load_config", "unused_keys_note",
]


# pydantic orders the fields along the reversed MRO: DataKeys' first, then TrainerKeys' (so `output_dir` and
# everything after it are the trainer's, as test_config checks). Both subclass only ConfigModel: two flat
# sections, not a mixin stack. No docstring: it would become the JSON schema's description.
class Config(TrainerKeys, DataKeys):
    # What load_config did with Axolotl keys that are not fields (not used, renamed): schemas/axolotl_compat.py.
    # Private, so never part of the dump, the manifest or the fingerprint.
    _keys: axolotl_compat.KeyReport | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check(self) -> Config:
        if self.pretraining_dataset:
            # Moved, not copied: re-validating the dumped config (worker processes) must not add them twice.
            self.datasets = [*self.datasets, *(p.as_dataset() for p in self.pretraining_dataset)]
            self.pretraining_dataset = None
        if self.lora_target_parameters and "lora_dropout" not in self.model_fields_set:
            self.lora_dropout = 0.0  # peft's ParamWrapper has no dropout; Axolotl's default is 0 with any adapter
        problems = []
        if self.chat_template == "jinja" and not self.chat_template_jinja:
            problems.append("chat_template: jinja needs chat_template_jinja (the template text or a .jinja path)")
        if self.chat_template_jinja and self.chat_template != "jinja":
            problems.append(f"chat_template_jinja is set but chat_template is '{self.chat_template}': "
                            "set chat_template: jinja")
        tokenizer = self.tokenizer_config or self.base_model or ""
        if self.chat_template_kwargs and tokenizer.startswith("mistral:"):
            problems.append(f"chat_template_kwargs ({', '.join(self.chat_template_kwargs)}) has no effect with the "
                            f"mistral-common tokenizer '{tokenizer}', which encodes chats without a Jinja template: "
                            "remove chat_template_kwargs, or use the model's HF tokenizer folder")
        if not self.base_model and not self.tokenizer_config:
            problems.append("set base_model or tokenizer_config (a local folder with tokenizer.json)")
        if self.val_set_size >= 1 and self.val_set_size != int(self.val_set_size):
            problems.append(f"val_set_size {self.val_set_size}: a fraction must be < 1, a count a whole number")
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            problems.append("set warmup_steps or warmup_ratio, not both")
        if self.adapter == "qlora" and not self.load_in_4bit:
            problems.append("adapter: qlora needs load_in_4bit: true")
        if self.load_in_4bit and self.load_in_8bit:
            problems.append("load_in_4bit and load_in_8bit are exclusive")
        if self.bf16 is True and self.fp16:
            problems.append("bf16 and fp16 are exclusive")
        problems += self._trainer_problems()
        problems += self._fsdp_problems()
        try:
            datetime.date.fromisoformat(self.chat_template_date)
        except ValueError:
            problems.append(f"chat_template_date '{self.chat_template_date}' is not an ISO date (YYYY-MM-DD)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _trainer_problems(self) -> list[str]:
        """Trainer combinations that cannot work: caught here, before any data is read or a model loaded."""
        problems = []
        if self.base_model_init is not None:
            if self.base_model:
                problems.append("base_model_init builds a model with random weights and base_model loads one: "
                                "set only one (the tokenizer then comes from tokenizer_config)")
            if not isinstance(self.base_model_init.get("model_type"), str):
                problems.append("base_model_init needs model_type (e.g. qwen2, llama)")
        if self.eval_steps is not None and self.evals_per_epoch is not None:
            problems.append("set eval_steps or evals_per_epoch, not both")
        if self.save_steps is not None and self.saves_per_epoch is not None:
            problems.append("set save_steps or saves_per_epoch, not both")
        for key in ("eval_steps", "save_steps"):
            value = getattr(self, key)
            if isinstance(value, float) and value >= 1 and value != int(value):
                problems.append(f"{key} {value}: a fraction of the total steps must be < 1, a count a whole number")
        if isinstance(self.lora_target_modules, str):
            try:
                re.compile(self.lora_target_modules)
            except re.error as e:
                problems.append(f"lora_target_modules '{self.lora_target_modules}': not a regular expression ({e})")
        if self.cosine_min_lr_ratio is not None and self.lr_scheduler != "cosine":
            problems.append(f"cosine_min_lr_ratio only applies to lr_scheduler: cosine (it is {self.lr_scheduler})")
        attn = {"flash_attention": "flash_attention_2", "sdp_attention": "sdpa"}
        chosen = {v for k, v in attn.items() if getattr(self, k)}
        if self.attn_implementation:
            chosen.add(self.attn_implementation)
        if len(chosen) > 1:
            problems.append(f"attention kernels conflict ({', '.join(sorted(chosen))}): set one of "
                            "attn_implementation, flash_attention, sdp_attention")
        if self.adapter is not None and not (self.lora_target_modules or self.lora_target_linear
                                             or self.lora_target_parameters):
            problems.append(f"adapter: {self.adapter} needs lora_target_modules (e.g. [q_proj, v_proj]), "
                            "lora_target_linear: true or lora_target_parameters (MoE expert tensors)")
        if self.lora_target_parameters and self.lora_dropout:
            problems.append(f"lora_dropout {self.lora_dropout} with lora_target_parameters: peft adapts a parameter "
                            "without dropout (its ParamWrapper; Axolotl refuses this too): set lora_dropout: 0")
        return problems

    def _fsdp_problems(self) -> list[str]:
        """FSDP keys: which version, old and new spellings agreeing, and what FSDP2 cannot do here."""
        problems = []
        inner = self.fsdp_config.fsdp_version if self.fsdp_config else None
        if self.fsdp_version is not None and inner is not None and inner != self.fsdp_version:
            problems.append(f"fsdp_version {self.fsdp_version} and fsdp_config.fsdp_version {inner} differ: keep one")
        if 1 in (self.fsdp_version, inner):
            problems.append("fsdp_version: 1 (FSDP1) is not supported: set fsdp_version: 2 (the same sharding with "
                            "torch's fully_shard; the fsdp_config keys are the same)")
        if (self.fsdp_version is not None or inner is not None) and not self.fsdp_on:
            problems.append("fsdp_version is set but FSDP is not: add fsdp_config (e.g. fsdp_config: "
                            "{reshard_after_forward: true}) or remove fsdp_version")
        unknown = sorted(set(self.fsdp or []) - {"full_shard", "auto_wrap", "offload"})
        if unknown:
            problems.append(f"fsdp: {unknown} not supported: FSDP2 shards fully (full_shard), wraps each decoder layer "
                            "(auto_wrap) and offloads with offload; use fsdp_config for the rest")
        if self.fsdp_on and self.fp16:
            problems.append("fp16 with FSDP is not supported (its loss scaling is not shard-aware here): use bf16")
        return problems

    @property
    def quantization(self) -> Literal["nf4", "int8"] | None:
        """The base weights' bitsandbytes quantization, read as Axolotl reads the keys: nf4 for adapter: qlora
        with load_in_4bit, int8 for adapter: lora with load_in_8bit; load_in_4bit under lora and load_in_8bit
        without an adapter quantize nothing (the trainer warns)."""
        if self.adapter == "qlora" and self.load_in_4bit:
            return "nf4"
        if self.adapter == "lora" and self.load_in_8bit:
            return "int8"
        return None

    @property
    def fsdp_on(self) -> bool:
        """FSDP2 was asked for: fsdp_config or the old `fsdp` list (Axolotl's signals)."""
        return self.fsdp_config is not None or bool(self.fsdp)

    @property
    def fsdp_settings(self) -> FsdpConfig:
        """fsdp_config with the old `fsdp: [..., offload]` list folded in (defaults when only `fsdp` is given)."""
        settings = self.fsdp_config or FsdpConfig()
        if "offload" in (self.fsdp or []):
            settings = settings.model_copy(update={"offload_params": True})
        return settings

    @property
    def attention(self) -> str:
        """The transformers attn_implementation the trainer uses."""
        if self.flash_attention:
            return "flash_attention_2"
        return self.attn_implementation or "sdpa"

