"""Template names mean what they mean in Axolotl: for every name in Axolotl 0.21.0's ChatTemplate enum, the
library file renders exactly what Axolotl's file of that name renders, as transformers renders it
(`render_jinja_template`, the function behind `apply_chat_template`), on conversations with and without a
system prompt, several turns, reasoning and tool calls, with and without a generation prompt. The reference
text is Axolotl's own file from the pinned axolotl wheel on PyPI (dataprep/fetch_axolotl.py), not our copy.
Also: each library file Axolotl's name points at is that file byte for byte under its provenance comment; the
official variants kept under other names really render differently, as template_differences says; names that
cannot be had give an error naming the alternative; and, token-exact, for every Axolotl name with a fixture
tokenizer of its family, prepared ids equal `apply_chat_template` and the trained tokens are what the model
generates after each assistant header through its end-of-turn token. And the template cache counts as complete
only with its marker file.

    .venv/bin/python -m pytest tests/golden/test_axolotl_templates.py -v

The first run downloads the axolotl wheel (2.1 MB) with pip; later runs read the cache.
"""

from __future__ import annotations

import datetime
import functools
import json
from pathlib import Path
from typing import Any

import pytest

from dataprep.fetch_axolotl import axolotl_template, ensure_templates, provenance_comment
from dataprep.fetch_tokenizers import tokenizer_dir
from dataprep.formats import RowError
from dataprep.render import ChatRenderer, TemplateNotFound, compile_template, library_templates, resolve_template
from dataprep.template_names import (
    _NOT_AXOLOTL_BYTES,
    AXOLOTL_NAMES,
    OFFICIAL_VARIANTS,
    UNAVAILABLE,
    template_differences,
)
from schemas.reasons import Reason
from tests.conftest import process_rows
from tests.golden.test_templates import SHAPES, expected_labels, hf_tokenizer, pinned_date  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
DATE = datetime.date(2026, 1, 1)  # test_templates' pinned_date (autouse, imported above) pins transformers' clock
U, A, S, T = "user", "assistant", "system", "tool"
VARIABLES = {"bos_token": "<s>", "eos_token": "</s>"}


def conv(*turns: tuple[str, str]) -> list[dict[str, Any]]:
    return [{"role": r, "content": c} for r, c in turns]


