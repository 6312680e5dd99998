"""Writes the bundled example data under examples/data/ (deterministic; the files are committed too).

    python examples/make_demo_data.py

A few hundred rows written by the project itself: alpaca-style instructions, OpenAI-style multi-turn chats
and ShareGPT-style chats about arithmetic, unit conversion, words and capitals. A handful of rows are broken
on purpose (bad JSON, a missing field, an empty answer, an unknown role, a duplicate, an over-long answer)
so that `make prepare` shows quarantine and accounting at work.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).parent / "data"

CAPITALS = {
    "France": "Paris", "Japan": "Tokyo", "Kenya": "Nairobi", "Peru": "Lima", "Canada": "Ottawa",
    "Norway": "Oslo", "Egypt": "Cairo", "Chile": "Santiago", "India": "New Delhi", "Spain": "Madrid",
    "Ghana": "Accra", "Poland": "Warsaw", "Vietnam": "Hanoi", "Mexico": "Mexico City", "Italy": "Rome",
    "Portugal": "Lisbon", "Argentina": "Buenos Aires", "Australia": "Canberra", "Germany": "Berlin",
    "Morocco": "Rabat", "Thailand": "Bangkok", "Sweden": "Stockholm", "Turkey": "Ankara", "Brazil": "Brasília",
}
WORDS = ["river", "lantern", "pencil", "harvest", "orbit", "meadow", "circuit", "glacier", "compass", "ember",
         "quartz", "tundra", "violin", "saddle", "beacon", "thistle", "anchor", "prairie", "canyon", "falcon"]
SYSTEMS = ["You are a concise assistant.", "You are a patient tutor who explains each step.",
           "Answer briefly and precisely."]


def alpaca_rows(rng: random.Random) -> list[dict[str, str]]:
    rows = []
    for c in rng.sample(range(-30, 46), 60):
        f = c * 9 / 5 + 32
        rows.append({"instruction": "Convert the temperature from Celsius to Fahrenheit.", "input": f"{c} °C",
                     "output": f"{c} °C is {f:g} °F (multiply by 9/5, then add 32)."})
    for country, capital in CAPITALS.items():
        rows.append({"instruction": f"What is the capital of {country}?", "input": "",
                     "output": f"The capital of {country} is {capital}."})
    for w in WORDS:
        rows.append({"instruction": "Reverse the letters of the word.", "input": w, "output": w[::-1]})
    for _ in range(60):
        nums = [rng.randint(1, 99) for _ in range(rng.randint(3, 8))]
        rows.append({"instruction": "Sort the numbers in ascending order and give their sum.",
                     "input": ", ".join(map(str, nums)),
                     "output": f"Sorted: {', '.join(map(str, sorted(nums)))}. Sum: {sum(nums)}."})
    for _ in range(20):
        km = rng.randint(1, 500)
        rows.append({"instruction": f"How many miles are {km} kilometres?", "input": "",
                     "output": f"{km} km is about {km * 0.621371:.1f} miles.\n\nOne kilometre is 0.621371 miles."})
    rng.shuffle(rows)
    return rows


def chat_rows(rng: random.Random) -> list[dict[str, object]]:
    rows = []
    for i in range(120):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        messages: list[dict[str, str]] = []
        if i % 3 == 0:
            messages.append({"role": "system", "content": rng.choice(SYSTEMS)})
        messages += [
            {"role": "user", "content": f"What is {a} times {b}?"},
            {"role": "assistant", "content": f"{a} × {b} = {a * b}."},
        ]
        if i % 2 == 0:
            messages += [{"role": "user", "content": "And if you add 10 to that?"},
                         {"role": "assistant", "content": f"{a * b} + 10 = {a * b + 10}."}]
        if i % 5 == 0:
            w = rng.choice(WORDS)
            messages += [{"role": "user", "content": f"Spell '{w}' backwards, please."},
                         {"role": "assistant", "content": f"Backwards, '{w}' is '{w[::-1]}'."}]
        rows.append({"messages": messages})
    return rows


def sharegpt_rows(rng: random.Random) -> list[dict[str, object]]:
    rows = []
    for country, capital in list(CAPITALS.items())[:16]:
        rows.append({"conversations": [
            {"from": "human", "value": f"Tell me one fact about {country}."},
            {"from": "gpt", "value": f"Its capital city is {capital}."},
            {"from": "human", "value": "Thanks! Can you say it in one word?"},
            {"from": "gpt", "value": capital},
        ]})
    return rows


def main() -> None:
    rng = random.Random(20261122)
    OUT.mkdir(parents=True, exist_ok=True)
    alpaca = alpaca_rows(rng)
    chats = chat_rows(rng)
    sharegpt = sharegpt_rows(rng)
    lines = [json.dumps(r, ensure_ascii=False) for r in alpaca]
    # Broken on purpose: each shows up in quarantine.parquet or duplicates.parquet with its line number.
    lines.insert(10, '{"instruction": "Name a prime number.", "output": "7"')  # malformed_json
    lines.insert(20, json.dumps({"instruction": "Name a colour."}))  # missing_field (output)
    lines.insert(30, json.dumps({"instruction": "Say nothing.", "input": "", "output": ""}))  # empty_content
    lines.insert(40, lines[41])  # duplicate of the next row
    (OUT / "alpaca.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")

    lines = [json.dumps(r, ensure_ascii=False) for r in chats]
    lines.insert(5, json.dumps({"messages": [{"role": "narrator", "content": "Once upon a time"},
                                             {"role": "assistant", "content": "…"}]}))  # unknown_role
    lines.insert(15, json.dumps({"messages": [{"role": "user", "content": "Only a question?"}]}))  # nothing trained
    long = " ".join(f"{rng.choice(WORDS)}" for _ in range(1500))
    lines.insert(25, json.dumps({"messages": [{"role": "user", "content": "List many words."},
                                              {"role": "assistant", "content": long}]}))  # too_long at 1024
    (OUT / "chat.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")

    (OUT / "sharegpt.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in sharegpt) + "\n",
                                        encoding="utf-8")


if __name__ == "__main__":
    main()
