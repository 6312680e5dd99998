"""Configs that cannot hang or crash setup: a YAML alias bomb, recursive aliases, deep nesting, huge or
non-UTF-8 files, invalid --set values, and values beyond what the rest of the toolkit can read (sequence_len,
seed, .inf/.nan fractions). Each is a one-line config error naming the file (and line) and the fix.

    .venv/bin/python -m pytest tests/schemas/test_config_limits.py -v
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from schemas.config import MAX_SEQUENCE_LEN, ConfigError, load_config
from schemas.overrides import OverrideError
from schemas.yaml_limits import MAX_CONFIG_BYTES, MAX_CONFIG_NODES, count_nodes

ROOT = Path(__file__).resolve().parents[2]


def billion_laughs(levels: int = 9) -> str:
    """The classic: level k is 9 aliases of level k-1, so the expanded document has 9^levels scalars."""
    lines = ["tokenizer_config: tok", 'l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for k in range(1, levels + 1):
        lines.append(f"l{k}: &l{k} [" + ",".join([f"*l{k - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def _problems(tmp_path: Path, text: str | bytes, overrides: list[str] | None = None) -> list[str]:
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError) as e:
        load_config(cfg, overrides, warnings=[])
    return e.value.problems


def test_billion_laughs_is_refused_by_the_cli_within_seconds(tmp_path: Path) -> None:
    """Before the fix this hung in the YAML-trap walk (and would have in pydantic): a real process with a
    timeout on it, so a regression fails instead of hanging the suite."""
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(billion_laughs())
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "dataprep.cli", "prepare", str(cfg), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert f"{cfg}: the YAML expands to more than {MAX_CONFIG_NODES:,} values" in proc.stderr
    assert "remove the repeated aliases" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - start < 60
    assert not (tmp_path / "o").exists()


def test_node_count_visits_each_node_once() -> None:
    """9 levels of 9 aliases: the count stops at the bound after visiting ~100 distinct nodes, not 9^9."""
    root = yaml.compose(billion_laughs(), Loader=yaml.SafeLoader)
    start = time.monotonic()
    with pytest.raises(ValueError, match="expands to more than"):
        count_nodes(root)
    assert time.monotonic() - start < 1
    small = yaml.compose(billion_laughs(levels=3), Loader=yaml.SafeLoader)
    # 9^3 lol scalars at the top level, plus the sequences and keys: below the bound, counted exactly.
    assert count_nodes(small) > 9**3


def test_aliases_below_the_bound_still_work_and_traps_are_warned_once(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tokenizer_config: tok\n"
                   "datasets:\n"
                   "  - &ds\n"
                   "    path: data.jsonl\n"
                   "    type:\n"
                   "      format: Q {instruction}   \n"
                   "  - *ds\n"
                   "  - *ds\n")
    warnings: list[str] = []
    config = load_config(cfg, warnings=warnings)
    assert [d.type.format for d in config.datasets] == ["Q {instruction}"] * 3
    assert len(warnings) == 1 and f"{cfg}:6: format: YAML dropped the 3 trailing" in warnings[0]


def test_recursive_alias(tmp_path: Path) -> None:
    [p] = _problems(tmp_path, "tokenizer_config: tok\nloop: &a [1, *a]\n")
    assert "recursive alias" in p and "line 2" in p


def test_deep_nesting(tmp_path: Path) -> None:
    [p] = _problems(tmp_path, "tokenizer_config: tok\nx: " + "[" * 20000 + "\n")
    assert p == f"{tmp_path / 'c.yaml'}: the YAML is nested too deeply for a config (thousands of levels of [ or {{)"


def test_file_too_large(tmp_path: Path) -> None:
    [p] = _problems(tmp_path, "tokenizer_config: tok\n# " + "x" * MAX_CONFIG_BYTES + "\n")
    assert "a config is a few KB" in p and "is this the right file?" in p


def test_not_utf8(tmp_path: Path) -> None:
    [p] = _problems(tmp_path, b"tokenizer_config: tok\nchat_template: \xff\xfe\n")
    assert p == f"{tmp_path / 'c.yaml'}:2: the config is not UTF-8 text (byte 0xff); save it as UTF-8"


def test_invalid_yaml_is_one_line(tmp_path: Path) -> None:
    [p] = _problems(tmp_path, "tokenizer_config: tok\ndatasets: [\n")
    assert p.startswith(f"{tmp_path / 'c.yaml'}: not valid YAML: ") and "\n" not in p


def test_set_with_invalid_yaml_or_a_bomb(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tokenizer_config: tok\n")
    with pytest.raises(OverrideError, match=r"--set 'sequence_len=\[1': the value is not valid YAML"):
        load_config(cfg, ["sequence_len=[1"])
    with pytest.raises(OverrideError, match="nested too deeply"):
        load_config(cfg, ["x=" + "[" * 20000])
    levels = ["&l0 [1,1,1,1,1,1,1,1,1]"] + [f"&l{k} [" + ",".join([f"*l{k - 1}"] * 9) + "]" for k in range(1, 7)]
    with pytest.raises(OverrideError, match="expands to more than"):
        load_config(cfg, ["tokens=[" + ", ".join(levels) + "]"])


@pytest.mark.parametrize(("line", "expected"), [
    ("sequence_len: 3000000000", f"sequence_len: Input should be less than or equal to {MAX_SEQUENCE_LEN}"),
    ("seed: -1", "seed: Input should be greater than or equal to 0"),
    ("seed: 4294967296", "seed: Input should be less than or equal to 4294967295"),
    ("val_set_size: .inf", "val_set_size: Input should be a finite number"),
    ("val_set_size: .nan", "val_set_size: Input should be a finite number"),
    ("quarantine_max_fraction: .nan", "quarantine_max_fraction: Input should be a finite number"),
    ("learning_rate: .nan", "learning_rate: Input should be a finite number"),
    # YAML booleans are 1 and 0 to pydantic's int and float: `sequence_len: true` was a 1-token sequence
    ("sequence_len: true", "sequence_len: true is a yes/no value; give a number"),
    ("val_set_size: yes", "val_set_size: true is a yes/no value; give a number"),
    ("seed: false", "seed: false is a yes/no value; give a number"),
    # an empty path was the config's own folder, read as data
    ('datasets: [{path: ""}]', "datasets[0].path: String should have at least 1 character"),
])
def test_bounds(tmp_path: Path, line: str, expected: str) -> None:
    [p] = _problems(tmp_path, f"tokenizer_config: tok\n{line}\n")
    assert p == f"{tmp_path / 'c.yaml'}:2: {expected}"


def test_bounds_accept_their_limits(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"tokenizer_config: tok\nsequence_len: {MAX_SEQUENCE_LEN}\nseed: 4294967295\nval_set_size: 0\n")
    config = load_config(cfg)
    assert (config.sequence_len, config.seed) == (MAX_SEQUENCE_LEN, 2**32 - 1)


def test_dates_in_yaml(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tokenizer_config: tok\nchat_template_date: 2025-06-30\n")  # unquoted: a YAML date
    assert load_config(cfg).chat_template_date == "2025-06-30"
    [p] = _problems(tmp_path, "tokenizer_config: tok\nchat_template_date: 2026-13-45\n")
    assert "reads as a date or number but is not one (month must be in 1..12); quote it if it is text" in p
    cfg.write_text("tokenizer_config: tok\n")
    with pytest.raises(OverrideError, match=r"--set 'seed=2026-13-45': this YAML has a value"):
        load_config(cfg, ["seed=2026-13-45"])


def test_a_key_given_twice_is_warned_with_both_lines(tmp_path: Path) -> None:
    # YAML keeps the last one without a word (Axolotl too), so `sequence_len: 4096` written again further down
    # silently won; still legal YAML to PyYAML and Axolotl, hence a warning, not an error.
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tokenizer_config: tok\nsequence_len: 4096\ndatasets:\n  - path: a.jsonl\n    type: alpaca\n"
                   "    path: b.jsonl\nsequence_len: 512\n")
    warnings: list[str] = []
    config = load_config(cfg, warnings=warnings)
    assert config.sequence_len == 512 and config.datasets[0].path == "b.jsonl"
    assert warnings == [
        f"{cfg}:7: sequence_len is given twice (also on line 2); YAML keeps this last one (512): remove the other",
        f"{cfg}:6: datasets[0].path is given twice (also on line 4); YAML keeps this last one (b.jsonl): remove "
        "the other"]
