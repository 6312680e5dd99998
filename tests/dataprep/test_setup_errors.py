"""Predictable setup failures are one-line errors that name the fix (and exit 2 when the config is at fault),
never tracebacks: unreadable chat_template_jinja files, unknown library templates and fixtures, invalid Jinja.

    .venv/bin/python -m pytest tests/dataprep/test_setup_errors.py -v
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dataprep.encode import TokenizerError
from dataprep.pipeline import ConfigProblem
from tests.conftest import Prepare, write_jsonl

CHAT = {"datasets": [{"path": "chat.jsonl", "type": "chat_template"}]}


@pytest.fixture(autouse=True)
def _data(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "q"},
                                                        {"role": "assistant", "content": "a"}]}])


def _problem(prepare: Prepare, **config: object) -> str:
    with pytest.raises(ConfigProblem) as e:
        prepare({**CHAT, **config})
    assert e.value.exit_code == 2
    message = str(e.value)
    assert "\n" not in message
    return message


def test_template_file_not_utf8(tmp_path: Path, prepare: Prepare) -> None:
    (tmp_path / "t.jinja").write_bytes(b"\xff\xfe{{ messages }}")
    message = _problem(prepare, chat_template="jinja", chat_template_jinja="t.jinja")
    assert message == f"chat_template_jinja: {tmp_path / 't.jinja'} is not UTF-8 text (byte 0); save it as UTF-8"


def test_template_file_is_a_directory(tmp_path: Path, prepare: Prepare) -> None:
    (tmp_path / "t.jinja").mkdir()
    message = _problem(prepare, chat_template="jinja", chat_template_jinja="t.jinja")
    assert message == f"chat_template_jinja: cannot read {tmp_path / 't.jinja'} (Is a directory)"


def test_unknown_library_template(prepare: Prepare) -> None:
    message = _problem(prepare, chat_template="chatmlx")
    assert message.startswith("chat_template 'chatmlx' is not in the template library (alpaca, aya, chatml, ")
    assert "did you mean chatml?" in message


def test_deeply_nested_template(prepare: Prepare) -> None:
    message = _problem(prepare, chat_template="jinja",
                       chat_template_jinja="{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}")
    assert message.startswith("datasets[0] (chat.jsonl): the chat template 'jinja' is not valid Jinja (")
    assert message.endswith("); fix it or choose another chat_template")


def test_unknown_fixture(prepare: Prepare) -> None:
    with pytest.raises(TokenizerError, match=r"tokenizer_config 'fixture:qwen9': unknown fixture; use one of "
                                             r"fixture:qwen2.5, .*or a local tokenizer folder"):
        prepare({**CHAT, "tokenizer_config": "fixture:qwen9"})


def test_template_file_too_large(tmp_path: Path, prepare: Prepare) -> None:
    (tmp_path / "t.jinja").write_text("{{ messages }}" + " " * (1 << 20))
    message = _problem(prepare, chat_template="jinja", chat_template_jinja="t.jinja")
    assert message == ("chat template 'jinja:t.jinja' is 1,048,590 characters long, more than the 1,048,576 a chat "
                       "template may have (real ones are 1-20 KB); is it the right file?")


def test_no_datasets_is_a_config_problem(prepare: Prepare) -> None:
    # `datasets:` with nothing under it was exit 1, as if the data were at fault
    assert _problem(prepare, datasets=None).endswith("`datasets` is empty: nothing to prepare; list at least one "
                                                     "dataset (path and type)")
