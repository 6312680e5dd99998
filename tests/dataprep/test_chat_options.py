"""Dataset-level options of type: chat_template, with Axolotl's documented meaning: datasets[].chat_template
(+ chat_template_jinja, and what the saved tokenizer serves with), drop_system_message, eot_tokens /
train_on_eot next to train_on_eos, field_thinking / template_thinking_key, split_thinking, content given as
parts with per-part train/weight, roles_to_train: [] with per-message flags, excess_length_strategy: raise.
Renders are compared with transformers' apply_chat_template on real tokenizers.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/dataprep/test_chat_options.py -v
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dataprep.fetch_tokenizers import tokenizer_dir
from dataprep.pipeline import PrepareError
from schemas.config import ConfigError, config_from_dict
from tests.conftest import Prepare, process_rows, write_jsonl
from tests.golden.test_templates import hf_tokenizer
from tests.golden.test_tools_reasoning import TOOL_ROWS

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And Italy?"},
        {"role": "assistant", "content": "Rome."}]


def trained_text(family: str, template: str, r: Any) -> str:
    return hf_tokenizer(family, template).decode([t for t in r.labels.tolist() if t != -100])


def run(family: str, template: str, rows: list[Any], **ds: Any) -> list[Any]:
    return process_rows(tokenizer_dir(family), {"type": "chat_template", **ds}, rows, chat_template=template,
                        sequence_len=4096)


def test_dataset_chat_template_and_what_the_saved_tokenizer_serves(prepare: Prepare, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    write_jsonl(tmp_path / "a.jsonl", [{"messages": CHAT}])
    write_jsonl(tmp_path / "b.jsonl", [{"messages": CHAT[1:]}])
    result = prepare({"datasets": [{"path": "a.jsonl", "type": "chat_template"},
                                   {"path": "b.jsonl", "type": "chat_template", "chat_template": "qwen_25"}]})
    probes = result.manifest["probes"]
    assert probes[0]["template"] == "chatml" and probes[0]["saved_as"] == "chat_template.jinja"
    assert probes[1]["template"] == "qwen_25"
    assert probes[1]["saved_as"] == "additional_chat_templates/qwen_25.jinja"
    assert any("datasets[1]" in w and "qwen_25" in w for w in result.manifest["warnings"])
    saved = AutoTokenizer.from_pretrained(str(result.out / "tokenizer"))
    ours = run("qwen2.5", "chatml", [{"messages": CHAT[1:]}], chat_template="qwen_25")[0]
    # The dataset's data is served by naming its template; the default stays the top-level one.
    assert ours.input_ids.tolist() == saved.apply_chat_template(CHAT[1:], chat_template="qwen_25")["input_ids"]
    assert "You are Qwen" in saved.apply_chat_template(CHAT[1:], chat_template="qwen_25", tokenize=False)
    assert "You are Qwen" not in saved.apply_chat_template(CHAT[1:], tokenize=False)


def test_dataset_chat_template_jinja_implies_jinja() -> None:
    cfg = config_from_dict({"tokenizer_config": "x", "datasets": [
        {"path": "x", "type": "chat_template", "chat_template_jinja": "{{ messages[0].content }}"}]})
    assert cfg.datasets[0].chat_template == "jinja"
    with pytest.raises(ConfigError, match="only apply to type: chat_template"):
        config_from_dict({"tokenizer_config": "x", "datasets": [{"path": "x", "type": "alpaca",
                                                                 "drop_system_message": True}]})


def test_drop_system_message() -> None:
    [r] = run("qwen2.5", "qwen_25", [{"messages": CHAT}], drop_system_message=True)
    tok = hf_tokenizer("qwen2.5", "qwen_25")
    # Axolotl: the row's system turn goes; the template's own default system prompt is still written.
    assert r.input_ids.tolist() == tok.apply_chat_template(CHAT[1:])["input_ids"]
    assert "You are Qwen" in tok.decode(r.input_ids.tolist())


def test_eot_tokens_and_train_on_eot_split_from_train_on_eos() -> None:
    """Phi-3.5 ends turns with <|end|> and the conversation with EOS <|endoftext|>."""
    rows = [{"messages": CHAT[1:]}]
    tail = "Rome.<|end|><|endoftext|>"
    [legacy] = run("phi3.5", "phi_35_official", rows)  # train_on_eos governs the end-of-turn token, as before
    assert trained_text("phi3.5", "phi_35_official", legacy).endswith("Rome.<|end|>")
    # + the EOS after the last turn (train_on_eos: turn)
    [split] = run("phi3.5", "phi_35_official", rows, train_on_eot="turn")
    assert trained_text("phi3.5", "phi_35_official", split).endswith(tail)
    [no_eos] = run("phi3.5", "phi_35_official", rows, train_on_eot="turn", train_on_eos="none")
    assert trained_text("phi3.5", "phi_35_official", no_eos).endswith("Rome.<|end|>")
    [last_eot] = run("phi3.5", "phi_35_official", rows, train_on_eot="last")
    assert trained_text("phi3.5", "phi_35_official", last_eot).endswith(tail)
    assert "Paris.<|end|>" not in trained_text("phi3.5", "phi_35_official", last_eot)


def test_eot_tokens_top_level(prepare: Prepare, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "d.jsonl", [{"messages": CHAT}])
    phi = str(tokenizer_dir("phi3.5"))
    result = prepare({"tokenizer_config": phi, "chat_template": "phi_35_official", "eot_tokens": ["<|end|>"],
                      "datasets": [{"path": "d.jsonl", "type": "chat_template"}]})
    assert result.manifest["probes"][0]["end_of_turn"] == ["<|end|>"]
    with pytest.raises(PrepareError, match="tokens of this tokenizer, not one"):
        prepare({"tokenizer_config": phi, "chat_template": "phi_35_official", "eot_tokens": ["[/END]"],
                 "datasets": [{"path": "d.jsonl", "type": "chat_template"}]}, out_name="o2")
    with pytest.raises(PrepareError, match=r"train_on_eos .* and train_on_eot .* must agree"):
        prepare({"eot_tokens": ["<|im_end|>"], "datasets": [
            {"path": "d.jsonl", "type": "chat_template", "train_on_eot": "all"}]}, out_name="o3")


def test_field_thinking_split_thinking_and_template_thinking_key() -> None:
    tok = hf_tokenizer("qwen3", "qwen3")
    want = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "reasoning_content": "Add.", "content": "4"}]
    reference = tok.apply_chat_template(want)["input_ids"]
    [a] = run("qwen3", "qwen3", [{"messages": [want[0], {"role": "assistant", "thought": "Add.", "content": "4"}]}],
              field_thinking="thought")
    assert a.input_ids.tolist() == reference
    [b] = run("qwen3", "qwen3", [{"messages": [want[0], {"role": "assistant",
                                                         "content": "<reasoning>Add.</reasoning>\n4"}]}],
              split_thinking=True)
    assert b.input_ids.tolist() == reference
    [c] = run("qwen3", "qwen3", [{"messages": [want[0], {"role": "assistant", "content":
              "<|begin_of_thought|>Add.<|end_of_thought|><|begin_of_solution|> 4 <|end_of_solution|>"}]}],
              split_thinking=True)
    assert c.input_ids.tolist() == reference
    jinja = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.reasoning %}[{{ m.reasoning }}]{% endif %}"
             "{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    [d] = run("qwen3", "qwen3", [{"messages": want}], chat_template="jinja", chat_template_jinja=jinja,
              template_thinking_key="reasoning")
    assert trained_text("qwen3", "qwen3", d) == "[Add.]4<|im_end|>"


def test_content_parts_train_per_part() -> None:
    parts = [{"type": "text", "text": "Let me think...", "train": False},
             {"type": "text", "text": " The answer is 4.", "train": True}]
    joined = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "Let me think... The answer is 4."}]
    [r] = run("qwen2.5", "chatml", [{"messages": [joined[0], {"role": "assistant", "content": parts}]}])
    assert r.input_ids.tolist() == hf_tokenizer("qwen2.5", "chatml").apply_chat_template(joined)["input_ids"]
    assert trained_text("qwen2.5", "chatml", r) == " The answer is 4.<|im_end|>"
    weights = [{**p, "weight": int(p.pop("train"))} for p in [dict(p) for p in parts]]
    [w] = run("qwen2.5", "chatml", [{"messages": [joined[0], {"role": "assistant", "content": weights}]}])
    assert w.labels.tolist() == r.labels.tolist()
    # Parts without flags are the joined string: same ids, same labels.
    plain = [{"type": "text", "text": p["text"]} for p in parts]
    [p] = run("qwen2.5", "chatml", [{"messages": [joined[0], {"role": "assistant", "content": plain}]}])
    [s] = run("qwen2.5", "chatml", [{"messages": joined}])
    assert p.labels.tolist() == s.labels.tolist()
    # A flagged part of a user turn is trained, its other parts follow the turn (not trained).
    user = [{"type": "text", "text": "2+2?"}, {"type": "text", "text": " Show work.", "train": True}]
    [u] = run("qwen2.5", "chatml", [{"messages": [{"role": "user", "content": user}, joined[1]]}])
    assert trained_text("qwen2.5", "chatml", u) == " Show work.<|im_end|>Let me think... The answer is 4.<|im_end|>"
    [bad] = run("qwen2.5", "chatml", [{"messages": [{"role": "user", "content": [{"type": "image"}]}, joined[1]]}])
    assert bad.reason.value == "wrong_type" and bad.field == "messages[0].content[0]"


def test_reasoning_parts_train_per_part() -> None:
    parts = [{"type": "text", "text": "Hmm, maybe 5.", "train": False},
             {"type": "text", "text": " Wait, 4.", "train": True}]
    row = {"messages": [{"role": "user", "content": "2+2?"},
                        {"role": "assistant", "reasoning_content": parts, "content": "4"}]}
    [r] = run("qwen3", "qwen3", [row])
    want = [row["messages"][0], {"role": "assistant", "reasoning_content": "Hmm, maybe 5. Wait, 4.", "content": "4"}]
    assert r.input_ids.tolist() == hf_tokenizer("qwen3", "qwen3").apply_chat_template(want)["input_ids"]
    # '.\n' is one token that starts inside the trained part, so it is trained (encode.py's labels policy).
    assert trained_text("qwen3", "qwen3", r) == " Wait, 4.\n4<|im_end|>"


def test_empty_roles_to_train_with_message_flags(prepare: Prepare, tmp_path: Path) -> None:
    """Axolotl's fine-grained example: roles_to_train: [] and each message says whether it is trained."""
    rows = [{"conversations": [{"from": "system", "value": "You are an AI assistant.", "train": False},
                               {"from": "human", "value": "Hello", "train": False},
                               {"from": "assistant", "value": "Hello", "train": True},
                               {"from": "human", "value": "How are you?", "train": True},
                               {"from": "assistant", "value": "Fine."}]}]
    ds = {"field_messages": "conversations", "message_field_role": "from", "message_field_content": "value",
          "roles_to_train": [], "message_field_training": "train"}
    [r] = run("qwen2.5", "chatml", rows, **ds)
    assert trained_text("qwen2.5", "chatml", r) == "Hello<|im_end|>How are you?<|im_end|>"
    write_jsonl(tmp_path / "d.jsonl", rows)
    result = prepare({"datasets": [{"path": "d.jsonl", "type": "chat_template", **ds}]})
    assert result.manifest["accounting"]["kept"] == 1  # the probe accepts it