CALL = {"role": A, "content": "", "tool_calls": [
    {"type": "function", "id": "call_1", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}
CONVERSATIONS = {
    "one_turn": conv((U, "Hello!"), (A, "Hi, how can I help?")),
    "system": conv((S, "You are terse."), (U, "Capital of France?"), (A, "Paris.")),
    "three_turns": conv((U, "1+1?"), (A, "2"), (U, "2+2?"), (A, "4"), (U, " 3+3? "), (A, " 6\n")),
    "empty_system": conv((S, ""), (U, "Hi"), (A, "Hello.")),
    "unicode": conv((U, "东京? 👨‍👩‍👧"), (A, "Café\u0301 — ok\n\n| a | b |")),
    "reasoning": [{"role": U, "content": "2+2?"},
                  {"role": A, "content": "4", "reasoning_content": "Two plus two is four."}],
    "tool_call": [{"role": U, "content": "Weather in Paris?"}, CALL,
                  {"role": T, "content": "18C", "tool_call_id": "call_1", "name": "get_weather"},
                  {"role": A, "content": "It is 18C."}],
}
EVERY_AXOLOTL_FILE = sorted(set(AXOLOTL_NAMES) | {"phi_4"})  # phi_4 ships in the wheel, not in the enum


def reference(text: str, messages: list[dict[str, Any]], generation_prompt: bool, **kwargs: Any) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template([messages], chat_template=text, add_generation_prompt=generation_prompt,
                                        **VARIABLES, **kwargs)
    return rendered[0]


def library_text(name: str) -> str:
    return (ROOT / "dataprep" / "templates" / f"{name}.jinja").read_text(encoding="utf-8")


@functools.cache
def renderer(name: str) -> ChatRenderer:
    return ChatRenderer(compile_template(library_text(name), DATE), VARIABLES, list(VARIABLES.values()), "turn",
                        False)


def tessera(name: str, messages: list[dict[str, Any]], generation_prompt: bool) -> str:
    return renderer(name).render_text(messages, generation_prompt)


def test_every_axolotl_name_is_in_the_library() -> None:
    shipped = ensure_templates()
    assert set(AXOLOTL_NAMES) <= set(shipped), "the pinned wheel lacks a name of its own enum"
    assert set(EVERY_AXOLOTL_FILE) <= set(library_templates())
    assert not set(OFFICIAL_VARIANTS) & set(AXOLOTL_NAMES)


@pytest.mark.parametrize("name", sorted(set(EVERY_AXOLOTL_FILE) - set(_NOT_AXOLOTL_BYTES)))
def test_library_file_is_axolotls_file(name: str) -> None:
    assert library_text(name) == provenance_comment(name, ensure_templates()[name]) + axolotl_template(name)


@pytest.mark.parametrize("name", EVERY_AXOLOTL_FILE)
def test_renders_like_axolotl(name: str) -> None:
    ax = axolotl_template(name)
    compared = 0
    for shape, messages in CONVERSATIONS.items():
        for generation_prompt in (False, True):
            msgs = messages[:-1] if generation_prompt else messages
            try:
                want = reference(ax, msgs, generation_prompt)
            except Exception:  # Axolotl's template refuses this conversation (gemma: no system role): so must we
                with pytest.raises(RowError) as e:
                    tessera(name, msgs, generation_prompt)
                assert e.value.reason == Reason.template_error, shape
                continue
            assert tessera(name, msgs, generation_prompt) == want, (shape, generation_prompt)
            compared += 1
    assert compared >= 6, f"{name}: Axolotl's template refused almost every conversation"


def _tool_named_type() -> list[dict[str, Any]]:
    params = {"type": "object", "properties": {"city": {"type": "string", "description": "City"},
                                               "type": {"type": "string", "description": "Kind of report"}}}
    return [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": params}}]


# What each official variant renders that Axolotl's closest name does not (or the reverse): (conversation,
# generation prompt, tools, text only the official variant has, text only Axolotl's has).
VARIANT_PROBES: dict[str, tuple[str, bool, Any, str | None, str | None]] = {
    "llama3_1": ("one_turn", False, None, "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024", None),
    "llama3_2": ("one_turn", False, None, "Today Date: 01 Jan 2026", None),
    "llama3_3": ("one_turn", False, None, "Today Date: 26 Jul 2024", None),
    "phi_35_official": ("one_turn", False, None, "<|end|>\n</s>", None),
    "qwen3_official": ("one_turn", True, None, None, "<|im_start|>assistant\n<think>\n\n"),
    "gemma4_official": ("one_turn", False, _tool_named_type(), None, "Kind of report"),
    "mistral-v3": ("system", False, None, "You are terse.", None),
    "mistral-v7": ("one_turn", False, None, None, "[SYSTEM_PROMPT]You are Mistral Small 3"),
    "mistral-tekken": ("system", False, None, "You are terse.", None),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_VARIANTS))
def test_official_variants_differ_as_documented(name: str) -> None:
    variant = OFFICIAL_VARIANTS[name]
    assert variant.closest in AXOLOTL_NAMES
    shape, generation_prompt, tools, official_only, axolotl_only = VARIANT_PROBES[name]
    messages = CONVERSATIONS[shape][:-1] if generation_prompt else CONVERSATIONS[shape]
    official = reference(library_text(name), messages, generation_prompt, tools=tools)
    axolotl = reference(axolotl_template(variant.closest), messages, generation_prompt, tools=tools)
    for only, present, absent in ((official_only, official, axolotl), (axolotl_only, axolotl, official)):
        if only is not None:
            assert only in present and only not in absent, (only, present, absent)
    said = template_differences(name)
    assert said is not None and variant.closest in said and "not an Axolotl template name" in said


def test_template_differences() -> None:
    for name in (*AXOLOTL_NAMES, "tokenizer_default", "jinja", "tokenizer_default_fallback_chatml"):
        assert template_differences(name) is None, name
    assert "ChatTemplate enum does not list it" in (template_differences("phi_4") or "")
    assert "Today Date" in (template_differences("tokenizer_default_fallback_llama3_1") or "")
    assert "neither" in (template_differences("no_such_template") or "")
    assert set(library_templates()) <= set(AXOLOTL_NAMES) | set(OFFICIAL_VARIANTS) | {"phi_4"}


@pytest.mark.parametrize("name", sorted(UNAVAILABLE))
def test_unavailable_names_say_so_and_name_the_alternative(name: str) -> None:
    with pytest.raises(TemplateNotFound) as e:
        resolve_template(name, None, None, ROOT)
    message = str(e.value)
    assert message.startswith(f"chat_template '{name}': ") and "chat_template_jinja" in message
    assert "tokenizer_default" in message and "\n" not in message


def test_misspelt_name_suggests_the_library_name() -> None:
    with pytest.raises(TemplateNotFound, match="did you mean llama3"):
        resolve_template("lama3", None, None, ROOT)


# Axolotl names whose family has a fixture tokenizer: (fixture family, end-of-turn token). phi_3 has no
# generation prompt (it writes '<|assistant|>\n' after every user turn instead). Qwen3.5's own vocabulary is not
# available offline (llama.cpp's qwen35 vocab file holds Qwen2's tokens), so qwen3_5 runs on Qwen3's, whose
# chat tokens (<|im_start|>, <|im_end|>, <think>) it shares; Qwen2-VL and Llama 3.2 Vision use the Qwen2 and
# Llama 3 vocabularies.
TOKEN_GOLDEN = {
    "llama3": ("llama3", "<|eot_id|>"),
    "llama3_2_vision": ("llama3", "<|eot_id|>"),
    "qwen2_vl": ("qwen2.5", "<|im_end|>"),
    "phi_35": ("phi3.5", "<|end|>"),
    "phi_3": ("phi3.5", "<|end|>"),
    "qwen3": ("qwen3", "<|im_end|>"),
    "qwen3_5": ("qwen3", "<|im_end|>"),
    "gemma4": ("gemma4", "<turn|>"),
    "gemma4_unified": ("gemma4", "<turn|>"),
}
TOKEN_SHAPES = ["one_turn", "system", "three_turns", "spaces", "newlines", "cjk", "code_block", "template_text"]


@pytest.mark.parametrize("shape", TOKEN_SHAPES)
@pytest.mark.parametrize("name", sorted(TOKEN_GOLDEN))
def test_token_golden(name: str, shape: str) -> None:
    family, eot = TOKEN_GOLDEN[name]
    messages = SHAPES[shape]
    tok = hf_tokenizer(family, name)
    [r] = process_rows(tokenizer_dir(family), {"type": "chat_template"}, [{"messages": messages}],
                       chat_template=name, sequence_len=8192)
    assert r.status.value == "kept", (r.reason, r.message)
    # Axolotl's text, not the library's, rendered by transformers with the family's real tokenizer
    text = tok.apply_chat_template(messages, tokenize=False, chat_template=axolotl_template(name))
    assert r.input_ids.tolist() == tok(text, add_special_tokens=False)["input_ids"]
    want_ids, want_trained = expected_labels(tok, messages, eot)
    assert want_ids == r.input_ids.tolist()
    assert [lab != -100 for lab in r.labels.tolist()] == want_trained


def test_fetch_cache_is_complete_only_with_its_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache without EXTRACTED.json (a crash mid-extraction) is extracted again from the cached wheel."""
    import shutil

    from dataprep import fetch_axolotl

    wheel = fetch_axolotl.cache_root() / "downloads" / fetch_axolotl.WHEEL_FILE
    ensure_templates()
    monkeypatch.setenv("TESSERA_CACHE", str(tmp_path))
    root = fetch_axolotl.cache_root()
    (root / "downloads").mkdir(parents=True)
    shutil.copyfile(wheel, root / "downloads" / wheel.name)  # no download: the pinned hash matches
    (root / "templates").mkdir()
    (root / "templates" / "llama3.jinja").write_text("half-written")
    hashes = ensure_templates()
    assert json.loads((root / "EXTRACTED.json").read_text())["wheel_sha256"] == fetch_axolotl.WHEEL_SHA256
    assert axolotl_template("llama3") != "half-written" and set(AXOLOTL_NAMES) <= set(hashes)
