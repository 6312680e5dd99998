"""Axolotl's own tokenizing strategies as a test reference: the `axolotl/` package of the pinned wheel
(dataprep/fetch_axolotl.py), imported as Axolotl builds a strategy from a config.

The wheel requires Python 3.12 and pulls half of PyPI as dependencies, but the prompt strategies only need
transformers, pydantic and two small pure-Python packages (`colorama`, `addict`, in the `dev` extra). So the
package is extracted once into the fixture cache, beside the templates fetch_axolotl keeps:

    fixtures/axolotl-0.21.0/package/axolotl/...   # the wheel's axolotl/ tree, byte for byte
    fixtures/axolotl-0.21.0/package/EXTRACTED     # written last: the wheel's sha256

and put on sys.path. What Axolotl does between the YAML and the strategy is done the same way here:
`SFTDataset(**ds).model_dump(exclude_none=True)` in a `DictDefault` (axolotl/utils/config validate_config),
the top-level `chat_template` (edited by `default_system_message`) written into the tokenizer
(axolotl/loaders/tokenizer.py), then
`axolotl.prompt_strategies.load(type, tokenizer, cfg, ds_cfg)` (axolotl/utils/data/wrappers.py), or the
prompter classes of wrappers.DATASET_HANDLERS for the instruct types it does not load by name.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import zipfile
from pathlib import Path
from typing import Any

from dataprep.fetch_axolotl import WHEEL_SHA256, _download_wheel, cache_root
from dataprep.fixture_cache import locked


def package_dir() -> Path:
    """The extracted `axolotl/` package's parent folder, extracting the pinned wheel first when needed."""
    root = cache_root()
    out = root / "package"
    marker = out / "EXTRACTED"
    with contextlib.suppress(OSError):
        if marker.read_text().strip() == WHEEL_SHA256:
            return out
    with locked(root):
        with contextlib.suppress(OSError):
            if marker.read_text().strip() == WHEEL_SHA256:
                return out
        wheel = _download_wheel(root)
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(out, [m for m in zf.namelist() if m.startswith("axolotl/")])
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(WHEEL_SHA256 + "\n")
        os.replace(tmp, marker)
    return out


@functools.cache
def _import() -> Any:
    path = str(package_dir())
    if path not in sys.path:
        sys.path.insert(0, path)
    import axolotl.prompt_strategies as strategies

    # Axolotl logs every template it loads and a warning per odd turn: noise in a test run.
    for name in ("axolotl", "axolotl.prompt_strategies.chat_template", "axolotl.utils.chat_templates"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return strategies


@functools.cache
def _tokenizer(path: str, chat_template: str | None, default_system_message: str | None = None) -> Any:
    from axolotl.utils.chat_templates import get_chat_template_from_config
    from axolotl.utils.dict import DictDefault
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if chat_template:  # axolotl/loaders/tokenizer.py: the config's template replaces the tokenizer's
        text = get_chat_template_from_config(cfg=DictDefault({"chat_template": chat_template}), tokenizer=tok)
        if default_system_message and chat_template == "chatml":  # the same file, the lines after
            text = text.replace("You are a helpful assistant.", default_system_message)
        tok.chat_template = text
    return tok


def strategy(tokenizer: Path, ds: dict[str, Any], **top: Any) -> Any:
    """Axolotl's strategy for one datasets[] entry `ds` under top-level keys `top` (chat_template,
    chat_template_kwargs, default_system_message, train_on_inputs, eot_tokens, sequence_len ...), as Axolotl
    builds it from a config."""
    strategies = _import()
    from axolotl.utils.dict import DictDefault
    from axolotl.utils.schemas.datasets import SFTDataset

    ds_cfg = DictDefault(SFTDataset(**{"path": "x", **ds}).model_dump(exclude_none=True))
    cfg = DictDefault({"sequence_len": 2048, "train_on_inputs": False, **top})
    tok = _tokenizer(str(tokenizer), top.get("chat_template"), top.get("default_system_message"))
    loaded = strategies.load(ds_cfg.type, tok, cfg, ds_cfg)
    if loaded is None:
        loaded = _instruct_strategy(ds_cfg.type, tok, cfg)
    return loaded


def _instruct_strategy(ds_type: str, tok: Any, cfg: Any) -> Any:
    """The named instruct types Axolotl does not load by module name (wrappers.DATASET_HANDLERS)."""
    from axolotl.prompt_tokenizers import AlpacaPromptTokenizingStrategy
    from axolotl.prompters import AlpacaPrompter

    base, _, style = ds_type.partition(":")
    if base != "alpaca":
        raise NotImplementedError(f"no reference for type {ds_type!r}")
    return AlpacaPromptTokenizingStrategy(AlpacaPrompter(style or None), tok, cfg.train_on_inputs, cfg.sequence_len)


def tokenize(tokenizer: Path, ds: dict[str, Any], rows: list[dict[str, Any]], **top: Any) -> list[Any]:
    """Per row Axolotl's (input_ids, labels), or the exception Axolotl raised for it."""
    strat = strategy(tokenizer, ds, **top)
    out: list[Any] = []
    for row in rows:
        try:
            res = strat.tokenize_prompt(dict(row))
        except Exception as e:
            out.append(e)
            continue
        out.append((list(res["input_ids"]), list(res["labels"])))
    return out
