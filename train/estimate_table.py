"""The readable form of an Estimate: one table of components (GiB and MiB per GPU) with the peak and where
it happens, then the activation terms and the assumptions."""

from __future__ import annotations

import textwrap
from typing import Any

from train.estimate import Estimate, GiB


def _size(n: int) -> str:
    return f"{n / GiB:9.3f} GiB" if n >= GiB / 10 else f"{n / 2**20:9.1f} MiB"


def table(est: Estimate) -> str:
    m, a = est.model, est.assumptions
    head = (f"{m['model_type']}: {m['layers']} layers, hidden {m['hidden_size']}, intermediate "
            f"{m['intermediate_size']}, {m['heads']} heads ({m['kv_heads']} KV, dim {m['head_dim']}), vocab "
            f"{m['vocab_size']:,}; {est.parameters['total']:,} parameters, {est.parameters['trainable']:,} trained")
    run = (f"per GPU of {a['gpus']}{' (FSDP)' if a['fsdp'] else ''}: micro_batch_size {a['micro_batch_size']} x "
           f"sequence_len {a['sequence_len']}, {a['mixed_precision'] or 'fp32'}, {a['attn_implementation']}, "
           f"{a['optimizer']}, gradient checkpointing {'on' if a['gradient_checkpointing'] else 'off'}, "
           f"logits at {a['logit_positions']:,} positions (trained fraction {a['trained_fraction']:g}"
           f"{', from ' + a['trained_fraction_from'] if a.get('trained_fraction_from') else ''})")
    cuda = "CUDA context + allocator slack"
    width = max(len(k) for k in est.lines) + 2
    # lines that do not apply to this config (0 bytes) are left out; --json has them all
    rows = [f"  {name:<{width}}{_size(value)}" for name, value in est.lines.items() if value and name != cuda]
    gc = "on" if a["gradient_checkpointing"] else "off"
    other = "off" if gc == "on" else "on"
    out = [head, run, "", *rows, "  " + "-" * (width + 13),
           f"  {'peak allocated (' + est.phase + ')':<{width}}{_size(est.peak)}",
           f"  {cuda:<{width}}{_size(est.lines[cuda])}",
           f"  {'peak reserved (nvidia-smi)':<{width}}{_size(est.reserved)}",
           f"  {'peak allocated, checkpointing ' + other:<{width}}{_size(est.peak_other)}", "",
           f"activations by term (gradient checkpointing {gc}):"]
    tw = max(len(k) for k in est.activations) + 2
    out += [f"  {k:<{tw}}{_size(v)}" for k, v in est.activations.items() if v]
    out += ["", textwrap.fill(_assumptions(a), width=110)]
    return "\n".join(out)


def _assumptions(a: dict[str, Any]) -> str:
    return ("assumes: trained parameters in fp32 (the master copy) with autocast; frozen weights "
            f"{a['frozen_dtype'] if not a['quantisation'] else a['quantisation']}; the output layer only at "
            "positions whose next token is trained (--trained-fraction); peak = persistent + max(backward start, "
            "optimizer step); see train/estimate.py")
