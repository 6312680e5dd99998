"""Print, don't parse: text from configs, paths and data is never read as rich markup (a Llama-2 prompt
`<s>[INST] … [/INST]` through the whole CLI), `inspect` shows terminal control sequences escaped (plain and
colored), errors too; off a terminal prepare prints one line per stage; --workers is capped at the cores; a
validation split that leaves train empty is a config error with the numbers.

    .venv/bin/python -m pytest tests/dataprep/test_print.py -v
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from dataprep.cli import available_cores
from dataprep.look import golden, inspect_tokens
from dataprep.pipeline import ConfigProblem
from dataprep.report import escape_controls, summary_table
from tests.conftest import Prepare, write_jsonl

ROOT = Path(__file__).resolve().parents[2]
# ESC-based CSI/OSC, BEL, CR, backspace, the one-byte C1 CSI, DEL, a bidi override and a line separator.
HOSTILE = "\x1b[31mred\x1b[0m \x1b]0;owned\x07 \r\x08 \x9b2J \x7f \u202eevil\u202c \u2028"
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
RICH_SGR = re.compile(r"\x1b\[[0-9;]*m")  # the color codes rich itself writes


def test_escape_controls() -> None:
    assert escape_controls("plain text, 東京, emoji 👩‍💻, tab\there") == "plain text, 東京, emoji 👩‍💻, tab\there"
    assert escape_controls(HOSTILE) == ("\\x1b[31mred\\x1b[0m \\x1b]0;owned\\x07 \\x0d\\x08 \\x9b2J \\x7f "
                                        "\\u202eevil\\u202c \\u2028")
    assert escape_controls("a\nb") == "a\\x0ab"
    assert escape_controls("a\nb", keep_newlines=True) == "a\nb"


def test_llama2_format_through_the_cli(tmp_path: Path) -> None:
    """The Llama-2 prompt in a custom instruct type (unquoted, so the YAML-trap warning quotes it back), data
    with rich markup in it, and a non-terminal stdout/stderr: exit 0, everything printed literally."""
    rows = [{"instruction": f"Say [bold]{i}[/bold] [link=http://x]x[/link]", "input": "" if i % 2 else f"[/] {i}",
             "output": f"Answer [/INST] {i}"} for i in range(12)]
    write_jsonl(tmp_path / "data" / "llama2.jsonl", rows)
    cfg = tmp_path / "llama2.yaml"
    cfg.write_text("tokenizer_config: fixture:qwen2.5\n"
                   "datasets:\n"
                   "  - path: data/llama2.jsonl\n"
                   "    type:\n"
                   "      format: '<s>[INST] {instruction} {input} [/INST] '\n"
                   "      no_input_format: <s>[INST] {instruction} [/INST] \n"
                   "sequence_len: 256\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "dataprep.cli", "prepare", str(cfg), "--out", str(tmp_path / "out"),
           "--workers", "64"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert (f"warning: {cfg}:6: no_input_format: YAML dropped the 1 trailing whitespace character(s) after "
            "'<s>[INST] {instruction} [/INST]'") in proc.stdout
    cores = available_cores()
    assert f"warning: 64 workers requested but this machine has {cores} core(s): using {cores}" in proc.stdout
    assert "│ data/llama2.jsonl │      12 │   12 │" in proc.stdout
    assert f"wrote {tmp_path / 'out'}" in proc.stdout
    # One plain line per stage, as it ends, on stderr (a log file here).
    stages = [line for line in proc.stderr.splitlines() if line.startswith("stage ")]
    assert [s.split(":")[0] for s in stages] == ["stage setup", "stage rows", "stage exact_dedup", "stage split",
                                                 "stage pack", "stage write"]
    assert re.fullmatch(r"stage rows: 12 rows in \d+\.\d\ds", stages[1])
    # The prompt really is in the shards, brackets and all.
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["accounting"]["kept"] == 12
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert again.returncode == 0 and "up to date:" in again.stdout, again.stderr


def test_summary_table_prints_names_literally() -> None:
    manifest = {"accounting": {"input_rows": 1, "kept": 1, "quarantined": 0, "duplicates": 0, "dropped": 0},
                "stats": {"tokens": 10, "trainable_share": 0.5, "per_dataset": {
                    "[bold red]x[/] \x1b]0;t\x07": {"rows_in": 1, "kept": 1, "tokens": 10, "trainable": 5}}}}
    buf = io.StringIO()
    Console(file=buf, width=120, force_terminal=False).print(summary_table(manifest))
    assert "[bold red]x[/] \\x1b]0;t\\x07" in buf.getvalue()


@pytest.fixture
def hostile_prepared(tmp_path: Path, prepare: Prepare) -> Path:
    write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": f"look: {HOSTILE} [/INST]"},
                                                        {"role": "assistant", "content": f"ok {HOSTILE}"}]}])
    return prepare({"datasets": [{"path": "chat.jsonl", "type": "chat_template"}]}).out


def test_inspect_plain_escapes_control_sequences(hostile_prepared: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "dataprep.cli", "inspect", str(hostile_prepared), "--sample", "0",
                           "--plain"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not CONTROL.search(proc.stdout), repr(CONTROL.search(proc.stdout))
    assert "look: \\x1b[31mred\\x1b[0m \\x1b]0;owned\\x07 \\x0d\\x08 \\x9b2J \\x7f \\u202eevil\\u202c" in proc.stdout
    assert "[/INST]" in proc.stdout
    pairs = next(line for line in proc.stdout.splitlines() if line.startswith("pairs: "))
    assert "\\x1b" in pairs  # (U+202E is split across byte-level tokens there, shown as \\xNN bytes)


def test_inspect_colored_escapes_control_sequences(hostile_prepared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = inspect_tokens.build(hostile_prepared, sample=0, plain=False)
    inspect_tokens.print_lines(lines, color=True)
    out = capsys.readouterr().out
    assert RICH_SGR.search(out)  # it is colored
    assert not CONTROL.search(RICH_SGR.sub("", out))
    assert "\\x1b]0;owned\\x07" in out and "[/INST]" in out


def test_inspect_errors_escape_control_sequences(hostile_prepared: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "dataprep.cli", "inspect", str(hostile_prepared), "--source",
                           "x\x1b]0;t\x07.jsonl:0"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: --source 'x\\x1b]0;t\\x07.jsonl:0': no such row")
    assert not CONTROL.search(proc.stderr)


def test_golden_diff_table_prints_pieces_literally(qwen_dir: Path) -> None:
    """A Llama-2 tokenizer has `[/INST]` as a piece; rich would read it as a closing tag and raise."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(qwen_dir))
    tok.add_tokens(["[/INST]", "[bold red]"])
    ids = tok.encode("[bold red]hi[/INST]")
    mismatch = golden.Mismatch("f.jsonl:0", "saved", (ids, [-100] * len(ids)), ([0, *ids[1:]], None))
    buf = io.StringIO()
    Console(file=buf, width=140, force_terminal=False).print(golden._diff_table(mismatch, tok))
    text = buf.getvalue()
    assert "│ '[/INST]' " in text and "│ '[bold red]' " in text


def test_validation_split_that_empties_train_is_a_config_error(tmp_path: Path, prepare: Prepare) -> None:
    write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": f"q{i}"},
                                                        {"role": "assistant", "content": f"a{i}"}]} for i in range(3)])
    with pytest.raises(ConfigProblem) as e:
        prepare({"datasets": [{"path": "chat.jsonl", "type": "chat_template"}], "val_set_size": 5})
    assert str(e.value) == ("val_set_size 5 puts all 3 kept samples in the validation split and none in train; "
                            "lower val_set_size (a fraction < 1, or a count below 3)")
    assert e.value.exit_code == 2
    assert not (tmp_path / "out").exists()
    result = prepare({"datasets": [{"path": "chat.jsonl", "type": "chat_template"}], "val_set_size": 2})
    assert result.manifest["stats"]["rows_by_split"] == {"train": 1, "val": 2}


def test_workers_below_one_is_an_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tokenizer_config: fixture:qwen2.5\ndatasets: [{path: x.jsonl}]\n")
    proc = subprocess.run([sys.executable, "-m", "dataprep.cli", "prepare", str(cfg), "--workers", "0"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert (proc.returncode, proc.stderr) == (2, "error: --workers 0: give 1 or more worker processes\n")
