"""Every dataset `type`: the ids equal what the inference path produces for the same sample, and the trained
tokens are exactly what the user asked to train on. Real Qwen2.5 tokenizer, chatml template.

    .venv/bin/python -m pytest tests/dataprep/test_formats.py -v
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dataprep.formats import ALPACA
from dataprep.transform import RowResult
from schemas.reasons import Reason, Status
from tests.conftest import process_rows

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4."},
    {"role": "user", "content": "  And 3+3?\n"},
    {"role": "assistant", "content": "6, of course.  "},
]


def run_rows(qwen_dir: Path, ds: dict[str, Any], rows: list[Any], **top: Any) -> list[RowResult]:
    return process_rows(qwen_dir, ds, rows, **top)


def trained_text(hf: Any, r: RowResult) -> str:
    assert r.labels is not None
    return hf.decode([t for t in r.labels.tolist() if t != -100])


def encode(hf: Any, text: str) -> list[int]:
    return hf(text, add_special_tokens=False)["input_ids"]


def test_chat_template_ids_match_apply_chat_template(qwen_dir: Path, hf_qwen: Any) -> None:
    [r] = run_rows(qwen_dir, {"type": "chat_template"}, [{"messages": CHAT}])
    assert r.status is Status.kept
    assert r.input_ids.tolist() == hf_qwen.apply_chat_template(CHAT, tokenize=True)["input_ids"]
    # Trained: each assistant content plus its <|im_end|>, nothing else.
    assert trained_text(hf_qwen, r) == "4.<|im_end|>6, of course.  <|im_end|>"
    assert r.labels[0] == -100


def test_sharegpt_rows_are_recognised(qwen_dir: Path, hf_qwen: Any) -> None:
    row = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello!"}]}
    [r] = run_rows(qwen_dir, {"type": "chat_template"}, [row])
    expected = hf_qwen.apply_chat_template([{"role": "user", "content": "hi"},
                                            {"role": "assistant", "content": "hello!"}], tokenize=True)
    assert r.input_ids.tolist() == expected["input_ids"]
    assert trained_text(hf_qwen, r) == "hello!<|im_end|>"


def test_custom_field_names_and_roles_mapping(qwen_dir: Path, hf_qwen: Any) -> None:
    ds = {"type": "chat_template", "field_messages": "turns", "message_field_role": "speaker",
          "message_field_content": "text", "roles": {"user": ["customer"], "assistant": ["agent"]}}
    row = {"turns": [{"speaker": "customer", "text": "Where is my order?"},
                     {"speaker": "agent", "text": "On its way."}]}
    [r] = run_rows(qwen_dir, ds, [row])
    assert trained_text(hf_qwen, r) == "On its way.<|im_end|>"


@pytest.mark.parametrize(("train_on_eos", "expected"), [
    ("turn", "4.<|im_end|>6, of course.  <|im_end|>"),
    ("last", "4.6, of course.  <|im_end|>"),
    ("none", "4.6, of course.  "),
    ("all", "<|im_end|><|im_end|>4.<|im_end|><|im_end|>6, of course.  <|im_end|>"),
])
def test_train_on_eos(qwen_dir: Path, hf_qwen: Any, train_on_eos: str, expected: str) -> None:
    [r] = run_rows(qwen_dir, {"type": "chat_template", "train_on_eos": train_on_eos}, [{"messages": CHAT}])
    assert trained_text(hf_qwen, r) == expected


def test_roles_to_train_includes_user(qwen_dir: Path, hf_qwen: Any) -> None:
    [r] = run_rows(qwen_dir, {"type": "chat_template", "roles_to_train": ["user", "assistant"]},
                   [{"messages": CHAT}])
    assert trained_text(hf_qwen, r) == ("What is 2+2?<|im_end|>4.<|im_end|>  And 3+3?\n<|im_end|>"
                                        "6, of course.  <|im_end|>")


def test_message_field_training_overrides_roles(qwen_dir: Path, hf_qwen: Any) -> None:
    msgs = [dict(m) for m in CHAT]
    msgs[2]["train"] = False  # the first answer is not trained
    [r] = run_rows(qwen_dir, {"type": "chat_template", "message_field_training": "train"}, [{"messages": msgs}])
    assert trained_text(hf_qwen, r) == "6, of course.  <|im_end|>"


def test_message_field_training_detail_trains_char_ranges(qwen_dir: Path, hf_qwen: Any) -> None:
    msgs = [{"role": "user", "content": "Name a fruit."},
            {"role": "assistant", "content": "Sure: apple",
             "detail": [{"begin_offset": 0, "end_offset": 4, "train": False},
                        {"begin_offset": 5, "end_offset": 10, "train": True}]}]
    [r] = run_rows(qwen_dir, {"type": "chat_template", "message_field_training_detail": "detail"},
                   [{"messages": msgs}])
    assert trained_text(hf_qwen, r) == " apple<|im_end|>"


def test_token_straddling_a_span_start_belongs_to_the_side_it_starts_on(qwen_dir: Path, hf_qwen: Any) -> None:
    msgs = [{"role": "user", "content": "Name a fruit."},
            {"role": "assistant", "content": "Sure: apple",
             "detail": [{"begin_offset": 6, "end_offset": 10, "train": True}]}]
    [r] = run_rows(qwen_dir, {"type": "chat_template", "message_field_training_detail": "detail"},
                   [{"messages": msgs}])
    # " apple" is one token starting at the untrained space: not trained; only the end-of-turn is.
    assert trained_text(hf_qwen, r) == "<|im_end|>"


def test_train_on_inputs_trains_every_message_not_the_headers(qwen_dir: Path, hf_qwen: Any) -> None:
    # As Axolotl's ChatTemplateStrategy (tests/dataprep/test_axolotl_labels.py compares token for token): every
    # turn is trained with its end-of-turn token, the template's role headers are not.
    [r] = run_rows(qwen_dir, {"type": "chat_template"}, [{"messages": CHAT}], train_on_inputs=True)
    assert trained_text(hf_qwen, r) == ("Be brief.<|im_end|>What is 2+2?<|im_end|>4.<|im_end|>  And 3+3?\n<|im_end|>"
                                        "6, of course.  <|im_end|>")


def test_alpaca_prompt_and_labels(qwen_dir: Path, hf_qwen: Any) -> None:
    rows = [{"instruction": "Add the numbers.", "input": "2, 3", "output": "5"},
            {"instruction": "Say hi.", "input": "", "output": "Hi!"}]
    with_input, without = run_rows(qwen_dir, {"type": "alpaca"}, rows)
    prompt = ALPACA.format.replace("{instruction}", "Add the numbers.").replace("{input}", "2, 3")
    assert with_input.input_ids.tolist() == encode(hf_qwen, prompt + "5" + hf_qwen.eos_token)
    assert trained_text(hf_qwen, with_input) == "5" + hf_qwen.eos_token
    prompt = ALPACA.no_input_format.replace("{instruction}", "Say hi.")
    assert without.input_ids.tolist() == encode(hf_qwen, prompt + "Hi!" + hf_qwen.eos_token)


def test_custom_instruct_format_with_system(qwen_dir: Path, hf_qwen: Any) -> None:
    ds = {"type": {"field_instruction": "q", "field_output": "a", "format": "[Q] {instruction} ({input})\n",
                   "no_input_format": "[Q] {instruction}\n", "system_format": "<<{system}>>\n",
                   "system_prompt": "default system"}}
    a, b = run_rows(qwen_dir, ds, [{"q": "Why?", "a": "Because.", "system": "be kind"},
                                   {"q": "How?", "input": "ctx", "a": "Like this."}])
    assert a.input_ids.tolist() == encode(hf_qwen, "<<be kind>>\n[Q] Why?\nBecause." + hf_qwen.eos_token)
    assert b.input_ids.tolist() == encode(hf_qwen, "<<default system>>\n[Q] How? (ctx)\nLike this."
                                          + hf_qwen.eos_token)
    assert trained_text(hf_qwen, b) == "Like this." + hf_qwen.eos_token


def test_input_output_segments(qwen_dir: Path, hf_qwen: Any) -> None:
    segments = [{"text": "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n", "label": False},
                {"text": "hi there<|im_end|>", "label": True}, {"text": "\n", "label": False}]
    [r] = run_rows(qwen_dir, {"type": "input_output"}, [{"segments": segments}])
    assert r.input_ids.tolist() == encode(hf_qwen, "".join(s["text"] for s in segments))
    assert trained_text(hf_qwen, r) == "hi there<|im_end|>"


def test_completion_trains_text_and_eos(qwen_dir: Path, hf_qwen: Any) -> None:
    [r] = run_rows(qwen_dir, {"type": "completion", "field": "body"}, [{"body": "Once upon a time."}])
    assert r.input_ids.tolist() == encode(hf_qwen, "Once upon a time." + hf_qwen.eos_token)
    # Everything is trained except the first token, which nothing predicts.
    assert trained_text(hf_qwen, r) == hf_qwen.decode(r.input_ids[1:].tolist())


def test_pretokenized_drops_padding(qwen_dir: Path) -> None:
    row = {"input_ids": [10, 11, 12, 0, 0], "labels": [-100, 11, 12, -100, -100], "attention_mask": [1, 1, 1, 0, 0]}
    [r] = run_rows(qwen_dir, {"type": None}, [row])
    assert r.input_ids.tolist() == [10, 11, 12] and r.labels.tolist() == [-100, 11, 12]


def test_pretokenized_labels_default_to_input_ids(qwen_dir: Path) -> None:
    [r] = run_rows(qwen_dir, {}, [{"input_ids": [5, 6, 7]}])
    assert r.labels.tolist() == [-100, 6, 7]


def test_truncate_strategy_cuts_and_marks(qwen_dir: Path) -> None:
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "word " * 200}]}
    [r] = run_rows(qwen_dir, {"type": "chat_template"}, [row], sequence_len=64, excess_length_strategy="truncate")
    assert r.status is Status.kept and r.reason is Reason.truncated and len(r.input_ids) == 64
    [d] = run_rows(qwen_dir, {"type": "chat_template"}, [row], sequence_len=64)
    assert d.status is Status.dropped and d.reason is Reason.too_long and d.num_tokens > 64


def test_same_content_differently_spaced_has_same_hash(qwen_dir: Path) -> None:
    a, b, c = run_rows(qwen_dir, {"type": "alpaca"}, [
        {"instruction": "Say  hi.", "output": "Hi!"},
        {"instruction": " Say hi.\n", "output": "Hi!"},
        {"instruction": "Say hi.", "output": "Hello!"},
    ])
    assert a.content_hash == b.content_hash != c.content_hash


def test_labels_cover_exactly_trained_tokens_in_every_row(qwen_dir: Path) -> None:
    rows = [{"messages": CHAT}] * 3
    for r in run_rows(qwen_dir, {"type": "chat_template"}, rows):
        trained = r.labels != -100
        assert np.array_equal(r.labels[trained], r.input_ids[trained])
