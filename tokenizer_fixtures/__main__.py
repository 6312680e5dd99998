"""`python -m tokenizer_fixtures [--all | --family NAME ...]`: build and cache the offline tokenizer folders
(see __init__.py), one line per family: vocabulary size, reference vectors passed, built or cached, path."""

from __future__ import annotations

import argparse
import sys

from tokenizer_fixtures.build import ensure_family
from tokenizer_fixtures.families import FAMILIES
from tokenizer_fixtures.sdist import cache_root
from tokenizer_fixtures.verify import VectorMismatchError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tokenizer_fixtures",
        description="Build real HF tokenizers from the llama-cpp-python sdist's vocab GGUFs and cache them "
        f"under {cache_root()} ($TESSERA_CACHE overrides ~/.cache/tessera).",
    )
    parser.add_argument(
        "--family", action="append", choices=FAMILIES, help="family to build (repeatable; default: qwen2.5)"
    )
    parser.add_argument("--all", action="store_true", help="build every family")
    args = parser.parse_args(argv)
    families = list(FAMILIES) if args.all else (args.family or ["qwen2.5"])
    failed = 0
    for name in families:
        try:
            b = ensure_family(name)
        except (VectorMismatchError, AssertionError, ValueError, OSError, RuntimeError) as exc:
            failed += 1
            print(f"{name:<8} | FAILED: {exc}", flush=True)
            continue
        how = f"built in {b.seconds:.1f}s" if b.seconds else "cached"
        print(
            f"{b.family:<8} | vocab {b.vocab_size:>6} | vectors {b.vectors_passed}/{b.vectors_total}"
            f" | {how} | {b.path}",
            flush=True,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
