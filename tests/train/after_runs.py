"""Two finished training runs shared by the after-training tests (test_generate, test_merge, test_eval), trained
once per session on the bundled example (real Qwen2.5 tokenizer, sequence_len 256):

- `full_run`: full fine-tune of the tiny Qwen2, 30 steps at 5e-3 (enough that greedy answers end with
  <|im_end|>), evaluated and checkpointed every 10 steps (checkpoint-10, checkpoint-20, final/ at 30);
- `lora_run`: LoRA r=4 on every linear layer, 4 steps at 1e-2, evaluated and checkpointed at step 2.

Each fixture returns the run's config file; its output_dir is next to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from schemas.config import load_config
from tests.train.tiny import write_config
from train.loop import train


def _run(tmp: Path, qwen_dir: Path, prepared: Path, **keys: Any) -> Path:
    cfg_path = write_config(tmp, qwen_dir, dataset_prepared_path=str(prepared), output_dir=str(tmp / "out"), **keys)
    train(load_config(cfg_path), prepared, cfg_path)
    return cfg_path


@pytest.fixture(scope="session")
def full_run(tmp_path_factory: pytest.TempPathFactory, qwen_dir: Path, demo_prepared: Path) -> Path:
    return _run(tmp_path_factory.mktemp("after_full"), qwen_dir, demo_prepared, max_steps=30, learning_rate=5e-3,
                eval_steps=10, save_steps=10)


@pytest.fixture(scope="session")
def lora_run(tmp_path_factory: pytest.TempPathFactory, qwen_dir: Path, demo_prepared: Path) -> Path:
    return _run(tmp_path_factory.mktemp("after_lora"), qwen_dir, demo_prepared, adapter="lora", lora_r=4,
                lora_alpha=8, lora_target_linear=True, learning_rate=1e-2, max_steps=4, eval_steps=2, save_steps=2)
