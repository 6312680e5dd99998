"""The chat-encoder layout: one interface (dataprep/chat_encoder.py) for the template encoder and the Mistral
encoder, chosen in one place (transform.chat_encoder_for), and no import cycle between the tokenizer loader and
the Mistral encoder (each module imports alone, in a fresh interpreter, in any order; the HF route does not
import mistral-common at all).

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/dataprep/test_chat_encoder.py -v
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from dataprep.chat_encoder import ChatEncoder, TokenizerChatEncoding
from dataprep.fetch_tokenizers import tokenizer_dir
from dataprep.mistral import MistralEncoder
from dataprep.template_encoder import TemplateEncoder
from dataprep.transform import chat_encoder_for
from schemas.config import config_from_dict
from tests.conftest import _tokenizer

ROOT = Path(__file__).resolve().parents[2]
MODULES = ["dataprep.mistral", "dataprep.mistral_labels", "dataprep.mistral_templates", "dataprep.encode",
           "dataprep.chat_encoder", "dataprep.template_encoder", "dataprep.transform", "dataprep.probes",
           "dataprep.pipeline", "dataprep.look.golden"]


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("first", MODULES)
def test_each_module_imports_first_in_a_fresh_interpreter(first: str) -> None:
    rest = "; ".join(f"import {m}" for m in MODULES if m != first)
    done = run(f"import {first}; {rest}")
    assert done.returncode == 0, done.stderr[-2000:]


def test_hf_route_does_not_import_mistral_common() -> None:
    done = run("import sys, dataprep.pipeline, dataprep.look.golden; print(any(m.startswith('mistral_common') "
               "for m in sys.modules))")
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr[-2000:]


def _imports(path: Path) -> set[str]:
    """dataprep modules `path` imports anywhere (functions included), except under `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
            for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dataprep"):
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("dataprep")}
    modules = {f"dataprep.{p.stem}" for p in (ROOT / "dataprep").glob("*.py")}
    return found & modules


def test_no_import_cycle_through_the_encoders() -> None:
    graph = {f"dataprep.{p.stem}": _imports(p) for p in (ROOT / "dataprep").glob("*.py")}

    def reaches(a: str, b: str) -> bool:
        seen, todo = set(), [a]
        while todo:
            m = todo.pop()
            for n in graph.get(m, ()):
                if n == b:
                    return True
                if n not in seen:
                    seen.add(n)
                    todo.append(n)
        return False

    for module in ("dataprep.mistral", "dataprep.mistral_labels", "dataprep.mistral_request",
                   "dataprep.mistral_files", "dataprep.mistral_templates", "dataprep.encode", "dataprep.chat_encoder",
                   "dataprep.template_encoder", "dataprep.probes"):
        assert not reaches(module, module), f"{module} imports itself through other modules"


def test_one_place_chooses_the_encoder() -> None:
    cfg = config_from_dict({"tokenizer_config": "fixture:qwen2.5",
                            "datasets": [{"path": "x", "type": "chat_template"}, {"path": "y", "type": "alpaca"}]})
    qwen = _tokenizer(str(tokenizer_dir("qwen2.5")))
    assert qwen.chat_encoding is None
    template = chat_encoder_for(cfg, 0, qwen, "{{ messages[0].content }}", "inline")
    assert isinstance(template, TemplateEncoder) and isinstance(template, ChatEncoder) and template.name == "inline"
    assert chat_encoder_for(cfg, 1, qwen, None) is None
    mistral = _tokenizer("mistral:mistral_instruct_tokenizer_240323.model.v3")
    assert isinstance(mistral.chat_encoding, TokenizerChatEncoding)
    encoder = chat_encoder_for(cfg, 0, mistral, None)
    assert isinstance(encoder, MistralEncoder) and isinstance(encoder, ChatEncoder)
    assert encoder.name == "mistral-common v3 (sentencepiece)"
