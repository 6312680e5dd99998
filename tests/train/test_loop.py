"""The training loop end to end on CPU (issue 8, items 4, 6, 7, 9): a tiny random Qwen2 (hidden 16, 2 layers)
trained on the bundled example prepared with the real Qwen2.5 tokenizer.

- 3 steps reproduce golden losses; run.json, metrics.jsonl (with per-dataset losses) and final/ are written;
- eval_loss equals the mean cross-entropy of the val samples run one by one with the final weights;
- 1 micro-batch of 4 rows and 4 accumulated micro-batches of 1 row take the same step;
- resume_from_checkpoint continues a full fine-tune exactly (dropout on); a non-finite loss stops the run;
- final/ loads with AutoModelForCausalLM / AutoPeftModelForCausalLM and AutoTokenizer;
- a dataset that reads a folder of several files gets its loss per source file too.
(The SIGKILL resume is in test_resume.py.)

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/train/test_loop.py -v
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from schemas.config import load_config
from tests.train.tiny import TINY, demo_prepared, samples_of, shard_rows, to_batch, write_config
from train.loop import TrainingError, train
from train.model import token_losses

__all__ = ["demo_prepared"]  # a fixture, imported so pytest finds it

# Losses of the first 3 steps (fp32, CPU, seed 42): a changed loss, data order or init shows up here.
GOLDEN = [11.951419, 11.915188, 11.923644]


def _train(tmp: Path, qwen_dir: Path, prepared: Path, name: str, **keys: Any) -> Path:
    cfg_path = write_config(tmp / name, qwen_dir, output_dir=str(tmp / name / "out"), **keys)
    train(load_config(cfg_path), prepared, cfg_path)
    return tmp / name / "out"


def _metrics(out: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r], [r for r in rows if "eval_loss" in r]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory, qwen_dir: Path, demo_prepared: Path) -> Path:
    return _train(tmp_path_factory.mktemp("full"), qwen_dir, demo_prepared, "full", max_steps=3, eval_steps=2)


def test_three_steps_match_golden_losses_and_write_the_run_files(full_run: Path) -> None:
    steps, evals = _metrics(full_run)
    assert [m["step"] for m in steps] == [1, 2, 3]
    torch.testing.assert_close([m["loss"] for m in steps], GOLDEN, rtol=0, atol=1e-4)
    for key in ("epoch", "lr", "grad_norm", "tokens", "trained_tokens", "tokens_per_s", "trained_tokens_per_s",
                "step_time_s", "peak_mem_gib"):
        assert isinstance(steps[0][key], float | int), key
    datasets = {"alpaca.jsonl", "chat.jsonl", "sharegpt.jsonl"}
    seen = {Path(d).name for m in steps for d in m["loss_by_dataset"]}
    assert seen <= datasets and seen
    assert [e["step"] for e in evals] == [2, 3]  # eval_steps, and at the end
    assert {Path(d).name for d in evals[-1]["eval_loss_by_dataset"]} <= datasets
    run = json.loads((full_run / "run.json").read_text())
    assert run["model"]["built_from_config"] == TINY and run["model"]["adapter"] is None
    assert run["prepared_fingerprint"] and run["world_size"] == 1 and run["device"] == "cpu"
    assert (full_run / "final" / "model.safetensors").is_file()
    assert (full_run / "final" / "tokenizer" / "tokenizer.json").is_file()


def test_eval_loss_is_the_mean_over_val_samples_one_by_one(full_run: Path, demo_prepared: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(full_run / "final").eval()
    losses = []
    with torch.no_grad():
        for row in shard_rows(demo_prepared, "val"):
            for s in samples_of(row):
                b = to_batch([s])
                losses.append(token_losses(model, b["input_ids"], b["labels"], b["position_ids"],
                                           b["sample_ids"], "sdpa")[0])
    _, evals = _metrics(full_run)
    assert evals[-1]["eval_tokens"] == torch.cat(losses).numel()
    assert evals[-1]["eval_loss"] == pytest.approx(float(torch.cat(losses).mean()), rel=1e-5)


def test_final_model_loads_for_inference(full_run: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(full_run / "final")
    tok = AutoTokenizer.from_pretrained(full_run / "final" / "tokenizer")
    ids = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    out = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 3


def test_gradient_accumulation_equals_one_big_micro_batch(tmp_path: Path, qwen_dir: Path,
                                                          demo_prepared: Path) -> None:
    big = _train(tmp_path, qwen_dir, demo_prepared, "big", micro_batch_size=4, max_steps=2)
    acc = _train(tmp_path, qwen_dir, demo_prepared, "acc", micro_batch_size=1, gradient_accumulation_steps=4,
                 max_steps=2)
    (b1, b2), (a1, a2) = _metrics(big)[0], _metrics(acc)[0]
    assert b1["trained_tokens"] == a1["trained_tokens"]
    assert a1["loss"] == pytest.approx(b1["loss"], rel=1e-5)
    assert a1["grad_norm"] == pytest.approx(b1["grad_norm"], rel=1e-4)
    assert a2["loss"] == pytest.approx(b2["loss"], rel=1e-5)  # the same update was applied


def test_resume_from_checkpoint_continues_exactly(tmp_path: Path, qwen_dir: Path, demo_prepared: Path) -> None:
    dropout = {**TINY, "attention_dropout": 0.2}
    whole = _train(tmp_path, qwen_dir, demo_prepared, "whole", base_model_init=dropout, max_steps=4, save_steps=2)
    assert sorted(p.name for p in whole.glob("checkpoint-*")) == ["checkpoint-2"]
    state = json.loads((whole / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["step"] == 2 and state["loader"] == {"epoch": 0, "index": 2}
    resumed = _train(tmp_path, qwen_dir, demo_prepared, "resumed", base_model_init=dropout, max_steps=4,
                     save_steps=2, resume_from_checkpoint=str(whole / "checkpoint-2"))
    expect = [m["loss"] for m in _metrics(whole)[0]][2:]
    got = [m["loss"] for m in _metrics(resumed)[0]]
    assert got == expect  # bit for bit: same weights, optimizer moments, dropout RNG and data position


def test_non_finite_loss_stops_with_the_step(tmp_path: Path, qwen_dir: Path, demo_prepared: Path) -> None:
    with pytest.raises(TrainingError, match=r"^step \d+: loss .* is not finite; stopped before the update"):
        _train(tmp_path, qwen_dir, demo_prepared, "nan", learning_rate=1e30, max_grad_norm=0, max_steps=5)


def test_lora_final_adapter_loads_with_auto_peft(tmp_path: Path, qwen_dir: Path, demo_prepared: Path) -> None:
    from peft import AutoPeftModelForCausalLM

    out = _train(tmp_path, qwen_dir, demo_prepared, "lora", adapter="lora", lora_r=4, lora_alpha=8,
                 lora_target_linear=True, learning_rate=1e-2, max_steps=2)
    run = json.loads((out / "run.json").read_text())
    assert 0 < run["model"]["trainable_parameters"] < run["model"]["parameters"] / 10
    adapter_cfg = json.loads((out / "final" / "adapter_config.json").read_text())
    assert Path(adapter_cfg["base_model_name_or_path"]) == (out / "base_model").resolve()
    assert set(adapter_cfg["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                  "down_proj"}
    model = AutoPeftModelForCausalLM.from_pretrained(out / "final")
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # trained, not the zero init
    AutoTokenizer.from_pretrained(out / "final" / "tokenizer")


def test_loss_by_source_file_when_a_dataset_reads_several(tmp_path: Path, qwen_dir: Path) -> None:
    from dataprep.pipeline import run_pipeline
    from dataprep.report import Progress
    from tests.train.tiny import ROOT

    alpaca = (ROOT / "examples" / "data" / "alpaca.jsonl").read_text().splitlines()
    folder = tmp_path / "alpaca"
    folder.mkdir()
    (folder / "a.jsonl").write_text("\n".join(alpaca[:90]) + "\n")
    (folder / "b.jsonl").write_text("\n".join(alpaca[90:]) + "\n")
    chat = {"path": str(ROOT / "examples" / "data" / "chat.jsonl"), "type": "chat_template"}
    cfg_path = write_config(tmp_path, qwen_dir, max_steps=2, eval_steps=2,
                            datasets=[{"path": str(folder), "type": "alpaca"}, chat])
    cfg = load_config(cfg_path)
    run_pipeline(cfg, cfg_path, tmp_path / "prepared", progress=Progress(enabled=False))
    train(cfg, tmp_path / "prepared", cfg_path)
    steps, evals = _metrics(tmp_path / "out")
    for m, prefix in ((evals[-1], "eval_"), *((s, "") for s in steps)):
        # source files are named as samples.parquet names them (relative to where prepare ran)
        by_source = {Path(k).name: v for k, v in m[f"{prefix}loss_by_source"].items()}
        by_dataset = {Path(k).name: v for k, v in m[f"{prefix}loss_by_dataset"].items()}
        assert set(by_source) <= {"a.jsonl", "b.jsonl", "chat.jsonl"} and set(by_dataset) <= {"alpaca", "chat.jsonl"}
        if "chat.jsonl" in by_dataset:  # one file: the same tokens, the same loss
            assert by_source["chat.jsonl"] == pytest.approx(by_dataset["chat.jsonl"], rel=1e-12)
    assert {Path(k).name for k in evals[-1]["eval_loss_by_source"]} == {"a.jsonl", "b.jsonl", "chat.jsonl"}


def test_eval_settings_evaluate_as_axolotl_does(tmp_path: Path, qwen_dir: Path, demo_prepared: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from dataprep.pipeline import run_pipeline
    from dataprep.report import Progress

    # evals_per_epoch: 0 evaluates nothing during the run; the final evaluation stays
    out = _train(tmp_path, qwen_dir, demo_prepared, "zero", max_steps=3, evals_per_epoch=0)
    assert [m["step"] for m in _metrics(out)[1]] == [3]
    # eval_steps with no val split: a warning, no evaluation, the run goes on
    cfg_path = write_config(tmp_path / "noval", qwen_dir, max_steps=2, eval_steps=1, val_set_size=0)
    cfg = load_config(cfg_path)
    run_pipeline(cfg, cfg_path, tmp_path / "noval" / "prepared", progress=Progress(enabled=False))
    train(cfg, tmp_path / "noval" / "prepared", cfg_path)
    steps, evals = _metrics(tmp_path / "noval" / "out")
    assert len(steps) == 2 and evals == []
    assert "warning: eval_steps/evals_per_epoch are set but" in capsys.readouterr().out
