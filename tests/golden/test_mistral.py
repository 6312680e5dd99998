"""Golden Mistral tokenization: `MistralChatEncoder` against mistral-common's own `encode_chat_completion`
(what vLLM serves Mistral models with), for SentencePiece v3, SentencePiece v7 and tekken, on 26 conversation
shapes; the wheel's other tokenizers (v1, v2, v7m1, tekken 240718) on the same shapes. Also: labels (trained
tokens decode to each assistant turn as mistral-common encodes it, plus </s>), every train_on_eos mode, the
rows that are quarantined and why, the tokenizer_config resolver, the saved tokenizer folder (loaded back
offline by AutoTokenizer as transformers' MistralCommonBackend), the generated library templates, and the
known disagreements of the HF route.

The HF route is transformers' conversion of the same tokenizer file plus the Jinja template mistral-common
generates (dataprep/templates/mistral-*.jinja), rendered and tokenized the way Tessera does for HF tokenizers.
Its disagreements with mistral-common are pinned here shape by shape, so a change on either side shows up. The
SentencePiece conversion needs protobuf. Without it those cases are skipped and the skip says why.

All tokenizers are the real files shipped in the mistral-common wheel. No mocks, no network.

    .venv/bin/python -m pytest tests/golden/test_mistral.py -v
"""

from __future__ import annotations

import datetime
import functools
import hashlib
from pathlib import Path

import numpy as np
import pytest
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.protocol.instruct.validator import ValidationMode
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

from dataprep.encode import TokenizerError
from dataprep.formats import Chat, RowError
from dataprep.mistral import MistralChatEncoder
from dataprep.mistral_files import (
    SHIPPED_DIR,
    has_protobuf,
    hf_conversion,
    is_mistral_tokenizer,
    resolve_mistral_tokenizer,
    save_tokenizer_files,
    shipped_tokenizers,
)
from dataprep.mistral_templates import TEMPLATE_SOURCES, generate_template, library_template, reference_hf_disagreements
from dataprep.render import compile_template
from schemas.reasons import Reason

ROOT = Path(__file__).resolve().parents[2]

# tokenizer -> (shipped file, library template). Tekken v3 is Mistral NeMo's and Pixtral's tokenizer.
VERSIONS = {
    "v3": ("mistral_instruct_tokenizer_240323.model.v3", "mistral-v3"),
    "v7": ("mistral_instruct_tokenizer_241114.model.v7", "mistral-v7"),
    "tekken": ("tekken_240911.json", "mistral-tekken"),
}

LONG = ("A long answer, with numbers 1234567890, unicode (naïve, 東京, مرحبا) and    spaced  words.\n" * 400)

