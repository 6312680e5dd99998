"""Run by tests/train/test_distributed.py under `torchrun --standalone --nproc_per_node 2` (not a test itself):
trains each config named on the command line with train.loop.train, one after the other in the same process
group, and writes what each rank holds afterwards to OUT/<name>/rank-<r>.json:

    weights      sha256 of every trained parameter as this rank holds it (DDP: its replica; FSDP2: the full
                 tensors gathered from the shards)
    local        sha256 of this rank's local parameter data (DDP: the replica; FSDP2: only its shards)
    sample_ids   the samples in the micro-batches this rank trained on, from the same iterate_batches call the
                 loop makes (rank, world size, seed)

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/train/distributed_worker.py OUT \
        NAME=CONFIG ...      (each config's dataset_prepared_path is the prepared directory it trains on)
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from schemas.config import load_config  # noqa: E402
from train.data import iterate_batches, open_prepared  # noqa: E402
from train.distributed import close_world, unwrap  # noqa: E402
from train.loop import train  # noqa: E402


def _sha(tensors: list[torch.Tensor]) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main(out: Path, runs: list[str]) -> None:
    for spec in runs:
        name, config = spec.split("=", 1)
        cfg = load_config(config)
        prepared = Path(str(cfg.dataset_prepared_path))
        done = train(cfg, prepared, Path(config))
        world, model = done.world, done.model
        trained = [p for _, p in sorted(unwrap(model).named_parameters()) if p.requires_grad]
        full = [p.full_tensor() if hasattr(p, "full_tensor") else p for p in trained]  # collective under FSDP2
        local = [p.to_local() if hasattr(p, "to_local") else p for p in trained]
        data = open_prepared(prepared)
        batches = iterate_batches(data, "train", cfg.micro_batch_size, seed=cfg.seed, rank=world.rank,
                                  world_size=world.size)
        steps = cfg.max_steps * cfg.gradient_accumulation_steps
        seen = sorted({int(s) for b, _ in (next(batches) for _ in range(steps)) for s in b.sample_ids.unique()
                       if s >= 0})
        (out / name).mkdir(parents=True, exist_ok=True)
        record = {"weights": _sha(full), "local": _sha(local), "sample_ids": seen, "parallelism": world.parallelism,
                  "world_size": world.size}
        (out / name / f"rank-{world.rank}.json").write_text(json.dumps(record))
    close_world()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