def test_excess_length_strategy_raise(prepare: Prepare, tmp_path: Path) -> None:
    rows = [{"messages": CHAT[1:3]}, {"messages": [CHAT[1], {"role": "assistant", "content": "word " * 300}]}]
    write_jsonl(tmp_path / "long.jsonl", rows)
    with pytest.raises(PrepareError, match=r"long\.jsonl:1: \d+ tokens > sequence_len 64 \(excess_length_strategy: "
                                           "raise\\); raise sequence_len"):
        prepare({"sequence_len": 64, "excess_length_strategy": "raise",
                 "datasets": [{"path": "long.jsonl", "type": "chat_template"}]})
    assert not (tmp_path / "out").exists()


def test_tools_from_dataset_and_json_strings() -> None:
    tools = [{"type": "function", "function": {"name": "f", "description": "F.", "parameters": {"type": "object"}}}]
    row = {"messages": [{"role": "user", "content": "Call f."}, {"role": "assistant", "content": "Done."}]}
    tok = hf_tokenizer("qwen2.5", "qwen_25")
    reference = tok.apply_chat_template(row["messages"], tools=tools)["input_ids"]
    [a] = run("qwen2.5", "qwen_25", [row], tools=tools)
    [b] = run("qwen2.5", "qwen_25", [{**row, "tools": json.dumps(tools)}])
    [c] = run("qwen2.5", "qwen_25", [{**row, "fns": tools}], field_tools="fns")
    assert a.input_ids.tolist() == b.input_ids.tolist() == c.input_ids.tolist() == reference
    [bad] = run("qwen2.5", "qwen_25", [{**row, "tools": "[{not json"}])
    assert bad.reason.value == "wrong_type" and bad.field == "tools"