S, U, A = "system", "user", "assistant"
SHAPES: dict[str, list[tuple[str, str]]] = {
    "one_turn": [(U, "What is 2+2?"), (A, "4.")],
    "system_one_turn": [(S, "Be brief."), (U, "What is 2+2?"), (A, "4.")],
    "empty_system": [(S, ""), (U, "Hi"), (A, "Hello!")],
    "system_three_turns": [(S, "You are a pirate."), (U, "Hi"), (A, "Ahoy!"), (U, "Where to?"), (A, "The sea."),
                           (U, "Why?"), (A, "Treasure.")],
    "six_turns": [x for i in range(6) for x in ((U, f"Question {i}?"), (A, f"Answer {i}."))],
    "edge_whitespace": [(S, "  sys  \n"), (U, "\n  leading and trailing  \n\n"),
                        (A, "\n\n  indented answer\n  with trailing spaces   \n\n   ")],
    "runs_of_spaces": [(U, "Hi  there,   three    four"), (A, "a  b   c    d     e")],
    "leading_single_space": [(U, " hi"), (A, " yes, one leading space")],
    "crlf": [(U, "line one\r\nline two\r\n"), (A, "first\r\nsecond\r\n\r\nthird")],
    "tabs": [(U, "\tcol1\tcol2\t\tcol4"), (A, "key:\tvalue\n\t\tnested\t")],
    "combining_marks": [(U, "cafe\u0301 vs café, Zalgo: z̷̢a̸l̵g̶o, Å vs Å"),
                        (A, "e\u0301\u0301 n\u0303 \u0915\u094d\u0937")],
    "cjk": [(U, "你好，世界。日本語のテキスト。한국어 문장."), (A, "中文回答：可以。カタカナ、ひらがな。")],
    "rtl": [(U, "مرحبا بالعالم 123 שלום עולם"), (A, "\u200fالجواب: ٤٢\u200e and עברית (mixed) 42")],
    "emoji_zwj": [(U, "Family: 👨‍👩‍👧‍👦, flag: 🏳️‍🌈, skin: 👍🏽"), (A, "🧑🏽‍💻 at work, 🇫🇷 🇯🇵 ❤️‍🔥")],
    "code_trailing_spaces": [(U, "Fix this:\n```python\ndef f(x):  \n    return x   \n```"),
                             (A, "```python\ndef f(x):\n    return x  \n```\nDone.  ")],
    "markdown": [(U, "Make a table"),
                 (A, "# Title\n\n- item *one*\n- **two**\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n> quote")],
    "long_turns": [(S, "Summarise."), (U, LONG), (A, LONG[::-1])],
    "template_looking": [(U, "{{ messages }} {% if x %} [INST] hi [/INST] </s> <s> [SYSTEM_PROMPT] <unk>"),
                         (A, "Literal </s> and [INST] and {{ bos_token }} and <s> [/INST]")],
    "control_words_in_system": [(S, "[INST] not a control token </s>"), (U, "ok"), (A, "sure")],
    "two_systems": [(S, "First rule."), (S, "Second rule."), (U, "ok"), (A, "sure")],
    "consecutive_users": [(U, "first part"), (U, "second part"), (A, "merged reply")],
    "consecutive_assistants": [(U, "q"), (A, "part one"), (A, "part two")],
    "system_between_users": [(U, "u1"), (S, "late system"), (U, "u2"), (A, "a2")],
    "assistant_first": [(A, "I start."), (U, "ok"), (A, "fine")],
    "whitespace_only_answer": [(U, "Say nothing"), (A, "   ")],
    "trailing_spaces_answer": [(U, "q"), (A, "answer   ")],
}

# Where the HF route (transformers' conversion + the generated template, rendered and tokenized the way Tessera
# does for HF tokenizers) gives other ids than mistral-common, shape by shape, with the first cause met.
# Measured with transformers 5.23.0, tokenizers 0.23.3, mistral-common 1.13.1.
SPACES = ("SentencePiece conversion: a run of spaces before a word splits as '▁▁','there' where mistral-common has "
          "'▁','▁there' (the template's space after [INST] makes a leading space in content such a run)")
CONTROL = ("the conversion matches '[INST]', '</s>', '<s>' typed in content as control tokens; mistral-common keeps "
           "them as text ('▁[','INST',']')")
RSTRIP = "the template keeps an answer's trailing spaces; mistral-common drops them (content.rstrip(' '))"
FIRST = ("the template raises 'Conversation must start with a user message'; mistral-common encodes it (before "
         "v7 after an empty [INST][/INST])")
SYSTEM_SPLIT = ("the template drops the system message first and then merges the two user turns it separated; "
                "mistral-common keeps two turns ('[INST]u1[/INST][INST]late system\\n\\nu2[/INST]')")
EMPTY_SYSTEM = ("the SentencePiece v7 template writes '[SYSTEM_PROMPT] [/SYSTEM_PROMPT]' for an empty system "
                "message, a '▁' token that mistral-common does not encode")
_SP = {"edge_whitespace": SPACES, "runs_of_spaces": SPACES, "leading_single_space": SPACES,
       "code_trailing_spaces": SPACES, "long_turns": SPACES, "template_looking": CONTROL,
       "control_words_in_system": CONTROL, "assistant_first": FIRST, "whitespace_only_answer": RSTRIP,
       "trailing_spaces_answer": RSTRIP}
HF_DISAGREES: dict[str, dict[str, str]] = {
    "v3": {**_SP, "system_between_users": SYSTEM_SPLIT},
    "v7": {**_SP, "empty_system": EMPTY_SYSTEM},
    # The tekken conversion is exact on text: only typed control words differ, the rest is the template's.
    "tekken": {"edge_whitespace": RSTRIP, "code_trailing_spaces": RSTRIP, "template_looking": CONTROL,
               "control_words_in_system": CONTROL, "system_between_users": SYSTEM_SPLIT, "assistant_first": FIRST,
               "whitespace_only_answer": RSTRIP, "trailing_spaces_answer": RSTRIP},
}


