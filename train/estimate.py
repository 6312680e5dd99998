"""`tessera estimate CONFIG`: predicted peak GPU memory of one training process, from the model's config alone.

The model is built on the meta device (`from_config` under `torch.device("meta")`, LoRA added by the trainer's own
`add_lora`), so every parameter is counted exactly, per module, and no weight is loaded or allocated. The rest
is arithmetic on the counts, in bytes, in the order a step allocates them:

    persistent   weights (trained ones fp32; frozen ones at the load dtype, nf4/int8 + quantisation state under
                 load_in_4bit/8bit), optimizer states, DDP gradient buckets
    backward     activations saved for backward (activations.py: per decoder layer, or per layer input with
                 gradient checkpointing) + bf16/fp16 weight copies autocast saves + the logits and loss at the
                 start of backward (or the output layer's gradient, whichever is larger)
    optimizer    gradients (fp32) + the foreach AdamW's temporary (one fp32 copy of the trained parameters;
                 fused and 8-bit optimizers have none)

    peak allocated = persistent + max(backward, optimizer)   what torch.cuda.max_memory_allocated() reports
    + CUDA context and allocator slack                         what nvidia-smi adds on top

Assumptions (each a parameter): the trainer keeps trained parameters in fp32 and autocasts to bf16/fp16 (no
separate master copy is needed); frozen weights load in fp32 (train/model.py) unless quantised;
`trained_fraction` of positions reach the output layer (Tessera computes logits only where the next token is
trained; 1.0 is the bound); FSDP shards weights, gradients and optimizer states over the GPUs and gathers one
decoder layer at a time (two with prefetch) plus the root's embeddings and output layer.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from schemas.config import Config
from train.activations import Shape, activation_terms

GiB = 1024**3
CUDA_CONTEXT = 512 * 1024**2  # CUDA context + cuBLAS workspace on a Hopper/Ampere card with torch 2.x (not allocated)
ALLOCATOR_SLACK = 0.05  # reserved-but-unallocated share of the caching allocator in a steady training loop
NF4_BLOCK, NESTED_BLOCK, INT8_OPTIM_BLOCK = 64, 256, 256
# torchao's optimizer states: bits per value, values per fp32 scale, fp32 entries of its code table
TORCHAO_STATES = {"adamw_torch_8bit": (8, 256, 256), "adamw_torch_4bit": (4, 128, 16), "ao_adamw_fp8": (8, 256, 0)}
BNB_MIN_8BIT_SIZE = 4096  # bitsandbytes 8-bit optimizers keep fp32 states for smaller tensors
_DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


class EstimateError(Exception):
    """The estimate cannot be made from this config; the message says what to set."""


@dataclass
class Counts:
    """Parameters per kind, exactly as the trainer's model has them."""

    total: int = 0
    trainable: int = 0
    trainable_tensors: int = 0
    lora: int = 0
    frozen_linear: int = 0  # nn.Linear weights bitsandbytes would quantise (not the output layer)
    frozen_linear_tensors: int = 0
    frozen_linear_rows: int = 0  # output features of those (int8 keeps one fp32 scale per row)
    frozen_other: int = 0  # embeddings, output layer, norms, biases
    matmul_weights: int = 0  # weights of every Linear run in the forward pass (autocast casts each)
    output_layer: int = 0
    largest_layer: int = 0  # parameters of the largest decoder layer (FSDP gathers one at a time)
    root: int = 0  # parameters outside the decoder layers (embeddings, final norm, output layer)
    trainable_sizes: list[int] = field(default_factory=list)
    muon: int = 0  # trainable values optimizer: muon gives Muon (train/muon.py's split); AdamW has the rest
    muon_tensors: int = 0
    largest_muon: int = 0


