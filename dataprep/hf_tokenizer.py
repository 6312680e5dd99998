"""Tokenizer folders as transformers writes and reads them (transformers 5.x, `AutoTokenizer.from_pretrained`).

Reading, in transformers' order of precedence:
- the vocabulary: `tokenizer.json`; a SentencePiece-only folder (`tokenizer.model`, no `tokenizer.json`) is
  converted by transformers itself (`AutoTokenizer.from_pretrained(folder).backend_tokenizer`, its
  SentencePiece converters), so the ids are the ones a transformers user gets from that folder;
- chat templates: `chat_template.jinja` (the default template, written by save_pretrained since 4.43) and
  `additional_chat_templates/<name>.jinja` win over `tokenizer_config.json`'s `chat_template` (a string, or a
  list of {name, template}); AutoTokenizer ignores the config's entry as soon as one template file exists.
  `chat_template.json` (`{"chat_template": ...}`) is what processors of multimodal models saved before 4.43;
  AutoProcessor reads it, AutoTokenizer does not, so it is used only when nothing else names a template;
- special tokens: `tokenizer_config.json`'s bos/eos/pad/unk_token; `special_tokens_map.json` overrides them
  only in legacy folders, whose config has no `added_tokens_decoder` (as transformers does).

Writing (`save_folder`) follows `save_pretrained`: tokenizer.json, tokenizer_config.json without
`chat_template` (sorted keys), the default template in chat_template.jinja and other named templates in
additional_chat_templates/. It writes no special_tokens_map.json (transformers 5 no longer does).

Every damaged file (truncated JSON, a garbage tokenizer.model) is a one-line TokenizerError naming the file
and the fix.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

CHAT_TEMPLATE_FILE = "chat_template.jinja"
CHAT_TEMPLATE_DIR = "additional_chat_templates"
LEGACY_PROCESSOR_CHAT_TEMPLATE_FILE = "chat_template.json"
SPECIAL_KEYS = ("bos_token", "eos_token", "pad_token", "unk_token")
_REFETCH = "copy it again from the model repository, or re-save the folder with save_pretrained"


class TokenizerError(Exception):
    """A tokenizer that cannot be loaded: missing, damaged or not convertible files."""


@dataclass
class HfFolder:
    """What a tokenizer folder says, read the way AutoTokenizer reads it."""

    path: Path
    config: dict[str, Any]  # tokenizer_config.json, special tokens merged in from special_tokens_map.json
    tokenizer: Tokenizer
    templates: dict[str, str]  # template name -> text; "default" is the one apply_chat_template uses
    converted: bool  # the vocabulary was converted from tokenizer.model (no tokenizer.json in the folder)

    @property
    def chat_template(self) -> str | None:
        return self.templates.get("default")


def is_tokenizer_folder(path: Path) -> bool:
    return (path / "tokenizer.json").is_file() or (path / "tokenizer.model").is_file()


def read_folder(path: Path) -> HfFolder:
    config = read_json(path / "tokenizer_config.json") if (path / "tokenizer_config.json").is_file() else {}
    if not isinstance(config, dict):
        raise TokenizerError(f"{path / 'tokenizer_config.json'}: expected a JSON object, found "
                             f"{type(config).__name__}; {_REFETCH}")
    if "added_tokens_decoder" not in config and (path / "special_tokens_map.json").is_file():
        specials = read_json(path / "special_tokens_map.json")
        if isinstance(specials, dict):
            config.update({k: v for k, v in specials.items() if k in SPECIAL_KEYS})
    templates = chat_templates(path, config)
    if (path / "tokenizer.json").is_file():
        return HfFolder(path, config, _from_tokenizer_json(path / "tokenizer.json"), templates, converted=False)
    return HfFolder(path, config, _convert_sentencepiece(path), templates, converted=True)


def read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_bytes())
    except json.JSONDecodeError as e:
        raise TokenizerError(f"{file}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); the file is "
                             f"damaged or truncated: {_REFETCH}") from None
    except UnicodeDecodeError:
        raise TokenizerError(f"{file}: not UTF-8 text; the file is damaged: {_REFETCH}") from None
    except OSError as e:
        raise TokenizerError(f"{file}: cannot read ({e.strerror}); check that it exists and is readable") from None


def chat_templates(path: Path, config: dict[str, Any]) -> dict[str, str]:
    """Template name -> text, with AutoTokenizer's precedence (see the module docstring)."""
    files: dict[str, str] = {}
    if (path / CHAT_TEMPLATE_FILE).is_file():
        files["default"] = _read_text(path / CHAT_TEMPLATE_FILE)
    if (path / CHAT_TEMPLATE_DIR).is_dir():
        for f in sorted((path / CHAT_TEMPLATE_DIR).glob("*.jinja")):
            files[f.name.removesuffix(".jinja")] = _read_text(f)
    if files:
        return files
    value = config.get("chat_template")
    if isinstance(value, str):
        return {"default": value}
    if isinstance(value, list):
        try:
            return {str(t["name"]): str(t["template"]) for t in value}
        except (TypeError, KeyError):
            raise TokenizerError(f"{path / 'tokenizer_config.json'}: chat_template is a list, but not of "
                                 "{\"name\": ..., \"template\": ...} objects; fix or remove it") from None
    if value is not None:
        raise TokenizerError(f"{path / 'tokenizer_config.json'}: chat_template must be a string or a list of "
                             f"named templates, not {type(value).__name__}; fix or remove it")
    if (path / LEGACY_PROCESSOR_CHAT_TEMPLATE_FILE).is_file():
        legacy = read_json(path / LEGACY_PROCESSOR_CHAT_TEMPLATE_FILE)
        if not isinstance(legacy, dict) or not isinstance(legacy.get("chat_template"), str):
            raise TokenizerError(f"{path / LEGACY_PROCESSOR_CHAT_TEMPLATE_FILE}: expected "
                                 "{\"chat_template\": \"<template text>\"}; fix or remove the file")
        return {"default": legacy["chat_template"]}
    return {}


