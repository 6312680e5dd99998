"""`tessera train CONFIG [--set key=value ...]`, also `python -m train CONFIG`, and with several processes
`torchrun --nproc_per_node N -m train CONFIG` or `accelerate launch --multi_gpu --num_processes N -m train CONFIG`
(train/distributed.py).

The same YAML as `tessera prepare`: the data is prepared first when the prepared directory is missing or stale
(prepare's fingerprint cache decides, so an unchanged dataset is not rebuilt), then the model trains on it.

Exit codes: 0 trained, 1 the run failed (data, model, checkpoint or a non-finite loss; one line saying where and
what to do), 2 the config is not valid.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=Path, help="YAML config (Axolotl key names), the same file `prepare` reads")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set max_steps=200 or --set learning_rate=1e-4")
    p.add_argument("--prepared", type=Path, help="prepared directory (default: dataset_prepared_path, else "
                   "prepared/<config name>)")
    p.add_argument("--workers", type=int, help="worker processes if the data must be prepared first")


def main(args: argparse.Namespace) -> int:
    # Heavy imports here: `tessera prepare` and friends should not pay for torch.
    from dataprep.cli import _error, prepare
    from schemas.config import ConfigError, load_config
    from schemas.overrides import OverrideError
    from train.checkpoint import CheckpointError
    from train.data import DataError
    from train.distributed import DistributedError, all_gather_object, close_world, main_first, setup_world
    from train.log import print0
    from train.loop import TrainingError, train
    from train.model import ModelError
    from train.optim import OptimizerError

    try:
        cfg = load_config(args.config, args.overrides)
    except (ConfigError, OverrideError) as e:
        _error(e)
        return 2
    prepared = args.prepared or Path(cfg.dataset_prepared_path or Path("prepared") / args.config.stem)
    rank = ""
    try:
        world = setup_world(cfg)
        rank = f"rank {world.rank}: " if world.size > 1 else ""
        # One process prepares (or finds the cache up to date); the others wait and then read the same directory.
        with main_first(world):
            code = prepare(argparse.Namespace(config=args.config, overrides=args.overrides, out=prepared,
                                              workers=args.workers, force=False, verify=False, for_train=True,
                                              explain=False)) if world.is_main else 0
        code = max(all_gather_object(code, world))
        if code:
            return code
        print0(f"config: {_trainer_summary(cfg)}", world.is_main)
        train(cfg, prepared, args.config)
    except (DataError, ModelError, OptimizerError, CheckpointError, TrainingError, DistributedError) as e:
        _error(f"{rank}{e}")
        return 1
    except KeyboardInterrupt:
        _error(Exception("interrupted; continue with --set auto_resume_from_checkpoints=true (from the newest "
                         f"checkpoint in {cfg.output_dir})"))
        return 1
    finally:
        close_world()
    return 0


def _trainer_summary(cfg: object) -> str:
    """The trainer keys that differ from their defaults, one line (the full resolved config is in run.json)."""
    from schemas.config import TRAINER_KEYS, Config

    defaults = Config.model_construct()
    shown = [f"{k}={getattr(cfg, k)}" for k in Config.model_fields if k in TRAINER_KEYS
             and getattr(cfg, k) != getattr(defaults, k, None)]
    return ", ".join(shown) or "defaults"


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())
