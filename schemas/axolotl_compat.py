"""Read an Axolotl config as Axolotl means it: the pass over the raw YAML mapping that runs before validation.

For every key of every section (top level, `datasets[]` entries and their `type:` mapping, `special_tokens`,
`fsdp_config`, and any section a field adds later), in this order:

1. empty (`key:`, None) means unset, as in Axolotl: the key is removed, so the field keeps its default;
2. a field of Tessera's pydantic tree: left to validation (supported);
3. another spelling of a field (schemas/axolotl_keys.py RENAMED, the `fsdp_` prefix inside fsdp_config,
   `message_property_mappings`, `eager_attention: true`): moved to the field; both spellings with different values
   is an error;
4. NOT_SUPPORTED and set: an error saying what Tessera does instead;
5. any other key Axolotl has: removed and recorded as not used (the run prints them once);
6. any other key: ignored and listed (a warning), as Axolotl ignores keys it does not have, unless it looks
   like a misspelling (`hint()` finds a close key of this section) or is a key of another section: those stay,
   so validation reports them as unknown, with the hint.

Which keys are supported is computed from the pydantic models, never listed: a field added to the tree
(schemas/config.py) turns its Axolotl key from "not used" (or "not available yet") into supported without a change here.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import typing
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from schemas.axolotl_keys import (
    EMPTY_IS_A_VALUE,
    EMPTY_MAPPING_IS_ON,
    HINTS,
    NOT_SUPPORTED,
    PLUGINS_THAT_CHANGE_TRAINING,
    RENAMED,
    SECTION_KEYS,
    SWITCHES,
    TOP_FAMILIES,
)

Loc = tuple[str | int, ...]
TOP_KEYS = frozenset(k for keys in TOP_FAMILIES.values() for k in keys)
FAMILY_OF = {k: family for family, keys in TOP_FAMILIES.items() for k in keys}


@dataclass(frozen=True)
class KeyEntry:
    key: str  # as written, e.g. datasets[0].message_property_mappings.role
    kind: str  # not_used | renamed | off (a not-supported feature switched off: same as Tessera) | ignored
    target: str = ""  # renamed: the key it was read as


@dataclass
class KeyReport:
    """What the pass did with the keys that are not plainly Tessera's. Kept on the Config (`key_report(cfg)`),
    never in its dump, so prepared bytes and fingerprints do not depend on it."""

    entries: list[KeyEntry] = field(default_factory=list)
    order: dict[str, int] = field(default_factory=dict)  # top-level keys in the order written

    @property
    def not_used(self) -> list[str]:
        return [e.key for e in self.entries if e.kind == "not_used"]

    @property
    def ignored(self) -> list[str]:
        """Keys neither Axolotl nor Tessera has, with no close spelling: ignored, as Axolotl ignores them."""
        return [e.key for e in self.entries if e.kind == "ignored"]

    @property
    def renamed(self) -> list[tuple[str, str]]:
        return [(e.key, e.target) for e in self.entries if e.kind == "renamed"]


@dataclass
class Pass:
    report: KeyReport = field(default_factory=KeyReport)
    problems: list[tuple[Loc, str]] = field(default_factory=list)
    # where a renamed value came from: the field's loc -> the loc as written (for error lines and names)
    origins: dict[Loc, Loc] = field(default_factory=dict)
    anywhere: frozenset[str] = frozenset()  # every key of every section (_every_key)


def normalise(raw: dict[str, Any], root: type[BaseModel]) -> Pass:
    """Rewrite `raw` in place into Tessera's spellings (see the module docstring)."""
    p = Pass()
    p.report.order = {str(k): i for i, k in enumerate(raw)}
    p.anywhere = _every_key(root)
    _broadcast(raw, root, p)
    _walk(raw, root, "", (), p)
    return p


_AXOLOTL_SECTIONS = frozenset({"", *SECTION_KEYS})


@functools.cache
def _every_key(root: type[BaseModel]) -> frozenset[str]:
    """Every key of every section, Axolotl's and Tessera's: a key that is one of them, written in another
    section (`sequence_len` inside a dataset), is a mistake to report, not a key to ignore."""
    keys, todo, seen = set(TOP_KEYS), [root], set()
    for section in SECTION_KEYS.values():
        keys |= set(section)
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        keys |= set(model.model_fields)
        todo += [sub for name in model.model_fields if (sub := submodel(model, name)) is not None]
    return frozenset(keys)


def _walk(node: dict[Any, Any], model: type[BaseModel], section: str, loc: Loc, p: Pass) -> None:
    fields = model.model_fields
    for key in list(node):
        if key in node and isinstance(key, str) and key not in fields:
            _respell(node, key, model, section, loc, p)
    for key in list(node):
        if key not in node or not isinstance(key, str):
            continue
        value = node[key]
        if key in fields:
            if value is None and (section, key) not in EMPTY_IS_A_VALUE:
                del node[key]
            elif (sub := submodel(model, key)) is not None:
                child = f"{section}.{key}" if section else key
                items = [((*loc, key), value)] if isinstance(value, dict) else \
                    [((*loc, key, i), v) for i, v in enumerate(value)] if isinstance(value, list) else []
                for where, item in items:
                    if isinstance(item, dict):
                        _walk(item, sub, child, where, p)
            continue
        if (section, key) in NOT_SUPPORTED:
            del node[key]
            if _is_off(value) and not (value == {} and (section, key) in EMPTY_MAPPING_IS_ON):
                p.report.entries.append(KeyEntry(_show((*loc, key)), "off"))
            else:
                p.problems.append(((*loc, key), f"{_show((*loc, key))}: {NOT_SUPPORTED[section, key]}"))
        elif key in known_keys(section):
            del node[key]
            if section == "" and key == "plugins":
                _check_plugins(value, (*loc, key), p)
            if value is not None:
                p.report.entries.append(KeyEntry(_show((*loc, key)), "not_used"))
        elif section in _AXOLOTL_SECTIONS and key not in p.anywhere and hint(section, key, list(fields)) is None:
            # Step 6's exception: Axolotl ignores keys it does not have, so a config that runs there must
            # validate here; only a likely misspelling (a close key) or a key of another section stays an error,
            # and so does any unknown key in a section only Tessera has (filters, near-dedup, ...).
            del node[key]
            p.report.entries.append(KeyEntry(_show((*loc, key)), "ignored"))


def _check_plugins(value: Any, loc: Loc, p: Pass) -> None:
    """`plugins:` is not used, except that a plugin changing what is trained is an error (Tessera runs none)."""
    for i, entry in enumerate(value if isinstance(value, list) else [value]):
        parts = str(entry).split(".")
        name = parts[2] if parts[:2] == ["axolotl", "integrations"] and len(parts) > 2 else None
        if name in PLUGINS_THAT_CHANGE_TRAINING:
            where = (*loc, i) if isinstance(value, list) else loc
            p.problems.append((where, f"{_show(where)}: {entry}: {PLUGINS_THAT_CHANGE_TRAINING[name]} is not "
                               "available: Tessera runs no Axolotl plugin and would train without it; remove it "
                               "from plugins"))


def _respell(node: dict[Any, Any], key: str, model: type[BaseModel], section: str, loc: Loc, p: Pass) -> None:
    """Step 3: move `key` to the field it is another spelling of, if there is one."""
    fields = model.model_fields
    value = node[key]
    if section == "datasets" and key == "message_property_mappings":
        _property_mappings(node, model, loc, p)
        return
    if section == "fsdp_config":
        for target in (f"fsdp_{key}", key.removeprefix("fsdp_")):
            if target != key and target in fields:
                _move(node, key, node, target, loc, loc, p)
                return
    if section == "" and key in SWITCHES:
        target, meaning = SWITCHES[key]
        if target in fields:
            del node[key]
            if _is_off(value):
                p.report.entries.append(KeyEntry(key, "off"))
            else:
                _put(node, target, meaning, (*loc, key), (*loc, target), p)
        return
    if (section, key) in RENAMED:
        target_section, target = RENAMED[section, key]
        if target_section == section and target in fields:
            _move(node, key, node, target, loc, loc, p)
        elif section == "" and target_section in fields and (sub := submodel(model, target_section)) is not None \
                and target in sub.model_fields and isinstance(node.get(target_section), dict):
            # into a section only when it is there: creating fsdp_config would switch FSDP on
            _move(node, key, node[target_section], target, loc, (target_section,), p)


def _move(src: dict[Any, Any], key: str, dst: dict[Any, Any], target: str, src_loc: Loc, dst_loc: Loc,
          p: Pass) -> None:
    _put(dst, target, src.pop(key), (*src_loc, key), (*dst_loc, target), p)