def chat(pairs: list[tuple[str, str]], train: tuple[str, ...] = ("assistant",)) -> Chat:
    messages = [{"role": r, "content": c} for r, c in pairs]
    return Chat(messages, [m["role"] in train for m in messages], [None] * len(messages))


@functools.cache
def encoder(version: str) -> MistralChatEncoder:
    return MistralChatEncoder(f"mistral:{VERSIONS[version][0]}", ROOT)


@functools.cache
def reference(version: str) -> MistralTokenizer:
    """mistral-common, loaded and called directly, not through dataprep.mistral."""
    return MistralTokenizer.from_file(str(SHIPPED_DIR / VERSIONS[version][0]), mode=ValidationMode.finetuning)


def reference_ids(version: str, pairs: list[tuple[str, str]]) -> list[int]:
    request = ChatCompletionRequest(messages=[{"role": r, "content": c} for r, c in pairs])  # type: ignore[arg-type]
    return list(reference(version).encode_chat_completion(request).tokens)


def turn_text(enc: MistralChatEncoder, ids: np.ndarray) -> str:
    """A trained run as text, '</s>' spelled out (SentencePiece's KEEP decoding would show '▁' pieces)."""
    eos = len(ids) > 0 and ids[-1] == enc.eos_id
    return enc.decode(ids[:-1] if eos else ids) + ("</s>" if eos else "")


