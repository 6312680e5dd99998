"""Golden tokenization: for every template family with a real tokenizer, on 17 conversation shapes, the
prepared ids are exactly the ids of `AutoTokenizer.apply_chat_template` (the inference path), the trained
tokens are exactly what the model generates after each assistant header up to and including its end-of-turn
token, and every generation prompt is a token prefix of the conversation where the template is
prefix-preserving. Plus the non-chat formats against `tokenizer(prompt)`.

    .venv/bin/python -m pytest tests/golden/test_templates.py -v

Expected labels are computed independently of Tessera's renderer: from transformers' own renders of each
prefix with add_generation_prompt=True (the text the model is asked to continue), and the offsets of
transformers' own tokenization. Gemma 4 is not prefix-preserving (its generation prompt opens an empty
thought channel that past turns do not have), so there the expected trained text is the trimmed content plus
<turn|>. No Llama 2 or Gemma 2/3 chat golden: their templates (Llama 2) or vocabularies (Gemma 2/3) are not
available offline; Llama 2's tokenizer is covered with the library's alpaca chat template and the non-chat
formats.
"""

from __future__ import annotations

import datetime
import functools
from pathlib import Path
from typing import Any

import pytest

from dataprep.fetch_tokenizers import tokenizer_dir
from dataprep.formats import ALPACA
from tests.conftest import process_rows

ROOT = Path(__file__).resolve().parents[2]
DATE = datetime.date(2026, 1, 1)

# case: (fixture family, library template, end-of-turn token)
FAMILIES = {
    "qwen2.5": ("qwen2.5", "qwen_25", "<|im_end|>"),
    "qwen3": ("qwen3", "qwen3_official", "<|im_end|>"),
    "qwen3@axolotl": ("qwen3", "qwen3", "<|im_end|>"),
    "llama3@axolotl": ("llama3", "llama3", "<|eot_id|>"),
    "llama3.1": ("llama3", "llama3_1", "<|eot_id|>"),
    "llama3.2": ("llama3", "llama3_2", "<|eot_id|>"),
    "llama3.3": ("llama3", "llama3_3", "<|eot_id|>"),
    "phi3.5": ("phi3.5", "phi_35_official", "<|end|>"),
    "gemma4": ("gemma4", "gemma4_official", "<turn|>"),
    "chatml@qwen2.5": ("qwen2.5", "chatml", "<|im_end|>"),
    "alpaca@llama3": ("llama3", "alpaca", "<|eot_id|>"),
    "alpaca@llama2": ("llama2", "alpaca", "</s>"),  # no Llama 2 chat template is available offline
}

U, A, S = "user", "assistant", "system"


def conv(*turns: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": r, "content": c} for r, c in turns]


LONG = " ".join(f"Sentence {i} explains step {i} of the procedure in some detail." for i in range(300))
SHAPES = {
    "one_turn": conv((U, "Hello!"), (A, "Hi, how can I help?")),
    "system": conv((S, "You are terse."), (U, "Capital of France?"), (A, "Paris.")),
    "empty_system": conv((S, ""), (U, "Hi"), (A, "Hello.")),
    "three_turns": conv((U, "1+1?"), (A, "2"), (U, "2+2?"), (A, "4"), (U, "3+3?"), (A, "6")),
    "six_turns": conv(*[t for i in range(6) for t in ((U, f"Question {i}?"), (A, f"Answer {i}."))]),
    "spaces": conv((U, "  padded question  "), (A, "  padded answer with trailing spaces   ")),
    "newlines": conv((U, "\nleading newline"), (A, "\n\nanswer after blank lines\n\n")),
    "crlf": conv((U, "line one\r\nline two"), (A, "first\r\nsecond\r\n")),
    "tabs": conv((U, "a\tb\tc"), (A, "col1\tcol2\n\tindented")),
    "combining": conv((U, "Cafe\u0301 vs Café?"), (A, "e\u0301 (NFD) and é (NFC) look the same.")),
    "cjk": conv((U, "东京和北京有什么不同？"), (A, "東京は日本の首都で、北京は中国の首都です。")),
    "rtl": conv((U, "مرحبا، كيف حالك؟"), (A, "שלום! אני בסדר, תודה.")),
    "emoji_zwj": conv((U, "Family: 👨‍👩‍👧‍👦 and flags 🏳️‍🌈"), (A, "👍🏽 Nice: 👩🏾‍💻 codes.")),
    "code_block": conv((U, "Show a loop."), (A, "```python\nfor i in range(3):   \n    print(i)  \n```\nDone.")),
    "markdown": conv((U, "# Title\n- item"), (A, "**Bold** and _italic_\n\n| a | b |\n|---|---|\n| 1 | 2 |")),
    "long_turn": conv((U, "Explain at length."), (A, LONG)),
    "template_text": conv((U, "What does {{ messages }} or {% if %} do? <s>[INST]"),
                          (A, "They are Jinja: {{ x }} prints, {% if %} branches. </s> [/INST] stays text.")),
}


@functools.cache
def hf_tokenizer(family: str, template: str) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir(family)))
    if template != "none":
        tok.chat_template = (ROOT / "dataprep/templates" / f"{template}.jinja").read_text()
    return tok


