"""`tessera generate` (issue 11, item 5): a tiny Qwen2 trained on the bundled example (real Qwen2.5 tokenizer)
answers a prompt rendered exactly as training rendered it.

- the prompt ids equal `apply_chat_template(..., add_generation_prompt=True)` with the saved final/tokenizer;
- greedy output equals `model.generate` run directly, and generation stops at the template's end-of-turn token
  (<|im_end|>, which is not the stop transformers would use from the generation config alone);
- the CLI streams the text to stdout; --messages reads a JSON list; a LoRA adapter generates what peft's
  AutoPeftModelForCausalLM generates; a missing final/ is one line.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/train/test_generate.py -v
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dataprep.cli import main as tessera
from schemas.config import load_config
from tests.train.after_runs import full_run, lora_run
from tests.train.tiny import demo_prepared, write_config
from train.generate import end_of_turn_token, generate, prompt_ids, stop_ids

__all__ = ["demo_prepared", "full_run", "lora_run"]  # fixtures, imported so pytest finds them

IM_END = 151645
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of Japan?"}]


def test_prompt_ids_are_the_saved_tokenizers_generation_prompt(full_run: Path) -> None:
    cfg = load_config(full_run)
    tok = AutoTokenizer.from_pretrained(Path(cfg.output_dir) / "final" / "tokenizer")
    expected = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True, return_dict=True)
    ids = prompt_ids(tok, MESSAGES, cfg.chat_template_date)
    assert ids == list(expected["input_ids"])
    assert tok.decode(ids).endswith("<|im_start|>assistant\n")


def test_greedy_equals_model_generate_and_stops_at_end_of_turn(full_run: Path) -> None:
    cfg = load_config(full_run)
    final = Path(cfg.output_dir) / "final"
    got = generate(cfg, final, MESSAGES, max_new_tokens=40, stream=None)
    tok = AutoTokenizer.from_pretrained(final / "tokenizer")
    model = AutoModelForCausalLM.from_pretrained(final).eval()
    assert end_of_turn_token(tok, cfg.chat_template_date) == "<|im_end|>"
    stops = stop_ids(tok, model, cfg.chat_template_date)
    assert IM_END in stops
    ids = torch.tensor([got.prompt_ids])
    direct = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=40, do_sample=False,
                            eos_token_id=stops, pad_token_id=stops[0])
    assert got.new_ids == direct[0, ids.shape[1]:].tolist()
    assert got.stopped_at == IM_END and got.new_ids[-1] == IM_END and IM_END not in got.new_ids[:-1]
    assert 1 < len(got.new_ids) < 40
    assert got.text == tok.decode(got.new_ids[:-1])


def test_cli_streams_the_reply_and_reads_messages(full_run: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    cfg = load_config(full_run)
    expected = generate(cfg, Path(cfg.output_dir) / "final", MESSAGES, max_new_tokens=40, stream=None)
    messages = tmp_path / "messages.json"
    messages.write_text(json.dumps(MESSAGES))
    assert tessera(["generate", str(full_run), "--messages", str(messages), "--max-new-tokens", "40"]) == 0
    assert capsys.readouterr().out == expected.text + "\n"
    assert tessera(["generate", str(full_run), "--prompt", "Hi", "--max-new-tokens", "3"]) == 0
    out = capsys.readouterr()
    assert "stopped after --max-new-tokens 3" in out.err or out.out


def test_sampling_is_seeded(full_run: Path) -> None:
    cfg = load_config(full_run)
    final = Path(cfg.output_dir) / "final"
    runs = [generate(cfg, final, MESSAGES, max_new_tokens=8, temperature=1.5, top_p=0.95, seed=s, stream=None)
            for s in (1, 1, 2)]
    assert runs[0].new_ids == runs[1].new_ids


def test_lora_adapter_generates_like_auto_peft(lora_run: Path) -> None:
    from peft import AutoPeftModelForCausalLM

    cfg = load_config(lora_run)
    final = Path(cfg.output_dir) / "final"
    got = generate(cfg, final, MESSAGES, max_new_tokens=6, stream=None)
    model = AutoPeftModelForCausalLM.from_pretrained(final).eval()
    ids = torch.tensor([got.prompt_ids])
    stops = stop_ids(AutoTokenizer.from_pretrained(final / "tokenizer"), model, cfg.chat_template_date)
    direct = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                            eos_token_id=stops, pad_token_id=stops[0])
    assert got.new_ids == direct[0, ids.shape[1]:].tolist()


def test_no_finished_run_is_one_line(tmp_path: Path, qwen_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path = write_config(tmp_path, qwen_dir)
    assert tessera(["generate", str(cfg_path), "--prompt", "Hi"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no finished run there (train first: tessera train CONFIG)" in err
