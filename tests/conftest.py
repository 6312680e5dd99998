"""Shared fixtures: the real Qwen2.5 tokenizer (built offline by dataprep.fetch_tokenizers) and a helper that
writes a config plus data files into a temp folder and prepares them.

Run everything with `make test`, or one file with `.venv/bin/python -m pytest tests/dataprep/test_pack.py -v`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from dataprep.encode import TokenizerInfo
from dataprep.fetch_tokenizers import tokenizer_dir
from dataprep.load import RawRow
from dataprep.pipeline import Result, run_pipeline
from dataprep.render import resolve_template
from dataprep.report import Progress
from dataprep.template_names import with_default_system
from dataprep.transform import RowProcessor, RowResult, tokenizer_for
from schemas.config import config_from_dict, load_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def qwen_dir() -> Path:
    return tokenizer_dir("qwen2.5")


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory, qwen_dir: Path) -> Path:
    """The small prepared directory with known answers that the query, inspect and report tests read."""
    from tests.sql.fixture import build_prepared

    return build_prepared(tmp_path_factory.getbasetemp() / "sql_fixture", qwen_dir)


@pytest.fixture(scope="session")
def hf_qwen(qwen_dir: Path) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(qwen_dir))
    tok.chat_template = (ROOT / "dataprep" / "templates" / "chatml.jinja").read_text()
    return tok


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@functools.cache
def _tokenizer(path: str) -> TokenizerInfo:
    cfg = config_from_dict({"tokenizer_config": path, "datasets": [{"path": "x"}]})
    return tokenizer_for(cfg, Path("."))


def process_rows(tokenizer: Path, ds: dict[str, Any], rows: list[Any], **top: Any) -> list[RowResult]:
    """Rows of one dataset through parse -> format -> render -> tokenize, without writing anything."""
    top = {"chat_template": "chatml", **top}
    cfg = config_from_dict({"tokenizer_config": str(tokenizer), "datasets": [{"path": "x", **ds}], **top})
    tok = _tokenizer(str(tokenizer))
    template = None
    ds0 = cfg.datasets[0]
    if ds0.type == "chat_template":
        name, jinja = (ds0.chat_template, ds0.chat_template_jinja) if ds0.chat_template else (cfg.chat_template,
                                                                                               cfg.chat_template_jinja)
        template = resolve_template(name, jinja, tok.chat_template, Path("."))[1]
        if not ds0.chat_template:  # as pipeline._chat_templates edits the top-level template
            template = with_default_system(cfg.chat_template, template, cfg.default_system_message)
    return RowProcessor(cfg, 0, tok, template).process([RawRow(i, r) for i, r in enumerate(rows)])


Prepare = Callable[..., Result]


@pytest.fixture
def prepare(tmp_path: Path, qwen_dir: Path) -> Prepare:
    """prepare(config_dict, out_name="out", workers=1, overrides=None) -> Result; data paths are relative to
    tmp_path, where the config file is written."""

    def run(config: dict[str, Any], out_name: str = "out", workers: int = 1, force: bool = False,
            overrides: list[str] | None = None) -> Result:
        config = {"tokenizer_config": str(qwen_dir), "chat_template": "chatml", **config}
        cfg_path = tmp_path / "config.yaml"
        cfg_path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
        cfg = load_config(cfg_path, overrides)
        return run_pipeline(cfg, cfg_path, tmp_path / out_name, workers=workers, force=force,
                            progress=Progress(enabled=False))

    return run