class _PinnedDatetime(datetime.datetime):
    @classmethod
    def now(cls, tz: Any = None) -> _PinnedDatetime:
        return cls(DATE.year, DATE.month, DATE.day)


@pytest.fixture(autouse=True)
def pinned_date(monkeypatch: pytest.MonkeyPatch) -> None:
    """transformers' strftime_now calls datetime.now() (and template kwargs cannot carry a function: they are
    converted to plain data), so its clock is pinned to the date Tessera renders with (chat_template_date)."""
    import transformers.utils.chat_template_utils as ctu

    monkeypatch.setattr(ctu, "datetime", _PinnedDatetime)


def hf_render(tok: Any, messages: list[dict[str, str]], generation_prompt: bool = False) -> str:
    # strftime_now passed as a template variable shadows transformers' global: the same pinned date as Tessera.
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def expected_labels(tok: Any, messages: list[dict[str, str]], eot: str) -> tuple[list[int], list[bool]]:
    full = hf_render(tok, messages)
    regions, cursor = [], 0
    for i, m in enumerate(messages):
        if m["role"] != A:
            continue
        prompt = hf_render(tok, messages[:i], generation_prompt=True)
        # Not prefix-preserving (Gemma 4): the trimmed content, found in order.
        start = len(prompt) if full.startswith(prompt) else full.index(m["content"].strip(), cursor)
        # The turn ends at the first end-of-turn token after its content (a content may quote '</s>' itself).
        core = m["content"].strip()
        end = full.index(eot, full.index(core, start) + len(core)) + len(eot)
        regions.append((start, end))
        cursor = end
    enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    # A token that the header's trailing whitespace begins and the answer continues ('\n\n' + '\n\nanswer' ->
    # 'ĊĊĊĊ') is trained too, as Axolotl trains every token a turn overlaps.
    trained = [any(a <= s < b or (s < a < e and not full[s:a].strip()) for a, b in regions)
               for s, e in enc["offset_mapping"]]
    trained[0] = False
    return enc["input_ids"], trained


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("case", FAMILIES)
def test_chat_golden(case: str, shape: str) -> None:
    family, template, eot = FAMILIES[case]
    messages = SHAPES[shape]
    tok = hf_tokenizer(family, template)
    [r] = process_rows(tokenizer_dir(family), {"type": "chat_template"}, [{"messages": messages}],
                       chat_template=template, sequence_len=8192)
    assert r.status.value == "kept", (r.reason, r.message)
    ids = r.input_ids.tolist()
    # (a) the ids inference produces
    reference = tok.apply_chat_template(messages, tokenize=True)
    assert ids == reference["input_ids"]
    # (b) trained = what the model generates after each assistant header, through its end-of-turn token
    expected_ids, expected_trained = expected_labels(tok, messages, eot)
    assert expected_ids == ids
    trained = [lab != -100 for lab in r.labels.tolist()]
    if trained != expected_trained:
        diff = [(i, tok.decode([ids[i]]), t) for i, (t, e) in enumerate(zip(trained, expected_trained, strict=True))
                if t != e]
        pytest.fail(f"trained mask differs at (position, token, ours): {diff[:10]}")
    quoted = sum(m["content"].count(eot) for m in messages if m["role"] == A)
    assert tok.decode([t for t in r.labels.tolist() if t != -100]).count(eot) == quoted + sum(
        m["role"] == A for m in messages)
    # (c) each generation prompt is a token prefix of the conversation where the template preserves prefixes,
    # unless a token straddles the prompt's end (a content that starts with newlines can merge with the
    # header's newline into one token: then no tokenization of the prompt can be a prefix).
    full = hf_render(tok, messages)
    starts = {s for s, _ in tok(full, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]}
    for i, m in enumerate(messages):
        if m["role"] == A:
            prompt = hf_render(tok, messages[:i], generation_prompt=True)
            if full.startswith(prompt) and len(prompt) in starts:
                prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
                assert ids[:len(prompt_ids)] == prompt_ids