def test_mistral_common_rows_with_tool_calls_or_reasoning_say_why() -> None:
    """mistral: tokenizers encode tools (v2 and later) and reasoning (v13 with [THINK]; see
    tests/golden/test_mistral_tools.py); what a version cannot encode is quarantined saying why, never dropped
    silently."""
    tools_row = TOOL_ROWS["call_then_answer"]
    reasoning_row = {"messages": [{"role": "user", "content": "Hi"},
                                  {"role": "assistant", "reasoning_content": "Greet.", "content": "Hello."}]}
    plain = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}
    rows = [{**plain, "tools": tools_row["tools"]}, reasoning_row, plain]
    results = process_rows(Path("mistral:mistral_instruct_tokenizer_240323.model.v3"), {"type": "chat_template"}, rows)
    assert [r.reason.value if r.reason else None for r in results] == [None, "template_error", None]
    assert len(results[0].input_ids) > len(results[2].input_ids)  # the [AVAILABLE_TOOLS] block
    assert "reasoning_content" in results[1].message and "[THINK]" in results[1].message
    results = process_rows(Path("mistral:tokenizer.model.v1"), {"type": "chat_template"}, rows)
    assert [r.reason.value if r.reason else None for r in results] == ["template_error", "template_error", None]
    assert "tool definitions" in results[0].message and results[0].field == "tools"