def _read_text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TokenizerError(f"{file}: not UTF-8 text; the file is damaged: {_REFETCH}") from None


def _from_tokenizer_json(file: Path) -> Tokenizer:
    try:  # a file that cannot be opened is not "damaged", as the Rust side's error would have it
        with open(file, "rb"):
            pass
    except OSError as e:
        raise TokenizerError(f"{file}: cannot read ({e.strerror}); check that it exists and is readable") from None
    try:
        return Tokenizer.from_file(str(file))
    except Exception as e:  # the Rust side raises plain Exception for every parse error
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TokenizerError(f"{file}: cannot be loaded by the tokenizers library ({reason}); the file is damaged "
                             f"or truncated: {_REFETCH}") from None


def _convert_sentencepiece(path: Path) -> Tokenizer:
    """tokenizer.model -> the tokenizers object transformers builds from it (its own converters)."""
    import logging

    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    file = path / "tokenizer.model"
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity(logging.ERROR)  # its notes about legacy behaviour are not errors of this run
    try:
        hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except Exception as e:  # protobuf/sentencepiece parse errors, unknown tokenizer_class, missing converters
        reason = " ".join(str(e).split())[:300] or type(e).__name__
        raise TokenizerError(f"{file}: transformers cannot convert this SentencePiece-only folder ({reason}); if "
                             "the file is damaged, copy it again; else add the model's tokenizer.json (save it with "
                             "AutoTokenizer.from_pretrained(...).save_pretrained(...) where that works)") from None
    finally:
        hf_logging.set_verbosity(previous)
    backend = getattr(hf, "backend_tokenizer", None)
    if not isinstance(backend, Tokenizer):
        raise TokenizerError(f"{file}: transformers loaded it as {type(hf).__name__}, which has no fast "
                             "(tokenizers) form; add the model's tokenizer.json")
    return backend


def file_hashes(path: Path) -> dict[str, str]:
    """Name -> sha256 of every file that can change what the tokenizer does (fingerprint and manifest)."""
    files = [p for p in sorted(path.iterdir()) if p.is_file() and p.suffix in (".json", ".model", ".txt", ".jinja")]
    if (path / CHAT_TEMPLATE_DIR).is_dir():
        files += sorted((path / CHAT_TEMPLATE_DIR).glob("*.jinja"))
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def save_folder(folder: Path, source: HfFolder, tokenizer: Tokenizer, write_tokenizer_json: bool,
                specials: dict[str, str], chat_template: str | None,
                named_templates: dict[str, str] | None = None) -> dict[str, str]:
    """Write a folder AutoTokenizer.from_pretrained loads, laid out as save_pretrained lays it out, with
    `chat_template` as the default template. Returns file name -> sha256."""
    folder.mkdir(parents=True)
    if write_tokenizer_json:
        tokenizer.save(str(folder / "tokenizer.json"))
    else:  # byte-identical copy: the manifest's hash then matches the source's
        shutil.copyfile(source.path / "tokenizer.json", folder / "tokenizer.json")
    config = {k: v for k, v in source.config.items() if k != "chat_template"}
    if source.converted:
        config.pop("added_tokens_decoder", None)  # ids of the slow tokenizer; tokenizer.json now carries them
    config.update(specials)
    templates = dict(source.templates)
    if chat_template is not None:
        templates["default"] = chat_template
    templates.update(named_templates or {})
    if "default" in templates:
        (folder / CHAT_TEMPLATE_FILE).write_text(templates["default"], encoding="utf-8")
    named = {k: v for k, v in templates.items() if k != "default"}
    if named:
        (folder / CHAT_TEMPLATE_DIR).mkdir()
        for name, text in named.items():
            if Path(name).name != name or name in ("", ".", ".."):
                continue  # a template name that is not a plain file name would write outside the folder
            (folder / CHAT_TEMPLATE_DIR / f"{name}.jinja").write_text(text, encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(
        json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return file_hashes(folder)
