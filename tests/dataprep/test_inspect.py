"""`tessera inspect`: the (label, id) pairs and the text of a known sample, sample boundaries in a packed row,
--source lookup, what it says about samples that were not packed, and colors only when asked.

Uses the small prepared fixture of tests/sql/fixture.py (real Qwen2.5 tokenizer).

    .venv/bin/python -m pytest tests/dataprep/test_inspect.py -v
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pyarrow.ipc as ipc
import pytest

from dataprep.cli import main
from dataprep.look.inspect_tokens import Segment, build, pairs_view, print_lines, text_view, to_plain
from dataprep.look.prepared import tokenizer_file
from dataprep.look.vocab import Vocab

IM_START, IM_END = 151644, 151645
PAIR = re.compile(r"\((-?\d+), (\d+)\)")


@pytest.fixture(scope="module")
def vocab(prepared: Path) -> Vocab:
    return Vocab(tokenizer_file(prepared))


def inspect(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["inspect", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def shard_row(prepared: Path, shard: str, row: int) -> dict:
    return ipc.open_file(prepared / shard).read_all().slice(row, 1).to_pylist()[0]


def test_sample_shows_label_id_pairs_and_trained_text(prepared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # chat.jsonl row 3: two turns, "1 2 3" and "1 2 3 4 5" trained with their <|im_end|> (train_on_eos: turn).
    rc, out, err = inspect(capsys, str(prepared), "--source", "chat.jsonl:3", "--plain")
    assert rc == 0 and err == ""
    assert "── sample 11 (2 of 3) · " in out and "chat.jsonl:3 · positions 45-86 (42 tokens, 16 trained)" in out
    assert "shards/train-00000.arrow row 0 (train): 3 samples, 126 of 128 tokens" in out
    # Text view: masked prompt as is, trained answers in brackets, special tokens visible, newlines marked.
    assert "<|im_start|>user↵\nCount to three.<|im_end|>↵\n<|im_start|>assistant↵\n⟦1 2 3<|im_end|>⟧↵\n" in out
    assert "⟦1 2 3 4 5<|im_end|>⟧" in out
    # Pairs view: Axolotl-style text(label, id); the digits and spaces are separate Qwen tokens.
    assert "<|im_start|>(-100, 151644) user(-100, 872) ↵(-100, 198) Count(-100, 2507)" in out
    assert "1(16, 16) ␣(220, 220) 2(17, 17) ␣(220, 220) 3(18, 18) <|im_end|>(151645, 151645) ↵(-100, 198)" in out
    # Every token of the sample is there, in order, with the shard's labels and ids.
    row = shard_row(prepared, "shards/train-00000.arrow", 0)
    pairs_line = next(line for line in out.splitlines() if line.startswith("pairs: "))
    pairs = [(int(label), int(i)) for label, i in PAIR.findall(pairs_line)]
    assert pairs == list(zip(row["labels"][45:87], row["input_ids"][45:87], strict=True))
    assert "\x1b[" not in out  # plain: no escape codes


def test_row_shows_every_sample_with_its_boundaries(prepared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = inspect(capsys, str(prepared), "--row", "0", "--plain")
    assert rc == 0
    row = shard_row(prepared, "shards/train-00000.arrow", 0)
    cu, sample_ids = row["cu_seqlens"], row["sample_ids"]
    headers = re.findall(r"── sample (\d+) \((\d+) of (\d+)\) · .* · positions (\d+)-(\d+) \((\d+) tokens", out)
    assert [int(h[0]) for h in headers] == sample_ids == [5, 11, 0]
    assert [(int(h[3]), int(h[4]) + 1) for h in headers] == list(itertools.pairwise(cu))
    assert all(int(h[2]) == len(sample_ids) for h in headers)
    pairs_lines = [line for line in out.splitlines() if line.startswith("pairs: ")]
    assert [len(PAIR.findall(line)) for line in pairs_lines] == np.diff(cu).tolist()
    # The default is row 0 of the first shard.
    assert inspect(capsys, str(prepared), "--plain")[1] == out


def test_val_shard_and_source_paths(prepared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = inspect(capsys, str(prepared), "--row", "0", "--shard", "val-00000")
    assert rc == 0 and "shards/val-00000.arrow row 0 (val)" in out
    assert "⟦你好！<|im_end|>⟧" in out  # a multi-byte answer comes out whole
    by_sample = inspect(capsys, str(prepared), "--sample", "9")[1]
    source_file = str(prepared.parent / "data" / "chat.jsonl")
    assert inspect(capsys, str(prepared), "--source", f"{source_file}:1")[1] == by_sample
    assert "── sample 9 " in by_sample and by_sample.count("── sample") == 1


@pytest.mark.parametrize(("args", "message"), [
    (["--sample", "3"], "duplicate of sample 1"),
    (["--sample", "2"], "quarantined (malformed_json)"),
    (["--sample", "12"], "dropped (too_long, 216 tokens)"),
    (["--sample", "999"], "sample ids are 0-17"),
    (["--source", "chat.jsonl:99"], "no such row"),
    (["--source", "chat.jsonl"], "expected FILE:ROW"),
    (["--row", "7"], "no row 7"),
    (["--row", "0", "--shard", "test-00000"], "no shard 'test-00000'"),
])
def test_errors_say_what_happened(prepared: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                  message: str) -> None:
    rc, out, err = inspect(capsys, str(prepared), *args)
    assert rc == 1 and out == ""
    assert message in err


def test_color_only_when_asked(prepared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = build(prepared, sample=11, plain=False)
    print_lines(lines, color=True)
    out = capsys.readouterr().out
    assert "\x1b[" in out and "⟦" not in out
    assert "1 2 3" in re.sub(r"\x1b\[[0-9;]*m", "", out)
    assert "⟦" in to_plain(build(prepared, sample=11, plain=True))


def segment(ids: list[int], labels: list[int]) -> Segment:
    n = len(ids)
    return Segment(0, 0, n, np.array(ids), np.array(labels), np.arange(n), {})


def test_split_characters_and_wrong_labels(vocab: Vocab) -> None:
    # 🦜 is two byte-level tokens; the text view joins their bytes, the pairs view shows each token's bytes.
    parrot = [123918, 250]
    seg = segment([IM_START, *parrot, IM_END], [-100, -100, 250, IM_END])
    text = "".join(t for t, _ in text_view(seg, vocab, plain=True))
    assert text == "<|im_start|>\\xf0\\x9f\\xa6⟦\\x9c<|im_end|>⟧"  # split by the trained boundary: bytes
    masked_parrot = segment(parrot, [-100, -100])
    assert "".join(t for t, _ in text_view(masked_parrot, vocab, plain=True)) == "🦜"
    pairs = "".join(t for t, _ in pairs_view(masked_parrot, vocab))
    assert pairs == "\\xf0\\x9f\\xa6(-100, 123918) \\x9c(-100, 250)"
    # A label that is neither -100 nor the token itself is flagged.
    wrong = "".join(t for t, _ in pairs_view(segment([16, 17], [-100, 18]), vocab))
    assert wrong == "1(-100, 16) 2(18, 17) ≠"
