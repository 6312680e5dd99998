"""Hostile-input sweep, round 3: dataset paths and stage-level failures that used to end in a traceback, a
"not found" that hid the real problem, a silently skipped file, or an error that did not name the row.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/dataprep/test_hostile_paths.py -v
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dataprep.fetch_tokenizers import tokenizer_dir
from dataprep.load import InputError
from dataprep.pipeline import PrepareError
from tests.conftest import Prepare, write_jsonl

GOOD = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
CHAT = {"type": "chat_template"}
ROOT = Path(__file__).resolve().parents[2]


def test_a_path_name_too_long_for_the_file_system_is_a_one_line_error(prepare: Prepare) -> None:
    # Path.is_dir() raised OSError ENAMETOOLONG (it swallows only ENOENT, ENOTDIR, EBADF, ELOOP): a traceback.
    with pytest.raises(InputError, match=r"dataset 'a{300}\.jsonl': the name is too long for the file system"):
        prepare({"datasets": [{"path": "a" * 300 + ".jsonl", **CHAT}]})


def test_a_nul_in_the_path_is_named(prepare: Prepare) -> None:
    # os.stat raises ValueError for it (Path.is_dir swallows that, a plain os.stat does not)
    with pytest.raises(InputError, match=r"the path holds a NUL character"):
        prepare({"datasets": [{"path": "a\x00b.jsonl", **CHAT}]})


def test_a_fifo_is_not_called_missing(tmp_path: Path, prepare: Prepare) -> None:
    os.mkfifo(tmp_path / "pipe.jsonl")
    with pytest.raises(InputError, match=r"pipe.jsonl is a FIFO, not a regular file; write the data to a file"):
        prepare({"datasets": [{"path": "pipe.jsonl", **CHAT}]})


@pytest.mark.parametrize(("target", "why"), [("nowhere.jsonl", r"is a symbolic link to .*nowhere.jsonl, which does "
                                              r"not exist"), ("loop.jsonl", r"is a symbolic link that loops")])
def test_a_broken_symlink_says_where_it_points(tmp_path: Path, prepare: Prepare, target: str, why: str) -> None:
    os.symlink(tmp_path / target, tmp_path / "loop.jsonl")
    with pytest.raises(InputError, match=why):
        prepare({"datasets": [{"path": "loop.jsonl", **CHAT}]})


@pytest.mark.parametrize("path", ["~/data/chat.jsonl", "$HOME/chat.jsonl", "${DATA}/chat.jsonl"])
def test_home_and_variables_are_not_expanded_and_the_error_says_so(prepare: Prepare, path: str) -> None:
    # Axolotl hands the path to datasets.load_dataset, which expands neither; the message said only "not found".
    with pytest.raises(InputError, match=r"`~` and environment variables are not expanded in `path`: write it out"):
        prepare({"datasets": [{"path": path, **CHAT}]})


def test_a_data_files_entry_that_matches_nothing_is_an_error(tmp_path: Path, prepare: Prepare) -> None:
    # It was skipped without a word: the run prepared a.jsonl alone.
    write_jsonl(tmp_path / "a.jsonl", [GOOD])
    with pytest.raises(InputError, match=r"dataset '\.': data_files entry 'nope.jsonl' matches no file in "):
        prepare({"datasets": [{"path": ".", "data_files": ["a.jsonl", "nope.jsonl"], **CHAT}]})


def test_nothing_kept_after_the_stages_says_which_stage_removed_what(tmp_path: Path, prepare: Prepare) -> None:
    # The message said "see the summary above", but no summary is printed for a failed run.
    write_jsonl(tmp_path / "chat.jsonl", [GOOD])
    with pytest.raises(PrepareError, match=r"no row was kept after the stages: mix removed 1 \(weighted_out 1\); "
                                           r"nothing to train on"):
        prepare({"datasets": [{"path": "chat.jsonl", **CHAT, "weight": 1e-9}]})


def test_a_filter_failing_on_one_row_names_that_row(tmp_path: Path, prepare: Prepare) -> None:
    rows = [{**GOOD, "score": s} for s in ("1", "2", "high", "3")]
    write_jsonl(tmp_path / "chat.jsonl", rows)
    with pytest.raises(PrepareError, match=r"filter 'score' fails on the data, first at .*chat.jsonl row 2: "
                                          r"Conversion Error: .*'high'.*try_cast"):
        prepare({"datasets": [{"path": "chat.jsonl", **CHAT}], "dataset_exact_deduplication": False,
                 "filters": [{"name": "score", "where": "cast(score as integer) > 0"}]})


def _prepare_without_root_powers(tmp_path: Path, config: str, tokenizer: Path | None = None
                                 ) -> subprocess.CompletedProcess[str]:
    """`tessera prepare` as a process that obeys file permissions: root (as in CI containers) reads chmod 000
    files, so as root it runs without the capabilities that let it (setpriv drops DAC override)."""
    tokenizer = tokenizer or tokenizer_dir("qwen2.5")
    (tmp_path / "c.yaml").write_text(f"tokenizer_config: {tokenizer}\nchat_template: chatml\n{config}")
    cmd = [sys.executable, "-m", "dataprep.cli", "prepare", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "out")]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: permissions cannot be enforced")
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
               "--inh-caps=-dac_override,-dac_read_search", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.mark.parametrize(("path", "split", "unreadable", "message"), [
    ("x.jsonl", "train", "x.jsonl", "cannot be read (Permission denied); make it readable (chmod a+r)"),
    ("ds", "train", "ds/b.jsonl", "cannot be read (Permission denied); make it readable (chmod a+r)"),
    ("x.jsonl", "train[:1]", "x.jsonl", "cannot be read (Permission denied); make it readable (chmod a+r)"),
    # os.walk skipped a folder it could not list, and the run prepared the rest without a word
    ("ds", "train", "ds/sub", "cannot be listed (Permission denied); its data files would be left out"),
    ("ds", "train", "ds/README.md", "cannot be read (Permission denied); make it readable (chmod a+r): its `configs`"),
])
def test_an_unreadable_file_or_folder_is_a_one_line_error(tmp_path: Path, path: str, split: str, unreadable: str,
                                                          message: str) -> None:
    # Each was a PermissionError traceback (from the fingerprint, counting rows for a split slice, or reading
    # README.md), or, for a folder, its files silently left out.
    write_jsonl(tmp_path / "x.jsonl", [GOOD])
    write_jsonl(tmp_path / "ds" / "a.jsonl", [GOOD])
    write_jsonl(tmp_path / "ds" / "b.jsonl", [GOOD])
    write_jsonl(tmp_path / "ds" / "sub" / "c.jsonl", [GOOD])
    (tmp_path / "ds" / "README.md").write_text("# no configs\n")
    (tmp_path / unreadable).chmod(0)
    done = _prepare_without_root_powers(tmp_path, f"datasets:\n  - path: {path}\n    type: chat_template\n"
                                                  f"    split: '{split}'\n")
    (tmp_path / unreadable).chmod(0o755)  # so that pytest can remove tmp_path
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"error: {tmp_path / unreadable}: {message}" in done.stderr, done.stderr


def test_an_unreadable_eval_file_or_tokenizer_file_is_named(tmp_path: Path) -> None:
    # The eval file was a PermissionError traceback; tokenizer.json was called "damaged or truncated".
    write_jsonl(tmp_path / "x.jsonl", [GOOD])
    write_jsonl(tmp_path / "eval.jsonl", [{"text": "Hello"}])
    (tmp_path / "eval.jsonl").chmod(0)
    data = "datasets:\n  - path: x.jsonl\n    type: chat_template\n"
    done = _prepare_without_root_powers(tmp_path, data + "decontaminate:\n  - path: eval.jsonl\n    field: text\n")
    assert "Traceback" not in done.stderr and done.returncode == 2, done.stderr
    assert f"decontaminate[0]: eval file {tmp_path / 'eval.jsonl'} cannot be read (Permission denied)" in done.stderr
    shutil.copytree(tokenizer_dir("qwen2.5"), tmp_path / "tok")
    (tmp_path / "tok" / "tokenizer.json").chmod(0)
    done = _prepare_without_root_powers(tmp_path, data, tmp_path / "tok")
    assert done.returncode == 1 and "damaged" not in done.stderr, done.stderr
    assert f"{tmp_path / 'tok' / 'tokenizer.json'}: cannot read (Permission denied)" in done.stderr
