"""`tessera merge-lora` (issue 11, item 5): a tiny LoRA run (r=4 on every linear layer of a tiny Qwen2, trained a
few steps on the bundled example) is merged into output_dir/merged/.

- the merged model loads with AutoModelForCausalLM alone and its logits equal base + adapter (peft) in fp32
  within 1e-5, while differing from the base model's (the adapter was trained);
- merged/ holds safetensors and the saved tokenizer, no adapter files; a second merge replaces it atomically
  (no temp folder left); --checkpoint merges a checkpoint's adapter;
- a full fine-tune's final/ is refused in one line (nothing to merge).

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/train/test_merge.py -v
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dataprep.cli import main as tessera
from schemas.config import load_config
from tests.train.after_runs import full_run, lora_run
from tests.train.tiny import demo_prepared, samples_of, shard_rows, to_batch

__all__ = ["demo_prepared", "full_run", "lora_run"]  # fixtures, imported so pytest finds them


def _logits(model: torch.nn.Module, prepared: Path) -> torch.Tensor:
    row = shard_rows(prepared, "val")[0]
    b = to_batch([samples_of(row)[0]])
    with torch.no_grad():
        return model(input_ids=b["input_ids"], position_ids=b["position_ids"], use_cache=False).logits


def test_merged_logits_equal_base_plus_adapter(lora_run: Path, demo_prepared: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from peft import PeftModel

    out = Path(load_config(lora_run).output_dir)
    assert tessera(["merge-lora", str(lora_run)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out / 'merged'}"
    merged_dir = out / "merged"
    assert (merged_dir / "model.safetensors").is_file() and (merged_dir / "config.json").is_file()
    assert not (merged_dir / "adapter_config.json").exists()
    AutoTokenizer.from_pretrained(merged_dir / "tokenizer")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(out / "base_model", dtype=torch.float32).eval()
    base_logits = _logits(base, demo_prepared)
    adapted = PeftModel.from_pretrained(base, out / "final").eval()
    expected = _logits(adapted, demo_prepared)
    got = _logits(merged, demo_prepared)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert (expected - base_logits).abs().max() > 1e-3  # the adapter changes the model: the test can fail


def test_merge_again_replaces_atomically_and_takes_a_checkpoint(lora_run: Path, demo_prepared: Path) -> None:
    out = Path(load_config(lora_run).output_dir)
    assert tessera(["merge-lora", str(lora_run), "--checkpoint", str(out / "checkpoint-2")]) == 0
    assert sorted(p.name for p in out.iterdir() if "merged" in p.name) == ["merged"]
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(out / "base_model", dtype=torch.float32)
    expected = _logits(PeftModel.from_pretrained(base, out / "checkpoint-2").eval(), demo_prepared)
    merged = AutoModelForCausalLM.from_pretrained(out / "merged", dtype=torch.float32).eval()
    torch.testing.assert_close(_logits(merged, demo_prepared), expected, rtol=0, atol=1e-5)


def test_full_model_is_refused_in_one_line(full_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert tessera(["merge-lora", str(full_run)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a full model, not a LoRA adapter" in err
    assert not (Path(load_config(full_run).output_dir) / "merged").exists()
