"""The synthetic data of bench/prepare.py: seeded, deterministic alpaca rows and OpenAI-style chats (1-8 turns),
long-tailed lengths (lognormal word counts), prose from a Zipf-weighted word list with numbers, some unicode and
code blocks; ~1% of rows longer than sequence_len and ~3% duplicates (2% byte-identical, 1% differing only in
whitespace). `generate` writes them once per (rows, seed, GENERATOR_VERSION) and reuses them after.
"""

from __future__ import annotations

import json
import keyword
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

GENERATOR_VERSION = 2  # bump when the data generator changes, so cached data is rewritten


_COMMON_TEXT = """the of and to a in is that for it as was with be by on not he I this are or his from at which but
have an they you were her she there been one all we their has would when if so no will my more can out other
do what about up said into some them could time than its only new like first also after two how most over
should any where these because before through between each under while such those both same well however
data model function value error file system training result example method number user output input code
test case step memory process server request response table query string list type class object library
version change problem question answer reason example language network image text token batch layer weight
loss rate learning large small fast slow simple complex first second last next final early late good better
best important different possible available common general specific local global public private open close
run build read write load save send check return call create update delete find search sort filter merge
split join parse format convert compute measure compare improve reduce increase handle support use make
take give show help keep start stop move turn play work try need want know think see look feel seem become
city country river market company student teacher family health energy water money history science music
because therefore although unless since until whether either neither often always never sometimes usually
about around above below across along among against during without within toward upon per via"""
COMMON = _COMMON_TEXT.split()
UNICODE = ["café", "naïve", "résumé", "Zürich", "São Paulo", "München", "façade", "über", "Ångström", "Ελληνικά",
           "東京", "北京", "データ", "日本語", "모델", "Привет", "мир", "→", "≤", "≈", "€", "£", "°C", "µs", "✓", "😀",
           "🚀", "—", "…", "“quoted”", "l’été", "niño", "crème brûlée", "Straße", "Łódź", "İstanbul"]
SYLLABLES = ["ka", "ro", "mi", "tel", "an", "dor", "bu", "sen", "vi", "lo", "ter", "qua", "pri", "mon", "ex", "ul",
             "ra", "ne", "so", "tri", "gen", "pha", "lis", "cor", "ven", "tum", "al", "is", "ent", "ion"]
VERBS = ["Explain", "Summarize", "Write", "Translate", "List", "Describe", "Fix", "Rewrite", "Classify", "Compare",
         "Give", "Suggest", "Outline", "Draft", "Evaluate", "Why does", "How can I", "What is"]
SYSTEMS = ["You are a helpful assistant.", "You are a concise assistant. Answer in at most three sentences.",
           "You are an expert Python programmer. Explain your code.", "Answer in the language of the question."]


class Words:
    """A seeded vocabulary with Zipf weights: common English 82%, made-up words 12%, numbers 5%, unicode 1%."""

    def __init__(self, rng: np.random.Generator):
        made_up = sorted({"".join(rng.choice(SYLLABLES, size=int(rng.integers(2, 4)))) for _ in range(3000)})
        made_up = [made_up[i] for i in rng.permutation(len(made_up))]  # Zipf rank must not follow the alphabet
        numbers = ([str(y) for y in range(1900, 2031)] + [str(int(n)) for n in rng.integers(0, 100_000, 200)]
                   + [f"{x:.2f}" for x in rng.lognormal(1.0, 1.5, 100)] + [f"{p}%" for p in range(0, 101, 5)]
                   + [f"${n:,}" for n in rng.integers(1, 50_000, 50)] + ["3e-4", "1e-5", "v2.3.1", "0x1F", "404"])
        groups = [(COMMON, 0.82), (made_up, 0.12), (numbers, 0.05), (UNICODE, 0.01)]
        self.vocab = np.array([w for g, _ in groups for w in g], dtype=object)
        p = np.concatenate([share * _zipf(len(g)) for g, share in groups])
        self.cdf = np.cumsum(p / p.sum())
        self.cdf[-1] = 1.0

    def draw(self, rng: np.random.Generator, n: int) -> list[str]:
        return self.vocab[np.searchsorted(self.cdf, rng.random(n), side="right")].tolist()


def _zipf(n: int) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** 1.05
    return w / w.sum()


def _lognormal_words(rng: np.random.Generator, median: float, sigma: float, low: int = 1) -> int:
    return max(low, int(rng.lognormal(np.log(median), sigma)))