def _put(dst: dict[Any, Any], target: str, value: Any, given: Loc, read_as: Loc, p: Pass) -> None:
    if value is None:
        return
    if dst.get(target) is not None and dst[target] != value:
        p.problems.append((given, f"{_show(given)}: {value!r} and {_show(read_as)}: {dst[target]!r} are two "
                                  "spellings of one setting (Axolotl accepts both names); keep one"))
        return
    dst[target] = value
    p.origins[read_as] = given
    p.report.entries.append(KeyEntry(_show(given), "renamed", _show(read_as)))


def _property_mappings(node: dict[Any, Any], model: type[BaseModel], loc: Loc, p: Pass) -> None:
    """Axolotl's `message_property_mappings: {role: from, content: value}` is Tessera's (and Axolotl's older)
    `message_field_role: from`, `message_field_content: value`; each name maps to `message_field_<name>`."""
    value = node.pop("message_property_mappings")
    where = (*loc, "message_property_mappings")
    if value is None:
        return
    if not isinstance(value, dict):
        p.problems.append((where, f"{_show(where)} must be a mapping such as {{role: from, content: "
                                  f"value}}, got {type(value).__name__}"))
        return
    # message_field_training(_detail) name per-message switches, not properties of a message
    known = sorted(f.removeprefix("message_field_") for f in model.model_fields
                   if f.startswith("message_field_") and not f.startswith("message_field_training"))
    for name, column in value.items():
        target = f"message_field_{name}"
        if name in known:
            _put(node, target, column, (*where, name), (*loc, target), p)
        else:
            p.problems.append(((*where, name), f"{_show((*where, name))}: Tessera maps the message "
                                                f"properties {', '.join(known)}; `{name}` is not one of them"))


def _broadcast(raw: dict[str, Any], root: type[BaseModel], p: Pass) -> None:
    """A top-level key that Tessera has only per dataset (Axolotl's top-level `eot_tokens`) applies to every
    dataset entry that does not set its own."""
    datasets = raw.get("datasets")
    sub = submodel(root, "datasets") if "datasets" in root.model_fields else None
    if sub is None or not isinstance(datasets, list):
        return
    for key in [k for k in raw if isinstance(k, str) and k not in root.model_fields and k in sub.model_fields
                and k in TOP_KEYS]:
        value = raw.pop(key)
        if value is None:
            continue
        for i, ds in enumerate(datasets):
            if isinstance(ds, dict) and ds.get(key) is None:
                ds[key] = value
                p.origins[("datasets", i, key)] = (key,)
        p.report.entries.append(KeyEntry(key, "renamed", f"datasets[].{key}"))


def _is_off(value: Any) -> bool:
    return value is None or value is False or value == 0 or value == "" or value == [] or value == {}


def known_keys(section: str) -> frozenset[str]:
    """Every key Axolotl has in `section` ("" = top level, "datasets", "datasets.type", "fsdp_config", ...)."""
    return TOP_KEYS if section == "" else frozenset(SECTION_KEYS.get(section, ()))


def submodel(model: type[BaseModel], key: str) -> type[BaseModel] | None:
    """The pydantic model a field holds (directly, in a list, or as one branch of a union), if any."""
    todo = [model.model_fields[key].annotation]
    while todo:
        t = todo.pop()
        if inspect.isclass(t) and issubclass(t, BaseModel):
            return t
        todo += typing.get_args(t)
    return None


def section_of(loc: Loc) -> str:
    return ".".join(str(part) for part in loc if isinstance(part, str))


def hint(section: str, key: str, fields: list[str]) -> str | None:
    """The key meant by an unknown `key` in `section`, or None: another tool's name for it (HINTS), the same
    name in another case or with dashes, or a close spelling among this section's keys only. A weak match is
    worse than none (`resume_from_checkpoint` is not `gradient_checkpointing`), hence the high cutoff."""
    candidates = sorted(set(fields) | known_keys(section)) if section in ("", *SECTION_KEYS) else sorted(fields)
    if key in HINTS.get(section, {}):
        return HINTS[section][key]
    plain = key.strip().lower().replace("-", "_").replace(" ", "_")
    if plain in candidates:
        return plain
    swapped = [c for c in candidates if len(c) == len(plain) and sorted(c) == sorted(plain)
               and sum(a != b for a, b in zip(c, plain, strict=True)) == 2]  # two letters swapped: spilt
    if swapped:
        return swapped[0]
    close = difflib.get_close_matches(plain, candidates, n=1, cutoff=0.85)
    return close[0] if close else None


def _show(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def family(key: str) -> str:
    """The family of a top-level key (bench/axolotl_configs.py reports by it); Tessera-only keys are 'tessera'."""
    return FAMILY_OF.get(key, "tessera")
