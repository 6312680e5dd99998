"""A small prepared directory with known contents, shared by the sql/, inspect and report tests.

Three datasets, 18 input rows, chosen so that every library query has a non-trivial known answer:

    alpaca.jsonl  (alpaca)        0 France/capital  1 "Add 2 and 3."  2 malformed  3 = row 1  4 no output
                                  5 Katze  6 = row 1  7 empty output
    chat.jsonl    (chat_template) 0 Italy/capital  1 你好 (multi-byte)  2 narrator role  3 two turns
                                  4 too long  5 no assistant turn  6 = row 0  7 malformed
    io.jsonl      (input_output)  0 "A: 4"  1 Spain/capital: trained text with no end-of-turn token after it

Built with the real Qwen2.5 tokenizer and ChatML; sequence_len 128 with packing, 20% validation.
"""

from __future__ import annotations

import json
from pathlib import Path

from dataprep.pipeline import run_pipeline
from dataprep.report import Progress
from schemas.config import config_from_dict

SEQUENCE_LEN = 128


def _chat(*turns: str) -> dict:
    roles = ["user", "assistant"] * len(turns)
    return {"messages": [{"role": r, "content": c} for r, c in zip(roles, turns, strict=False)]}


ALPACA = [
    {"instruction": "What is the capital of France?", "input": "", "output": "Paris is the capital of France."},
    {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
    '{"instruction": "Broken row", "output": "x"',
    {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
    {"instruction": "Name a colour."},
    {"instruction": "Translate to German.", "input": "cat", "output": "Katze"},
    {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
    {"instruction": "Say nothing.", "input": "", "output": ""},
]
CHAT = [
    _chat("What is the capital of Italy?", "Rome."),
    _chat("Say hello in Chinese.", "你好！"),
    {"messages": [{"role": "narrator", "content": "Once upon a time"}, {"role": "assistant", "content": "Yes."}]},
    _chat("Count to three.", "1 2 3", "And to five?", "1 2 3 4 5"),
    _chat("Repeat a word many times.", " ".join(["word"] * 200)),
    {"messages": [{"role": "user", "content": "Only a question?"}]},
    _chat("What is the capital of Italy?", "Rome."),
    "{not json",
]
IO = [
    {"segments": [{"text": "Q: 2+2?\n", "label": False}, {"text": "A: 4", "label": True}]},
    {"segments": [{"text": "Q: capital of Spain?\n", "label": False}, {"text": "A: Madrid", "label": True}]},
]

# Known answers, by (file name, source row).
QUARANTINED = {("alpaca.jsonl", 2): "malformed_json", ("alpaca.jsonl", 4): "missing_field",
               ("alpaca.jsonl", 7): "empty_content", ("chat.jsonl", 2): "unknown_role",
               ("chat.jsonl", 5): "no_trainable_tokens", ("chat.jsonl", 7): "malformed_json"}
DUPLICATES = {("alpaca.jsonl", 1): [("alpaca.jsonl", 3), ("alpaca.jsonl", 6)],
              ("chat.jsonl", 0): [("chat.jsonl", 6)]}
DROPPED = {("chat.jsonl", 4)}
CONTAINING_CAPITAL = {("alpaca.jsonl", 0), ("chat.jsonl", 0), ("io.jsonl", 1)}
CONTAINING_NIHAO = {("chat.jsonl", 1)}
MISSING_END_OF_TURN = {("io.jsonl", 0), ("io.jsonl", 1)}


def _write(path: Path, rows: list) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n"
                            for r in rows), encoding="utf-8")


def build_prepared(base: Path, qwen_dir: Path) -> Path:
    """Prepare the fixture under base/prepared once per test session (later calls reuse it)."""
    out = base / "prepared"
    if (out / "manifest.json").is_file():
        return out
    data = base / "data"
    data.mkdir(parents=True, exist_ok=True)
    _write(data / "alpaca.jsonl", ALPACA)
    _write(data / "chat.jsonl", CHAT)
    _write(data / "io.jsonl", IO)
    cfg = config_from_dict({
        "tokenizer_config": str(qwen_dir),
        "chat_template": "chatml",
        "datasets": [{"path": str(data / "alpaca.jsonl"), "type": "alpaca"},
                     {"path": str(data / "chat.jsonl"), "type": "chat_template"},
                     {"path": str(data / "io.jsonl"), "type": "input_output"}],
        "sequence_len": SEQUENCE_LEN,
        "sample_packing": True,
        "val_set_size": 0.2,
        "dataset_exact_deduplication": True,
        "quarantine_max_fraction": 0.5,
    })
    run_pipeline(cfg, base / "config.yaml", out, progress=Progress(enabled=False))
    return out


def location(source_file: str, source_row: int) -> tuple[str, int]:
    return Path(source_file).name, int(source_row)
