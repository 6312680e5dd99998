"""Two CPU processes (gloo), launched the way users launch them (issue 11, items 1-4): one
`torchrun --standalone --nproc_per_node 2` runs tests/train/distributed_worker.py, which trains several tiny
configs in one process group; a second torchrun runs `-m train` and is killed with SIGKILL after a
checkpoint; `accelerate launch --multi_gpu --num_processes 2 -m train` resumes it.

- each rank trains on disjoint rows, and together on the rows one process takes with twice the micro-batch;
- after training, the weights are identical on both ranks (DDP) and FSDP2's gathered weights equal DDP's;
- the loss curve (and eval loss) of 2 ranks x micro_batch_size 1 equals 1 rank x micro_batch_size 2 (fp32, 1e-5),
  full fine-tune and LoRA under DDP and FSDP2 (with reshard_after_forward off, activation checkpointing and
  cpu_ram_efficient_loading too), QLoRA under DDP, and over a whole epoch whose last micro-batch leaves rank 1
  without a row;
- run.json and the start line say the world size and the parallelism in effect;
- checkpoints hold every rank's RNG and loader position, FSDP2's sharded state, and weights that
  AutoModelForCausalLM loads; final/ is the consolidated model;
- DDP resume from a checkpoint, and FSDP2 kill + auto-resume, reproduce the uninterrupted loss curve.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/train/test_distributed.py -v     (~90 s on 2 cores)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from schemas.config import load_config
from tests.train.tiny import ROOT, TINY, demo_prepared, write_config
from train.loop import train

__all__ = ["demo_prepared"]  # a fixture, imported so pytest finds it

FSDP = {"fsdp_version": 2, "fsdp_config": {"fsdp_transformer_layer_cls_to_wrap": "Qwen2DecoderLayer",
                                           "reshard_after_forward": True}}
LORA = {"adapter": "lora", "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
        "lora_target_modules": ["q_proj", "v_proj", "gate_proj"], "learning_rate": 1e-2}
QLORA = {**LORA, "adapter": "qlora", "load_in_4bit": True}  # bitsandbytes nf4 on CPU (tests/train/test_quantized.py)
# A whole epoch of a small prepared set with an odd number of train rows (15 unpacked ShareGPT samples; the 16th
# is the val split): 8 micro-batches of 1 per rank, the last one of rank 1 padding only (no row left for it).
TAIL = {"datasets": [{"path": str(ROOT / "examples" / "data" / "sharegpt.jsonl"), "type": "chat_template"}],
        "sample_packing": False, "val_set_size": 1, "max_steps": 8}
DROPOUT = {"base_model_init": {**TINY, "attention_dropout": 0.1}}
MUON = {"optimizer": "muon", "learning_rate": 0.02, "weight_decay": 0.01}  # Axolotl's muon example's values
# name -> trainer keys of each 2-process run (max_steps 3, micro_batch_size 1 unless given)
RUNS: dict[str, dict[str, Any]] = {
    "ddp": {"save_steps": 2},
    "fsdp2": FSDP,
    "ddp_lora": LORA,
    "ddp_qlora": QLORA,
    # cpu_ram_efficient_loading as Axolotl's QLoRA + FSDP examples set it: over a 4-bit base every rank loads
    "fsdp2_qlora": {**QLORA, **FSDP, "fsdp_config": {**FSDP["fsdp_config"], "cpu_ram_efficient_loading": True},
                    "save_steps": 2},
    # FSDP2 options that must not change the numbers: layers kept gathered until backward, recomputed activations,
    # rank 1 building an empty model and receiving rank 0's weights
    "fsdp2_lora": {**LORA, "fsdp_config": {"reshard_after_forward": False, "fsdp_activation_checkpointing": True,
                                           "cpu_ram_efficient_loading": True}},
    "fsdp2_whole": {**DROPOUT, **FSDP, "max_steps": 4, "save_steps": 2},  # the kill test's uninterrupted run
    "ddp_tail": TAIL,
    "fsdp2_tail": {**TAIL, **FSDP},
    "ddp_resumed": {"save_steps": 2, "resume_from_checkpoint": "{ddp}/checkpoint-2"},
    "ddp_int8": {**LORA, "load_in_8bit": True},
    # every rank quantizes the base (cpu_ram_efficient_loading does not apply); the gathered int8 weights meet
    # their row scales again in each Linear8bitLt (train/distributed.py keep_int8_scales)
    "fsdp2_int8": {**LORA, **FSDP, "load_in_8bit": True,
                   "fsdp_config": {**FSDP["fsdp_config"], "cpu_ram_efficient_loading": True}, "save_steps": 2},
    "ddp_muon": MUON,
    "fsdp2_muon": {**MUON, **FSDP, "save_steps": 2},  # each rank gathers a matrix to orthogonalise it (muon.py)
}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _config(tmp: Path, qwen_dir: Path, prepared: Path, name: str, **keys: Any) -> Path:
    return write_config(tmp / name, qwen_dir, output_dir=str(tmp / name / "out"), dataset_prepared_path=str(prepared),
                        **{"max_steps": 3, "micro_batch_size": 1, **keys})


@pytest.fixture(scope="module")
def tail_prepared(tmp_path_factory: pytest.TempPathFactory, qwen_dir: Path) -> Path:
    from dataprep.pipeline import run_pipeline
    from dataprep.report import Progress

    tmp = tmp_path_factory.mktemp("tail")
    cfg = write_config(tmp, qwen_dir, **TAIL)
    run_pipeline(load_config(cfg), cfg, tmp / "prepared", progress=Progress(enabled=False))
    return tmp / "prepared"


def _metrics(out: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r], [r for r in rows if "eval_loss" in r]


def _losses(out: Path) -> list[float]:
    return [m["loss"] for m in _metrics(out)[0]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, qwen_dir: Path, demo_prepared: Path,
         tail_prepared: Path) -> dict[str, Path]:
    """Every RUNS entry trained by 2 processes in one torchrun launch; name -> its folder (out/, ranks/)."""
    tmp = tmp_path_factory.mktemp("dist")
    specs = []
    for name, keys in RUNS.items():
        keys = {k: v.format(**{n: tmp / n / "out" for n in RUNS}) if isinstance(v, str) else v
                for k, v in keys.items()}
        prepared = tail_prepared if "tail" in name else demo_prepared
        specs.append(f"{name}={_config(tmp, qwen_dir, prepared, name, **keys)}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "train" / "distributed_worker.py"), str(tmp / "ranks"), *specs]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    (tmp / "stdout.txt").write_text(done.stdout)
    return {name: tmp / name for name in RUNS} | {"ranks": tmp / "ranks", "stdout": tmp / "stdout.txt"}


def _ranks(runs: dict[str, Path], name: str) -> list[dict[str, Any]]:
    return [json.loads((runs["ranks"] / name / f"rank-{r}.json").read_text()) for r in (0, 1)]


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory, qwen_dir: Path, demo_prepared: Path,
           tail_prepared: Path) -> dict[str, Path]:
    """The references: one process, micro_batch_size 2 (the same global batch as 2 x 1)."""
    tmp = tmp_path_factory.mktemp("single")
    out = {}
    for name, keys, prepared in (("full", {}, demo_prepared), ("lora", LORA, demo_prepared),
                                 ("qlora", QLORA, demo_prepared), ("tail", TAIL, tail_prepared),
                                 ("muon", MUON, demo_prepared)):
        cfg = _config(tmp, qwen_dir, prepared, name, micro_batch_size=2, **keys)
        out[name] = train(load_config(cfg), prepared, cfg).final.parent
    return out


def test_each_rank_trains_on_its_own_rows(runs: dict[str, Path], single: dict[str, Path]) -> None:
    for name in ("ddp", "fsdp2", "ddp_lora"):
        r0, r1 = _ranks(runs, name)
        assert r0["world_size"] == r1["world_size"] == 2
        assert r0["sample_ids"] and r1["sample_ids"] and not set(r0["sample_ids"]) & set(r1["sample_ids"])
    # together, each step's rows are the rows one process takes with micro_batch_size 2: the same tokens trained
    for m2, m1 in zip(_metrics(runs["ddp"] / "out")[0], _metrics(single["full"])[0], strict=True):
        assert (m2["tokens"], m2["trained_tokens"]) == (m1["tokens"], m1["trained_tokens"])


def test_two_ranks_equal_one_rank_with_twice_the_micro_batch(runs: dict[str, Path], single: dict[str, Path]) -> None:
    for two, one in (("ddp", "full"), ("fsdp2", "full"), ("ddp_lora", "lora"), ("fsdp2_lora", "lora"),
                     ("ddp_qlora", "qlora"), ("fsdp2_qlora", "qlora"), ("ddp_tail", "tail"), ("fsdp2_tail", "tail")):
        (steps2, evals2), (steps1, evals1) = _metrics(runs[two] / "out"), _metrics(single[one])
        assert len(steps2) == len(steps1) == RUNS[two].get("max_steps", 3)
        torch.testing.assert_close([m["loss"] for m in steps2], [m["loss"] for m in steps1], rtol=0, atol=1e-5,
                                   msg=lambda m, two=two: f"{two}: {m}")
        torch.testing.assert_close([m["grad_norm"] for m in steps2], [m["grad_norm"] for m in steps1], rtol=1e-4,
                                   atol=0)
        assert evals2[-1]["eval_tokens"] == evals1[-1]["eval_tokens"]
        assert evals2[-1]["eval_loss"] == pytest.approx(evals1[-1]["eval_loss"], abs=1e-5)
        assert steps2[-1]["loss_by_dataset"].keys() == steps1[-1]["loss_by_dataset"].keys()


def test_fsdp2_over_an_int8_base_equals_ddp(runs: dict[str, Path]) -> None:
    assert _losses(runs["fsdp2_int8"] / "out") == _losses(runs["ddp_int8"] / "out")
    fsdp2, ddp = _ranks(runs, "fsdp2_int8"), _ranks(runs, "ddp_int8")
    assert fsdp2[0]["weights"] == fsdp2[1]["weights"] == ddp[0]["weights"]  # the trained LoRA weights
    assert fsdp2[0]["local"] != fsdp2[1]["local"]  # each rank holds other shards
    assert (runs["fsdp2_int8"] / "out" / "checkpoint-2").is_dir()
    assert (runs["fsdp2_int8"] / "out" / "final" / "adapter_model.safetensors").is_file()


def test_muon_under_ddp_and_fsdp2_equals_one_rank(runs: dict[str, Path], single: dict[str, Path]) -> None:
    # Muon orthogonalises in bf16, which turns the all-reduce's different rounding (fp32, ~1e-7) into ~1e-5 of
    # the loss by step 3 under FSDP2 (measured 4.7e-5 at step 3). DDP: 2e-8 on one CPU, 1.4e-6 on one with
    # AVX512-BF16 (torch's bf16 matmuls round differently there).
    one = _losses(single["muon"])
    for name, atol in (("ddp_muon", 1e-5), ("fsdp2_muon", 2e-4)):
        torch.testing.assert_close(_losses(runs[name] / "out"), one, rtol=0, atol=atol,
                                   msg=lambda m, n=name: f"{n}: {m}")
        ranks = _ranks(runs, name)
        assert ranks[0]["weights"] == ranks[1]["weights"], name
    assert (runs["fsdp2_muon"] / "out" / "checkpoint-2").is_dir()  # the optimizer's sharded state saves


def test_weights_are_identical_on_all_ranks_and_fsdp2_equals_ddp(runs: dict[str, Path]) -> None:
    for name in ("ddp", "ddp_lora", "ddp_qlora", "fsdp2", "fsdp2_lora"):
        r0, r1 = _ranks(runs, name)
        assert r0["weights"] == r1["weights"], name
    ddp, fsdp2 = _ranks(runs, "ddp")[0], _ranks(runs, "fsdp2")
    assert fsdp2[0]["local"] != fsdp2[1]["local"]  # each rank holds other shards ...
    assert fsdp2[0]["parallelism"] == "fsdp2" and ddp["parallelism"] == "ddp"
    # ... and the gathered model equals DDP's within float tolerance (summation order differs)
    a = AutoModelForCausalLM.from_pretrained(runs["ddp"] / "out" / "final")
    b = AutoModelForCausalLM.from_pretrained(runs["fsdp2"] / "out" / "final")
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


def test_run_json_and_start_line_say_world_size_and_parallelism(runs: dict[str, Path]) -> None:
    for name, parallelism in (("ddp", "ddp"), ("fsdp2_lora", "fsdp2")):
        run = json.loads((runs[name] / "out" / "run.json").read_text())
        assert (run["world_size"], run["parallelism"], run["backend"], run["launcher"]) == (
            2, parallelism, "gloo", "torchrun")
    assert json.loads((runs["fsdp2"] / "out" / "run.json").read_text())["fsdp_units"] == {"Qwen2DecoderLayer": 2}
    out = runs["stdout"].read_text()
    assert "world size 2 (ddp, gloo; torchrun) on cpu" in out
    assert "world size 2 (fsdp2: 2 Qwen2DecoderLayer + root, gloo; torchrun) on cpu" in out


def test_checkpoints_hold_every_rank_and_load_for_inference(runs: dict[str, Path]) -> None:
    for name, sharded in (("ddp", False), ("fsdp2_whole", True)):
        ckpt = runs[name] / "out" / "checkpoint-2"
        state = json.loads((ckpt / "trainer_state.json").read_text())
        assert state["world_size"] == 2 and len(state["loader_by_rank"]) == 2
        assert state["loader_by_rank"][0] == state["loader_by_rank"][1] == {"epoch": 0, "index": 2}
        assert (ckpt / "rng_state-0.pt").is_file() and (ckpt / "rng_state-1.pt").is_file()
        r0, r1 = (torch.load(ckpt / f"rng_state-{r}.pt", weights_only=False)["torch"] for r in (0, 1))
        assert not torch.equal(r0, r1)  # each rank's own dropout stream
        assert (ckpt / "sharded" / ".metadata").is_file() == sharded
        assert (ckpt / "optimizer.pt").is_file() != sharded
        AutoModelForCausalLM.from_pretrained(ckpt)  # consolidated weights, FSDP2 included
    assert (runs["fsdp2_lora"] / "out" / "final" / "adapter_model.safetensors").is_file()


def test_ddp_resume_from_checkpoint_continues_exactly(runs: dict[str, Path]) -> None:
    whole, resumed = _losses(runs["ddp"] / "out"), _losses(runs["ddp_resumed"] / "out")
    assert len(whole) == 3 and resumed == whole[2:]  # bit for bit: weights, AdamW moments, data position


def test_fsdp2_sigkill_then_auto_resume_reproduces_the_curve(tmp_path: Path, qwen_dir: Path, demo_prepared: Path,
                                                            runs: dict[str, Path]) -> None:
    out = tmp_path / "killed" / "out"
    # Checkpoints with the shards only: the resume reads sharded/, not consolidated weights.
    keys = RUNS["fsdp2_whole"]
    keys = {**keys, "fsdp_config": {**keys["fsdp_config"], "state_dict_type": "SHARDED_STATE_DICT"}}
    cfg = _config(tmp_path, qwen_dir, demo_prepared, "killed", **keys)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "train",
           str(cfg)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, env=_env(),
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (out / "checkpoint-2" / "trainer_state.json").is_file():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers
    finally:
        proc.wait()
    assert not (out / "final").exists(), "killed before the end"
    assert (out / "checkpoint-2" / "sharded").is_dir() and not (out / "checkpoint-2" / "model.safetensors").exists()
    resume = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                             "2", "--main_process_port", "0", "-m", "train", str(cfg),
                             "--set", "auto_resume_from_checkpoints=true"],
                            capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=600)
    assert resume.returncode == 0, resume.stderr[-5000:]
    assert "resumed from" in resume.stdout and "(fsdp2: 2 Qwen2DecoderLayer + root, gloo; accelerate launch)" in \
        resume.stdout
    assert _losses(out) == _losses(runs["fsdp2_whole"] / "out")  # every step, before and after the kill
    assert (out / "final" / "model.safetensors").is_file()
