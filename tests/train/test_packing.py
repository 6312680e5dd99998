"""Packed attention never crosses samples, and the loss is computed exactly and cheaply (issue 8, items 3-5).

On real packed rows of the bundled example (Qwen2.5 tokenizer) and a tiny random Qwen2 model, fp32:
- the loss of packed micro-batches (2 rows each, padded) equals the token-weighted loss of their samples run
  one by one, and so do the gradients: sdpa, eager, gradient checkpointing and LoRA;
- the model's default (use_cache on) lets samples attend to each other, which is why token_losses turns it off;
- no target crosses a sample boundary in the shards;
- the output layer at trained positions only gives the same losses as full logits;
- 4 micro-batches x 1 row under step normalisation give the gradients of 1 x 4 rows (a mean per micro-batch
  does not).

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/train/test_packing.py -v
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model

from tests.train.tiny import demo_prepared, samples_of, shard_rows, tiny_model, to_batch
from train.model import token_losses

__all__ = ["demo_prepared"]  # a fixture, imported so pytest finds it


def _losses(model: torch.nn.Module, batch: dict[str, torch.Tensor], attention: str = "sdpa") -> torch.Tensor:
    return token_losses(model, batch["input_ids"], batch["labels"], batch["position_ids"], batch["sample_ids"],
                        attention)[0]


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def _assert_grads_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


def _lora(model: torch.nn.Module) -> torch.nn.Module:
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM",
                                            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    # LoRA's B starts at 0, which would make every adapter gradient but B's trivially equal: perturb it.
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    return lora


@pytest.mark.parametrize("variant", ["sdpa", "eager", "gradient_checkpointing", "lora"])
def test_packed_loss_and_gradients_equal_samples_one_by_one(demo_prepared: Path, variant: str) -> None:
    attention = "eager" if variant == "eager" else "sdpa"
    model = tiny_model(attention)
    if variant == "gradient_checkpointing":
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if variant == "lora":
        model = _lora(model)
    rows = shard_rows(demo_prepared)[-2:]  # the two shortest rows: padding in the batch too
    assert all(len(r["cu_seqlens"]) > 2 for r in rows), "rows with several packed samples"
    n = sum(int((r["labels"][1:] != -100).sum()) for r in rows)

    packed = _losses(model, to_batch(rows))
    (packed.sum() / n).backward()
    packed_grads = _grads(model)

    one_by_one = torch.cat([_losses(model, to_batch([s], len(s["input_ids"]))) for r in rows for s in samples_of(r)])
    (one_by_one.sum() / n).backward()
    single_grads = _grads(model)

    assert packed.numel() == one_by_one.numel() == n
    torch.testing.assert_close(packed.sum() / n, one_by_one.sum() / n, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed, one_by_one, rtol=1e-4, atol=1e-5)
    _assert_grads_close(packed_grads, single_grads)


def test_with_the_default_kv_cache_samples_attend_to_each_other(demo_prepared: Path) -> None:
    model = tiny_model()
    row = shard_rows(demo_prepared)[0]
    batch = to_batch([row])
    exact = _losses(model, batch)
    # What a plain model(...) call does: use_cache defaults to True, the mask is then causal over the whole row.
    logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0, :-1]
    targets = batch["labels"][0, 1:]
    leaky = F.cross_entropy(logits[targets != -100], targets[targets != -100], reduction="none")
    second = slice(int((row["labels"][1:row["cu_seqlens"][1]] != -100).sum()), None)  # the second sample's tokens
    assert (exact[second] - leaky[second]).abs().max() > 1e-3


def test_no_cross_document_targets(demo_prepared: Path) -> None:
    """The first token of a sample is never a target, so nothing is predicted from the previous sample."""
    checked = 0
    for split in ("train", "val"):
        for row in shard_rows(demo_prepared, split):
            cu, labels, sids = row["cu_seqlens"], row["labels"], row["sample_ids"]
            assert cu[0] == 0 and cu[-1] == len(labels) and (np.diff(cu) > 0).all()
            assert (labels[cu[:-1]] == -100).all()
            trained = np.nonzero(labels[1:] != -100)[0] + 1
            assert (sids[trained] == sids[trained - 1]).all()
            for start, end in itertools.pairwise(cu):
                assert (row["position_ids"][start:end] == np.arange(end - start)).all()
            checked += len(cu) - 1
    assert checked > 300


def test_output_layer_only_at_trained_positions_gives_the_same_loss(demo_prepared: Path) -> None:
    model = tiny_model()
    batch = to_batch(shard_rows(demo_prepared)[:2])
    cheap = _losses(model, batch)
    logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    targets = batch["labels"][:, 1:]
    trained = targets != -100
    full = F.cross_entropy(logits[:, :-1][trained], targets[trained], reduction="none")
    torch.testing.assert_close(cheap, full, rtol=1e-5, atol=1e-6)
    assert trained.float().mean() < 0.5  # the saving is real: most positions need no logits


def test_step_normalisation_matches_one_big_batch(demo_prepared: Path) -> None:
    model = tiny_model()
    rows = shard_rows(demo_prepared)[::20][:4]  # rows of different lengths and trained counts
    n = sum(int((r["labels"][1:] != -100).sum()) for r in rows)

    (_losses(model, to_batch(rows)).sum() / n).backward()
    big = _grads(model)
    for r in rows:  # what the loop does: sum over the step's micro-batches / the step's trained tokens
        (_losses(model, to_batch([r])).sum() / n).backward()
    accumulated = _grads(model)
    for r in rows:  # the gradient-accumulation bug: a mean per micro-batch, averaged
        (_losses(model, to_batch([r])).mean() / len(rows)).backward()
    per_micro_mean = _grads(model)

    _assert_grads_close(big, accumulated)
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(big[name], per_micro_mean[name], rtol=1e-2)
