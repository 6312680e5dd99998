"""Mistral tokenizer files: `tokenizer_config: mistral:<name>` resolved to a mistral-common tokenizer file, the
copy saved next to the shards (loadable by vLLM and by transformers' MistralCommonBackend), and transformers'
conversion of the same vocabulary (the HF route; dataprep/mistral.py encodes the chats with mistral-common).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import mistral_common
from mistral_common.tokens.tokenizers.sentencepiece import is_sentencepiece
from mistral_common.tokens.tokenizers.tekken import is_tekken
from mistral_common.tokens.tokenizers.utils import get_one_valid_tokenizer_file
from tokenizers import Tokenizer

from dataprep.hf_tokenizer import TokenizerError

PREFIX = "mistral:"
SHIPPED_DIR = Path(mistral_common.__file__).parent / "data"
MISTRAL_COMMON_VERSION = mistral_common.__version__

def is_mistral_tokenizer(name: str | None) -> bool:
    """True for `tokenizer_config: mistral:<name>`: the rows are encoded by mistral-common, not by an HF
    tokenizer plus a chat template. A folder with tekken.json is not detected by itself, because HF repos of
    Mistral models hold both tokenizer.json and tekken.json. The prefix is the user's choice of route."""
    return name is not None and name.startswith(PREFIX)


def shipped_tokenizers() -> list[str]:
    """The tokenizer files inside the mistral-common wheel (v1, v2, v3, v7, v7m1, tekken 240718/240911)."""
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if is_tekken(p) or is_sentencepiece(p))


def resolve_mistral_tokenizer(name: str, config_dir: Path) -> Path:
    """The mistral-common tokenizer file for `mistral:<name>`. <name> is a file shipped with mistral-common
    (`tekken_240911.json`, `mistral_instruct_tokenizer_240323.model.v3`, ...), a tokenizer file
    (`tekken*.json`, `*.model.v<N>`), or a folder that holds one (`tekken.json` or `tokenizer.model.v<N>`, as
    in Mistral's HF repos). Relative paths are tried against the config's folder first, then the working
    directory."""
    rest = name.removeprefix(PREFIX)
    shipped = shipped_tokenizers()
    if rest in shipped:
        return SHIPPED_DIR / rest
    hint = (f"use mistral:<file> with one of mistral-common {MISTRAL_COMMON_VERSION}'s files "
            f"({', '.join(shipped)}), or mistral:<path> to a folder with tekken.json or tokenizer.model.v<N>")
    if not rest:
        raise TokenizerError(f"tokenizer_config '{name}' names no tokenizer: {hint}")
    path = Path(rest).expanduser()
    candidates = [path] if path.is_absolute() else [config_dir / path, path]
    for p in candidates:
        if p.is_file():
            # mistral-common picks the tokenizer class and version from the file name alone.
            if is_tekken(p) or is_sentencepiece(p):
                return p.resolve()
            raise TokenizerError(f"tokenizer_config '{name}': {p} is not a mistral-common tokenizer file (it reads "
                                 "tekken*.json and *.model.v<N>, the version taken from the name)")
        if p.is_dir():
            try:
                # mistral-common's own rule: tekken.json wins, else the last SentencePiece file by name.
                return (p / get_one_valid_tokenizer_file(sorted(os.listdir(p)))).resolve()
            except ValueError:
                raise TokenizerError(f"tokenizer_config '{name}': {p} holds no tekken.json or tokenizer.model.v<N>; "
                                     f"{hint}") from None
    raise TokenizerError(f"tokenizer_config '{name}': {' or '.join(str(c) for c in candidates)} not found; {hint}")


def save_tokenizer_files(source: str | Path, folder: Path, config_dir: Path | None = None) -> dict[str, str]:
    """Copy the mistral-common tokenizer file into `folder` (the prepared dir's tokenizer/), named as in
    Mistral's HF repos (tekken.json, tokenizer.model.v<N>), so vLLM (`--tokenizer-mode mistral`) and
    mistral-common find it. Also write a tokenizer_config.json that makes `AutoTokenizer.from_pretrained(folder)`
    load transformers' `MistralCommonBackend`, offline. That backend wraps mistral-common and its
    `apply_chat_template` gives the ids trained here. The tested alternative fails offline: without the config,
    AutoTokenizer converts tekken.json to a plain HF tokenizer with no chat template, and it cannot load a
    SentencePiece folder at all. `source` is a `mistral:` name or a resolved path. The copy is byte for byte,
    so the manifest's hash matches the source's. Returns file name -> sha256."""
    path = source if isinstance(source, Path) else resolve_mistral_tokenizer(source, config_dir or Path.cwd())
    # SentencePiece: mistral-common reads the version from the name, so keep its '.model.v7m1'-like ending.
    name = "tekken.json" if is_tekken(path) else "tokenizer" + path.name[path.name.index(".model"):]
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, folder / name)
    config = {"tokenizer_class": "MistralCommonBackend"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def has_protobuf() -> bool:
    try:
        import google.protobuf  # noqa: F401
    except ImportError:
        return False
    return True


def hf_conversion(path: Path) -> Tokenizer:
    """transformers' own conversion of a Mistral tokenizer file to a `tokenizers.Tokenizer`, offline. This is
    what an HF-route user of the model gets. tekken: `convert_tekken_tokenizer`. SentencePiece: the
    LlamaTokenizer conversion that AutoTokenizer applies to a folder holding only tokenizer.model. That
    conversion reads the model with protobuf."""
    if is_tekken(path):
        from transformers.integrations.mistral import convert_tekken_tokenizer

        # chat_template="" skips mistral-common's template generation; only the vocabulary is wanted here.
        return convert_tekken_tokenizer(str(path), chat_template="").backend_tokenizer
    if not has_protobuf():
        raise ImportError("converting a SentencePiece model to an HF tokenizer needs protobuf (pip install protobuf); "
                          "without it transformers falls back to a tiktoken reader that cannot parse the file")
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(path, Path(tmp) / "tokenizer.model")
        config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                  "legacy": False}
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
        return AutoTokenizer.from_pretrained(tmp).backend_tokenizer
