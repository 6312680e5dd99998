"""The after-training subcommands of `tessera`: estimate, merge-lora, generate, eval (arguments and entry points;
the work is in train/estimate.py, merge.py, generate.py, evaluate.py). torch is imported only when one runs.

Exit codes: 0 done, 1 the run's outputs cannot be used as asked (one line saying what to do), 2 the config or an
argument is not valid.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _common(p: argparse.ArgumentParser, checkpoint: bool = True) -> None:
    p.add_argument("config", type=Path, help="the run's YAML config (the one `tessera train` used)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, as for train")
    if checkpoint:
        p.add_argument("--checkpoint", type=Path, help="a checkpoint-<step> folder instead of output_dir/final")
        p.add_argument("--prepared", type=Path, help="prepared directory (default: dataset_prepared_path, else "
                       "prepared/<config name>)")


def add_estimate(p: argparse.ArgumentParser) -> None:
    _common(p, checkpoint=False)
    p.add_argument("--gpus", type=int, help="GPUs the run shards over with FSDP (default: WORLD_SIZE, else 1)")
    p.add_argument("--trained-fraction", type=float, metavar="F",
                   help="share of positions whose next token is trained: the output layer runs only there "
                   "(default: the prepared directory's trained share when it exists, else 1.0, the bound)")
    p.add_argument("--prepared", type=Path, help="prepared directory whose trained share to use (default: "
                   "dataset_prepared_path, else prepared/<config name>)")
    p.add_argument("--json", action="store_true", help="print the estimate as JSON")


def add_merge(p: argparse.ArgumentParser) -> None:
    _common(p)


def add_generate(p: argparse.ArgumentParser) -> None:
    _common(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompt", help="one user message")
    what.add_argument("--messages", type=Path, help="a JSON file: a list of {role, content} messages")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy; > 0: sampling")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling (with --temperature > 0)")
    p.add_argument("--seed", type=int, default=0)


def add_eval(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")


def _load(args: argparse.Namespace) -> Any:
    from schemas.config import load_config

    return load_config(args.config, args.overrides)


def _prepared(args: argparse.Namespace, cfg: Any) -> Path:
    return args.prepared or Path(cfg.dataset_prepared_path or Path("prepared") / args.config.stem)


def main(command: str, args: argparse.Namespace) -> int:
    from dataprep.cli import _error
    from schemas.config import ConfigError
    from schemas.overrides import OverrideError

    try:
        cfg = _load(args)
    except (ConfigError, OverrideError) as e:
        _error(e)
        return 2
    if command == "estimate":
        from train.estimate import EstimateError

        try:
            return _estimate(args, cfg)
        except EstimateError as e:
            _error(e)
            return 2
    from train.artifacts import ArtifactError
    from train.data import DataError

    try:
        return _run(command, args, cfg)
    except (ArtifactError, DataError) as e:
        _error(e)
        return 1


def _estimate(args: argparse.Namespace, cfg: Any) -> int:
    from train.estimate import estimate, render_table

    fraction, source = args.trained_fraction, None
    manifest = _prepared(args, cfg) / "manifest.json"
    if fraction is None and manifest.is_file():
        share = json.loads(manifest.read_text()).get("stats", {}).get("trainable_share")
        fraction, source = (share, str(manifest.parent)) if share else (None, None)
    est = estimate(cfg, gpus=args.gpus, trained_fraction=fraction or 1.0, config_dir=args.config.parent)
    est.assumptions["trained_fraction_from"] = source
    print(json.dumps(est.to_dict(), indent=1) if args.json else render_table(est))
    return 0


def _run(command: str, args: argparse.Namespace, cfg: Any) -> int:
    from train.artifacts import weights_dir

    weights = weights_dir(cfg, args.checkpoint)
    if command == "merge-lora":
        from train.merge import merge_lora

        print(f"wrote {merge_lora(cfg, weights, _prepared(args, cfg))}")
        return 0
    if command == "generate":
        from train.generate import generate, read_messages

        messages = read_messages(args.messages) if args.messages else [{"role": "user", "content": args.prompt}]
        result = generate(cfg, weights, messages, prepared=_prepared(args, cfg), max_new_tokens=args.max_new_tokens,
                          temperature=args.temperature, top_p=args.top_p, seed=args.seed, stream=sys.stdout)
        if result.stopped_at is None:
            print(f"(stopped after --max-new-tokens {args.max_new_tokens})", file=sys.stderr)
        return 0
    from train.evaluate import eval_report, evaluate_weights, step_of

    metrics, notes = evaluate_weights(cfg, weights, _prepared(args, cfg))
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    step = step_of(weights)
    print(json.dumps({"step": step, **metrics}) if args.json else eval_report(metrics, weights, step))
    return 0
