"""Activation memory of one micro-batch: the tensors autograd saves for backward, per decoder layer, for a
Llama-style decoder as transformers (5.x) writes it (Qwen2, Llama, Mistral, Qwen3: pre-norm RMSNorm, rotary
attention with grouped KV heads, gated SiLU MLP), micro_batch_size b x sequence_len s = T tokens.

Dtypes: the trainer keeps weights in fp32 and autocasts, so the residual stream (r bytes) is fp32 unless the
frozen weights are loaded in bf16/fp16 (QLoRA); matmul outputs are in the compute dtype (p bytes: 2 under
bf16/fp16 autocast, 4 in fp32). Autocast casts a non-leaf fp32 input again for every Linear that reads it, so
q/k/v (and gate/up) each save their own copy; without autocast they share one tensor.

Per layer (terms of `activation_terms`; h hidden, i intermediate, a heads, kv KV heads, d head dim):
    norm x2          the fp32 input (4Th), rsqrt (4T), the normalised input when the norm weight is trained (rTh)
    q/k/v, o, gate/up, down inputs   saved by a trained Linear (full fine-tune) or by LoRA's A (+ dropout mask, 1 byte)
    LoRA A output    p T rank per adapted Linear
    attention        sdpa / flash: q, k, v (k and v repeated to a heads when a mask is passed: packed rows), output,
                     logsumexp (4 a T); sdpa with a mask (packed rows) also keeps the mask converted to the compute
                     dtype, p b s^2 per layer. eager: q, k, v (repeated) and the softmax (4 b a s^2, + a p copy)
    MLP              gate output (SiLU input), SiLU output, up output: 3 p T i (+ the down input, p T i, when saved)
Outside the layers: rotary cos/sin (2 r b s d), the final norm, the output layer's input at the kept positions
and the fp32 log-softmax of the logits (4 K V, K = positions whose next token is trained).
With gradient checkpointing each layer keeps only its input (r T h); one layer's activations come back at a
time during backward ("recomputed layer").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from schemas.config import Config

ATTENTION_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_LINEARS = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Shape:
    batch: int
    seq: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    layers: int
    vocab: int
    attention_dropout: float = 0.0

    @property
    def tokens(self) -> int:
        return self.batch * self.seq

    @classmethod
    def from_config(cls, c: Any, batch: int, seq: int) -> Shape:
        from train.estimate import EstimateError

        missing = [k for k in ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers",
                               "vocab_size") if getattr(c, k, None) is None]
        if missing:
            raise EstimateError(f"model_type {c.model_type}: its config has no {', '.join(missing)}; the activation "
                                "formula covers Llama-style decoders (qwen2, llama, mistral, qwen3)")
        heads = c.num_attention_heads
        return cls(batch, seq, c.hidden_size, c.intermediate_size, heads, getattr(c, "num_key_value_heads", None)
                   or heads, getattr(c, "head_dim", None) or c.hidden_size // heads, c.num_hidden_layers,
                   c.vocab_size, float(getattr(c, "attention_dropout", 0.0) or 0.0))


def lora_targets(cfg: Config) -> set[str]:
    """The decoder Linears LoRA adapts, by name, as train/model.py's add_lora chooses them. A regular expression
    (lora_target_modules as one string) is tried on each Linear's path in a Llama-style layer; one that picks
    some layers only is counted as if it picked them in every layer (an upper bound)."""
    mods = cfg.lora_target_modules
    if isinstance(mods, str):
        targets = {n for n in ATTENTION_LINEARS + MLP_LINEARS for prefix in ("model", "model.language_model")
                   for part in ("self_attn", "mlp") for layer in range(64)
                   if re.fullmatch(mods, f"{prefix}.layers.{layer}.{part}.{n}")}
    else:
        targets = {t.rsplit(".", 1)[-1] for t in mods or []}
    if cfg.lora_target_linear:
        targets |= set(ATTENTION_LINEARS + MLP_LINEARS)
    return targets


def activation_terms(shape: Shape, cfg: Config, *, counts_lora: bool, compute_bytes: int, residual_bytes: int,
                     kept: int, checkpointing: bool, quantised: bool = False) -> dict[str, int]:
    """Bytes saved for backward at the end of the forward pass, by term (all layers together)."""
    del quantised  # bitsandbytes' 4/8-bit matmuls save the quantised weight, not their input: as a frozen Linear
    layer = layer_terms(shape, cfg, counts_lora, compute_bytes, residual_bytes)
    s, p, r = shape, compute_bytes, residual_bytes
    terms: dict[str, int] = {}
    if checkpointing:
        terms["layer inputs (checkpointed)"] = s.layers * r * s.tokens * s.hidden
        terms["recomputed layer (backward)"] = sum(layer.values())
    else:
        for name, value in layer.items():
            terms[name] = s.layers * value
    full = not counts_lora
    if not full and not checkpointing:
        # frozen embeddings: the first layer's input needs no gradient, so its first norm saves nothing
        terms["norms"] -= _norm(s, r, trained=False)
    terms["embedding ids, rotary cos/sin"] = (8 * s.tokens if full else 0) + 2 * r * s.tokens * s.head_dim
    terms["final norm"] = _norm(s, r, trained=full)
    out_trained = full or "lm_head" in (cfg.lora_modules_to_save or [])
    # the boolean mask of kept positions (1 byte a token), and the kept hidden states when the layer is trained
    terms["output layer input (kept positions)"] = (p * kept * s.hidden if out_trained else 0) + s.tokens
    terms["log-softmax of the logits (fp32)"] = 4 * kept * s.vocab + 8 * kept
    return terms


def layer_terms(s: Shape, cfg: Config, lora: bool, p: int, r: int) -> dict[str, int]:
    """One decoder layer's saved bytes by term."""
    T, h, i = s.tokens, s.hidden, s.intermediate
    qd = s.heads * s.head_dim
    targets = lora_targets(cfg) if lora else set(ATTENTION_LINEARS + MLP_LINEARS)
    kind = {n: ("lora" if lora else "full") if n in targets else "frozen" for n in ATTENTION_LINEARS + MLP_LINEARS}
    dropout = cfg.lora_dropout if lora else 0.0
    rank = cfg.lora_r
    o_shared = cfg.attention != "eager" and (kind["o_proj"] == "full" or (kind["o_proj"] == "lora" and dropout == 0
                                                                           and p == 4))

    def inputs(xb: int, n: int, names: tuple[str, ...]) -> int:
        total, shared = 0, False
        for name in names:
            if kind[name] == "frozen":
                continue
            if kind[name] == "lora" and dropout > 0:
                total += T * n + p * T * n  # the dropout mask, and A's input (the dropout output or its cast)
            elif kind[name] == "lora" and p != 4:
                total += p * T * n  # peft casts A's input to the adapter's fp32, autocast casts it back: a copy
            elif xb != p:
                total += p * T * n  # autocast's own cast of the input for this Linear
            else:
                shared = True
            if kind[name] == "lora":
                total += p * T * rank
        return total + (xb * T * n if shared else 0)

    terms = {"norms": 2 * _norm(s, r, trained=not lora),
             "q/k/v inputs": inputs(r, h, ("q_proj", "k_proj", "v_proj")),
             "attention": _attention(s, cfg, p, r),
             # sdpa and flash write their output as (b, s, heads, d): the transpose(1, 2).contiguous() before
             # o_proj is a view of the tensor the kernel already saved; eager's is a copy
             "o_proj input": inputs(p, qd, ("o_proj",)) - (p * T * qd if o_shared else 0),
             "gate/up inputs": inputs(r, h, ("gate_proj", "up_proj")),
             "MLP (gate, SiLU, up)": 3 * p * T * i,
             "down_proj input": inputs(p, i, ("down_proj",))}
    return terms