@dataclass
class Estimate:
    model: dict[str, Any]
    assumptions: dict[str, Any]
    parameters: dict[str, int]
    lines: dict[str, int]  # component -> bytes (per GPU)
    activations: dict[str, int]  # the configured gradient_checkpointing setting's terms
    activations_other: dict[str, int]  # the other setting's
    peak: int
    peak_other: int  # with gradient checkpointing toggled
    phase: str  # "backward" or "optimizer": where the peak is
    reserved: int  # peak + CUDA context + allocator slack

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate(cfg: Config, *, gpus: int | None = None, trained_fraction: float = 1.0,
             config_dir: Path = Path("."), frozen_dtype: str = "fp32", gpu_bf16: bool = True) -> Estimate:
    """The estimate for one process of `gpus`; `gpu_bf16`: bf16: auto resolves to bf16 (a GPU with bf16)."""
    if not 0 < trained_fraction <= 1:
        raise EstimateError(f"--trained-fraction {trained_fraction}: give a share in (0, 1]")
    gpus = gpus or int(os.environ.get("WORLD_SIZE", "1"))
    if gpus < 1:
        raise EstimateError(f"--gpus {gpus}: give 1 or more")
    hf_config = model_config(cfg, config_dir)
    counts = count_parameters(cfg, hf_config)
    mixed = "fp16" if cfg.fp16 else "bf16" if cfg.bf16 is True or (cfg.bf16 == "auto" and gpu_bf16) else None
    p = 2 if mixed else 4
    quant = "nf4" if cfg.load_in_4bit else "int8" if cfg.load_in_8bit else None
    frozen_bytes = p if quant else _DTYPE_BYTES[frozen_dtype]
    fsdp = bool(cfg.fsdp) or cfg.fsdp_config is not None
    shard = gpus if fsdp else 1

    lines: dict[str, int] = {}
    lines["weights: trained (fp32)"] = 4 * (counts.trainable - counts.lora) // shard
    lines["weights: LoRA adapters (fp32)"] = 4 * counts.lora // shard
    if quant == "nf4":
        lines["weights: frozen linear (nf4)"] = math.ceil(counts.frozen_linear / 2) // shard
        lines["weights: nf4 quantisation state"] = _nf4_state(counts, double_quant=True) // shard
    elif quant == "int8":
        lines["weights: frozen linear (int8)"] = counts.frozen_linear // shard
        lines["weights: int8 row scales"] = 4 * counts.frozen_linear_rows // shard
    else:
        lines[f"weights: frozen ({_name(frozen_bytes)})"] = frozen_bytes * counts.frozen_linear // shard
    lines[f"weights: frozen, not quantised ({_name(frozen_bytes)})"] = frozen_bytes * counts.frozen_other // shard
    lines["optimizer states"] = _optimizer_bytes(cfg.optimizer, counts) // shard
    if fsdp and gpus > 1:
        gathered = counts.root + (2 * counts.largest_layer if _reshards(cfg) else counts.total - counts.root)
        lines["FSDP all-gather (unsharded layers)"] = gathered * (4 if not quant else p)
    if gpus > 1 and not fsdp:
        lines["DDP gradient buckets"] = 4 * counts.trainable
    persistent = sum(lines.values())

    shape = Shape.from_config(hf_config, cfg.micro_batch_size, cfg.sequence_len)
    kept = math.ceil(trained_fraction * shape.tokens)
    terms = {gc: activation_terms(shape, cfg, counts_lora=cfg.adapter is not None, compute_bytes=p,
                                  residual_bytes=frozen_bytes if cfg.adapter else 4, kept=kept,
                                  checkpointing=gc, quantised=quant is not None)
             for gc in (False, True)}
    gc = cfg.gradient_checkpointing or any(getattr(cfg.fsdp_config, k, False) for k in
                                           ("activation_checkpointing", "fsdp_activation_checkpointing"))
    copies = {gc_: copies_for(gc_, counts, shape, p, mixed, quant, frozen_bytes) for gc_ in (False, True)}
    logits_peak = 12 * kept * shape.vocab - 4 * kept * shape.vocab  # beyond the saved log-softmax
    out_grad = 4 * counts.output_layer if _output_trained(cfg) else 0
    backward = {gc_: sum(terms[gc_].values()) + copies[gc_] + max(logits_peak, out_grad) for gc_ in (False, True)}
    lines["activations (saved for backward)"] = sum(terms[gc].values())
    lines[f"autocast weight copies ({mixed})" if mixed else "autocast weight copies (none in fp32)"] = copies[gc]
    lines["logits + loss at backward start"] = max(logits_peak, out_grad)
    grads = 4 * counts.trainable // shard
    temp = 4 * counts.trainable // shard if cfg.optimizer == "adamw_torch" else 0
    if cfg.optimizer == "muon":  # foreach AdamW's copy of its share; Muon's fp32 nesterov + bf16 iterate, one matrix
        temp = (4 * (counts.trainable - counts.muon) + 8 * counts.largest_muon) // shard
    lines["gradients (fp32)"] = grads
    lines["optimizer step temporaries"] = temp
    optimizer_phase = grads + temp
    peak = persistent + max(backward[gc], optimizer_phase)
    peak_other = persistent + max(backward[not gc], optimizer_phase)
    reserved = peak + CUDA_CONTEXT + round(ALLOCATOR_SLACK * peak)
    lines["CUDA context + allocator slack"] = reserved - peak
    assumptions = {"gpus": gpus, "fsdp": fsdp, "mixed_precision": mixed, "quantisation": quant,
                   "frozen_dtype": _name(frozen_bytes), "trained_fraction": trained_fraction,
                   "gradient_checkpointing": gc, "attn_implementation": cfg.attention, "optimizer": cfg.optimizer,
                   "trained_fraction_from": None, "micro_batch_size": cfg.micro_batch_size,
                   "sequence_len": cfg.sequence_len,
                   "logit_positions": kept}
    model = {"model_type": hf_config.model_type, "layers": shape.layers, "hidden_size": shape.hidden,
             "intermediate_size": shape.intermediate, "heads": shape.heads, "kv_heads": shape.kv_heads,
             "head_dim": shape.head_dim, "vocab_size": shape.vocab}
    params = {"total": counts.total, "trainable": counts.trainable, "lora": counts.lora,
              "frozen_linear": counts.frozen_linear, "frozen_other": counts.frozen_other}
    return Estimate(model, assumptions, params, lines, terms[gc], terms[not gc], peak, peak_other,
                    "backward" if backward[gc] >= optimizer_phase else "optimizer", reserved)


