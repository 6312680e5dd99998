"""Axolotl's named instruct types (dataprep/instruct_types.py): each renders the prompt and trains the response
exactly as Axolotl's prompter for that `type:` does, plus the type validation around them.

The expected strings are in axolotl_instruct_golden.json, produced by running Axolotl's own prompter and
tokenizing-strategy classes (src/axolotl/prompters.py, src/axolotl/prompt_tokenizers.py,
src/axolotl/prompt_strategies/{alpaca_chat,alpaca_instruct,alpaca_w_system,context_qa,creative_acr,metharme,
orcamini}.py at axolotl-ai-cloud/axolotl 067b021) on each type's documented row shape
(docs/dataset-formats/inst_tune.qmd) with a character-level tokenizer; each case names its source file. A few
cases are also written out below so that the strings can be read here.

Run: PYTHONPATH=$PWD .venv/bin/python -m pytest tests/dataprep/test_instruct_types.py -q
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dataprep import instruct_types
from dataprep.formats import RowError, Segments, to_sample, type_notes
from schemas.config import ConfigError, config_from_dict
from schemas.reasons import Reason, Status
from schemas.shard import IGNORE_INDEX
from tests.conftest import _tokenizer, process_rows

GOLDEN = json.loads((Path(__file__).parent / "axolotl_instruct_golden.json").read_text(encoding="utf-8"))["cases"]


def _dataset(type_: Any, **extra: Any) -> Any:
    return config_from_dict({"tokenizer_config": "t", "datasets": [{"path": "x", "type": type_, **extra}]}).datasets[0]


def _texts(type_: Any, row: dict[str, Any], eos: str = "<EOS>", **extra: Any) -> tuple[str, str]:
    sample = to_sample(dict(row), _dataset(type_, **extra), False, eos)
    assert isinstance(sample, Segments)
    return ("".join(t for t, trained in sample.parts if not trained),
            "".join(t for t, trained in sample.parts if trained))


@pytest.mark.parametrize("case", GOLDEN, ids=lambda c: f"{c['type']}-{'-'.join(sorted(c['row']))}")
def test_prompt_and_trained_text_are_axolotls(case: dict[str, Any]) -> None:
    assert _texts(case["type"], case["row"]) == (case["prompt"], case["trained"]), case["axolotl_source"]


def test_every_name_has_a_golden_case() -> None:
    assert {c["type"] for c in GOLDEN} == set(instruct_types.names())


@pytest.mark.parametrize("name", sorted({c["type"] for c in GOLDEN}))
def test_tokens_are_the_rendered_text(name: str, qwen_dir: Path) -> None:
    """Through the real pipeline (Qwen2.5 tokenizer): the ids are the prompt + response + EOS text tokenized
    once, and the trained tokens are the response's end through EOS."""
    case = next(c for c in GOLDEN if c["type"] == name)
    [r] = process_rows(qwen_dir, {"type": name}, [case["row"]])
    assert r.status is Status.kept, r.message
    assert r.input_ids is not None and r.labels is not None
    tok = _tokenizer(str(qwen_dir)).tokenizer
    text = case["prompt"] + case["trained"].replace("<EOS>", "<|im_end|>")
    assert tok.decode(r.input_ids.tolist(), skip_special_tokens=False) == text
    trained = tok.decode([int(t) for t in r.labels if t != IGNORE_INDEX], skip_special_tokens=False)
    # The whole response through EOS is trained; a token straddling the prompt/response edge with response text
    # in it is trained too (encode.straddles: ':' + 'The' -> ':The'), whitespace-only straddlers are the prompt's.
    response = case["trained"].replace("<EOS>", "<|im_end|>")
    head = trained[:len(trained) - len(response)] if trained.endswith(response) else None
    assert (head is not None and case["prompt"].endswith(head) and len(head) <= 2) or (
        response.endswith(trained) and not response[:len(response) - len(trained)].strip()), (trained, response)


def test_alpaca_ignores_the_rows_system_column_alpaca_w_system_uses_it() -> None:
    row = {"instruction": "Name a prime number.", "input": "", "output": "Seven.", "system": "You are terse."}
    # prompters.py AlpacaPrompter._build_result: the fixed system prompt, never the row's.
    assert _texts("alpaca", row) == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nName a prime number.\n\n### Response:\n", "Seven.<EOS>")
    # prompt_strategies/alpaca_w_system.py load -> load_chat: SystemDataPrompter(chat)
    assert _texts("alpaca_w_system", row) == (
        "SYSTEM: You are terse.\nUSER: Name a prime number.\nASSISTANT:", "Seven.<EOS>")
    assert _texts("alpaca_w_system.load_instruct", row) == (
        "You are terse.\n\n### Instruction:\nName a prime number.\n\n### Response:\n", "Seven.<EOS>")