def _norm(s: Shape, r: int, trained: bool) -> int:
    return 4 * s.tokens * s.hidden + 4 * s.tokens + (r * s.tokens * s.hidden if trained else 0)


def masked(cfg: Config) -> bool:
    """transformers passes sdpa a mask when position_ids restart inside a row (packing) or pad a batch."""
    return cfg.sample_packing or cfg.micro_batch_size > 1


def _attention(s: Shape, cfg: Config, p: int, r: int) -> int:
    T, b, seq = s.tokens, s.batch, s.seq
    qd, kvd = s.heads * s.head_dim, s.kv_heads * s.head_dim
    qk_bytes = max(p, r)  # rotary: q * cos promotes to the residual dtype (fp32 cos under autocast)
    attention = cfg.attention
    if attention == "flash_attention_2":
        # native GQA, no mask (cu_seqlens); fp32 q/k are cast to the compute dtype first
        return p * T * qd + 2 * p * T * kvd + p * T * qd + 4 * s.heads * T
    if attention == "eager":
        probs = 4 * b * s.heads * seq * seq
        cast = p * b * s.heads * seq * seq if qk_bytes != p else 0  # the fp32 softmax cast back for P @ V
        drop = (1 + 4) * b * s.heads * seq * seq if s.attention_dropout > 0 else 0
        return p * T * qd + p * T * qd + p * T * qd + probs + cast + drop
    mask = masked(cfg)
    kv_saved = qd if mask else kvd  # repeat_kv when a mask rules out sdpa's enable_gqa
    per_layer_mask = p * b * seq * seq if mask else 0
    return p * T * qd + 2 * p * T * kv_saved + p * T * qd + 4 * s.heads * T + per_layer_mask