def copies_for(gc: bool, counts: Counts, shape: Shape, p: int, mixed: str | None, quant: str | None,
               frozen_bytes: int) -> int:
    """Autocast's bf16/fp16 copy of each fp32 matmul weight, saved until its backward (the input's gradient
    needs it): every layer's, or with gradient checkpointing one layer's at a time, plus the output layer's.
    Weights already stored in the compute dtype (frozen bf16, quantised) need no copy; LoRA's are cast too."""
    if not mixed or quant:
        return 0
    fp32_weights = counts.matmul_weights if frozen_bytes == 4 else counts.trainable - counts.lora
    per_layer = (fp32_weights - counts.output_layer) // shape.layers if frozen_bytes == 4 else 0
    output = counts.output_layer if frozen_bytes == 4 or _output_trained_counts(counts) else 0
    return p * (output + (per_layer if gc else shape.layers * per_layer) + counts.lora)


def _output_trained_counts(counts: Counts) -> bool:
    return counts.trainable - counts.lora >= counts.output_layer > 0


def model_config(cfg: Config, config_dir: Path) -> Any:
    """The transformers config of the model the trainer would train (no weights read)."""
    from transformers import AutoConfig

    if cfg.base_model_init is not None:
        from train.model import ModelError, config_from

        fields = dict(cfg.base_model_init)
        if "vocab_size" not in fields:
            fields["vocab_size"] = _tokenizer_vocab(cfg, config_dir)
        try:
            return config_from(fields)
        except ModelError as e:
            raise EstimateError(str(e)) from None
    folder = cfg.base_model_config or cfg.base_model
    if not folder or not (Path(folder) / "config.json").is_file():
        raise EstimateError(f"base_model {folder}: no config.json there; estimate reads the model's config.json "
                            "(set base_model or base_model_config to a local model folder, or base_model_init)")
    return AutoConfig.from_pretrained(folder)


def _tokenizer_vocab(cfg: Config, config_dir: Path) -> int:
    """base_model_init's vocab_size defaults to the prepared tokenizer's size, as in the trainer."""
    from dataprep.transform import tokenizer_for

    try:
        return tokenizer_for(cfg, config_dir).vocab_size
    except Exception as e:  # any tokenizer problem: the fix is the same
        raise EstimateError(f"base_model_init has no vocab_size and the tokenizer cannot be read ({e}); set "
                            "base_model_init.vocab_size") from None


