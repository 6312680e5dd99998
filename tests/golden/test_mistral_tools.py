"""Golden Mistral tool calls and reasoning: `MistralChatEncoder` against mistral-common itself, for every
tokenizer version that has tool tokens.

Versions: the files shipped in the mistral-common wheel (SentencePiece v2, v3, v7; tekken v3 240911, whose
vocabulary and version tekken 240718 shares) and, because no v7/v11/v13 tekken file ships with mistral-common
1.13.1 and no model hub is reachable, tekken files derived from tekken_240911.json: the same vocabulary, the
config's version set to v7/v11/v13 and the special tokens those versions need ([ARGS], [CALL_ID], [THINK],
[/THINK]) listed in the file, as Mistral's own tekken.json files list them.
mistral-common reads them like any tekken.json.

The references are computed without Tessera's encoder:
- ids: `encode_chat_completion(ChatCompletionRequest.from_openai(messages, tools=...)).tokens` in finetuning mode
  (mistral-common's own OpenAI converter, the one transformers' MistralCommonBackend uses), never the request
  Tessera builds;
- labels: `golden_refs.MistralReference`, which finds each assistant turn by encoding the conversation through
  it and before it (prefixes), and spelled out for a few cases as the decoded trained text.
Tool results are never trained by default; reasoning (v13) and tool calls are, each maskable.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/golden/test_mistral_tools.py -v
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import pytest
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.tokens.tokenizers.base import SpecialTokens
from mistral_common.tokens.tokenizers.tekken import Tekkenizer

from dataprep.formats import Chat, RowError
from dataprep.look.golden_refs import MistralReference
from dataprep.mistral import MistralChatEncoder
from dataprep.mistral_files import SHIPPED_DIR
from schemas.reasons import Reason

ROOT = Path(__file__).resolve().parents[2]
DERIVED_SPECIALS = {20: SpecialTokens.args, 21: SpecialTokens.call_id, 22: SpecialTokens.begin_think,
                    23: SpecialTokens.end_think}


@functools.cache
def derived_tekken(version: str) -> Path:
    """tekken_240911.json as a tekken file of `version` (see the module docstring), in a cache folder."""
    data = json.loads((SHIPPED_DIR / "tekken_240911.json").read_text(encoding="utf-8"))
    data["config"]["version"] = version
    specials = [{"rank": t["rank"], "token_str": str(t["token_str"]), "is_control": True}
                for t in Tekkenizer.DEPRECATED_SPECIAL_TOKENS]
    specials += [{"rank": r, "token_str": str(s), "is_control": True} for r, s in DERIVED_SPECIALS.items()]
    data["special_tokens"] = specials
    folder = Path(__file__).resolve().parents[2] / ".pytest_cache" / "derived_tekken"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"tekken_{version}.json"
    text = json.dumps(data)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


SHIPPED = {"v2": "mistral_instruct_tokenizer_240216.model.v2", "v3": "mistral_instruct_tokenizer_240323.model.v3",
           "v7": "mistral_instruct_tokenizer_241114.model.v7", "tekken-v3": "tekken_240911.json"}
DERIVED = ("v7", "v11", "v13")
VERSIONS = [*SHIPPED, *(f"tekken-{v}" for v in DERIVED)]


def source(version: str) -> str:
    if version in SHIPPED:
        return f"mistral:{SHIPPED[version]}"
    return f"mistral:{derived_tekken(version.removeprefix('tekken-'))}"


@functools.cache
def encoder(version: str) -> MistralChatEncoder:
    return MistralChatEncoder(source(version), ROOT)


@functools.cache
def reference(version: str) -> MistralReference:
    return MistralReference(encoder(version).path)


def number(version: str) -> int:
    return int(encoder(version).version.value.removeprefix("v"))


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Local time in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
IDS = {"get_weather": "a1B2c3D4e", "get_time": "Z9y8X7w6v"}


def call(name: str, **args: Any) -> dict[str, Any]:
    return {"id": IDS[name], "type": "function", "function": {"name": name, "arguments": args}}


def tool(content: str, name: str) -> dict[str, Any]:
    return {"role": "tool", "name": name, "tool_call_id": IDS[name], "content": content}


U = {"role": "user", "content": "What's the weather in Paris, in Celsius?"}
ROWS: dict[str, dict[str, Any]] = {
    "call_then_answer": {"tools": [WEATHER], "messages": [
        U, {"role": "assistant", "content": "", "tool_calls": [call("get_weather", city="Paris", unit="C")]},
        tool('{"temperature": 21, "sky": "clear"}', "get_weather"),
        {"role": "assistant", "content": "It is 21 °C and clear in Paris."}]},
    "history_then_question": {"tools": [WEATHER], "messages": [
        {"role": "system", "content": "You are a weather bot."}, U,
        {"role": "assistant", "content": "", "tool_calls": [call("get_weather", city="Paris")]},
        tool("21 C", "get_weather"), {"role": "assistant", "content": "21 °C."},
        {"role": "user", "content": "Thanks!"}, {"role": "assistant", "content": "You're welcome."}]},
    "string_arguments": {"tools": [WEATHER], "messages": [
        U, {"role": "assistant", "content": "", "tool_calls": [
            {"id": IDS["get_weather"], "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "C"}'}}]},
        tool("21", "get_weather"), {"role": "assistant", "content": "21 degrees."}]},
    "two_calls": {"tools": [WEATHER, TIME], "messages": [
        {"role": "user", "content": "Weather and time in Tokyo?"},
        {"role": "assistant", "content": "", "tool_calls": [call("get_weather", city="Tokyo"),
                                                            call("get_time", city="Tokyo")]},
        tool("18 C", "get_weather"), tool("09:00", "get_time"),
        {"role": "assistant", "content": "18 °C, and it is 9 am."}]},
    "final_call_without_id": {"tools": [WEATHER], "messages": [  # finetuning mode: the last call may have none
        U, {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}]},
    "content_and_call": {"tools": [WEATHER], "messages": [
        U, {"role": "assistant", "content": "Let me look that up.", "tool_calls": [call("get_weather", city="Paris")]},
        tool("21 C", "get_weather"), {"role": "assistant", "content": "21 °C."}]},
}
# What mistral-common cannot encode, per version: (shape, first version that can).
NEEDS = {"two_calls": 3, "content_and_call": 7}  # v2: one tool result per call turn; content + calls: v7
NO_ID_BEFORE = 13  # v13 wants an id on every call


def as_chat(row: dict[str, Any], train: tuple[str, ...] = ("assistant",), **options: bool) -> Chat:
    """The row as chat_rows.py makes it: JSON-string arguments parsed, reasoning under both keys."""
    messages = copy.deepcopy(row["messages"])
    for m in messages:
        for c in m.get("tool_calls", []):
            if isinstance(c["function"]["arguments"], str):
                c["function"]["arguments"] = json.loads(c["function"]["arguments"])
        if "reasoning_content" in m:
            m["thinking"] = m["reasoning_content"]
    return Chat(messages, [m["role"] in train for m in messages], [None] * len(messages), tools=row.get("tools"),
                train_reasoning=options.get("train_on_reasoning", True),
                train_tool_calls=options.get("train_on_tool_calls", True))


def from_openai_ids(version: str, row: dict[str, Any]) -> list[int]:
    """mistral-common alone: its OpenAI converter and encode_chat_completion (the reference's own load of the file,
    in finetuning mode)."""
    tok = reference(version).finetuning
    request = ChatCompletionRequest.from_openai(copy.deepcopy(row["messages"]), tools=row.get("tools"))
    return list(tok.encode_chat_completion(request).tokens)


def encodable(version: str, shape: str) -> bool:
    return number(version) >= NEEDS.get(shape, 0) and (shape != "final_call_without_id"
                                                      or number(version) < NO_ID_BEFORE)


CASES = [pytest.param(v, s, id=f"{v}-{s}") for v in VERSIONS for s in ROWS]


@pytest.mark.parametrize(("version", "shape"), CASES)
def test_tool_calls_token_exact(version: str, shape: str) -> None:
    enc, row = encoder(version), ROWS[shape]
    if not encodable(version, shape):
        with pytest.raises(RowError) as e:
            enc.encode(as_chat(row), "turn", False)
        assert e.value.reason is Reason.template_error
        with pytest.raises(Exception):  # noqa: B017  mistral-common refuses it too (its own exception types)
            from_openai_ids(version, row)
        return
    ids, labels = enc.encode(as_chat(row), "turn", False)
    assert ids.tolist() == from_openai_ids(version, row)
    ref_ids, ref_labels = reference(version).ids_and_labels(as_chat(row), "turn")
    assert ref_ids == ids.tolist() and ref_labels is not None
    assert labels.tolist() == ref_labels


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("shape", ["call_then_answer", "two_calls", "history_then_question"])
def test_tool_calls_can_be_masked(version: str, shape: str) -> None:
    if not encodable(version, shape):
        pytest.skip(f"{version} cannot encode {shape}")
    chat = as_chat(ROWS[shape], train_on_tool_calls=False)
    ids, labels = encoder(version).encode(chat, "turn", False)
    _, ref_labels = reference(version).ids_and_labels(chat, "turn")
    assert labels.tolist() == ref_labels
    calls = encoder(version)._markers.ids["[TOOL_CALLS]"]
    assert calls in ids.tolist() or (number(version) == 2 and shape == "history_then_question")
    assert calls not in labels.tolist()


def trained_text(version: str, labels: list[int]) -> str:
    return encoder(version).decode([t for t in labels if t != -100], keep_special=True)


def test_what_is_trained_spelled_out() -> None:
    """The trained tokens of call_then_answer decoded: the call and the answer with their </s>; the tool result
    and the tool definitions are never trained. v2 and v3 write calls as JSON after [TOOL_CALLS]; v11 as
    name [CALL_ID] id [ARGS] arguments; v13 without the id."""
    want = {
        "tekken-v3": '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}, "id": '
                     '"a1B2c3D4e"}]</s>It is 21 °C and clear in Paris.</s>',
        "tekken-v11": '[TOOL_CALLS]get_weather[CALL_ID]a1B2c3D4e[ARGS]{"city": "Paris", "unit": "C"}</s>It is 21 °C '
                      'and clear in Paris.</s>',
        "tekken-v13": '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "unit": "C"}</s>It is 21 °C and clear in '
                      'Paris.</s>',
    }
    for version, text in want.items():
        _, labels = encoder(version).encode(as_chat(ROWS["call_then_answer"]), "turn", False)
        assert trained_text(version, labels.tolist()) == text


def test_v2_drops_calls_before_the_last_user_turn() -> None:
    """mistral-common v2 encodes tool calls and results only after the last user message: the earlier call is
    not in the ids, so nothing of it is trained; the later answers are."""
    ids, labels = encoder("v2").encode(as_chat(ROWS["history_then_question"]), "turn", False)
    assert encoder("v2")._markers.ids["[TOOL_CALLS]"] not in ids.tolist()
    assert trained_text("v2", labels.tolist()).replace("▁", " ").strip() == "21 °C.</s> You're welcome.</s>"


def test_tool_results_trained_only_when_asked() -> None:
    row = ROWS["call_then_answer"]
    for version in ("v3", "v7", "tekken-v11", "tekken-v13"):
        _, labels = encoder(version).encode(as_chat(row), "turn", False)
        assert "temperature" not in trained_text(version, labels.tolist())
        _, labels = encoder(version).encode(as_chat(row, train=("assistant", "tool")), "turn", False)
        text = trained_text(version, labels.tolist()).replace("▁", " ")
        assert '"temperature": 21' in text and "[TOOL_RESULTS]" not in text
        assert ("a1B2c3D4e[TOOL_CONTENT]" not in text) if version != "v3" else '"call_id"' in text


@pytest.mark.parametrize(("version", "bad", "match"), [
    ("v3", "call_get_weather", r"exactly 9 letters or digits"),
    ("tekken-v3", "abc", r"exactly 9 letters or digits"),
    ("v7", "a1B2c3D4-", r"exactly 9 letters or digits"),
    ("tekken-v11", "abc", r"exactly 9 letters or digits"),
])
def test_tool_call_ids_that_do_not_fit_are_quarantined(version: str, bad: str, match: str) -> None:
    row = copy.deepcopy(ROWS["history_then_question"])
    row["messages"][2]["tool_calls"][0]["id"] = row["messages"][3]["tool_call_id"] = bad
    with pytest.raises(RowError, match=match) as e:
        encoder(version).encode(as_chat(row), "turn", False)
    assert e.value.reason is Reason.template_error and e.value.field == "messages[2].tool_calls[0].id"
    assert "tool_call_id of its result" in e.value.message


def test_v13_wants_every_id() -> None:
    with pytest.raises(RowError, match="needs a tool call id") as e:
        encoder("tekken-v13").encode(as_chat(ROWS["final_call_without_id"]), "turn", False)
    assert e.value.field == "messages[1].tool_calls[0].id"


def test_v1_has_no_tools() -> None:
    enc = MistralChatEncoder("mistral:tokenizer.model.v1", ROOT)
    with pytest.raises(RowError, match="no tool tokens") as e:
        enc.encode(as_chat(ROWS["call_then_answer"]), "turn", False)
    assert e.value.reason is Reason.template_error and e.value.field == "tools"


def test_v13_orders_tool_results_as_the_calls() -> None:
    """From v13 on mistral-common puts a run of tool results in the order of the calls they answer; the labels
    follow (a trained result is still its own)."""
    row = copy.deepcopy(ROWS["two_calls"])
    row["messages"][2], row["messages"][3] = row["messages"][3], row["messages"][2]
    enc = encoder("tekken-v13")
    ids, labels = enc.encode(as_chat(row, train=("assistant", "tool")), "turn", False)
    assert ids.tolist() == from_openai_ids("tekken-v13", row)
    text = trained_text("tekken-v13", labels.tolist())
    assert text.index("18 C") < text.index("09:00")


R = "reasoning_content"
REASONING: dict[str, dict[str, Any]] = {
    "final_reasoning": {"messages": [
        {"role": "user", "content": "Is 91 prime?"},
        {"role": "assistant", R: "91 = 7 × 13.", "content": "No: 91 = 7 × 13."}]},
    "earlier_reasoning": {"messages": [
        {"role": "user", "content": "2+2?"}, {"role": "assistant", R: "Add them.", "content": "4"},
        {"role": "user", "content": "3+3?"}, {"role": "assistant", R: "\nAdd them again.\n", "content": "6"}]},
    "reasoning_only": {"messages": [
        {"role": "user", "content": "Think about it."}, {"role": "assistant", R: "Thinking.", "content": ""}]},
    "reasoning_and_tools": {"tools": [WEATHER], "messages": [
        U, {"role": "assistant", R: "I need the weather tool.", "content": "",
            "tool_calls": [call("get_weather", city="Paris", unit="C")]},
        tool("21", "get_weather"),
        {"role": "assistant", R: "The tool said 21.", "content": "21 °C in Paris."}]},
}


@pytest.mark.parametrize("shape", REASONING)
@pytest.mark.parametrize("train_on_reasoning", [True, False])
def test_reasoning_as_think_chunks_v13(shape: str, train_on_reasoning: bool) -> None:
    chat = as_chat(REASONING[shape], train_on_reasoning=train_on_reasoning)
    ids, labels = encoder("tekken-v13").encode(chat, "turn", False)
    assert ids.tolist() == from_openai_ids("tekken-v13", REASONING[shape])
    _, ref_labels = reference("tekken-v13").ids_and_labels(chat, "turn")
    assert labels.tolist() == ref_labels


def test_reasoning_trained_text_v13() -> None:
    _, labels = encoder("tekken-v13").encode(as_chat(REASONING["final_reasoning"]), "turn", False)
    assert trained_text("tekken-v13", labels.tolist()) == "[THINK]91 = 7 × 13.[/THINK]No: 91 = 7 × 13.</s>"
    _, labels = encoder("tekken-v13").encode(as_chat(REASONING["final_reasoning"], train_on_reasoning=False),
                                             "turn", False)
    assert trained_text("tekken-v13", labels.tolist()) == "[THINK][/THINK]No: 91 = 7 × 13.</s>"


@pytest.mark.parametrize("version", [v for v in VERSIONS if v != "tekken-v13"])
def test_reasoning_without_think_tokens_is_quarantined(version: str) -> None:
    with pytest.raises(RowError, match=r"no \[THINK\] tokens") as e:
        encoder(version).encode(as_chat(REASONING["final_reasoning"]), "turn", False)
    assert e.value.reason is Reason.template_error and e.value.field == "messages[1].reasoning_content"
