"""Probes stop a run before any row is read when a template/tokenizer pair cannot train correctly: the
end-of-turn token would not be trained, BOS would be doubled, nothing would be trained. Real tokenizers.

    .venv/bin/python -m pytest tests/dataprep/test_probes.py -v
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dataprep.fetch_tokenizers import tokenizer_dir
from dataprep.pipeline import PrepareError
from tests.conftest import Prepare, write_jsonl

CHAT = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}]


def test_llama3_template_on_a_qwen_tokenizer_is_refused(tmp_path: Path, prepare: Prepare) -> None:
    write_jsonl(tmp_path / "chat.jsonl", CHAT)
    with pytest.raises(PrepareError, match=r"(?s)closes assistant turns with no special token.*never learn to stop"):
        prepare({"chat_template": "llama3_1", "datasets": [{"path": "chat.jsonl", "type": "chat_template"}]})
    assert not (tmp_path / "out").exists()


def test_train_on_eos_none_accepts_such_a_template(tmp_path: Path, prepare: Prepare) -> None:
    write_jsonl(tmp_path / "chat.jsonl", CHAT)
    result = prepare({"chat_template": "llama3_1",
                      "datasets": [{"path": "chat.jsonl", "type": "chat_template", "train_on_eos": "none"}]})
    assert result.manifest["probes"][0]["end_of_turn"] == []


def test_double_bos_in_a_prompt_format_is_refused(tmp_path: Path, prepare: Prepare) -> None:
    write_jsonl(tmp_path / "a.jsonl", [{"instruction": "x", "output": "y"}])
    fmt = {"format": "<|begin_of_text|>{instruction} {input}", "no_input_format": "<|begin_of_text|>{instruction}"}
    with pytest.raises(PrepareError, match="double BOS"):
        prepare({"tokenizer_config": str(tokenizer_dir("llama3")), "datasets": [{"path": "a.jsonl", "type": fmt}]})


def test_nothing_trained_is_refused(tmp_path: Path, prepare: Prepare) -> None:
    write_jsonl(tmp_path / "chat.jsonl", CHAT)
    with pytest.raises(PrepareError, match="no trained token"):
        prepare({"datasets": [{"path": "chat.jsonl", "type": "chat_template", "roles_to_train": [],
                               "train_on_eos": "none"}]})


def test_prefix_preservation_is_reported(tmp_path: Path, prepare: Prepare) -> None:
    write_jsonl(tmp_path / "chat.jsonl", CHAT)
    gemma = prepare({"tokenizer_config": str(tokenizer_dir("gemma4")), "chat_template": "tokenizer_default",
                     "datasets": [{"path": "chat.jsonl", "type": "chat_template"}]}, out_name="gemma")
    qwen = prepare({"datasets": [{"path": "chat.jsonl", "type": "chat_template"}]}, out_name="qwen")
    assert gemma.manifest["probes"][0]["prefix_preserving"] is False
    assert gemma.manifest["probes"][0]["end_of_turn"] == ["<turn|>"]
    assert qwen.manifest["probes"][0]["prefix_preserving"] is True


def test_special_token_override_that_changes_the_template_is_warned(tmp_path: Path, prepare: Prepare) -> None:
    write_jsonl(tmp_path / "a.jsonl", [{"instruction": "x", "output": "y"}])
    write_jsonl(tmp_path / "chat.jsonl", CHAT)
    result = prepare({"chat_template": "alpaca", "special_tokens": {"eos_token": "<|endoftext|>"},
                      "datasets": [{"path": "chat.jsonl", "type": "chat_template"}]})
    [warning] = result.manifest["warnings"]
    assert warning.startswith("special_tokens.eos_token: the chat template writes eos_token, which is now "
                              "'<|endoftext|>' (id 151643) instead of the tokenizer's '<|im_end|>'")
    added = prepare({"special_tokens": {"pad_token": "<my_pad>"},
                     "datasets": [{"path": "a.jsonl", "type": "alpaca"}]}, out_name="added")
    assert "'<my_pad>' is not in the vocabulary; it was added as id 151665" in added.manifest["warnings"][0]


def test_tokenizer_default_fallback(tmp_path: Path, prepare: Prepare) -> None:
    write_jsonl(tmp_path / "chat.jsonl", CHAT)
    llama2 = str(tokenizer_dir("llama2"))  # its tokenizer has no chat template
    ds = [{"path": "chat.jsonl", "type": "chat_template"}]
    with pytest.raises(PrepareError, match="tokenizer_default, but the tokenizer has no chat_template"):
        prepare({"tokenizer_config": llama2, "chat_template": "tokenizer_default", "datasets": ds})
    result = prepare({"tokenizer_config": llama2, "chat_template": "tokenizer_default_fallback_alpaca",
                      "datasets": ds})
    assert result.manifest["chat_template"]["name"] == "alpaca"
    assert result.manifest["probes"][0]["end_of_turn"] == ["</s>"]
    qwen = prepare({"chat_template": "tokenizer_default_fallback_alpaca", "datasets": ds}, out_name="qwen")
    assert qwen.manifest["chat_template"]["name"] == "tokenizer_default"