def prose(rng: np.random.Generator, words: Words, n: int) -> str:
    """n words as sentences (3-40 words) in paragraphs, with the odd bullet list."""
    tokens = words.draw(rng, n)
    lengths = np.clip(rng.lognormal(np.log(14), 0.5, size=n // 3 + 2).astype(int), 3, 40)
    ends = rng.choice([". ", ". ", ". ", "? ", "! ", ": ", "; "], size=len(lengths))
    out: list[str] = []
    pos = k = 0
    bullets = rng.random() < 0.1
    while pos < n:
        sentence = tokens[pos:pos + int(lengths[k])]
        pos += len(sentence)
        first = sentence[0]
        sentence[0] = first[:1].upper() + first[1:]
        if bullets and k % 4 == 1:
            out.append("\n- " + " ".join(sentence) + "\n")
        else:
            out.append(" ".join(sentence) + str(ends[k]))
        if k % 5 == 4:
            out.append("\n\n")
        k += 1
    return "".join(out).strip()


CODE_LINES = [
    "    {a} = {b}.get('{c}', {n})",
    "    for {a} in range({n}):",
    "        {a}[{m}] += {b} * {f}",
    "    if {a} is None or len({b}) > {n}:",
    "        raise ValueError(f\"bad {a}: {{{b}!r}}\")",
    "    # {a} the {b} before {c}",
    "    return {{'{a}': {b}, 'n': {n}}}",
    "    print({a}, {n}, sep='\\t')",
]


def code(rng: np.random.Generator, words: Words, lines: int) -> str:
    """A fenced block of plausible Python lines."""
    names = [w.lower() for w in words.draw(rng, 3 * lines + 12)
             if w.isascii() and w.isalpha() and not keyword.iskeyword(w.lower())]
    names += ["x", "y", "z", "item"]
    picks = rng.integers(len(names), size=(lines + 1, 3)).tolist()
    kinds = rng.integers(len(CODE_LINES), size=lines).tolist()
    numbers = rng.integers(0, 1000, size=lines).tolist()
    a, b, c = (names[i] for i in picks[-1])
    out = [f"```python\ndef {a}_{b}({c}, {a}=None):"]
    for (i, j, k), kind, n in zip(picks[:-1], kinds, numbers, strict=True):
        out.append(CODE_LINES[kind].format(a=names[i], b=names[j], c=names[k], n=n, m=n % 10, f=f"{n / 7:.3f}"))
    out.append("```")
    return "\n".join(out)


def answer(rng: np.random.Generator, words: Words, median: float, long: bool) -> str:
    n = int(rng.integers(1800, 4500)) if long else _lognormal_words(rng, median, 0.9, 3)
    text = prose(rng, words, n)
    if rng.random() < 0.15:
        text += "\n\n" + code(rng, words, _lognormal_words(rng, 8, 0.7, 2)) + "\n\n" + prose(rng, words, 20)
    return text


def alpaca_row(rng: np.random.Generator, words: Words) -> dict[str, str]:
    long = rng.random() < 0.006
    instruction = f"{rng.choice(VERBS)} {prose(rng, words, _lognormal_words(rng, 12, 0.6, 3))}"
    inp = ""
    if rng.random() < 0.4:
        inp = (code(rng, words, _lognormal_words(rng, 10, 0.6, 2)) if rng.random() < 0.2
               else prose(rng, words, _lognormal_words(rng, 40, 0.8, 3)))
    return {"instruction": instruction, "input": inp, "output": answer(rng, words, 110, long)}


def chat_row(rng: np.random.Generator, words: Words) -> dict[str, Any]:
    turns = int(rng.choice(np.arange(1, 9), p=[0.35, 0.2, 0.13, 0.1, 0.08, 0.06, 0.045, 0.035]))
    long_turn = int(rng.integers(turns)) if rng.random() < 0.006 else -1
    messages = []
    if rng.random() < 0.3:
        messages.append({"role": "system", "content": str(rng.choice(SYSTEMS))})
    for t in range(turns):
        question = f"{rng.choice(VERBS)} {prose(rng, words, _lognormal_words(rng, 14, 0.8, 2))}"
        messages.append({"role": "user", "content": question})
        messages.append({"role": "assistant", "content": answer(rng, words, 45, t == long_turn)})
    return {"messages": messages}


def _reformat(row: dict[str, Any]) -> dict[str, Any]:
    """The same content with different whitespace (the dedup hash folds whitespace runs)."""
    def ws(text: str) -> str:
        return text.replace(" ", "  ", 1) + " "

    if "messages" in row:
        return {"messages": [{**m, "content": ws(m["content"])} for m in row["messages"]]}
    return {k: ws(v) if v else v for k, v in row.items()}


def write_rows(path: Path, rows: int, seed: int, make: Callable[[np.random.Generator, Words], dict[str, Any]],
               words: Words) -> None:
    rng = np.random.default_rng(seed)
    lines: list[str] = []
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            u = rng.random()
            if i > 100 and u < 0.02:  # byte-identical copy of an earlier row
                line = lines[int(rng.integers(len(lines)))]
            elif i > 100 and u < 0.03:
                line = json.dumps(_reformat(json.loads(lines[int(rng.integers(len(lines)))])), ensure_ascii=False)
            else:
                line = json.dumps(make(rng, words), ensure_ascii=False)
            lines.append(line)
            f.write(line + "\n")


def generate(out: Path, rows: int, seed: int) -> tuple[Path, Path, float]:
    """(alpaca.jsonl, chat.jsonl, seconds); reused when the stamp says they were written with these settings."""
    data = out / "data"
    alpaca, chat, stamp = data / "alpaca.jsonl", data / "chat.jsonl", data / "STAMP.json"
    want = {"rows": rows, "seed": seed, "generator": GENERATOR_VERSION}
    if stamp.is_file() and json.loads(stamp.read_text()) == want and alpaca.is_file() and chat.is_file():
        return alpaca, chat, 0.0
    data.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    words = Words(np.random.default_rng(seed))
    write_rows(alpaca, rows, seed + 1, alpaca_row, words)
    write_rows(chat, rows, seed + 2, chat_row, words)
    stamp.write_text(json.dumps(want) + "\n")  # written last: its presence means the files are complete
    return alpaca, chat, time.perf_counter() - start


