"""Axolotl's config keys as the pinned wheel's pydantic models have them: the reference that
tests/schemas/test_axolotl_wheel_keys.py holds schemas/axolotl_keys.py to.

A section is a path in the config tree as schemas/axolotl_keys.py names it ("" is the top level, "datasets" every
entry of the list, "datasets.type" the mapping form of a dataset's `type:`). Its keys are the field names and
aliases of every model its annotation can hold (the five dataset kinds of `datasets:`, SFTDataset or
PretrainingDataset in `pretraining_dataset:`, ...). The top level also has the fields of the Args model each
plugin's `get_input_args` names (axolotl/integrations/*/): Axolotl merges it into AxolotlInputConfig when
`plugins:` lists the plugin (integrations/config.py merge_input_args).

Read in a child process, `python -m tests.axolotl_schema PACKAGE_DIR SECTION...`: importing Axolotl's schema
imports torch, torchao and accelerate and registers things with them (pytree constants, log handlers), which a
test process should not inherit; it takes about 6 s.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import json
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_MARK = "AXOLOTL_SCHEMA_KEYS "  # the result line; Axolotl's imports print their own warnings around it


def schema_keys(package_dir: Path, sections: list[str]) -> dict[str, Any]:
    """{"sections": {section: sorted keys, or None when Axolotl has no such section}, "plugins": {args class
    path: sorted keys}}, read from the `axolotl/` package under `package_dir` (tests/axolotl_reference.py)."""
    run = subprocess.run([sys.executable, "-m", "tests.axolotl_schema", str(package_dir), *sections],
                         capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in run.stdout.splitlines() if line.startswith(_MARK)]
    if run.returncode != 0 or not lines:
        raise RuntimeError(f"reading Axolotl's schema failed (rc {run.returncode}):\n{run.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix(_MARK))


def _models(annotation: Any) -> list[type]:
    """The pydantic models an annotation can hold: directly, in a list or mapping, or as a branch of a union."""
    from pydantic import BaseModel

    found, todo = [], [annotation]
    while todo:
        t = todo.pop()
        if inspect.isclass(t) and issubclass(t, BaseModel):
            found.append(t)
        else:
            todo += typing.get_args(t)
    return found


def _names(model: type) -> set[str]:
    """Every key a user may write for `model`'s fields: the names (Axolotl's models populate by name) and aliases."""
    from pydantic import AliasChoices

    out: set[str] = set()
    for name, info in model.model_fields.items():  # type: ignore[attr-defined]
        out.add(name)
        if info.alias:
            out.add(info.alias)
        choices = info.validation_alias.choices if isinstance(info.validation_alias, AliasChoices) else \
            [info.validation_alias]
        out |= {c for c in choices if isinstance(c, str)}
    return out


def plugin_args(package_dir: Path) -> dict[str, type]:
    """Each plugin's input Args model by its dotted path, as its get_input_args returns it."""
    found: dict[str, type] = {}
    for source in sorted((package_dir / "axolotl" / "integrations").glob("*/**/*.py")):
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if not (isinstance(node, ast.FunctionDef) and node.name == "get_input_args"):
                continue
            for ret in ast.walk(node):
                if isinstance(ret, ast.Return) and isinstance(ret.value, ast.Constant) \
                        and isinstance(ret.value.value, str):
                    found[ret.value.value] = _load_class(package_dir, ret.value.value)
    return found


def _load_class(package_dir: Path, dotted: str) -> type:
    module, name = dotted.rsplit(".", 1)
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        pass
    # A plugin package's __init__ imports what the plugin runs with (trl, evaluate, llmcompressor), which this venv
    # lacks; the Args model's own file needs pydantic only, so load that file alone.
    plugin = package_dir.joinpath(*module.split(".")[:3])
    for source in sorted(plugin.rglob("*.py")):
        tree = ast.parse(source.read_text(), str(source))
        if any(isinstance(n, ast.ClassDef) and n.name == name for n in tree.body):
            spec = importlib.util.spec_from_file_location(f"_axolotl_plugin_{plugin.name}_{source.stem}", source)
            assert spec is not None and spec.loader is not None
            loaded = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(loaded)
            return getattr(loaded, name)
    raise ImportError(f"{dotted}: no file under {plugin} defines class {name}")


def _main(package_dir: Path, sections: list[str]) -> dict[str, Any]:
    sys.path.insert(0, str(package_dir))
    from axolotl.utils.schemas.config import AxolotlInputConfig

    plugins = {path: sorted(_names(cls)) for path, cls in plugin_args(package_dir).items()}
    out: dict[str, list[str] | None] = {}
    for section in sections:
        models: list[type] = [AxolotlInputConfig]
        for part in section.split(".") if section else []:
            models = [m for model in models if part in model.model_fields
                      for m in _models(model.model_fields[part].annotation)]
        keys = set().union(*(_names(m) for m in models)) if models else None
        if section == "" and keys is not None:
            keys |= {k for ks in plugins.values() for k in ks}
        out[section] = sorted(keys) if keys is not None else None
    return {"sections": out, "plugins": plugins}


if __name__ == "__main__":
    print(_MARK + json.dumps(_main(Path(sys.argv[1]), sys.argv[2:])))
