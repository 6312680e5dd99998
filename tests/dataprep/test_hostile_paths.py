"""Hostile-input sweep, round 3: dataset paths and stage-level failures that used to end in a traceback, a
"not found" that hid the real problem, a silently skipped file, or an error that did not name the row.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/dataprep/test_hostile_paths.py -v
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dataprep.load import InputError
from dataprep.pipeline import PrepareError
from tests.conftest import Prepare, write_jsonl

GOOD = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
CHAT = {"type": "chat_template"}


def test_a_path_name_too_long_for_the_file_system_is_a_one_line_error(prepare: Prepare) -> None:
    # Path.is_dir() raised OSError ENAMETOOLONG (it swallows only ENOENT, ENOTDIR, EBADF, ELOOP): a traceback.
    with pytest.raises(InputError, match=r"dataset 'a{300}\.jsonl': the name is too long for the file system"):
        prepare({"datasets": [{"path": "a" * 300 + ".jsonl", **CHAT}]})


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
    with pytest.raises(InputError, match=r"`~` and environment variables are not expanded in `path`; write it out"):
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
