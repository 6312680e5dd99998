"""Token for token against Axolotl itself: the input_ids and labels of `type: chat_template` rows (and of the
instruct, input_output and completion types) equal what Axolotl 0.21.0's own strategies produce for the same
dataset config and rows (tests/axolotl_reference.py imports them from the pinned wheel), over templates x
fixture tokenizers x roles_to_train / train_on_eos / train_on_eot / eot_tokens / train_on_inputs and the
dataset options, on conversations with and without system prompt, several turns, a last user turn,
consecutive same roles and non-ASCII text.

Compared as Axolotl's pipeline ends: a sample whose labels are all -100 is dropped by Axolotl's trainer
(drop_no_trainable_tokens) and quarantined by Tessera (no_trainable_tokens); a row Axolotl raises on is
quarantined. Tessera's label 0 is always -100 (the shift never reads it): compared everywhere else.
Each deliberate difference has a test below that shows both sides; README ("Labels compared with Axolotl")
says why.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/dataprep/test_axolotl_labels.py -v
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from dataprep.fetch_tokenizers import tokenizer_dir
from tests import axolotl_reference as ref
from tests.conftest import process_rows
from tests.golden.test_templates import hf_tokenizer

U, A, S = "user", "assistant", "system"


@pytest.fixture(scope="module", autouse=True)
def axolotl_package() -> None:
    try:
        ref.package_dir()
    except RuntimeError as e:  # no cached wheel and PyPI unreachable
        pytest.skip(f"the axolotl wheel cannot be fetched: {e}")


def conv(*turns: tuple[str, str]) -> dict[str, Any]:
    return {"messages": [{"role": r, "content": c} for r, c in turns]}


CONVS = {
    "one": conv((U, "Hello!"), (A, "Hi, how can I help?")),
    "system": conv((S, "You are terse."), (U, "Capital of France?"), (A, "Paris.")),
    "multi": conv((U, "1+1?"), (A, "2"), (U, "2+2?"), (A, "4")),
    "last_user": conv((U, "1+1?"), (A, "2"), (U, "thanks")),
    "same_roles": conv((U, "a"), (U, "b"), (A, "c"), (A, "d")),
    "unicode": conv((U, "东京? 👨‍👩‍👧"), (A, "Café\u0301 — ok\n\n| a | b |")),
}
WS = conv((U, "  hi  "), (A, " 6\n"))
OPTIONS = [{}, {"roles_to_train": [U, A]}, {"roles_to_train": []}, {"train_on_eos": "last"},
           {"train_on_eos": "all"}, {"train_on_eos": "none"}, {"train_on_inputs": True}]
PHI_EOT = {"eot_tokens": ["<|end|>"]}  # Phi-3's <|end|> is not its EOS: see test_phi_end_of_turn_by_default
# (family, chat_template or None for tokenizer_default, top-level keys)
# Qwen2.5's own template is qwen_25 byte for byte, so tokenizer_default runs on Llama 3 and Phi-3.5 (their own
# templates differ from Axolotl's llama3 / phi_3).
PAIRS = [("qwen2.5", "chatml", {}), ("qwen2.5", "qwen_25", {}), ("llama3", None, {}), ("llama3", "llama3", {}),
         ("llama3", "chatml", {}), ("phi3.5", None, PHI_EOT), ("phi3.5", "phi_3", PHI_EOT),
         ("llama2", "mistral_v1", {}), ("llama2", "mistral_v2v3", {}), ("gemma4", "gemma4", {})]


def both(family: str, template: str | None, ds: dict[str, Any], rows: list[dict[str, Any]],
         **top: Any) -> list[tuple[Any, Any]]:
    """(Axolotl's (ids, labels) or exception, Tessera's RowResult) per row."""
    ds = {"type": "chat_template", **ds}
    d = tokenizer_dir(family)
    ax = ref.tokenize(d, ds, copy.deepcopy(rows), **top, **({"chat_template": template} if template else {}))
    ours = process_rows(d, ds, copy.deepcopy(rows), chat_template=template or "tokenizer_default", **top)
    return list(zip(ax, ours, strict=True))


def differences(ax: Any, r: Any) -> str | None:
    """None when Tessera's row is Axolotl's, else what differs."""
    if isinstance(ax, Exception):
        return None if r.input_ids is None else f"Axolotl raised {ax!r}, Tessera kept the row"
    ids, labels = ax
    if r.input_ids is None:
        dropped = r.reason.value == "no_trainable_tokens" and all(x == -100 for x in labels)
        return None if dropped else f"Tessera quarantined ({r.reason.value}: {r.message})"
    ours_ids, ours = r.input_ids.tolist(), r.labels.tolist()
    if ours_ids != ids:
        return f"input_ids differ: {ours_ids} vs Axolotl's {ids}"
    assert ours[0] == -100
    diff = [(i, ids[i], labels[i], ours[i]) for i in range(1, len(ids)) if ours[i] != labels[i]]
    return f"labels differ at (position, id, Axolotl, Tessera): {diff[:8]}" if diff else None


def assert_same(pairs: list[tuple[Any, Any]], names: list[str]) -> None:
    bad = {name: d for name, (ax, r) in zip(names, pairs, strict=True) if (d := differences(ax, r))}
    assert not bad, bad


@pytest.mark.parametrize(("family", "template", "top"), PAIRS, ids=[f"{f}-{t}" for f, t, _ in PAIRS])
def test_chat_template_labels_equal_axolotls(family: str, template: str | None, top: dict[str, Any]) -> None:
    for options in OPTIONS:
        ds = {k: v for k, v in options.items() if k != "train_on_inputs"}
        extra = {**top, **({"train_on_inputs": True} if "train_on_inputs" in options else {})}
        assert_same(both(family, template, ds, list(CONVS.values()), **extra), [f"{options} {n}" for n in CONVS])


SHAREGPT = [{"conversations": [{"from": "human", "value": "Hello!"}, {"from": "gpt", "value": "Hi there."}]},
            {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "2+2?"},
                               {"from": "gpt", "value": "4"}]}]
FLAGS = [{"messages": [{"role": U, "content": "a?"}, {"role": A, "content": "no", "train": False},
                       {"role": U, "content": "b?"}, {"role": A, "content": "yes"}]},
         {"messages": [{"role": U, "content": "a?", "train": True}, {"role": A, "content": "ok"}]}]
DETAIL = [{"messages": [{"role": U, "content": "Q?"}, {"role": A, "content": "The answer is 42.", "detail": [
    {"begin_offset": 0, "end_offset": 13, "train": False}, {"begin_offset": 14, "end_offset": 16, "train": True}]}]}]
PARTS = [{"messages": [{"role": U, "content": "Q?"}, {"role": A, "content": [
             {"type": "text", "text": "Let me think.", "train": False},
             {"type": "text", "text": " The answer is 4.", "train": True}]}]},
         {"messages": [{"role": U, "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": " there"}]},
                       {"role": A, "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": " you"}]}]}]
BASE = [CONVS["one"], CONVS["system"], CONVS["multi"], CONVS["last_user"]]
DATASET_OPTIONS = {
    "sharegpt": ({"field_messages": "conversations", "message_property_mappings": {"role": "from",
                                                                                   "content": "value"}}, SHAREGPT),
    "sharegpt_legacy_keys": ({"field_messages": "conversations", "message_field_role": "from",
                              "message_field_content": "value"}, SHAREGPT),
    "drop_system_message": ({"drop_system_message": True}, [CONVS["system"]]),
    "message_field_training": ({"message_field_training": "train"}, FLAGS),
    "message_field_training_detail": ({"message_field_training_detail": "detail"}, DETAIL),
    "content_parts": ({}, PARTS),
    "train_on_eot_turn": ({"train_on_eot": "turn"}, BASE),
    "train_on_eot_last": ({"train_on_eot": "last", "train_on_eos": "last"}, BASE),
    "train_on_eot_all_eos_turn": ({"train_on_eot": "all", "train_on_eos": "turn"}, BASE),
    "train_on_eot_none": ({"train_on_eot": "none", "train_on_eos": "none"}, BASE),
}
OPTION_PAIRS = [("qwen2.5", "chatml", {}), ("llama3", "llama3", {}), ("phi3.5", "phi_3", PHI_EOT),
                ("gemma4", "gemma4", {})]


@pytest.mark.parametrize("option", sorted(DATASET_OPTIONS))
def test_dataset_options_equal_axolotls(option: str) -> None:
    ds, rows = DATASET_OPTIONS[option]
    for family, template, top in OPTION_PAIRS:
        assert_same(both(family, template, ds, rows, **top), [f"{family}/{template} row {i}" for i in range(len(rows))])


def test_reasoning_and_split_thinking_equal_axolotls() -> None:
    think = [conv((U, "2+2?"), (A, "<think>\nadd them\n</think>\n\n4"))]
    reasoning = [{"messages": [{"role": U, "content": "2+2?"},
                               {"role": A, "content": "4", "reasoning_content": "Two plus two."}]}]
    for family, template in (("qwen2.5", "chatml"), ("qwen3", "qwen3"), ("gemma4", "gemma4")):
        assert_same(both(family, template, {"split_thinking": True}, think), ["split_thinking"])
        assert_same(both(family, template, {}, reasoning), ["reasoning_content"])


def test_first_word_of_a_reply_after_the_templates_space_is_trained() -> None:
    """Mistral's '[/INST] Hi': SentencePiece makes ' Hi' one token that starts on the template's space. Axolotl
    trains it (every token a turn overlaps); Tessera used to leave the first word of every reply untrained."""
    [(ax, r)] = both("llama2", "mistral_v1", {}, [CONVS["one"]])
    assert differences(ax, r) is None
    tok = hf_tokenizer("llama2", "mistral_v1")
    assert tok.decode([t for t in r.labels.tolist() if t != -100]) == "Hi, how can I help?</s>"


@pytest.mark.parametrize(("family", "template"), [("qwen2.5", "chatml"), ("llama3", "llama3"), ("gemma4", "gemma4"),
                                                  ("llama2", "mistral_v1")])
def test_whitespace_edged_content_equals_axolotls(family: str, template: str) -> None:
    for options in ({}, {"roles_to_train": [U, A]}):
        assert_same(both(family, template, options, [WS]), [str(options)])


def test_trimmed_leading_whitespace_is_the_templates() -> None:
    """mistral_v2v3 writes '[/INST] ' + content|trim: for content ' 6\n' the space before '6' is the template's,
    so the lone '▁' is not trained (Axolotl's render diff; Tessera used to give it to the turn)."""
    for options in ({}, {"roles_to_train": [U, A]}):
        assert_same(both("llama2", "mistral_v2v3", options, [WS]), [str(options)])


def test_header_token_that_swallows_whitespace_is_not_trained() -> None:
    """Deliberate: Phi-3's <|assistant|> (rstrip) swallows the answer's leading space, so it overlaps the turn
    and Axolotl trains the header token itself; Tessera trains the answer only."""
    [(ax, r)] = both("phi3.5", "phi_3", {}, [WS], **PHI_EOT)
    tok = hf_tokenizer("phi3.5", "phi_3")
    ids, labels = ax
    diff = [i for i in range(len(ids)) if labels[i] != r.labels[i]]
    assert [tok.convert_ids_to_tokens(ids[i]) for i in diff] == ["<|assistant|>"]
    assert labels[diff[0]] == ids[diff[0]] and r.labels[diff[0]] == -100


def test_phi_end_of_turn_by_default() -> None:
    """Deliberate: without eot_tokens Axolotl's end-of-turn token is the tokenizer's EOS, which Phi-3's turns do
    not end with (<|end|>; Axolotl warns), so its model never learns to stop; Tessera trains the first special
    token after each turn. With eot_tokens: [<|end|>] both agree (the matrix above)."""
    [(ax, r)] = both("phi3.5", "phi_3", {}, [CONVS["multi"]])
    tok = hf_tokenizer("phi3.5", "phi_3")
    ids, labels = ax
    ours = r.labels.tolist()
    diff = [i for i in range(len(ids)) if labels[i] != ours[i]]
    assert [tok.convert_ids_to_tokens(ids[i]) for i in diff] == ["<|end|>", "<|end|>"]
    assert all(labels[i] == -100 and ours[i] == ids[i] for i in diff)


def test_qwen3_empty_think_block_is_trained() -> None:
    """Deliberate: for an answer without reasoning Qwen3's template writes an empty think block that the model
    generates after `<|im_start|>assistant\\n<think>\\n\\n` (Axolotl's qwen3 generation prompt); Axolotl trains
    the content only, Tessera the block's `</think>\\n\\n` too."""
    [(ax, r)] = both("qwen3", "qwen3", {}, [CONVS["one"]])
    ids, labels = ax
    ours = r.labels.tolist()
    diff = [i for i in range(len(ids)) if labels[i] != ours[i]]
    assert hf_tokenizer("qwen3", "qwen3").decode([ids[i] for i in diff]) == "</think>\n\n"
    assert all(labels[i] == -100 and ours[i] == ids[i] for i in diff)


@pytest.mark.parametrize("template", [None, "qwen3"])
def test_chat_template_kwargs_equal_axolotls(template: str | None) -> None:
    """chat_template_kwargs reach every render, Axolotl's as Tessera's: with enable_thinking false Qwen3's
    generation prompt holds the empty think block, so neither trains it (unlike the test above)."""
    kwargs = {"chat_template_kwargs": {"enable_thinking": False}}
    for options in OPTIONS:
        ds = {k: v for k, v in options.items() if k != "train_on_inputs"}
        extra = {**kwargs, **({"train_on_inputs": True} if "train_on_inputs" in options else {})}
        assert_same(both("qwen3", template, ds, list(CONVS.values()), **extra), [f"{options} {n}" for n in CONVS])
    [(_, off)], [(_, on)] = (both("qwen3", template, {}, [CONVS["one"]], **top) for top in (kwargs, {}))
    assert off.input_ids.tolist() == on.input_ids.tolist()  # past turns: the kwarg only changes the prompt
    untrained = [t for t, a, b in zip(on.input_ids.tolist(), off.labels, on.labels, strict=True) if a != b]
    # Axolotl's qwen3 prompt already opens the block; the official one (tokenizer_default) does not.
    assert hf_tokenizer("qwen3", "qwen3").decode(untrained) == ("</think>\n\n" if template else
                                                                "<think>\n\n</think>\n\n")


@pytest.mark.parametrize(("template", "message"), [("chatml", "You are a pirate."), ("qwen_25", "You are a pirate.")])
def test_default_system_message_equals_axolotls(template: str, message: str) -> None:
    """Axolotl 0.21.0 replaces "You are a helpful assistant." in the chatml template only; its chatml (as
    Tessera's) has no such text, and qwen_25, which has it, is not chatml: no row changes, in either."""
    rows = [CONVS["one"], CONVS["system"]]
    pairs = both("qwen2.5", template, {}, rows, default_system_message=message)
    assert_same(pairs, ["no system", "system"])
    plain = both("qwen2.5", template, {}, rows)
    assert [r.input_ids.tolist() for _, r in pairs] == [r.input_ids.tolist() for _, r in plain]


def test_rows_axolotl_keeps_and_tessera_quarantines() -> None:
    """Deliberate, validation: an empty assistant message (Axolotl keeps the row, trains nothing of that turn)
    and tool calls the template cannot write (chatml) are quarantined with the reason."""
    empty = conv((U, "Say nothing"), (A, ""), (U, "ok"), (A, "fine"))
    [(ax, r)] = both("qwen2.5", "chatml", {}, [empty])
    assert not isinstance(ax, Exception) and r.reason.value == "empty_content"
    call = {"role": A, "content": "", "tool_calls": [{"type": "function", "function": {
        "name": "get_weather", "arguments": {"city": "Paris"}}}]}
    tools = [{"messages": [{"role": U, "content": "Weather?"}, call, {"role": "tool", "content": "18C"},
                           {"role": A, "content": "18C."}]}]
    [(ax, r)] = both("qwen2.5", "chatml", {}, tools)
    assert not isinstance(ax, Exception) and r.reason.value == "content_not_rendered"


def test_gemma4_tool_results_inside_the_model_turn_are_not_trained() -> None:
    """Deliberate: Gemma 4 writes a tool's result inside the model's turn (`<|tool_response>response:NAME{...}
    <tool_response|>`, filled in by the inference engine, which stops generating at `<|tool_response>`).
    Axolotl trains all of it, so the model would learn to write tool results itself; Tessera trains the tool
    call, `<|tool_response>` (where generation stops) and the answer after it, not the result. Known
    inaccuracy: `response:NAME` after the stop token is trained too (the template writes it before the tool
    message's own text)."""
    call = {"role": A, "content": "", "tool_calls": [{"type": "function", "function": {
        "name": "get_weather", "arguments": {"city": "Paris"}}}]}
    row = {"messages": [{"role": U, "content": "Weather?"}, call, {"role": "tool", "content": "18C"},
                        {"role": A, "content": "It is 18C."}]}
    [(ax, r)] = both("gemma4", "gemma4", {}, [row])
    tok = hf_tokenizer("gemma4", "gemma4")
    ids, labels = ax
    assert r.input_ids.tolist() == ids

    def trained(lab: list[int]) -> str:
        return tok.decode([i for i, x in zip(ids, lab, strict=True) if x != -100])

    result = '{value:<|"|>18C<|"|>}<tool_response|>'
    assert trained(labels) == ('<|tool_call>call:get_weather{city:<|"|>Paris<|"|>}<tool_call|><|tool_response>'
                               f"response:get_weather{result}It is 18C.<turn|>")
    assert trained(r.labels.tolist()) == ('<|tool_call>call:get_weather{city:<|"|>Paris<|"|>}<tool_call|>'
                                          "<|tool_response>response:get_weatherIt is 18C.<turn|>")


ALPACA = [{"instruction": "Add the numbers.", "input": "2, 3", "output": "5"},
          {"instruction": "Say hi.", "input": "", "output": "Hi!"},
          {"instruction": " spaced ", "input": "x", "output": " y\n"}]
SEGMENTS = [{"segments": [{"text": "Q: 2+2?\n", "label": False}, {"text": "A: 4", "label": True},
                          {"text": "</s>", "label": True}]},
            {"segments": [{"text": "Hi", "label": False}, {"text": " there", "label": True}]}]
TEXTS = [{"text": "The quick brown fox."}, {"text": "东京 café\n\nline two"}]


def axolotl_rows(family: str, ds: dict[str, Any], rows: list[dict[str, Any]], **top: Any) -> list[Any]:
    strat = ref.strategy(tokenizer_dir(family), ds, **top)
    out = []
    for row in rows:
        res = strat.tokenize_prompt(copy.deepcopy(row))
        ids = res["input_ids"]
        if ids and isinstance(ids[0], list):  # completion is batched: one row in, its chunks out
            ids, labels = ids[0], res["labels"][0]
        else:
            labels = res["labels"]
        out.append((list(ids), list(labels)))
    return out


@pytest.mark.parametrize("family", ["qwen2.5", "llama3", "gemma4", "llama2", "phi3.5"])
def test_other_types_equal_axolotls(family: str) -> None:
    sentencepiece = family in ("llama2", "phi3.5")
    for train_on_inputs in (False, True):
        cases = [({"type": "input_output"}, SEGMENTS, SEGMENTS), ({"type": "completion"}, TEXTS,
                                                                   [{"text": [t["text"]]} for t in TEXTS])]
        if not sentencepiece:  # see test_instruct_response_tokenized_with_the_prompt
            cases += [({"type": style}, ALPACA, ALPACA) for style in ("alpaca", "alpaca:chat", "alpaca:chatml")]
        for ds, rows, ax_rows in cases:
            ax = axolotl_rows(family, ds, ax_rows, train_on_inputs=train_on_inputs)
            ours = process_rows(tokenizer_dir(family), ds, rows, train_on_inputs=train_on_inputs)
            assert_same(list(zip(ax, ours, strict=True)), [f"{ds} {train_on_inputs} row {i}" for i in range(len(rows))])


def test_instruct_response_tokenized_with_the_prompt() -> None:
    """Deliberate (README, instruct types): Tessera tokenizes prompt + response as one text, as inference sees
    it; Axolotl tokenizes the response on its own, so a SentencePiece tokenizer starts it with a lone '▁'."""
    [(ids, labels)] = axolotl_rows("llama2", {"type": "alpaca"}, ALPACA[:1])
    [r] = process_rows(tokenizer_dir("llama2"), {"type": "alpaca"}, ALPACA[:1])
    tok = hf_tokenizer("llama2", "chatml")
    assert tok.convert_ids_to_tokens(ids[-3:]) == ["▁", "5", "</s>"] and labels[-3:] == ids[-3:]
    assert tok.convert_ids_to_tokens(r.input_ids.tolist()[-3:]) == ["<0x0A>", "5", "</s>"]
    assert tok.decode(ids) == tok.decode(r.input_ids.tolist()).replace("\n5", "\n 5")
    # A byte-level BPE merges across the edge where the response starts without a space: ':y' is one token here,
    # trained, as Axolotl trains its 'y' (Tessera left it untrained before)
    row = {"instruction": "Hi", "input": "", "output": "y"}
    [(ids, labels)] = axolotl_rows("llama3", {"type": "alpaca:chat"}, [row])
    [r] = process_rows(tokenizer_dir("llama3"), {"type": "alpaca:chat"}, [row])
    tok = hf_tokenizer("llama3", "llama3")
    assert tok.decode(ids) == tok.decode(r.input_ids.tolist())
    assert tok.convert_ids_to_tokens(ids[-3:-1]) == [":", "y"] and labels[-3:] == [-100, *ids[-2:]]
    assert tok.convert_ids_to_tokens(r.input_ids.tolist()[-2:-1]) == [":y"] and r.labels[-2] == r.input_ids[-2]
