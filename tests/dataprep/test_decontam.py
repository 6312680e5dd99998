"""Decontamination on its own (dataprep/decontam.py): normalisation, the vectorised hashes against a plain Python
reference, the eval index and planted leaks in training texts (which are found, which are not, which eval row
is named), and the errors for unusable eval files. Plain lists and files in, contaminated positions out.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/dataprep/test_decontam.py -v
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from dataprep.decontam import (
    DecontamError,
    build_index,
    find_contaminated,
    ngram_hashes,
    normalise,
    word_hashes,
)
from schemas.config import DecontaminateSource
from tests.conftest import write_jsonl

MASK = 2**64 - 1
LEAK = ("the quick brown fox jumps over the lazy dog near the quiet river bank while the farmer watches "
        "from his old wooden porch")


def _mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def _word_hash(word: str) -> int:
    h = 0
    for b in word.encode():
        h = (h * 0x100000001B3 + b + 1) & MASK
    return _mix(h)


def _ngram_hash(words: list[str]) -> int:
    h = 0
    for w in words:
        h = (h * 0x9E3779B97F4A7C15 + _word_hash(w)) & MASK
    return _mix(h)


def test_normalise_folds_unicode_case_punctuation_and_space() -> None:
    decomposed = unicodedata.normalize("NFD", "Café")
    assert normalise(f"  {decomposed}, STRASSE!\n\tand\u00a0so—on_here  ") == "café strasse and so on here"
    assert normalise("Straße") == normalise("STRASSE") == "strasse"
    assert normalise("a.b,c;d:e!f?g(h)i[j]k{l}m\"n'o/p\\q|r-s_t") == "a b c d e f g h i j k l m n o p q r s t"
    assert normalise("...") == ""
    # the ASCII fast path and the regular expression agree on control characters too
    assert normalise("a\x00b\x7fc\x1fd") == normalise("a\x00b\x7fc\x1fdé")[:-1].strip() == "a b c d"


def test_word_and_ngram_hashes_match_a_plain_python_reference() -> None:
    texts = ["Hello, World! héllo wörld 123", "", "one two three four five", "x"]
    words, counts = word_hashes([normalise(t) for t in texts])
    expected = [_word_hash(w) for t in texts for w in normalise(t).split()]
    assert counts.tolist() == [5, 0, 5, 1]
    assert words.tolist() == expected
    hashes, owner, pos = ngram_hashes(texts, 3)
    norm = [normalise(t).split() for t in texts]
    want = [(_ngram_hash(ws[j:j + 3]), i, j) for i, ws in enumerate(norm) if len(ws) >= 3
            for j in range(len(ws) - 2)]
    long = [(h, o, p) for h, o, p in zip(hashes.tolist(), owner.tolist(), pos.tolist(), strict=True) if o != 3]
    assert long == want  # n-grams never cross from one text into the next
    assert owner.tolist()[-1] == 3 and pos.tolist()[-1] == 0  # "x": one whole-text hash
    assert hashes[-1] != _ngram_hash(["x"])  # ... in its own domain: not equal to a 1-gram


def test_chunked_hashing_equals_one_pass() -> None:
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(300)]
    texts = [" ".join(rng.choice(vocab, size=int(rng.integers(1, 400)))) for _ in range(3000)]  # > 2M chars
    assert sum(map(len, texts)) > 1 << 21
    hashes, owner, _ = ngram_hashes(texts, 5)
    tail = ngram_hashes(texts[-3:], 5)
    mine = owner >= len(texts) - 3
    assert hashes[mine].tolist() == tail[0].tolist()
    assert (owner[mine] - (len(texts) - 3)).tolist() == tail[1].tolist()


def _eval(tmp_path: Path) -> Path:
    rows = [{"id": i, "question": f"filler question number {i} about something unrelated to anything"}
            for i in range(20)]
    rows[17]["question"] = "Background: " + LEAK.upper() + "?"
    rows[18]["question"] = "What is two plus two"  # shorter than 13 words: matched whole
    rows[19]["question"] = LEAK  # the same n-grams as row 17: row 17 is named, the first
    return write_jsonl(tmp_path / "eval.jsonl", rows)


def test_planted_leaks_are_found_and_name_the_eval_row(tmp_path: Path) -> None:
    _eval(tmp_path)
    dec = build_index([DecontaminateSource(path="eval.jsonl", field="question")], tmp_path)
    words = LEAK.split()
    texts = [
        "An innocent sample about cooking pasta with tomatoes and basil for dinner tonight with friends",
        "Story: " + " ".join(words[3:16]) + ". The end.",  # 13 shared words, punctuation and case aside
        " ".join(words[3:15]) + " and then something else entirely different happens",  # only 12 shared
        "what is TWO plus two?",  # equal to a short eval text after normalisation
        "what is two plus two, and why does it matter to anyone here",  # contains it, but is not it
        "",
    ]
    found = find_contaminated(texts, dec)
    assert found.index.tolist() == [1, 3]
    assert found.eval_row.tolist() == [17, 18]
    assert found.messages[0] == f"shares the 13-gram '{' '.join(words[3:16])}' with eval.jsonl row 17"
    assert found.messages[1] == "shares its whole text 'what is two plus two' with eval.jsonl row 18"
    assert dec.manifest()[0]["rows"] == 20 and dec.manifest()[0]["ngram"] == 13


def test_several_entries_messages_field_and_own_ngram(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "chat_eval.jsonl", [
        {"messages": [{"role": "user", "content": "tell me about red apples"},
                      {"role": "assistant", "content": [{"type": "text", "text": "green pears grow tall"}]}]},
    ])
    _eval(tmp_path)
    dec = build_index([DecontaminateSource(path="eval.jsonl", field="question"),
                       DecontaminateSource(path="chat_eval.jsonl", field="messages", ngram=4)], tmp_path)
    # "red apples green pears" spans the two messages (joined with a newline, folded like any whitespace)
    found = find_contaminated(["I like red apples. Green pears too", "apples green"], dec)
    assert found.index.tolist() == [0]
    assert found.entry.tolist() == [1]
    assert found.messages == ["shares the 4-gram 'red apples green pears' with chat_eval.jsonl row 0"]


def test_unusable_eval_files_are_errors_naming_file_and_row(tmp_path: Path) -> None:
    with pytest.raises(DecontamError, match=r"decontaminate\[0\]: eval file .*missing.jsonl not found"):
        build_index([DecontaminateSource(path="missing.jsonl", field="q")], tmp_path)
    write_jsonl(tmp_path / "e.jsonl", [{"q": "fine"}, {"question": "x"}])
    with pytest.raises(DecontamError, match=r"e.jsonl row 1: no field 'q' \(the row has question\)"):
        build_index([DecontaminateSource(path="e.jsonl", field="q")], tmp_path)
    write_jsonl(tmp_path / "bad.jsonl", [{"q": "fine"}, "{not json"])
    with pytest.raises(DecontamError, match=r"bad.jsonl row 1: not valid JSON"):
        build_index([DecontaminateSource(path="bad.jsonl", field="q")], tmp_path)
    (tmp_path / "num.jsonl").write_text(json.dumps({"q": 3}) + "\n")
    with pytest.raises(DecontamError, match=r"num.jsonl row 0: 'q' is a int"):
        build_index([DecontaminateSource(path="num.jsonl", field="q")], tmp_path)