def runs(labels: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs [a, b) of trained positions."""
    trained = np.flatnonzero(labels != -100)
    if not len(trained):
        return []
    breaks = np.flatnonzero(np.diff(trained) > 1)
    starts = np.concatenate([[trained[0]], trained[breaks + 1]])
    ends = np.concatenate([trained[breaks], [trained[-1]]]) + 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def assistant_turns(pairs: list[tuple[str, str]], rstrip: bool = True) -> list[str]:
    """Each assistant turn as mistral-common encodes it: runs of assistant messages joined by a blank line,
    trailing spaces removed (v2 and later; v1 keeps them)."""
    turns: list[list[str]] = []
    for i, (role, content) in enumerate(pairs):
        if role == A and i > 0 and pairs[i - 1][0] == A:
            turns[-1].append(content)
        elif role == A:
            turns.append([content])
    return ["\n\n".join(t).rstrip(" " if rstrip else "") for t in turns]


CASES = [pytest.param(v, s, id=f"{v}-{s}") for v in VERSIONS for s in SHAPES]


@pytest.mark.parametrize(("version", "shape"), CASES)
def test_ids_equal_encode_chat_completion(version: str, shape: str) -> None:
    ids, labels = encoder(version).encode(chat(SHAPES[shape]), "turn", False)
    assert ids.dtype == np.int32 and labels.dtype == np.int32 and ids.shape == labels.shape
    assert ids.tolist() == reference_ids(version, SHAPES[shape])
    assert labels[0] == -100


@pytest.mark.parametrize(("version", "shape"), CASES)
def test_trained_tokens_are_assistant_turns_plus_eos(version: str, shape: str) -> None:
    enc = encoder(version)
    ids, labels = enc.encode(chat(SHAPES[shape]), "turn", False)
    expected = assistant_turns(SHAPES[shape])
    found = runs(labels)
    assert len(found) == len(expected)
    for (a, b), text in zip(found, expected, strict=True):
        assert labels[a:b].tolist() == ids[a:b].tolist()
        assert ids[b - 1] == enc.eos_id  # each turn ends with its </s>
        assert enc.decode(ids[a:b - 1]) == text  # exact: no normalisation beyond rstrip(" ")
        text_tokenizer = reference(version).instruct_tokenizer.tokenizer
        assert not any(text_tokenizer.is_special(t) for t in ids[a:b - 1])  # typed '</s>'/'[INST]' stay text


@pytest.mark.parametrize("file", shipped_tokenizers())
def test_every_shipped_tokenizer(file: str) -> None:
    """v1, v2, v7m1 and tekken 240718 too: the same ids as encode_chat_completion and the same trained turns."""
    enc = MistralChatEncoder(f"mistral:{file}", ROOT)
    direct = MistralTokenizer.from_file(str(SHIPPED_DIR / file), mode=ValidationMode.finetuning)
    for pairs in SHAPES.values():
        ids, labels = enc.encode(chat(pairs), "turn", False)
        request = ChatCompletionRequest(messages=[{"role": r, "content": c} for r, c in pairs])  # type: ignore[misc]
        assert ids.tolist() == list(direct.encode_chat_completion(request).tokens)
        texts = [enc.decode(ids[a:b - 1]) for a, b in runs(labels)]
        assert texts == assistant_turns(pairs, rstrip=enc.version.value != "v1")


def test_assistant_content_as_mistral_common_encodes_it() -> None:
    """What is trained is what mistral-common encodes: trailing spaces go, tabs and newlines stay."""
    for version in VERSIONS:
        enc = encoder(version)
        _, labels = enc.encode(chat([(U, "q"), (A, "x \t\n  ")]), "none", False)
        assert enc.decode(labels[labels != -100]) == "x \t\n"


@pytest.mark.parametrize("version", list(VERSIONS))
def test_train_on_eos_modes(version: str) -> None:
    enc = encoder(version)
    pairs = [(S, "sys"), (U, "u1"), (A, "a1"), (U, "u2"), (A, "a2"), (U, "u3"), (A, "a3")]
    c = chat(pairs)
    c.train[2] = False  # the first answer is shown, not trained (message_field_training: false)
    eos_positions = {}
    for mode in ("turn", "last", "all", "none"):
        ids, labels = enc.encode(c, mode, False)
        eos_positions[mode] = [i for i in np.flatnonzero(labels != -100).tolist() if ids[i] == enc.eos_id]
        assert enc.decode(labels[(labels != -100) & (ids != enc.eos_id)]).replace(" ", "") == "a2a3"
    all_eos = [i for i, t in enumerate(ids.tolist()) if t == enc.eos_id]
    assert len(all_eos) == 3
    assert eos_positions["all"] == all_eos
    assert eos_positions["turn"] == all_eos[1:]
    assert eos_positions["last"] == all_eos[2:]
    assert eos_positions["none"] == []


@pytest.mark.parametrize("version", list(VERSIONS))
def test_train_on_inputs_trains_everything_but_the_first_token(version: str) -> None:
    pairs = SHAPES["system_three_turns"]
    c = chat(pairs, train=(S, U, A))
    ids, labels = encoder(version).encode(c, "none", True)
    assert labels[0] == -100 and labels[1:].tolist() == ids[1:].tolist()


@pytest.mark.parametrize("version", list(VERSIONS))
def test_trained_user_messages_train_their_content_only(version: str) -> None:
    enc = encoder(version)
    ids, labels = enc.encode(chat([(U, "ask  this"), (A, "answer")], train=(U, A)), "turn", False)
    (a, b), (c, d) = runs(labels)
    assert enc.decode(ids[a:b]) == "ask  this"  # no [INST] / [/INST]
    assert turn_text(enc, ids[c:d]) == "answer</s>"


def test_v3_system_prompt_rides_with_the_last_user_turn() -> None:
    """Before v7 the system prompt is part of the last user turn, so the two cannot be trained apart; v7 keeps
    it in its own block."""
    pairs = [(S, "sys"), (U, "u1"), (A, "a1"), (U, "u2"), (A, "a2")]
    for version in ("v3", "tekken"):
        with pytest.raises(RowError) as e:
            encoder(version).encode(chat(pairs, train=(U, A)), "turn", False)
        assert e.value.reason is Reason.content_not_rendered and "0 (system), 3 (user)" in e.value.message
    enc = encoder("v7")
    ids, labels = enc.encode(chat(pairs, train=(U, A)), "turn", False)
    texts = [turn_text(enc, ids[a:b]) for a, b in runs(labels)]
    assert texts == ["u1", "a1</s>", "u2", "a2</s>"]


def test_v1_trained_user_message_is_refused() -> None:
    enc = MistralChatEncoder("mistral:tokenizer.model.v1", ROOT)
    pairs = [(U, "u"), (A, "a")]
    ids, labels = enc.encode(chat(pairs), "turn", False)  # assistants only: fine
    assert ids.tolist() == list(MistralTokenizer.from_file(str(SHIPPED_DIR / "tokenizer.model.v1"),
                                                           mode=ValidationMode.finetuning)
                                .encode_chat_completion(ChatCompletionRequest(messages=[
                                    {"role": r, "content": c} for r, c in pairs])).tokens)  # type: ignore[misc]
    assert turn_text(enc, labels[labels != -100]) == "a</s>"
    with pytest.raises(RowError, match="v1 Mistral tokenizer writes"):
        enc.encode(chat(pairs, train=(U, A)), "turn", False)


@pytest.mark.parametrize(("pairs", "reason", "match"), [
    ([(U, "q"), (A, "a"), (U, "trailing question")], Reason.template_error, "Expected last role Assistant"),
    ([(U, "q"), (A, "a"), (S, "late"), (U, "q2"), (A, "a2")], Reason.template_error, "Unexpected role 'system'"),
    ([(U, "q"), ("tool", "{}"), (A, "a")], Reason.template_error, "tool_call_id. is missing"),
])
def test_rows_mistral_common_rejects_are_quarantined(pairs: list[tuple[str, str]], reason: Reason,
                                                     match: str) -> None:
    for version in VERSIONS:
        with pytest.raises(RowError, match=match) as e:
            encoder(version).encode(chat(pairs), "turn", False)
        assert e.value.reason is reason


def test_training_detail_is_refused() -> None:
    c = chat([(U, "q"), (A, "partly trained")])
    c.detail[1] = [(0, 6)]
    with pytest.raises(RowError, match="training detail") as e:
        encoder("v3").encode(c, "turn", False)
    assert e.value.reason is Reason.bad_training_detail
    c.detail[1] = []  # an empty detail list trains nothing and needs no offsets
    c.train[1] = False
    encoder("v3").encode(c, "turn", False)


def test_resolver(tmp_path: Path) -> None:
    assert is_mistral_tokenizer("mistral:tekken_240911.json")
    assert not is_mistral_tokenizer("fixture:qwen2.5") and not is_mistral_tokenizer(None)
    assert {"tekken_240911.json", "mistral_instruct_tokenizer_241114.model.v7", "tokenizer.model.v1"} <= set(
        shipped_tokenizers())
    assert resolve_mistral_tokenizer("mistral:tekken_240911.json", tmp_path) == SHIPPED_DIR / "tekken_240911.json"
    # A folder as in Mistral's HF repos: tekken.json wins over SentencePiece files; else the versioned .model.
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "tokenizer.model").write_bytes((SHIPPED_DIR / VERSIONS["v3"][0]).read_bytes())
    (repo / "tokenizer.model.v3").write_bytes((SHIPPED_DIR / VERSIONS["v3"][0]).read_bytes())
    assert resolve_mistral_tokenizer("mistral:repo", tmp_path) == (repo / "tokenizer.model.v3").resolve()
    (repo / "tekken.json").write_bytes((SHIPPED_DIR / "tekken_240911.json").read_bytes())
    assert resolve_mistral_tokenizer(f"mistral:{repo}", Path("/")) == (repo / "tekken.json").resolve()
    assert resolve_mistral_tokenizer("mistral:repo/tokenizer.model.v3", tmp_path).name == "tokenizer.model.v3"
    with pytest.raises(TokenizerError, match=r"tekken_240911\.json"):  # the message lists the shipped files
        resolve_mistral_tokenizer("mistral:no_such_tokenizer.json", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizerError, match=r"no tekken\.json"):
        resolve_mistral_tokenizer("mistral:empty", tmp_path)


@pytest.mark.parametrize("version", list(VERSIONS))
def test_saved_folder_loads_offline_as_mistral_common_backend(version: str, tmp_path: Path) -> None:
    from transformers import AutoTokenizer
    from transformers.tokenization_mistral_common import MistralCommonBackend

    src = SHIPPED_DIR / VERSIONS[version][0]
    files = save_tokenizer_files(f"mistral:{src.name}", tmp_path / "tokenizer")
    name = "tekken.json" if version == "tekken" else f"tokenizer.model.{version}"
    assert files == {name: hashlib.sha256(src.read_bytes()).hexdigest(),
                     "tokenizer_config.json": files["tokenizer_config.json"]}
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "tokenizer"))
    assert isinstance(tok, MistralCommonBackend)
    # Serving mode wants the conversation to end with a user turn: the prompt of the last answer.
    pairs = SHAPES["template_looking"]
    prompt = tok.apply_chat_template([{"role": r, "content": c} for r, c in pairs[:-1]], tokenize=True)
    ids, _ = encoder(version).encode(chat(pairs), "turn", False)
    assert ids.tolist()[:len(prompt["input_ids"])] == prompt["input_ids"]
    # Finetuning mode takes the whole conversation and gives exactly the prepared ids.
    ft = MistralCommonBackend.from_pretrained(str(tmp_path / "tokenizer"), mode="finetuning")
    whole = ft.apply_chat_template([{"role": r, "content": c} for r, c in pairs], tokenize=True)
    assert whole["input_ids"] == ids.tolist()


@pytest.mark.parametrize("name", list(TEMPLATE_SOURCES))
def test_library_templates_are_the_generator_output(name: str) -> None:
    text = (ROOT / "dataprep" / "templates" / f"{name}.jinja").read_text(encoding="utf-8")
    first, body = text.split("\n", 1)
    assert first.startswith("{# Provenance: generated by mistral-common ") and first.endswith(" #}")
    # Fails after a mistral-common upgrade that changes its templates: rerun
    # `python -m dataprep.mistral_templates --write-templates` and review the diff.
    assert body == generate_template(name)
    # The provenance comment renders to nothing (trim_blocks eats its newline).
    messages = [{"role": r, "content": c} for r, c in SHAPES["system_three_turns"]]
    date = datetime.date(2026, 1, 1)
    assert compile_template(text, date).render(messages=messages) == compile_template(body, date).render(
        messages=messages)


def test_library_template_for_each_tokenizer() -> None:
    for file, template in VERSIONS.values():
        assert library_template(SHIPPED_DIR / file) == template
    assert library_template(SHIPPED_DIR / "tokenizer.model.v1") is None


@functools.cache
def hf_tokenizer(version: str) -> object:
    if version != "tekken" and not has_protobuf():
        pytest.skip("transformers converts a SentencePiece .model to an HF tokenizer only with protobuf installed "
                    "(pip install protobuf); without it the SentencePiece HF route cannot be built offline")
    return hf_conversion(SHIPPED_DIR / VERSIONS[version][0])


@pytest.mark.parametrize("version", list(VERSIONS))
def test_hf_route_disagreements(version: str) -> None:
    """Pins which shapes the HF route gets wrong (HF_DISAGREES says why). When this fails because a shape now
    agrees, the conversion or the generator was fixed: remove it. When a new shape disagrees, find out why first."""
    template = (ROOT / "dataprep" / "templates" / f"{VERSIONS[version][1]}.jinja").read_text(encoding="utf-8")
    names = list(SHAPES)
    found = reference_hf_disagreements(encoder(version), hf_tokenizer(version), template,  # type: ignore[arg-type]
                                       [chat(SHAPES[n]) for n in names])
    for d in found:
        print(version, names[d.index], d.position, d.mistral, d.hf)
    assert {names[d.index] for d in found} == set(HF_DISAGREES[version])


@pytest.mark.parametrize("version", list(VERSIONS))
def test_hf_conversion_known_differences(version: str) -> None:
    """The two conversion findings on plain text, the template left out: runs of spaces (SentencePiece only)
    and typed control words (all three)."""
    enc, hf = encoder(version), hf_tokenizer(version)

    def both(text: str) -> tuple[list[str], list[str]]:
        ours = reference(version).instruct_tokenizer.tokenizer.encode(text, bos=False, eos=False)
        return enc.pieces(ours), [hf.id_to_token(t) for t in hf.encode(text, add_special_tokens=False).ids]

    ours, theirs = both("Hi  there")
    if version == "tekken":
        assert ours == ["Hi", " ", " there"] and theirs == ["Hi", "Ġ", "Ġthere"]  # the same ids, GPT-2 spelling
    else:
        assert ours == ["▁Hi", "▁", "▁there"] and theirs == ["▁Hi", "▁▁", "there"]
    ours, theirs = both("[INST] hi </s>")
    assert "[INST]" not in ours and "</s>" not in ours
    assert theirs[0] == "[INST]" and theirs[-1] == "</s>"
