"""An installable package: the wheel built from a copy of the sources ships sql/*.sql and the chat templates as
package data; installed (not editable) into a fresh venv, `tessera prepare`, `query DIR summary` (a bare name
resolves to the shipped SQL library), `report` and `inspect` work from an unrelated directory; the runtime never
imports the tokenizer-fixture builder (tokenizer_fixtures, through dataprep.fetch_tokenizers) unless a `fixture:`
tokenizer is named, and without its dependency (gguf) that is a one-line error naming
`pip install 'tessera[fixtures]'`.

The fresh venv gets its third-party dependencies from the shared venv through a .pth file (no download), so the
only Tessera code it can import is the installed wheel's.

    .venv/bin/python -m pytest tests/test_install.py -v
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["pyproject.toml", "README.md", "dataprep", "schemas", "train", "sql", "tokenizer_fixtures"]
CHATS = [{"messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                       {"role": "assistant", "content": f"{2 * i}."}]} for i in range(6)]


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # Without PYTHONPATH: the tests run with the checkout on it, and the venv must see only the wheel.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy: a build writes build/ and *.egg-info next to the sources.
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    proc = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src), "-w",
                str(out)], cwd=src)
    assert proc.returncode == 0, proc.stderr
    (whl,) = out.glob("tessera-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    env = tmp_path_factory.mktemp("venv") / "venv"
    assert run([sys.executable, "-m", "venv", str(env)], cwd=env.parent).returncode == 0
    site = Path(run([str(env / "bin/python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    cwd=env.parent).stdout.strip())
    # Dependencies from the shared venv; a path added by a .pth line does not run that venv's own .pth files,
    # so its editable install of Tessera stays invisible here.
    (site / "zz_shared_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    proc = run([str(env / "bin/python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                "--disable-pip-version-check", str(wheel)], cwd=env.parent)
    assert proc.returncode == 0, proc.stderr
    return env


def test_wheel_ships_sql_and_templates(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"dataprep/sql/{p.name}" for p in (ROOT / "sql").glob("*.sql")} <= names
    assert {f"dataprep/templates/{p.name}" for p in (ROOT / "dataprep/templates").glob("*.jinja")} <= names
    assert not any(n.startswith(("tests/", "examples/", "bench/")) for n in names)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/METADATA"))).decode()
    core = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert not any(dep in line for line in core for dep in ("torch", "gguf", "datasets", "pytest"))


def test_installed_cli_works_from_any_directory(venv: Path, tmp_path: Path, qwen_dir: Path) -> None:
    work = tmp_path / "elsewhere"
    work.mkdir()
    shutil.copytree(qwen_dir, work / "tokenizer")
    (work / "chats.jsonl").write_text("".join(json.dumps(c) + "\n" for c in CHATS))
    (work / "run.yaml").write_text("tokenizer_config: tokenizer\nchat_template: tokenizer_default\n"
                                   "datasets:\n  - path: chats.jsonl\n    type: chat_template\n")
    tessera = str(venv / "bin/tessera")
    where = run([str(venv / "bin/python"), "-c", "import dataprep; print(dataprep.__file__)"], cwd=work)
    assert where.stdout.strip().startswith(str(venv)), where.stdout  # the wheel's code, not the checkout's
    proc = run([tessera, "prepare", "run.yaml", "--out", "out"], cwd=work)
    assert proc.returncode == 0, proc.stderr
    proc = run([tessera, "query", "out", "summary", "--format", "json"], cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["kept"] == len(CHATS)
    proc = run([tessera, "report", "out", "--out", "report.html"], cwd=work)
    assert proc.returncode == 0 and (work / "report.html").stat().st_size > 1000, proc.stderr
    proc = run([tessera, "inspect", "out", "--sample", "0"], cwd=work)
    assert proc.returncode == 0 and "What is 0 + 0?" in proc.stdout, proc.stderr


def test_runtime_does_not_import_the_fixture_builder(venv: Path, tmp_path: Path, qwen_dir: Path) -> None:
    (tmp_path / "chats.jsonl").write_text("".join(json.dumps(c) + "\n" for c in CHATS))
    (tmp_path / "run.yaml").write_text(f"tokenizer_config: {qwen_dir}\nchat_template: chatml\n"
                                       "datasets:\n  - path: chats.jsonl\n    type: chat_template\n")
    code = ("import sys\nfrom dataprep.cli import main\n"
            "assert main(['prepare', 'run.yaml', '--out', 'out']) == 0\n"
            "import dataprep.look.query, dataprep.look.inspect_tokens, dataprep.look.html_report\n"
            "import dataprep.look.golden\n"
            "print(sorted(m for m in sys.modules if m.startswith(('dataprep', 'gguf', 'tokenizer_fixtures'))))")
    proc = run([str(venv / "bin/python"), "-c", code], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "dataprep.pipeline" in proc.stdout and "fetch_tokenizers" not in proc.stdout and "gguf" not in proc.stdout
    assert "tokenizer_fixtures" not in proc.stdout


def test_fixture_tokenizer_without_gguf_names_the_extra(venv: Path, tmp_path: Path) -> None:
    (tmp_path / "text.jsonl").write_text('{"text": "hello"}\n')
    (tmp_path / "run.yaml").write_text("tokenizer_config: fixture:qwen2.5\n"
                                       "datasets:\n  - path: text.jsonl\n    type: completion\n")
    # gguf is importable from the shared venv; hide it, as in an install without the [fixtures] extra.
    code = ("import sys\nsys.modules['gguf'] = None\nfrom dataprep.cli import main\n"
            "sys.exit(main(['prepare', 'run.yaml', '--out', 'out']))")
    proc = run([str(venv / "bin/python"), "-c", code], cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: tokenizer 'fixture:qwen2.5': the offline fixture builder needs the 'gguf' package: "
        "pip install 'tessera[fixtures]'"]