def test_tool_call_rows_that_cannot_be_used_name_the_field() -> None:
    user = {"role": "user", "content": "Weather?"}
    answer = {"role": "assistant", "content": "Sunny."}
    bad_shape = {"role": "assistant", "content": "", "tool_calls": [{"name": "get_weather"}]}
    bad_json = {"role": "assistant", "content": "",
                "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{city: Paris"}}]}
    empty = {"role": "assistant", "content": ""}
    rows = [{"messages": [user, m, answer]} for m in (bad_shape, bad_json, empty)]
    results = run("qwen2.5", "qwen_25", rows)
    assert [(r.reason.value, r.field) for r in results] == [
        ("wrong_type", "messages[1].tool_calls[0]"), ("wrong_type", "messages[1].tool_calls[0].function.arguments"),
        ("empty_content", "messages[1].content")]
    # OpenAI's null content next to tool calls reaches the template as null, as apply_chat_template passes it.
    call = {"role": "assistant", "content": None,
            "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]}
    messages = [user, call, {"role": "tool", "content": "ok"}, answer]
    [r] = run("qwen2.5", "qwen_25", [{"messages": messages}])
    assert r.input_ids.tolist() == hf_tokenizer("qwen2.5", "qwen_25").apply_chat_template(messages)["input_ids"]
    assert '{"name": "f", "arguments": {"x": 1}}' in trained_text("qwen2.5", "qwen_25", r)