def test_alpaca_prompt_styles() -> None:
    row = {"instruction": "Name a prime number.", "input": "small", "output": "Seven."}
    system = ("Below is an instruction that describes a task, paired with an input that provides further context. "
              "Write a response that appropriately completes the request.")
    # prompters.py AlpacaPrompter.match_prompt_style; `alpaca:phi` keeps phi's missing newline after <|end|>.
    assert _texts("alpaca:phi", row)[0] == (f"<|system|>\n{system}<|end|>\n<|user|>\nName a prime number.<|end|>"
                                            "small<|assistant|>")
    assert _texts("alpaca:chatml", row)[0] == (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n"
                                               "Name a prime number.\nsmall<|im_end|>\n<|im_start|>assistant\n")
    assert _texts("alpaca_chat", row)[0] == f"SYSTEM: {system}\nUSER: Name a prime number.\nsmall\nASSISTANT:"
    # alpaca_chat.py::load reads the dataset's `conversation:` as its style
    assert _texts("alpaca_chat", row, conversation="chatml")[0] == _texts("alpaca:chatml", row)[0]


def test_row_shaped_types() -> None:
    # prompt_tokenizers.py JeopardyPromptTokenizingStrategy: "what is " + answer; the category is the input.
    prompt, trained = _texts("jeopardy", {"question": "Has a red spot.", "category": "SPACE", "answer": "Jupiter"})
    assert prompt.endswith("### Instruction:\nHas a red spot.\n\n### Input:\nSPACE\n\n### Response:\n")
    assert trained == "what is Jupiter<EOS>"
    # prompt_tokenizers.py AlpacaMultipleChoicePromptTokenizingStrategy + MultipleChoiceConcisePrompter
    prompt, trained = _texts("concisechoice", {"question": "Prime?", "choices": ["4", "7"], "solution": "7"})
    assert prompt == ("Choose the answer that best answers the question. Be concise in your response.\n\n"
                      'USER: Prime?\n- "4"\n- "7"\nASSISTANT:') and trained == "7<EOS>"
    # prompt_strategies/metharme.py: the prompt as is, three EOS after the generation
    assert _texts("metharme", {"prompt": "<|user|>Hi<|model|>", "generation": "Hello."}) == (
        "<|user|>Hi<|model|>", "Hello.<EOS><EOS><EOS>")
    # prompt_strategies/context_qa.py load_v2: ContextV2Prompter writes the instruction alone
    assert _texts("context_qa.load_v2", {"context": "C.", "question": "Q?", "answer": "A."}) == (
        "Context: C.\nQuestion: Q?\n", "Answer: A.<EOS>")


def test_custom_type_with_empty_fields_as_in_axolotls_docs() -> None:
    # docs/dataset-formats/index.qmd: `field_system:` and `field_input:` left empty mean "no such column".
    t = {"system_prompt": "", "field_system": None, "field_instruction": "input", "field_input": None,
         "field_output": "output", "format": "[INST] {instruction} {input} [/INST]",
         "no_input_format": "[INST] {instruction} [/INST]"}
    assert _texts(t, {"input": "Hi", "output": "Hello."}) == ("[INST] Hi [/INST]", "Hello.<EOS>")


def test_missing_fields_are_quarantined_with_the_field() -> None:
    with pytest.raises(RowError) as e:
        to_sample({"question": "Q"}, _dataset("alpaca_chat.load_qa"), False, "<EOS>")
    assert e.value.reason is Reason.missing_field and e.value.field == "answer"
    with pytest.raises(RowError) as e:
        to_sample({"question": "Q", "choices": "4, 7", "solution": "7"}, _dataset("explainchoice"), False, "<EOS>")
    assert e.value.reason is Reason.wrong_type and e.value.field == "choices"


@pytest.mark.parametrize(("type_", "says"), [
    ("chatml.intel", "preference dataset (DPO/IPO/KTO/ORPO); preference training is not supported yet"),
    ("llama3.argilla", "preference training is not supported yet"),
    ("bradley_terry.chat_template", "reward-model (Bradley-Terry) dataset; reward-model training is not supported"),
    ("stepwise_supervised", "process-reward (stepwise supervised) dataset; it is not supported yet"),
    ("pygmalion", "type 'pygmalion' is not supported yet"),
    ("alpacca", "unknown dataset type 'alpacca'; did you mean 'alpaca'?"),
    ("alpaca_chat:load_qa", "did you mean 'alpaca_chat.load_qa'?"),
])
def test_unsupported_and_unknown_types_are_named(type_: str, says: str) -> None:
    with pytest.raises(ConfigError) as e:
        _dataset(type_)
    assert says in str(e.value) and "datasets[0].type" in str(e.value)


def test_sharegpt_is_read_as_chat_template_with_a_note() -> None:
    cfg = config_from_dict({"tokenizer_config": "t", "datasets": [
        {"path": "x", "type": "sharegpt", "conversation": "chatml"}]})
    ds = cfg.datasets[0]
    assert (ds.type, ds.field_messages, ds.message_field_role, ds.message_field_content) == (
        "chat_template", "conversations", "from", "value")
    assert cfg.chat_template == "chatml"  # conversation: chatml, chat_template left at its default
    [note] = type_notes(cfg.datasets, cfg.chat_template)
    assert "type: sharegpt is deprecated" in note and "conversation: chatml -> chat_template: chatml" in note
    explicit = config_from_dict({"tokenizer_config": "t", "chat_template": "llama3", "datasets": [
        {"path": "x", "type": "sharegpt", "conversation": "chatml"}]})
    assert explicit.chat_template == "llama3"
    assert "but chat_template is llama3" in type_notes(explicit.datasets, explicit.chat_template)[0]
