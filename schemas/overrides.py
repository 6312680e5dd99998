"""`--set key=value` overrides, applied to the raw YAML mapping before validation.

Keys are dotted paths into the tree, list items by index: `sequence_len=4096`, `datasets.0.path=data.jsonl`,
`special_tokens.pad_token=<pad>`. Values are parsed as YAML scalars/flow values, so `true`, `0.05`,
`[q_proj, v_proj]` and `null` mean what they mean in a config file.
"""

from __future__ import annotations

from typing import Any

import yaml

from schemas.yaml_limits import YamlLimitError, load_yaml


class OverrideError(ValueError):
    pass


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> set[str]:
    """Apply in place; returns the dotted keys that were set (so errors can say they came from --set)."""
    done = set()
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise OverrideError(f"--set {item!r}: expected key=value, e.g. --set sequence_len=4096")
        parts = key.strip().split(".")
        value = _parse_value(item, text)
        node: Any = raw
        for i, part in enumerate(parts[:-1]):
            node = _child(node, part, parts[: i + 1], parts[i + 1])
        _assign(node, parts[-1], value, parts)
        done.add(key.strip())
    return done


def _parse_value(item: str, text: str) -> Any:
    if not text.strip():
        return ""
    try:
        return load_yaml(text)[0]
    except yaml.YAMLError as e:
        raise OverrideError(f"--set {item!r}: the value is not valid YAML ({' '.join(str(e).split())}); quote "
                            "it for the shell and YAML, e.g. --set 'key=\"a: b\"'") from None
    except YamlLimitError as e:
        raise OverrideError(f"--set {item!r}: this YAML {e}") from None


def _child(node: Any, part: str, path: list[str], next_part: str) -> Any:
    if isinstance(node, list):
        idx = _index(part, node, path)
        return node[idx]
    if not isinstance(node, dict):
        raise OverrideError(f"--set {'.'.join(path)}: cannot descend into a {type(node).__name__}")
    if node.get(part) is None:
        node[part] = [] if next_part.isdigit() else {}
    return node[part]


def _assign(node: Any, part: str, value: Any, path: list[str]) -> None:
    if isinstance(node, list):
        node[_index(part, node, path)] = value
    elif isinstance(node, dict):
        node[part] = value
    else:
        raise OverrideError(f"--set {'.'.join(path)}: cannot set a key inside a {type(node).__name__}")


def _index(part: str, node: list[Any], path: list[str]) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise OverrideError(f"--set {'.'.join(path)}: '{part}' is not an index of a list with {len(node)} items")
    return int(part)