@pytest.mark.parametrize(("family", "template"), [("qwen2.5", "qwen_25"), ("qwen3", "qwen3_official"),
                                                ("llama3", "llama3_1"), ("phi3.5", "phi_35_official"),
                                                ("gemma4", "gemma4_official")])
def test_library_template_renders_like_the_official_one(family: str, template: str) -> None:
    official = hf_tokenizer(family, "none")  # the template shipped with the fixture, straight from the sdist
    library = hf_tokenizer(family, template)
    for messages in SHAPES.values():
        if template == "gemma4_official" or messages[0]["content"]:
            assert hf_render(library, messages) == hf_render(official, messages)


NON_CHAT = ["llama2", "llama3", "qwen2.5", "phi3.5", "gemma4"]
INSTRUCT_ROWS = [
    {"instruction": "Summarise the text.", "input": "  Tessera prepares data.\n", "output": "It prepares data."},
    {"instruction": "Translate to French: good morning", "input": "", "output": "Bonjour"},
    {"instruction": "Écris un haïku 🌸", "input": "",
     "output": "Vieux étang —\nune grenouille plonge\nle bruit de l'eau"},
]


@pytest.mark.parametrize("family", NON_CHAT)
def test_alpaca_golden(family: str) -> None:
    tok = hf_tokenizer(family, "none")
    results = process_rows(tokenizer_dir(family), {"type": "alpaca"}, INSTRUCT_ROWS)
    for row, r in zip(INSTRUCT_ROWS, results, strict=True):
        fmt = ALPACA.format if row["input"] else ALPACA.no_input_format
        prompt = fmt.replace("{instruction}", row["instruction"]).replace("{input}", row["input"])
        assert r.input_ids.tolist() == tok(prompt + row["output"] + tok.eos_token)["input_ids"]
        trained = tok.decode([t for t in r.labels.tolist() if t != -100])
        assert trained.strip() == (row["output"] + tok.eos_token).strip()


@pytest.mark.parametrize("family", NON_CHAT)
def test_custom_instruct_golden(family: str) -> None:
    tok = hf_tokenizer(family, "none")
    ds = {"type": {"system_prompt": "Be helpful.", "system_format": "[SYS] {system}\n",
                   "format": "Q: {instruction}\n{input}\nA: ", "no_input_format": "Q: {instruction}\nA: "}}
    results = process_rows(tokenizer_dir(family), ds, INSTRUCT_ROWS)
    for row, r in zip(INSTRUCT_ROWS, results, strict=True):
        q = (f"Q: {row['instruction']}\n{row['input']}\nA: " if row["input"] else f"Q: {row['instruction']}\nA: ")
        assert r.input_ids.tolist() == tok("[SYS] Be helpful.\n" + q + row["output"] + tok.eos_token)["input_ids"]


@pytest.mark.parametrize("family", NON_CHAT)
def test_input_output_golden(family: str) -> None:
    tok = hf_tokenizer(family, "none")
    segments = [{"text": "Question: why is the sky blue?\n", "label": False},
                {"text": "Rayleigh scattering.", "label": True}, {"text": "\n(end)", "label": False}]
    [r] = process_rows(tokenizer_dir(family), {"type": "input_output"}, [{"segments": segments}])
    # Axolotl's RawInputOutputStrategy: tokenizer(text, add_special_tokens=False) per segment, no BOS added
    pieces = [tok(s["text"], add_special_tokens=False)["input_ids"] for s in segments]
    assert r.input_ids.tolist() == [t for p in pieces for t in p]
    assert r.labels.tolist() == [-100] * len(pieces[0]) + pieces[1] + [-100] * len(pieces[2])


@pytest.mark.parametrize("family", NON_CHAT)
def test_completion_golden(family: str) -> None:
    tok = hf_tokenizer(family, "none")
    texts = ["Once upon a time, there was a tokenizer.", "  leading spaces and ünïcödé  ", "多言語のテキスト"]
    results = process_rows(tokenizer_dir(family), {"type": "completion"}, [{"text": t} for t in texts])
    for text, r in zip(texts, results, strict=True):
        ids = tok(text + tok.eos_token)["input_ids"]
        assert r.input_ids.tolist() == ids
        assert r.labels.tolist() == [-100, *ids[1:]]


def test_bos_is_never_doubled() -> None:
    # Llama 3 templates write <|begin_of_text|> and the tokenizer would add another if asked to.
    [r] = process_rows(tokenizer_dir("llama3"), {"type": "chat_template"}, [{"messages": SHAPES["one_turn"]}],
                       chat_template="llama3")
    bos = hf_tokenizer("llama3", "llama3").bos_token_id
    assert r.input_ids[0] == bos and r.input_ids[1] != bos
    [a] = process_rows(tokenizer_dir("llama3"), {"type": "alpaca"}, INSTRUCT_ROWS[:1])
    assert a.input_ids[0] == bos and a.input_ids[1] != bos


@pytest.mark.parametrize("family", ["qwen2.5", "llama3", "llama2", "phi3.5", "gemma4"])
def test_span_edge_labels_equal_the_offset_definition(family: str) -> None:
    """encode.py computes labels at span edges only; they must equal the plain per-token definition for any
    spans, including edges inside multi-byte characters, inside tokens and on stripped whitespace."""
    import random

    import numpy as np

    from dataprep.encode import labels_from_offsets, labels_from_span_edges
    from dataprep.transform import tokenizer_for
    from schemas.config import config_from_dict

    tok = tokenizer_for(config_from_dict({"tokenizer_config": str(tokenizer_dir(family)), "datasets": []}), ROOT)
    rng = random.Random(7)
    texts = [hf_render(hf_tokenizer(family, "chatml"), m) for m in SHAPES.values()]
    texts += [m["content"] for shape in SHAPES.values() for m in shape]
    for text in texts:
        enc = tok.tokenizer.encode(text, add_special_tokens=tok.adds_bos)
        ids = np.asarray(enc.ids, dtype=np.int32)
        for _ in range(8):
            cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, 2 * rng.randint(1, 3))))
            spans = [(a, b) for a, b in zip(cuts[::2], cuts[1::2], strict=False) if b > a]
            assert np.array_equal(labels_from_span_edges(ids, enc, len(text), spans),
                                  labels_from_offsets(ids, enc.offsets, spans)), (text[:40], spans)
            grab = tuple(a for a, _ in spans[::2])  # whole-turn starts also take the token straddling them
            assert np.array_equal(labels_from_span_edges(ids, enc, len(text), spans, text, grab),
                                  labels_from_offsets(ids, enc.offsets, spans, text, grab)), (text[:40], spans)
