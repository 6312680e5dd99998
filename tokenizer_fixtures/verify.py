"""What a family folder must pass before it is cached: llama.cpp's own reference tokenizations of 46 strings
(50 for qwen35), through `tokenizers` and through transformers' AutoTokenizer, and a chat template render.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from tokenizer_fixtures.families import Family

_VECTOR_SEP = "\n__ggml_vocab_test__\n"  # llama.cpp tests/test-tokenizer-0.cpp: read_tests()


class VectorMismatchError(RuntimeError):
    """A built tokenizer disagrees with one of llama.cpp's reference tokenizations."""


def read_vectors(gguf_path: Path) -> list[tuple[str, list[int]]]:
    """llama.cpp's reference tokenizations next to a vocab GGUF, read the way test-tokenizer-0.cpp does.

    `.inp` holds the texts, each followed by "\\n__ggml_vocab_test__\\n"; `.out` holds one line of
    space-separated ids per text (a leading space, empty for ""). They were produced by the model's own HF
    tokenizer with `encode(text, add_special_tokens=False)` (convert_hf_to_gguf_update.py).
    """
    raw = Path(f"{gguf_path}.inp").read_bytes().decode("utf-8")
    texts = raw.split(_VECTOR_SEP)
    if texts and texts[-1] == "":  # the file ends with a separator, which closes the last text
        texts.pop()
    lines = Path(f"{gguf_path}.out").read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(texts) != len(lines):
        raise ValueError(f"{gguf_path}.inp has {len(texts)} texts but .out has {len(lines)} lines")
    return [(t, [int(x) for x in line.split()]) for t, line in zip(texts, lines, strict=True)]


def check_vectors(tok: Tokenizer, vectors: list[tuple[str, list[int]]], label: str) -> int:
    """Raise VectorMismatchError naming the first differing string; return the number of vectors passed."""
    for i, (text, want) in enumerate(vectors):
        got = tok.encode(text, add_special_tokens=False).ids
        if got != want:
            raise VectorMismatchError(
                f"{label}: reference vector {i} {text!r} differs:\n  llama.cpp {want}\n  built     {got}"
            )
    return len(vectors)


_CHECK_CONVERSATION = [
    {"role": "user", "content": "Wie viel ist 2+2? Antworte kurz."},
    {"role": "assistant", "content": "2 + 2 = 4 ✅"},
]


def verify_with_transformers(fam: Family, folder: Path, vectors: list[tuple[str, list[int]]]) -> None:
    """The folder must also work through AutoTokenizer: same ids, and the chat template renders.

    Skipped when transformers is not installed: tokenizer.json is then still checked by check_vectors.
    """
    try:
        from transformers import AutoTokenizer
    except ImportError:
        return
    hf = AutoTokenizer.from_pretrained(folder)
    for i, (text, want) in enumerate(vectors):
        got = hf(text, add_special_tokens=False)["input_ids"]
        if got != want:
            raise VectorMismatchError(f"{fam.name}: AutoTokenizer differs on vector {i} {text!r}: {got}")
    assert hf.eos_token_id is not None, f"{fam.name}: AutoTokenizer has no eos_token_id"
    with_bos = hf("Hi", add_special_tokens=True)["input_ids"]
    starts_with_bos = with_bos[:1] == [hf.bos_token_id]
    assert starts_with_bos == fam.add_bos, f"{fam.name}: add_bos_token not honoured: {with_bos}"
    if fam.template is not None:
        text = hf.apply_chat_template(_CHECK_CONVERSATION, tokenize=False)
        ids = hf.apply_chat_template(_CHECK_CONVERSATION, tokenize=True)
        if not isinstance(ids, list):  # transformers 5 may return a BatchEncoding
            ids = ids["input_ids"]
        want_ids = hf(text, add_special_tokens=False)["input_ids"]
        assert ids == want_ids, f"{fam.name}: apply_chat_template ids differ from encoding its text"
