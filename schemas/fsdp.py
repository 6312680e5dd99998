"""`fsdp_config:`, Axolotl's FSDP keys, as Tessera runs them (FSDP2, torch's fully_shard)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import model_validator

from schemas.base import ConfigModel


class FsdpConfig(ConfigModel):
    """Trainer: `fsdp_config:`, Axolotl's keys. Tessera shards with FSDP2 (torch's `fully_shard`): each decoder
    layer is one unit, then the root (embeddings, final norm, output layer). The old `fsdp_`-prefixed names
    (`fsdp_offload_params`, ...) are accepted; giving both spellings with different values is an error."""

    fsdp_version: Literal[1, 2] | None = None
    """Same as the top-level `fsdp_version` (Axolotl's canonical place); `version` is accepted here too."""
    reshard_after_forward: bool = True
    """Free each layer's gathered parameters after its forward pass (gather again for backward): less memory,
    more communication. false keeps them until backward (ZeRO-2-like)."""
    offload_params: bool = False
    """Keep parameters, gradients and optimizer states in CPU memory between uses (GPU runs only)."""
    state_dict_type: Literal["FULL_STATE_DICT", "SHARDED_STATE_DICT"] = "FULL_STATE_DICT"
    """What a checkpoint holds besides the sharded state it resumes from (torch.distributed.checkpoint, always
    written): FULL_STATE_DICT adds the consolidated model (or adapter), loadable with transformers/peft;
    SHARDED_STATE_DICT only the shards (faster for big models). final/ is always consolidated."""
    auto_wrap_policy: Literal["TRANSFORMER_BASED_WRAP", "SIZE_BASED_WRAP"] = "TRANSFORMER_BASED_WRAP"
    """TRANSFORMER_BASED_WRAP: one FSDP unit per decoder layer (SIZE_BASED_WRAP is not supported)."""
    transformer_layer_cls_to_wrap: str | None = None
    """Class name(s) of the decoder layer, comma-separated (e.g. Qwen2DecoderLayer); default: the model's
    `_no_split_modules`."""
    activation_checkpointing: bool = False
    """Recompute each layer's activations in backward instead of storing them (same as gradient_checkpointing)."""
    cpu_ram_efficient_loading: bool = False
    """Only rank 0 loads the weights; the other ranks build the model without memory and receive them
    (one copy of the model in CPU RAM per machine instead of one per process)."""

    @model_validator(mode="before")
    @classmethod
    def _unprefix(cls, data: Any) -> Any:
        """Axolotl's old names (fsdp_offload_params, ...) and `version` map to the current ones."""
        if not isinstance(data, dict):
            return data
        out: dict[str, Any] = {}
        problems = []
        for key, value in data.items():
            name = key
            if key in ("version", "fsdp_version"):
                name = "fsdp_version"
            elif isinstance(key, str) and key.startswith("fsdp_"):
                name = key.removeprefix("fsdp_")
            if name in out and out[name] != value:
                problems.append(f"fsdp_config gives {name} twice with different values ({out[name]!r} and "
                                f"{key}: {value!r}): keep one")
            out[name] = value
        if problems:
            raise ValueError("; ".join(problems))
        return out

    @model_validator(mode="after")
    def _supported(self) -> FsdpConfig:
        if self.auto_wrap_policy == "SIZE_BASED_WRAP":
            raise ValueError("auto_wrap_policy: SIZE_BASED_WRAP is not supported (Tessera makes each decoder layer "
                             "one FSDP unit): use TRANSFORMER_BASED_WRAP")
        return self

