"""Distributed setup without a second process (issue 11, items 1-2): Axolotl's FSDP keys (current unprefixed
names, the old fsdp_-prefixed ones, fsdp_version at the top or inside fsdp_config, conflicts), and launches
that would silently train differently from the config, refused in one line: FSDP asked for but one process,
`accelerate launch --cpu --num_processes 2` (one process started), `--use_fsdp` without fsdp_config,
offload_params on CPU. The two-process runs are in test_distributed.py.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/train/test_distributed_setup.py -v
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from schemas.config import Config, ConfigError, config_from_dict
from tests.train.tiny import ROOT, demo_prepared, write_config
from train.distributed import DistributedError, _check_launch, setup_world
from train.loop import train

__all__ = ["demo_prepared"]  # a fixture, imported so pytest finds it


def _cfg(**keys: Any) -> Config:
    return config_from_dict({"tokenizer_config": "t", "datasets": [{"path": "a", "type": "alpaca"}], **keys})


def test_fsdp_keys_current_and_old_names() -> None:
    current = _cfg(fsdp_version=2, fsdp_config={"reshard_after_forward": False, "offload_params": True,
                                                "state_dict_type": "SHARDED_STATE_DICT",
                                                "transformer_layer_cls_to_wrap": "LlamaDecoderLayer",
                                                "activation_checkpointing": True, "cpu_ram_efficient_loading": True})
    old = _cfg(fsdp_config={"fsdp_version": 2, "fsdp_reshard_after_forward": False, "fsdp_offload_params": True,
                            "fsdp_state_dict_type": "SHARDED_STATE_DICT",
                            "fsdp_transformer_layer_cls_to_wrap": "LlamaDecoderLayer",
                            "fsdp_activation_checkpointing": True, "fsdp_cpu_ram_efficient_loading": True,
                            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP"})
    assert current.fsdp_on and old.fsdp_on
    assert current.fsdp_settings.model_dump(exclude={"fsdp_version"}) == old.fsdp_settings.model_dump(
        exclude={"fsdp_version"})
    assert old.fsdp_config is not None and old.fsdp_config.fsdp_version == 2
    assert _cfg(fsdp_config={"version": 2}).fsdp_config.fsdp_version == 2  # type: ignore[union-attr]
    # the old list switch: FSDP on, `offload` is offload_params
    legacy = _cfg(fsdp=["full_shard", "auto_wrap", "offload"])
    assert legacy.fsdp_on and legacy.fsdp_settings.offload_params and legacy.fsdp_settings.reshard_after_forward
    assert not _cfg().fsdp_on


@pytest.mark.parametrize(("keys", "message"), [
    ({"fsdp_config": {"offload_params": True, "fsdp_offload_params": False}},
     "fsdp_config.fsdp_offload_params: False and fsdp_config.offload_params: True are two spellings"),
    ({"fsdp_version": 2, "fsdp_config": {"fsdp_version": 1}}, "fsdp_version 2 and fsdp_config.fsdp_version 1 differ"),
    ({"fsdp_version": 1, "fsdp_config": {}}, "fsdp_version: 1 (FSDP1) is not supported: set fsdp_version: 2"),
    ({"fsdp_version": 2}, "fsdp_version is set but FSDP is not: add fsdp_config"),
    ({"fsdp": ["shard_grad_op"]}, "fsdp: ['shard_grad_op'] not supported"),
    ({"fsdp_config": {"auto_wrap_policy": "SIZE_BASED_WRAP"}}, "SIZE_BASED_WRAP is not supported"),
    ({"fsdp_config": {"reshard_after_forwrd": True}}, "did you mean 'reshard_after_forward'"),
    ({"fsdp_config": {}, "fp16": True}, "fp16 with FSDP is not supported"),
])
def test_fsdp_config_errors(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        _cfg(**keys)
    assert message in str(e.value)


def test_launches_that_would_train_differently_are_refused() -> None:
    plain, fsdp = _cfg(), _cfg(fsdp_version=2, fsdp_config={})
    # `accelerate launch --cpu --num_processes 2` (its simple launcher): one process, MASTER_ADDR, no WORLD_SIZE
    one_of_two = {"ACCELERATE_MIXED_PRECISION": "no", "ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1",
                  "MASTER_PORT": "29500"}
    with pytest.raises(DistributedError, match="asked for more than one process but started only this one"):
        _check_launch(one_of_two, plain)
    use_fsdp = {"ACCELERATE_MIXED_PRECISION": "no", "ACCELERATE_USE_FSDP": "true", "WORLD_SIZE": "2"}
    with pytest.raises(DistributedError, match="--use_fsdp, but the config has no fsdp_config"):
        _check_launch(use_fsdp, plain)
    _check_launch(use_fsdp, fsdp)  # the config asks for FSDP: fine
    _check_launch({"ACCELERATE_MIXED_PRECISION": "no"}, plain)  # `accelerate launch` of one process: fine


def test_fsdp_with_one_process_is_refused_before_anything_loads(tmp_path: Path, qwen_dir: Path,
                                                                demo_prepared: Path) -> None:
    assert "WORLD_SIZE" not in os.environ
    with pytest.raises(DistributedError, match=r"asks for FSDP2 but this is 1 process, which would train unsharded: "
                                               r"launch N processes with `torchrun --nproc_per_node N"):
        setup_world(_cfg(fsdp_version=2, fsdp_config={"reshard_after_forward": True}))
    cfg = write_config(tmp_path, qwen_dir, dataset_prepared_path=str(demo_prepared), fsdp=["full_shard"])
    from schemas.config import load_config

    with pytest.raises(DistributedError):
        train(load_config(cfg), demo_prepared, cfg)
    assert not (tmp_path / "out" / "run.json").exists()


def test_accelerate_cpu_launch_of_two_processes_fails_in_one_line(tmp_path: Path, qwen_dir: Path,
                                                                   demo_prepared: Path) -> None:
    cfg = write_config(tmp_path, qwen_dir, dataset_prepared_path=str(demo_prepared))
    run = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
                          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "train",
                          str(cfg)], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: accelerate launch was asked for more than one process but started only this one (its "
                      "--cpu launcher runs a single process): launch N processes with `torchrun --nproc_per_node N "
                      "-m train CONFIG` or `accelerate launch --multi_gpu --num_processes N -m train CONFIG` (on CPU "
                      "too)"]
    assert not (tmp_path / "out").exists()