def count_parameters(cfg: Config, hf_config: Any) -> Counts:
    import torch
    from transformers import AutoModelForCausalLM

    from train.model import add_lora
    from train.muon import takes_muon

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config)
        model.tie_weights()
        output = model.get_output_embeddings()
        out_weight = output.weight if output is not None else None
        if cfg.adapter is not None:
            model = add_lora(model, cfg)
    c = Counts()
    seen: set[int] = set()
    for name, module in model.named_modules():
        for pname, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            n = param.numel()
            c.total += n
            if param.requires_grad:
                c.trainable += n
                c.trainable_tensors += 1
                c.trainable_sizes.append(n)
                c.lora += n if "lora_" in name else 0
                if takes_muon(f"{name}.{pname}", param):
                    c.muon, c.muon_tensors, c.largest_muon = c.muon + n, c.muon_tensors + 1, max(c.largest_muon, n)
            elif isinstance(module, torch.nn.Linear) and pname == "weight" and param is not out_weight:
                c.frozen_linear += n
                c.frozen_linear_tensors += 1
                c.frozen_linear_rows += param.shape[0]
            else:
                c.frozen_other += n
            if isinstance(module, torch.nn.Linear) and pname == "weight" and "lora_" not in name:
                c.matmul_weights += n
    if out_weight is not None:
        c.output_layer = out_weight.numel()
        c.matmul_weights += 0 if any(p is out_weight for p in _linear_weights(model)) else c.output_layer
    layers = _decoder_layers(model)
    sizes = [sum(p.numel() for p in layer.parameters()) for layer in layers]
    c.largest_layer = max(sizes, default=0)
    c.root = c.total - sum(sizes)
    return c


def _linear_weights(model: Any) -> list[Any]:
    import torch

    return [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]


def _decoder_layers(model: Any) -> list[Any]:
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) and "DecoderLayer" in type(module[0]).__name__:
            return list(module)
    return []


def _nf4_state(c: Counts, double_quant: bool) -> int:
    """absmax per 64-weight block: fp32, or with double quant uint8 + one fp32 per 256 blocks, plus each
    tensor's code tables and offset (nf4 code 16 fp32; nested dynamic code 256 fp32; offset 1 fp32)."""
    blocks = math.ceil(c.frozen_linear / NF4_BLOCK)
    if not double_quant:
        return 4 * blocks + 64 * c.frozen_linear_tensors
    return blocks + 4 * math.ceil(blocks / NESTED_BLOCK) + (64 + 1024 + 4) * c.frozen_linear_tensors


def _optimizer_bytes(name: str, c: Counts) -> int:
    """AdamW: exp_avg + exp_avg_sq in fp32 and a 4-byte step per tensor. 8-bit (bitsandbytes): 1 byte per state
    plus an fp32 absmax per 256-value block, for tensors of at least 4096 values (smaller ones stay fp32).
    torchao (TORCHAO_STATES): its bits per state, an fp32 scale per block and its code table, for tensors of at
    least 4096 values that are a whole number of blocks. muon: one fp32 momentum per Muon value (no step), AdamW's
    for the rest."""
    if name == "muon":
        return 4 * c.muon + 8 * (c.trainable - c.muon) + 4 * (c.trainable_tensors - c.muon_tensors)
    if name in TORCHAO_STATES:
        bits, block, table = TORCHAO_STATES[name]
        return sum(2 * (n * bits // 8 + 4 * (n // block) + 4 * table) if n >= 4096 and n % block == 0 else 8 * n
                   for n in c.trainable_sizes) + 4 * c.trainable_tensors
    if "8bit" not in name:
        return 8 * c.trainable + 4 * c.trainable_tensors
    total = 0
    for n in c.trainable_sizes:
        total += 2 * n + 2 * 4 * math.ceil(n / INT8_OPTIM_BLOCK) if n >= BNB_MIN_8BIT_SIZE else 8 * n
    return total + 4 * c.trainable_tensors


def _reshards(cfg: Config) -> bool:
    fc = cfg.fsdp_config
    if fc is None:
        return True
    for key in ("reshard_after_forward", "fsdp_reshard_after_forward"):
        if hasattr(fc, key):
            return bool(getattr(fc, key))
    return True


def _output_trained(cfg: Config) -> bool:
    return cfg.adapter is None or bool(cfg.lora_modules_to_save and "lm_head" in cfg.lora_modules_to_save)


def _name(nbytes: int) -> str:
    return {4: "fp32", 2: "bf16/fp16"}[nbytes]


def render_table(est: Estimate) -> str:
    from train.estimate_table import table

    return table(est)
