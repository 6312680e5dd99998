"""chat_template_kwargs and default_system_message, as Axolotl 0.21.0 reads them: the kwargs are variables of
every render (checked here against transformers' apply_chat_template on real tokenizers, through `tessera
golden` too), part of the fingerprint and recorded in the manifest; default_system_message only edits the
chatml template. The token-for-token comparison with Axolotl itself is in test_axolotl_labels.py.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/dataprep/test_template_kwargs.py -v
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from dataprep.cli import main
from dataprep.explain import explain
from dataprep.fetch_tokenizers import tokenizer_dir
from dataprep.formats import Chat
from dataprep.look.golden_refs import template_reference
from dataprep.render import ChatRenderer, compile_template, resolve_template
from dataprep.template_names import AXOLOTL_DEFAULT_SYSTEM, with_default_system
from schemas.config import ConfigError, config_from_dict
from tests.conftest import Prepare, process_rows, write_jsonl

NO_THINKING = {"enable_thinking": False}
ROWS = [{"messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"},
                      {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]},
        {"messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Capital of France?"},
                      {"role": "assistant", "content": "Paris."}]}]
CHATS = [{"messages": [{"role": "user", "content": f"Count to {i}."},
                       {"role": "assistant", "content": " ".join(str(k) for k in range(1, i + 2))}]}
         for i in range(12)]


def hf(family: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir(family)))


def as_chat(row: dict[str, Any]) -> Chat:
    messages = [dict(m) for m in row["messages"]]
    return Chat(messages, [m["role"] == "assistant" for m in messages], [None] * len(messages))


def test_enable_thinking_equals_apply_chat_template() -> None:
    """Qwen3's own template with enable_thinking false: ids and labels are those of apply_chat_template(...,
    enable_thinking=False); the reference without the kwarg disagrees on the labels (the empty think block)."""
    ours = process_rows(tokenizer_dir("qwen3"), {"type": "chat_template"}, ROWS, chat_template="tokenizer_default",
                        chat_template_kwargs=NO_THINKING)
    tok = hf("qwen3")
    for row, r in zip(ROWS, ours, strict=True):
        ids, labels = template_reference(tok, as_chat(row), None, NO_THINKING)
        assert r.input_ids.tolist() == ids and r.labels.tolist() == labels
        assert template_reference(tok, as_chat(row))[1] != labels


def test_a_kwarg_the_template_does_not_read_changes_nothing() -> None:
    kwargs = {"reasoning_effort": "high", "nested": {"a": [1, 2.5, None, True]}}
    plain, given = (process_rows(tokenizer_dir("qwen2.5"), {"type": "chat_template"}, ROWS, chat_template="chatml",
                                 **top) for top in ({}, {"chat_template_kwargs": kwargs}))
    for a, b in zip(plain, given, strict=True):
        assert a.input_ids.tolist() == b.input_ids.tolist() and a.labels.tolist() == b.labels.tolist()


def test_kwargs_override_special_tokens_as_transformers_does() -> None:
    """transformers renders with {**special_tokens_map, **kwargs}: a kwarg named like a special token wins."""
    source = "{{ bos_token }}|{{ eos_token }}|{{ flag }}|{{ messages[0]['content'] }}"
    tok = hf("qwen2.5")
    kwargs = {"eos_token": "<|endoftext|>", "flag": [1, {"a": "b"}]}
    renderer = ChatRenderer(compile_template(source, datetime.date(2026, 1, 1)),
                            {"bos_token": "", "eos_token": "<|im_end|>"}, ["<|im_end|>"], "turn", False,
                            template_kwargs=kwargs)
    messages = [{"role": "user", "content": "Hi"}]
    expected = tok.apply_chat_template(messages, chat_template=source, tokenize=False, bos_token="", **kwargs)
    assert renderer.render_text(messages, False) == expected == "|<|endoftext|>|[1, {'a': 'b'}]|Hi"


def test_golden_passes_with_the_kwargs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_jsonl(tmp_path / "chat.jsonl", [*ROWS, *CHATS])
    config = {"tokenizer_config": str(tokenizer_dir("qwen3")), "chat_template_kwargs": NO_THINKING,
              "datasets": [{"path": "chat.jsonl", "type": "chat_template"}]}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["golden", str(tmp_path / "run.yaml"), "--samples", "8"]) == 0
    assert "golden: 8 samples match the inference path (ids and labels)" in capsys.readouterr().out


def test_fingerprint_and_manifest_follow_the_kwargs(prepare: Prepare, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "chat.jsonl", CHATS)
    cfg = {"tokenizer_config": str(tokenizer_dir("qwen3")), "chat_template": "tokenizer_default",
           "datasets": [{"path": "chat.jsonl", "type": "chat_template"}]}
    first = prepare(cfg)
    assert "kwargs" not in first.manifest["chat_template"]
    off = prepare({**cfg, "chat_template_kwargs": NO_THINKING})
    assert not off.cached and off.manifest["fingerprint"] != first.manifest["fingerprint"]
    assert off.manifest["chat_template"]["kwargs"] == NO_THINKING
    on = prepare({**cfg, "chat_template_kwargs": {"enable_thinking": True}})
    assert not on.cached and on.manifest["fingerprint"] not in (first.manifest["fingerprint"],
                                                                 off.manifest["fingerprint"])


def test_default_system_message_edits_only_chatml(prepare: Prepare, tmp_path: Path) -> None:
    """Axolotl's rule, on a text that has the sentence (qwen_25's) and on the chatml template, which has not."""
    qwen25 = resolve_template("qwen_25", None, None, Path("."))[1]
    assert AXOLOTL_DEFAULT_SYSTEM in qwen25
    edited = with_default_system("chatml", qwen25, "You are a pirate.")
    assert edited == qwen25.replace(AXOLOTL_DEFAULT_SYSTEM, "You are a pirate.") != qwen25
    assert with_default_system("qwen_25", qwen25, "You are a pirate.") == qwen25
    chatml = resolve_template("chatml", None, None, Path("."))[1]
    assert with_default_system("chatml", chatml, "You are a pirate.") == chatml
    # So a prepare with it writes what one without it writes, and a changed value still re-prepares.
    write_jsonl(tmp_path / "chat.jsonl", CHATS)
    cfg = {"datasets": [{"path": "chat.jsonl", "type": "chat_template"}]}
    plain = prepare(cfg, "plain")
    given = prepare({**cfg, "default_system_message": "You are a pirate."}, "given")
    assert given.manifest["fingerprint"] != plain.manifest["fingerprint"]
    for name in ("shards/train-00000.arrow", "samples.parquet", "tokenizer/chat_template.jinja"):
        assert (plain.out / name).read_bytes() == (given.out / name).read_bytes(), name


@pytest.mark.parametrize(("kwargs", "wanted"), [
    ({"tools": []}, "chat_template_kwargs.tools: tools come from each row (datasets[].field_tools)"),
    ({"add_generation_prompt": True}, "chat_template_kwargs.add_generation_prompt: it is set per call"),
    ({"tokenize": False}, "chat_template_kwargs.tokenize: an apply_chat_template tokenizing option"),
    ({"a-b": 1}, "chat_template_kwargs.'a-b': a template variable name is a Python identifier"),
    ({"when": datetime.date(2026, 1, 1)}, "chat_template_kwargs.when: date values are not allowed"),
    ({"deep": {"x": [{1: 2}]}}, "chat_template_kwargs.deep.x[0]: mapping key 1 is not text; quote it"),
    # A variable shadows the template function of its name: `namespace: 1` failed every render with "'int' object
    # is not callable", which did not say that the config caused it.
    ({"namespace": 1}, "chat_template_kwargs.namespace: shadows the template function namespace()"),
    ({"raise_exception": "x"}, "chat_template_kwargs.raise_exception: shadows the template function"),
    ({"strftime_now": "x"}, "chat_template_kwargs.strftime_now: shadows the template function"),
])
def test_bad_kwargs_are_config_errors(kwargs: dict[str, Any], wanted: str) -> None:
    with pytest.raises(ConfigError) as e:
        config_from_dict({"tokenizer_config": "x", "chat_template_kwargs": kwargs})
    assert wanted in str(e.value), str(e.value)


def test_kwargs_with_a_mistral_tokenizer_are_an_error() -> None:
    with pytest.raises(ConfigError) as e:
        config_from_dict({"tokenizer_config": "mistral:x", "chat_template_kwargs": NO_THINKING})
    assert ("chat_template_kwargs (enable_thinking) has no effect with the mistral-common tokenizer 'mistral:x'"
            in str(e.value)), str(e.value)


def test_explain_says_what_they_do() -> None:
    def said(**top: Any) -> dict[str, str]:
        return dict(explain(config_from_dict({"tokenizer_config": "x", **top})))

    assert "pass the same ones to apply_chat_template at inference" in said(
        chat_template_kwargs=NO_THINKING)["chat_template_kwargs"]
    assert said(chat_template="chatml", default_system_message="Hi")["default_system_message"].startswith(
        'no effect: it replaces "You are a helpful assistant." in the chatml template, which (in Axolotl 0.21.0')
    assert said(chat_template="llama3", default_system_message="Hi")["default_system_message"].startswith(
        "no effect: Axolotl applies it only with chat_template: chatml (here llama3)")
    assert "default_system_message" not in said(chat_template="chatml")


def test_generate_renders_its_prompt_with_the_kwargs() -> None:
    """`tessera generate` must prompt as the data was trained: with enable_thinking false the empty think block
    is part of the prompt (the model was never trained to write it)."""
    from train.generate import end_of_turn_token, prompt_ids

    tok = hf("qwen3")
    messages = [{"role": "user", "content": "Hi"}]
    assert tok.decode(prompt_ids(tok, messages, "2026-01-01", NO_THINKING)).endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert tok.decode(prompt_ids(tok, messages, "2026-01-01")).endswith("<|im_start|>assistant\n")
    assert end_of_turn_token(tok, "2026-01-01", NO_THINKING) == "<|im_end|>"
