"""YAML that cannot hang or exhaust memory: a size cap, and a node count after alias expansion.

A "billion laughs" config (`a: &a [x, x, ...]`, `b: &b [*a, *a, ...]`, nine levels) is a few hundred bytes, and
`yaml.safe_load` builds it quickly because aliases share one Python object. Everything that walks the result
as a tree (the YAML-trap warnings, pydantic, json.dumps of the resolved config into the manifest) then visits
10^9 nodes and hangs. So the document is composed first (a node graph, aliases still shared), its expanded
size is counted once per distinct node, and only a document below the bound is constructed.
"""

from __future__ import annotations

import yaml

MAX_CONFIG_BYTES = 1 << 20
"""1 MiB. Real configs are a few KB; an inline chat template is 5-30 KB."""
MAX_CONFIG_NODES = 100_000
"""Scalars, lists and mappings after expanding every alias. A config with 1,000 datasets entries of 20 keys
each is 40,000 nodes."""


class YamlLimitError(ValueError):
    pass


def load_yaml(text: str) -> tuple[object, yaml.Node | None]:
    """(value, composed root node). Raises yaml.YAMLError for invalid YAML, YamlLimitError for a document
    that is too large, too deep or recursive."""
    if len(text.encode("utf-8", errors="surrogatepass")) > MAX_CONFIG_BYTES:
        raise YamlLimitError(f"is larger than {MAX_CONFIG_BYTES // 1024} KiB; a config is a few KB (put long "
                             "templates in a .jinja file and data in data files)")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise YamlLimitError("is nested too deeply for a config (thousands of levels of [ or {)") from None
    if root is None:
        return None, None
    count_nodes(root)
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(root), root
    except RecursionError:
        raise YamlLimitError("is nested too deeply for a config") from None
    except (ValueError, OverflowError) as e:  # e.g. `2026-13-45` is read as a date, and has no month 13
        raise YamlLimitError(f"has a value that YAML reads as a date or number but is not one ({e}); quote "
                             "it if it is text") from None
    finally:
        loader.dispose()


def count_nodes(root: yaml.Node, limit: int = MAX_CONFIG_NODES) -> int:
    """Nodes of the tree that the graph expands to, each distinct node visited once (iteratively: no
    recursion limit). Raises YamlLimitError above `limit` or on an alias that contains itself."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            total = 1 + sum(size[id(c)] for c in _children(node))
            size[key] = min(total, limit + 1)
            continue
        if key in size:
            continue
        if key in on_path:
            raise YamlLimitError(f"has a recursive alias (an anchor used inside itself, line "
                                 f"{node.start_mark.line + 1}); a config cannot be infinite")
        on_path.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_path:
                raise YamlLimitError(f"has a recursive alias (an anchor used inside itself, line "
                                     f"{child.start_mark.line + 1}); a config cannot be infinite")
            if id(child) not in size:
                stack.append((child, False))
    total = size[id(root)]
    if total > limit:
        raise YamlLimitError(f"expands to more than {limit:,} values once its aliases (*name) are replaced by "
                             "what their anchors (&name) hold; a config is a few hundred values; remove the "
                             "repeated aliases")
    return total


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []
