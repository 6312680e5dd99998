"""Reading a config: YAML in, `Config` or a ConfigError naming every problem (file:line, the key, the fix) out.

Axolotl's spellings are read first (schemas/axolotl_compat.py), then the pydantic tree validates; the problems of
both are reported together. YAML traps that are legal but almost certainly unintended become warnings.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from schemas import axolotl_compat
from schemas.datasets import DatasetConfig
from schemas.overrides import apply_overrides
from schemas.trainer_keys import TRAINER_KEYS
from schemas.yaml_limits import MAX_CONFIG_BYTES, YamlLimitError, load_yaml

if TYPE_CHECKING:
    from schemas.config import Config


class ConfigError(Exception):
    """Every problem found in a config, one per line, each with file:line and the fix."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("config is not valid:\n" + "\n".join(f"  - {p}" for p in problems))


# Values where whitespace is content: a prompt's trailing space changes the tokens of every sample.
_WHITESPACE_KEYS = {"format", "no_input_format", "system_format", "system_prompt", "chat_template_jinja",
                    "bos_token", "eos_token", "pad_token", "unk_token"}


def load_config(path: str | Path, overrides: list[str] | None = None, warnings: list[str] | None = None,
                for_prepare: bool = False) -> Config:
    """Validate a YAML config. Problems raise ConfigError (all of them); YAML traps that are legal but almost
    certainly unintended are appended to `warnings`. `for_prepare`: a trainer key's bad value is a warning (into
    `warnings`), not an error, since preparing does not use it."""
    path = Path(path)
    text = _read_config(path)
    try:
        raw, root = load_yaml(text)
    except yaml.YAMLError as e:
        raise ConfigError([f"{path}: not valid YAML: {' '.join(str(e).split())}"]) from None
    except YamlLimitError as e:
        raise ConfigError([f"{path}: the YAML {e}"]) from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}"])
    if warnings is not None:
        warnings += _duplicate_keys(root, path) + _yaml_traps(root, text, path)
    overridden = apply_overrides(raw, overrides or [])
    return _validate(raw, path, root, overridden, warnings if for_prepare and warnings is not None else None)


def _read_config(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError([f"{path}: {path.stat().st_size:,} bytes; a config is a few KB (at most "
                               f"{MAX_CONFIG_BYTES // 1024} KiB): is this the right file?"])
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"{path}: cannot read config ({e.strerror or e})"]) from None
    except UnicodeDecodeError as e:
        line = e.object[:e.start].count(b"\n") + 1
        raise ConfigError([f"{path}:{line}: the config is not UTF-8 text (byte 0x{e.object[e.start]:02x}); "
                           "save it as UTF-8"]) from None


