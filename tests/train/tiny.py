"""Helpers for the trainer tests: a prepared copy of the bundled example (real Qwen2.5 tokenizer, packed,
sequence_len 256), tiny random-weight models and micro-batches built by hand from real shard rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import torch
import yaml
from transformers import AutoConfig, AutoModelForCausalLM

from dataprep.pipeline import run_pipeline
from dataprep.report import Progress
from schemas.config import load_config

ROOT = Path(__file__).resolve().parents[2]
VOCAB = 151_665  # Qwen2.5's tokenizer, as the shards use it

TINY = {"model_type": "qwen2", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512}


def write_config(tmp: Path, qwen_dir: Path, **keys: Any) -> Path:
    """The bundled example's datasets with a tiny model; `keys` override anything."""
    demo = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())
    data = {k: demo[k] for k in ("datasets", "chat_template", "sample_packing", "seed")}
    for ds in data["datasets"]:
        ds["path"] = str(ROOT / "examples" / ds["path"])
    cfg = {**data, "tokenizer_config": str(qwen_dir), "sequence_len": 256, "val_set_size": 0.1,
           "dataset_prepared_path": str(tmp / "prepared"), "output_dir": str(tmp / "out"),
           "base_model_init": TINY, "learning_rate": 1e-3, "max_steps": 3, "logging_steps": 1, **keys}
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "train.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def demo_prepared(tmp_path_factory: pytest.TempPathFactory, qwen_dir: Path) -> Path:
    """examples/data prepared with sequence_len 256 (packed), 10% validation."""
    tmp = tmp_path_factory.mktemp("train_prepared")
    cfg_path = write_config(tmp, qwen_dir)
    out = tmp / "prepared"
    run_pipeline(load_config(cfg_path), cfg_path, out, progress=Progress(enabled=False))
    return out


def shard_rows(prepared: Path, split: str = "train") -> list[dict[str, np.ndarray]]:
    """Every row of a split's first shard as numpy arrays, sample_ids per token (the loader is zero-copy)."""
    with pa.memory_map(str(prepared / "shards" / f"{split}-00000.arrow")) as f:
        table = pa.ipc.open_file(f).read_all()
    cols = ("input_ids", "labels", "position_ids", "cu_seqlens", "sample_ids")
    rows = [{c: np.asarray(table[c][i].as_py(), dtype=np.int64) for c in cols} for i in range(table.num_rows)]
    for r in rows:  # the shard has one id per sample; a Batch has one per token
        r["sample_ids"] = np.repeat(r["sample_ids"], np.diff(r["cu_seqlens"]))
    return rows


def to_batch(rows: list[dict[str, np.ndarray]], pad_to: int | None = None) -> dict[str, torch.Tensor]:
    """Rows padded to one length: padding is a run of its own (positions 0, 1, ...), label -100, sample -1."""
    length = pad_to or max(len(r["input_ids"]) for r in rows)
    out: dict[str, list[np.ndarray]] = {"input_ids": [], "labels": [], "position_ids": [], "sample_ids": []}
    for r in rows:
        pad = length - len(r["input_ids"])
        out["input_ids"].append(np.concatenate([r["input_ids"], np.zeros(pad, np.int64)]))
        out["labels"].append(np.concatenate([r["labels"], np.full(pad, -100)]))
        out["position_ids"].append(np.concatenate([r["position_ids"], np.arange(pad)]))
        out["sample_ids"].append(np.concatenate([r["sample_ids"], np.full(pad, -1)]))
    return {k: torch.from_numpy(np.stack(v)).long() for k, v in out.items()}


def samples_of(row: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """A packed row cut at its cu_seqlens into one row per sample."""
    cu = row["cu_seqlens"]
    return [{k: v[cu[i]:cu[i + 1]] for k, v in row.items() if k != "cu_seqlens"} | {"cu_seqlens": cu[i:i + 2] - cu[i]}
            for i in range(len(cu) - 1)]


def tiny_model(attention: str = "sdpa", seed: int = 0, **overrides: Any) -> torch.nn.Module:
    config = AutoConfig.for_model(**{**TINY, "vocab_size": VOCAB, **overrides})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation=attention)
    return model.train()
