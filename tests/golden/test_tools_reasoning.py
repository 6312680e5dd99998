"""Golden tokenization of tool calls, tool results and reasoning: for every fixture family whose template
supports them (Qwen2.5, Qwen3 and Llama 3.1/3.2/3.3 tools; Qwen3 reasoning), the text Tessera renders and the
ids it prepares equal `apply_chat_template(messages, tools=...)` of transformers on the same messages, and the
trained tokens are exactly what the model generates after each assistant header through its end-of-turn
token: reasoning and tool calls included by default, each maskable (train_on_reasoning /
train_on_tool_calls), tool results never trained. Also: `tessera golden`'s reference labels for these rows
(golden_refs.template_reference) equal the expected labels computed here.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/golden/test_tools_reasoning.py -v

Expected labels are computed without Tessera's span code: from transformers' renders of each prefix with
add_generation_prompt=True, the end-of-turn token after it, and per family the text a tool call is written as
(Qwen: <tool_call>…</tool_call>; Llama: the {"name": …} JSON).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from dataprep.fetch_tokenizers import tokenizer_dir
from dataprep.formats import to_sample
from dataprep.load import RawRow
from dataprep.look.golden_refs import template_reference
from dataprep.render import resolve_template
from dataprep.template_encoder import TemplateEncoder
from dataprep.transform import RowProcessor
from schemas.config import config_from_dict
from tests.conftest import _tokenizer, process_rows
from tests.golden.test_templates import hf_tokenizer, pinned_date  # noqa: F401  (pinned_date: autouse fixture)

# case: (fixture family, library template, end-of-turn token, tool call pattern)
QWEN_CALL = re.compile(r"<tool_call>.*?</tool_call>", re.S)
LLAMA_CALL = re.compile(r'\{"name": .*?\}\}(?=<\|eot_id\|>)', re.S)
FAMILIES = {
    "qwen2.5": ("qwen2.5", "qwen_25", "<|im_end|>", QWEN_CALL),
    "qwen3": ("qwen3", "qwen3_official", "<|im_end|>", QWEN_CALL),
    "llama3.1": ("llama3", "llama3_1", "<|eot_id|>", LLAMA_CALL),
    "llama3.2": ("llama3", "llama3_2", "<|eot_id|>", LLAMA_CALL),
    "llama3.3": ("llama3", "llama3_3", "<|eot_id|>", LLAMA_CALL),
}

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"},
                                                    "unit": {"type": "string", "enum": ["C", "F"]}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Local time in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def call(name: str, **args: Any) -> dict[str, Any]:
    return {"id": f"call_{name}", "type": "function", "function": {"name": name, "arguments": args}}


def tool(content: str, name: str) -> dict[str, Any]:
    return {"role": "tool", "name": name, "tool_call_id": f"call_{name}", "content": content}


U = {"role": "user", "content": "What's the weather in Paris, in Celsius?"}
TOOL_ROWS = {
    "call_then_answer": {"tools": [WEATHER], "messages": [
        U, {"role": "assistant", "content": "", "tool_calls": [call("get_weather", city="Paris", unit="C")]},
        tool('{"temperature": 21, "sky": "clear"}', "get_weather"),
        {"role": "assistant", "content": "It is 21 °C and clear in Paris."}]},
    "content_and_call": {"tools": [WEATHER, TIME], "messages": [
        {"role": "system", "content": "You are a weather bot."}, U,
        {"role": "assistant", "content": "Let me look that up.", "tool_calls": [call("get_weather", city="Paris")]},
        tool("21 C", "get_weather"), {"role": "assistant", "content": "21 °C."},
        {"role": "user", "content": "Thanks!"}, {"role": "assistant", "content": "You're welcome."}]},
    "string_arguments": {"tools": json.dumps([WEATHER]), "messages": [
        U, {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "C"}'}}]},
        tool("21", "get_weather"), {"role": "assistant", "content": "21 degrees."}]},
    "two_calls": {"tools": [WEATHER, TIME], "messages": [
        {"role": "user", "content": "Weather and time in Tokyo?"},
        {"role": "assistant", "content": "", "tool_calls": [call("get_weather", city="Tokyo"),
                                                            call("get_time", city="Tokyo")]},
        tool("18 C", "get_weather"), tool("09:00", "get_time"),
        {"role": "assistant", "content": "18 °C, and it is 9 am."}]},
}
R = "reasoning_content"
REASONING_ROWS = {
    "final_reasoning": {"messages": [
        {"role": "user", "content": "Is 91 prime?"},
        {"role": "assistant", R: "91 = 7 × 13.", "content": "No: 91 = 7 × 13."}]},
    "earlier_reasoning": {"messages": [  # Qwen3 drops reasoning before the last user turn
        {"role": "user", "content": "2+2?"}, {"role": "assistant", R: "Add them.", "content": "4"},
        {"role": "user", "content": "3+3?"}, {"role": "assistant", R: "\nAdd them again.\n", "content": "6"}]},
    "thinking_key": {"messages": [  # transformers reads `thinking` as reasoning_content too
        {"role": "user", "content": "Capital of Peru?"},
        {"role": "assistant", "thinking": "Peru's capital is Lima.", "content": "Lima."}]},
    "reasoning_and_tools": {"tools": [WEATHER], "messages": [
        U, {"role": "assistant", R: "I need the weather tool.", "content": "",
            "tool_calls": [call("get_weather", city="Paris", unit="C")]},
        tool("21", "get_weather"),
        {"role": "assistant", R: "The tool said 21.", "content": "21 °C in Paris."}]},
}


def prepare_one(family: str, template: str, row: dict[str, Any], **ds: Any) -> tuple[str, Any]:
    """(Tessera's rendered text, its RowResult) for one row."""
    cfg = config_from_dict({"tokenizer_config": str(tokenizer_dir(family)), "chat_template": template,
                            "sequence_len": 8192, "datasets": [{"path": "x", "type": "chat_template", **ds}]})
    tok = _tokenizer(str(tokenizer_dir(family)))
    d = cfg.datasets[0]
    text = resolve_template(d.chat_template or template, d.chat_template_jinja, tok.chat_template, Path("."))[1]
    processor = RowProcessor(cfg, 0, tok, text)
    [result] = processor.process([RawRow(0, copy.deepcopy(row))])
    sample = to_sample(copy.deepcopy(row), cfg.datasets[0], False, tok.eos_text)
    assert isinstance(processor.chat, TemplateEncoder)
    return processor.chat.renderer.render_text(sample.messages, False, sample.tools), result


def hf_messages(row: dict[str, Any]) -> tuple[list[dict[str, Any]], list[Any] | None]:
    """The row as a transformers user passes it: JSON-string arguments and tools parsed (templates tojson them)."""
    messages = copy.deepcopy(row["messages"])
    for m in messages:
        for c in m.get("tool_calls", []):
            if isinstance(c["function"]["arguments"], str):
                c["function"]["arguments"] = json.loads(c["function"]["arguments"])
    tools = row.get("tools")
    return messages, json.loads(tools) if isinstance(tools, str) else tools


def expected_trained(tok: Any, row: dict[str, Any], eot: str, call_re: re.Pattern[str], reasoning: bool = True,
                     tool_calls: bool = True) -> tuple[list[int], list[bool]]:
    messages, tools = hf_messages(row)
    full = tok.apply_chat_template(messages, tools=tools, tokenize=False)
    regions: list[tuple[int, int]] = []
    masked: list[tuple[int, int]] = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = tok.apply_chat_template(messages[:i], tools=tools, tokenize=False, add_generation_prompt=True)
        assert full.startswith(prompt), "these shapes are prefix-preserving"
        start = len(prompt)
        end = full.index(eot, start) + len(eot)
        regions.append((start, end))
        thought = (m.get(R) or m.get("thinking") or "").strip()
        if not reasoning and thought and thought in full[start:end]:
            at = full.index(thought, start)
            masked.append((at, at + len(thought)))
        calls = list(call_re.finditer(full[start:end]))
        if not tool_calls and calls:  # a message's calls are one block, with what separates them
            masked.append((start + calls[0].start(), start + calls[-1].end()))
    enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    trained = [any(a <= s < b for a, b in regions) and not any(a <= s < b for a, b in masked)
               for s, _ in enc["offset_mapping"]]
    trained[0] = False
    return enc["input_ids"], trained


def check(case: str, row: dict[str, Any], **ds: Any) -> None:
    family, template, eot, call_re = FAMILIES[case]
    tok = hf_tokenizer(family, template)
    messages, tools = hf_messages(row)
    text, r = prepare_one(family, template, row, **ds)
    assert text == tok.apply_chat_template(messages, tools=tools, tokenize=False)
    assert r.status.value == "kept", (r.reason, r.message)
    ids = r.input_ids.tolist()
    assert ids == tok.apply_chat_template(messages, tools=tools, tokenize=True)["input_ids"]
    want_ids, want = expected_trained(tok, row, eot, call_re, ds.get("train_on_reasoning", True),
                                      ds.get("train_on_tool_calls", True))
    assert want_ids == ids
    got = [lab != -100 for lab in r.labels.tolist()]
    if got != want:
        diff = [(i, tok.decode([ids[i]]), g) for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w]
        pytest.fail(f"trained mask differs at (position, token, ours): {diff[:10]}")


@pytest.mark.parametrize("shape", TOOL_ROWS)
@pytest.mark.parametrize("case", FAMILIES)
def test_tool_calls_golden(case: str, shape: str) -> None:
    if shape == "two_calls" and case.startswith("llama"):
        # Llama 3.x templates refuse more than one call per message: the row is quarantined with their words.
        [r] = process_rows(tokenizer_dir(FAMILIES[case][0]), {"type": "chat_template"}, [TOOL_ROWS[shape]],
                           chat_template=FAMILIES[case][1], sequence_len=8192)
        assert r.reason.value == "template_error" and "single tool-calls" in r.message
        return
    check(case, TOOL_ROWS[shape])


@pytest.mark.parametrize("shape", ["call_then_answer", "content_and_call", "two_calls"])
@pytest.mark.parametrize("case", ["qwen2.5", "qwen3", "llama3.1"])
def test_tool_calls_can_be_masked(case: str, shape: str) -> None:
    if shape == "two_calls" and case.startswith("llama"):
        pytest.skip("Llama 3.1 refuses two calls in one message")
    check(case, TOOL_ROWS[shape], train_on_tool_calls=False)


@pytest.mark.parametrize("shape", REASONING_ROWS)
def test_reasoning_golden(shape: str) -> None:
    check("qwen3", REASONING_ROWS[shape])


@pytest.mark.parametrize("shape", REASONING_ROWS)
def test_reasoning_can_be_masked(shape: str) -> None:
    check("qwen3", REASONING_ROWS[shape], train_on_reasoning=False)


def test_reasoning_is_no_longer_dropped() -> None:
    """The issue's case: a Qwen3 row's reasoning_content reaches the template and is trained, where before it
    was dropped and an empty <think></think> was trained instead."""
    tok = hf_tokenizer("qwen3", "qwen3_official")
    _, r = prepare_one("qwen3", "qwen3_official", REASONING_ROWS["final_reasoning"])
    trained = tok.decode([t for t in r.labels.tolist() if t != -100])
    assert trained == "<think>\n91 = 7 × 13.\n</think>\n\nNo: 91 = 7 × 13.<|im_end|>"


def test_tool_results_are_never_trained_by_default() -> None:
    tok = hf_tokenizer("qwen2.5", "qwen_25")
    _, r = prepare_one("qwen2.5", "qwen_25", TOOL_ROWS["call_then_answer"])
    trained = tok.decode([t for t in r.labels.tolist() if t != -100])
    assert "temperature" not in trained and "get_weather" in trained
    # ... unless asked for, like any role.
    _, r = prepare_one("qwen2.5", "qwen_25", TOOL_ROWS["call_then_answer"], roles_to_train=["assistant", "tool"])
    assert '{"temperature": 21, "sky": "clear"}' in tok.decode([t for t in r.labels.tolist() if t != -100])


def test_name_and_tool_call_id_reach_the_template() -> None:
    """A template that prints every message field it is given: name and tool_call_id arrive as in the row,
    keys a row does not have are not invented, and other keys (here `weight`) are not passed."""
    jinja = ("{% for m in messages %}<|im_start|>{{ m.role }}|{{ m.name }}|{{ m.tool_call_id }}|"
             "{{ m.tool_calls | tojson if m.tool_calls is defined else 'no calls' }}|{{ m.weight }}\n"
             "{{ m.content }}<|im_end|>\n{% endfor %}")
    row = copy.deepcopy(TOOL_ROWS["call_then_answer"])
    row["messages"][0]["weight"] = 1
    text, r = prepare_one("qwen2.5", "qwen_25", row, chat_template="jinja", chat_template_jinja=jinja)
    lines = [ln for ln in text.split("\n") if ln.startswith("<|im_start|>")]
    assert lines[0] == "<|im_start|>user|||no calls|"
    assert lines[1].startswith('<|im_start|>assistant|||[{"id": "call_get_weather", "type": "function"')
    assert lines[2] == "<|im_start|>tool|get_weather|call_get_weather|no calls|"
    assert r.status.value == "kept"


@pytest.mark.parametrize("shape", [*TOOL_ROWS, *REASONING_ROWS])
@pytest.mark.parametrize("case", ["qwen2.5", "qwen3", "llama3.1"])
def test_golden_reference_labels(case: str, shape: str) -> None:
    """`tessera golden`'s template reference (golden_refs.template_reference) trains what expected_trained says,
    for tool and reasoning rows: its labels are a real check, not a copy of Tessera's span code."""
    family, template, eot, call_re = FAMILIES[case]
    row = {**TOOL_ROWS, **REASONING_ROWS}[shape]
    if (shape in REASONING_ROWS and case != "qwen3") or (shape == "two_calls" and case.startswith("llama")):
        pytest.skip("the template does not write reasoning / refuses two calls")
    tok = hf_tokenizer(family, template)
    cfg = config_from_dict({"tokenizer_config": str(tokenizer_dir(family)), "chat_template": template,
                            "datasets": [{"path": "x", "type": "chat_template"}]})
    chat = to_sample(copy.deepcopy(row), cfg.datasets[0], False, "")
    ids, labels = template_reference(tok, chat)
    want_ids, want = expected_trained(tok, row, eot, call_re)
    assert ids == want_ids and labels is not None
    assert [lab != -100 for lab in labels] == want