def _duplicate_keys(node: yaml.Node | None, path: Path, where: str = "", seen: set[int] | None = None) -> list[str]:
    """A mapping key written twice: YAML (and so Axolotl) keeps the last value without a word. Outer keys are
    reported before the keys inside their values; each node is visited once (aliases repeat nodes)."""
    seen = set() if seen is None else seen
    if node is None or id(node) in seen:
        return []
    seen.add(id(node))
    found: list[str] = []
    inner: list[str] = []
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for k, v in node.value:
            if not isinstance(k, yaml.ScalarNode):
                continue
            name = f"{where}.{k.value}" if where else str(k.value)
            line = k.start_mark.line + 1
            if k.value in first:
                value = v.value if isinstance(v, yaml.ScalarNode) else "a " + ("list" if isinstance(
                    v, yaml.SequenceNode) else "mapping")
                found.append(f"{path}:{line}: {name} is given twice (also on line {first[k.value]}); YAML keeps this "
                             f"last one ({value}): remove the other")
            first.setdefault(k.value, line)
            inner += _duplicate_keys(v, path, name, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            inner += _duplicate_keys(v, path, f"{where}[{i}]", seen)
    return found + inner


def _yaml_traps(node: yaml.Node | None, text: str, path: Path, key: str = "",
                seen: set[int] | None = None) -> list[str]:
    """Plain (unquoted) scalars cannot end in whitespace: YAML silently drops the spaces typed after
    `format: ### Response: `. Find such values in whitespace-sensitive keys and say how to keep them.
    Each node is visited once: an alias repeats a node, not its text."""
    seen = set() if seen is None else seen
    if node is None or id(node) in seen:
        return []
    seen.add(id(node))
    found = []
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            found += _yaml_traps(v, text, path, str(k.value), seen)
    elif isinstance(node, yaml.SequenceNode):
        for v in node.value:
            found += _yaml_traps(v, text, path, key, seen)
    elif isinstance(node, yaml.ScalarNode) and key in _WHITESPACE_KEYS and node.style is None:
        rest = text[node.end_mark.index:].split("\n", 1)[0]
        if rest and not rest.strip():
            found.append(f"{path}:{node.end_mark.line + 1}: {key}: YAML dropped the {len(rest)} trailing "
                         f"whitespace character(s) after {node.value!r} (unquoted values cannot end in spaces); "
                         f"if they are part of the prompt, quote it: {key}: {json.dumps(node.value + rest)}")
    elif isinstance(node, yaml.ScalarNode) and key in _WHITESPACE_KEYS and node.style == ">":
        found.append(f"{path}:{node.start_mark.line + 1}: {key}: a folded block (>) turns newlines into spaces; "
                     "use a literal block (|) to keep the prompt's line breaks")
    return found


def _root() -> type[Config]:
    # schemas/config.py imports this module to export load_config & co. under its name, so the root model is
    # looked up when first used rather than imported at the top.
    from schemas.config import Config

    return Config


def config_from_dict(raw: dict[str, Any]) -> Config:
    """For tests and library use: validate a mapping, with the same error messages (no line numbers)."""
    return _validate(copy.deepcopy(raw), Path("<dict>"), None, set())


def key_report(cfg: Config) -> axolotl_compat.KeyReport:
    """The Axolotl keys load_config read under another name or does not use (empty for a Config built directly)."""
    return cfg._keys or axolotl_compat.KeyReport()


def unused_keys_note(cfg: Config, command: Literal["prepare", "train"]) -> str | None:
    """One line naming the keys `command` does not use: Axolotl's keys Tessera does not implement first, then,
    for prepare, the trainer's keys. None when there are none."""
    report = key_report(cfg)
    trainer = _written(report, [k for k in cfg.model_fields_set if k in TRAINER_KEYS]) if command == "prepare" \
        else []
    # a trainer section (fsdp_config) is named once, not with its keys
    unused = _written(report, [k for k in report.not_used if _top(k) not in trainer])
    keys = unused + trainer
    if not keys:
        return None
    shown = ", ".join(keys[:12]) + (", …" if len(keys) > 12 else "")
    count = f"{len(keys)} key{'s' if len(keys) > 1 else ''}"
    if unused and trainer:
        count += f": {len(unused)} Tessera does not implement, {len(trainer)} read by tessera train"
    return f"not used by tessera {command}: {shown} ({count}; `tessera prepare --explain` lists them)"


def _top(key: str) -> str:
    """The top-level key of a key as shown (`datasets[0].revision` -> `datasets`)."""
    return key.split(".")[0].split("[")[0]


def _written(report: axolotl_compat.KeyReport, keys: list[str]) -> list[str]:
    """`keys` in the order their top-level keys are written in the config."""
    return sorted(keys, key=lambda k: report.order.get(_top(k), len(report.order)))


def ignored_keys_warning(cfg: Config) -> str | None:
    """One line naming the keys neither Axolotl nor Tessera has (ignored, as Axolotl ignores them), or None."""
    report = key_report(cfg)
    ignored = _written(report, report.ignored)
    if not ignored:
        return None
    return (f"ignored: {', '.join(ignored)} (neither Axolotl 0.21.0 nor Tessera has these keys, and Axolotl "
            "ignores them too; check their spelling)")


def _validate(raw: dict[str, Any], path: Path, root: yaml.Node | None, overridden: set[str],
              warnings: list[str] | None = None) -> Config:
    """Axolotl's spellings first (renamed, not used, not supported, empty = unset), then the tree; the problems
    of both are reported together. With `warnings` (tessera prepare), values of trainer keys the trainer would
    reject (`optimizer: adamw_bnb_8bit`) are warnings instead: prepare does not use them, `tessera train` stops."""
    compat = axolotl_compat.normalise(raw, _root())
    found = [_where(loc, path, root, overridden) + f": {msg}" for loc, msg in compat.problems]
    try:
        cfg = _root().model_validate(raw)
    except ValidationError as e:
        described = _describe_all(e.errors(), path, root, overridden, compat.origins)
        cfg = None if found or warnings is None else _without_trainer_problems(raw, e)
        if cfg is None:
            raise ConfigError(found + described) from None
        warnings += [f"{p} (tessera prepare does not use this trainer setting and goes on; tessera train will stop "
                     "on it)" for p in described]
    if found:
        raise ConfigError(found)
    cfg._keys = compat.report
    return cfg


def _without_trainer_problems(raw: dict[str, Any], error: ValidationError) -> Config | None:
    """The config without the trainer keys that fail (then without every trainer key, for cross-field problems),
    if that is valid; else None."""
    failing = {e["loc"][0] for e in error.errors() if e["loc"] and e["loc"][0] in TRAINER_KEYS}
    for drop in (failing, set(TRAINER_KEYS)):
        try:
            return _root().model_validate({k: v for k, v in raw.items() if k not in drop})
        except ValidationError as e:
            if any(err["loc"] for err in e.errors()):  # a data key fails: the config is invalid for prepare too
                return None
    return None


_UNION_TAGS = {"str", "int", "float", "bool", "none", "list", "dict"}


def _belongs(key: str, parent: list[Any]) -> str:
    """Where a key written in the wrong section goes (Axolotl would ignore it there: not what was meant)."""
    if parent and (key in _root().model_fields or key in axolotl_compat.TOP_KEYS):
        return f"{key} is a top-level key: write it at the top level of the config, not inside {_show_loc(parent)}"
    if not parent and (key in DatasetConfig.model_fields or key in axolotl_compat.known_keys("datasets")):
        return f"{key} is a key of each datasets[] entry: write it in the dataset it is for"
    return "see the keys documented in schemas/config.py"


def _describe_all(errors: list[Any], path: Path, root: yaml.Node | None, overridden: set[str],
                  origins: dict[tuple[Any, ...], tuple[Any, ...]]) -> list[str]:
    # A mapping given where `str | Model` is allowed fails both branches; the str branch's error is noise.
    errors = [e for e in errors if not (e["loc"] and e["loc"][-1] == "str" and isinstance(e["input"], dict))]
    return [_describe(e, path, root, overridden, origins) for e in errors]


def _describe(err: Any, path: Path, root: yaml.Node | None, overridden: set[str],
              origins: dict[tuple[Any, ...], tuple[Any, ...]]) -> str:
    # pydantic puts union branch tags ('str', 'CustomInstructType', "literal['auto']") into loc.
    loc = [p for p in err["loc"] if not (isinstance(p, str) and (p in _UNION_TAGS or "[" in p or p[:1].isupper()))]
    if err["type"] == "extra_forbidden" and err["loc"] and (not loc or loc[-1] != err["loc"][-1]):
        loc.append(err["loc"][-1])  # the unknown key as typed, even when it looks like a tag (`Learning-Rate`)
    read_as = ""
    for n in range(len(loc), 0, -1):  # a value read from another spelling is named as written
        if tuple(loc[:n]) in origins:
            read_as = f" (read as {_show_loc(loc)})"
            loc = list(origins[tuple(loc[:n])]) + loc[n:]
            break
    shown = _show_loc(loc)
    where = _where(tuple(loc), path, root, overridden)
    if err["type"] == "extra_forbidden":
        key = str(loc[-1])
        close = axolotl_compat.hint(axolotl_compat.section_of(tuple(loc[:-1])), key, _valid_keys(loc[:-1]))
        hint = f"did you mean '{close}'?" if close else _belongs(key, loc[:-1])
        return f"{where}: unknown key '{shown}'; {hint}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{where}: {shown or '(top level)'}{read_as}: {msg}"


def _where(loc: tuple[Any, ...], path: Path, root: yaml.Node | None, overridden: set[str]) -> str:
    dotted = ".".join(str(p) for p in loc)
    where = f"{path}:{_line_of(root, list(loc))}" if root is not None else str(path)
    if dotted.split(".")[0] in overridden or dotted in overridden:
        where = f"{where} (--set {dotted})"
    return where


def _show_loc(loc: list[Any]) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _valid_keys(parent: list[Any]) -> list[str]:
    model: type[BaseModel] = _root()
    for p in parent:
        if isinstance(p, int):
            continue
        if str(p) not in model.model_fields or (sub := axolotl_compat.submodel(model, str(p))) is None:
            break
        model = sub
    return list(model.model_fields)


def _line_of(root: yaml.Node | None, loc: list[Any]) -> int:
    node = root
    line = 1 if root is None else root.start_mark.line + 1
    for p in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in reversed(node.value):  # a key given twice: YAML keeps the last one, so that is the line
                if k.value == p:
                    line, node = k.start_mark.line + 1, v
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(p, int) and p < len(node.value):
            node = node.value[p]
            line = node.start_mark.line + 1
        else:
            return line
    return line
