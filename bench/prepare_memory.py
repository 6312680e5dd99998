"""Peak memory of `tessera prepare` against the number of rows: it must stay flat (issue 10).

    python bench/prepare_memory.py                          # 100,000 and 1,000,000 rows
    python bench/prepare_memory.py --rows 100000,500000     # other sizes
    python bench/prepare_memory.py --near-dedup             # with dataset_near_deduplication: true (MinHash)
    PYTHONPATH=/path/to/other/checkout python bench/prepare_memory.py   # the same for another version

What it does:

    data      seeded Parquet of pretokenized rows (input_ids, labels: the fastest format to prepare, so that
              a million rows fit in minutes on 2 cores): 8-64 tokens each, the first half of each row masked
              as a prompt, ~3% exact copies of an earlier row (removed by exact dedup) and ~0.5% with a token
              outside the vocabulary (quarantined as bad_token_ids). Written once per --rows/--seed under --out.
    prepare   one child process per size: run_pipeline(sequence_len 512, sample_packing, val_set_size 0.01,
              1 worker, force; --near-dedup: dataset_near_deduplication with its defaults, threshold 0.8,
              128 permutations, over the token ids as words). Peak RSS is the child's ru_maxrss; rows/s is
              input rows / the child's wall time from the first row read to manifest.json (setup excluded, it
              does not depend on the rows).

Prints a Markdown table for bench/RESULTS.md with the machine, per size: rows, peak RSS, RSS per row above the
smallest size, rows/s and the stage seconds from the manifest.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
VOCAB = 151_643  # Qwen2.5's regular tokens (the fixture tokenizer)


def generate(path: Path, rows: int, seed: int) -> None:
    """Pretokenized rows, written in row groups of 100k so that generating 1M rows stays small too."""
    rng = np.random.default_rng(seed)
    schema = pa.schema([("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32()))])
    tmp = path.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, schema) as writer:
        for lo in range(0, rows, 100_000):
            n = min(100_000, rows - lo)
            lengths = rng.integers(8, 65, n)
            ids = rng.integers(0, VOCAB, int(lengths.sum())).astype(np.int32)
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
            starts = offsets[:-1]
            # copies: a row repeats the row before it (within the group), so exact dedup has work
            copies = np.flatnonzero(rng.random(n) < 0.03)
            copies = copies[copies > 0]
            lengths[copies] = lengths[copies - 1]
            pieces = [ids[a:a + k] for a, k in zip(starts.tolist(), lengths.tolist(), strict=True)]
            for c in copies.tolist():
                pieces[c] = pieces[c - 1]
            for b in np.flatnonzero(rng.random(n) < 0.005).tolist():
                pieces[b] = np.concatenate([pieces[b][:-1], [VOCAB + 10_000]]).astype(np.int32)
            labels = [np.where(np.arange(len(p)) < len(p) // 2, -100, p).astype(np.int32) for p in pieces]
            offs = np.concatenate([[0], np.cumsum([len(p) for p in pieces])]).astype(np.int32)
            writer.write_table(pa.table({
                "input_ids": pa.ListArray.from_arrays(pa.array(offs), pa.array(np.concatenate(pieces))),
                "labels": pa.ListArray.from_arrays(pa.array(offs), pa.array(np.concatenate(labels))),
            }, schema=schema), row_group_size=10_000)  # the loader reads a row group at a time
    tmp.rename(path)


def child(config: Path, out: Path) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from dataprep.pipeline import run_pipeline
    from dataprep.report import Progress
    from schemas.config import load_config

    start = time.perf_counter()
    result = run_pipeline(load_config(config), config, out, workers=1, force=True, progress=Progress(enabled=False))
    wall = time.perf_counter() - start
    m = result.manifest
    return {"wall_s": wall, "seconds": m["stats"]["seconds"], "accounting": m["accounting"],
            "stages": m.get("stages", []),
            "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))) * 1024
    return (f"{cpu}, {os.cpu_count()} cores visible ({len(os.sched_getaffinity(0))} usable), "
            f"{mem / 2**30:.0f} GiB RAM, Python {platform.python_version()}, {platform.system()}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="100000,1000000", help="comma-separated sizes (default: 100000,1000000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("/tmp/tessera-bench-memory"))
    ap.add_argument("--near-dedup", action="store_true", help="turn on dataset_near_deduplication (defaults)")
    ap.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    sys.path.insert(0, str(ROOT))
    from dataprep.fetch_tokenizers import tokenizer_dir

    tokenizer = str(tokenizer_dir("qwen2.5"))
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for rows in [int(r) for r in args.rows.split(",")]:
        data = args.out / f"rows-{rows}-seed-{args.seed}-v2.parquet"
        if not data.exists():
            t = time.perf_counter()
            generate(data, rows, args.seed)
            print(f"generated {data} in {time.perf_counter() - t:.1f}s", file=sys.stderr)
        near = "-near" if args.near_dedup else ""
        config = args.out / f"rows-{rows}{near}.yaml"
        config.write_text(json.dumps({"tokenizer_config": tokenizer, "datasets": [{"path": str(data)}],
                                      "sequence_len": 512, "sample_packing": True, "val_set_size": 0.01,
                                      "quarantine_max_fraction": 0.05,
                                      **({"dataset_near_deduplication": True} if args.near_dedup else {})}))
        proc = subprocess.run([sys.executable, __file__, "--child", str(config),
                               str(args.out / f"prepared-{rows}{near}")],
                              capture_output=True, text=True, env=os.environ)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
        r = json.loads(proc.stdout.strip().splitlines()[-1]) | {"rows": rows}
        print(f"{rows:,} rows: peak RSS {r['maxrss'] / 2**20:,.0f} MiB, {r['wall_s']:.1f}s", file=sys.stderr)
        results.append(r)
    print(f"\nMachine: {machine()}; load average {os.getloadavg()[0]:.1f}; near-dedup "
          f"{'on' if args.near_dedup else 'off'}\n")
    print("| rows | peak RSS MiB | RSS above the smallest, bytes/row | rows/s (excl. setup) | "
          "seconds: rows / stages / write | accounting |")
    print("|---:|---:|---:|---:|---|---|")
    base = results[0]
    for r in results:
        sec = r["seconds"]
        setup = sec.get("setup", 0.0)
        stages = sum(v for k, v in sec.items() if k not in ("setup", "rows", "write"))
        per_row = (r["maxrss"] - base["maxrss"]) / max(r["rows"] - base["rows"], 1) if r is not base else 0.0
        acc = r["accounting"]
        rate = r["rows"] / (r["wall_s"] - setup)
        print(f"| {r['rows']:,} | {r['maxrss'] / 2**20:,.0f} | {per_row:,.0f} | {rate:,.0f} "
              f"| {sec.get('rows', 0):.1f} / {stages:.1f} / {sec.get('write', 0):.1f} | kept {acc['kept']:,}, "
              f"quarantined {acc['quarantined']:,}, duplicates {acc['duplicates']:,} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
