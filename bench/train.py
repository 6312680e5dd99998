"""Benchmark of the training side: the streaming loader alone (cold and warm page cache), and the CPU step time
of the demo model when the trainer provides one.

    python bench/train.py                              # ~100M tokens of shards under bench/out/loader
    python bench/train.py --tokens 300e6 --mbs 1,8,32  # more data, more micro-batch sizes
    python bench/train.py --drop-caches                # cold = echo 1 > /proc/sys/vm/drop_caches (root; the
                                                       # whole machine's page cache) instead of fadvise
    python bench/train.py --mbs 1,8,32 --runs 3 --steps 0   # the loader rows of bench/RESULTS.md

What it does, in order:

    data      `tessera prepare examples/demo.yaml` (cached), then a prepared directory under --out whose train
              split is the demo's train rows repeated until --tokens (real packed rows: ~940 tokens of 1024,
              several samples each), written as Arrow IPC shards of at most 8M tokens like prepare writes them,
              with a manifest (sizes, sha256) that open_prepared accepts. Reused when it exists.
    cold      every shard is evicted from the page cache (posix_fadvise DONTNEED on each file: only these files,
              no privileges needed; `fincore` confirms 0 resident pages when installed), then one epoch of
              iterate_batches (shuffled: the training path, random row order over the files) is timed, from
              open_prepared to the last Batch.
    warm      the same epoch again, pages cached: best of --repeat.
    once      one open_prepared, then --repeat + 1 epochs on it (what a training run does): best of them; then
              the same with iterate_batches(prefetch=True) (a background thread builds the next chunk; off by
              default in the loader, and in every other row here).
    demo      the demo shards themselves (23 rows, in the cache), opened once, cycled for ~20M tokens: best of
              --repeat.
    floor     the same shuffled rows read with nothing but the per-token work no loader can skip: per row, its
              input_ids, labels and position_ids as numpy views of the memory-mapped shards (pyarrow, zero-copy)
              widened into one reused int64 buffer; no micro-batch, sample ids, cu_seqlens or tensors. Best of
              --repeat. loader / floor is the number that least depends on the load (both share the machine).
    --runs N  all of the above N times; the summary gives best and median tokens/s per row, and the median
              ratio to the floor of the same run. The load average (os.getloadavg, as `uptime`) is printed
              before each micro_batch_size.
    step      the demo model's CPU step time: examples/demo.yaml's model and trainer keys (Qwen2, hidden 64,
              2 layers, the Qwen2.5 vocabulary, micro_batch_size 1) through train.loop.train on the demo
              shards for --steps steps, no eval or checkpoints: median step_time_s, step 1 excluded.
    dist      (--dist-steps N) the same model with 2 CPU processes (torchrun, gloo; DDP, then FSDP2) taking
              micro_batch_size 1 each, against 1 process taking 2: the same global batch; median step_time_s
              after step 1 of each (`python bench/train.py --tokens 1e6 --mbs 1 --repeat 1 --steps 0
              --dist-steps 10` measures only this, on a small loader dataset).

tokens/s counts non-padding tokens of the Batches yielded (Batch.num_tokens) over wall time; building each
Batch (int64 tensors, padding, cu_seqlens, sample ids) is included. Target on the 2-core machine: >= 50M tokens/s
warm. Results go in bench/RESULTS.md (by hand), with the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.ipc as ipc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dataprep.cli import main as tessera  # noqa: E402
from dataprep.shards import SHARD_TOKENS, sha256_file  # noqa: E402
from schemas.shard import SHARD_SCHEMA  # noqa: E402
from train.data import batches_per_epoch, iterate_batches, open_prepared  # noqa: E402

TARGET = 50e6


def build_data(out: Path, tokens: float) -> Path:
    demo = out / "demo"
    if tessera(["prepare", str(ROOT / "examples/demo.yaml"), "--out", str(demo)]) != 0:
        sys.exit("tessera prepare examples/demo.yaml failed")
    big = out / f"loader-{tokens / 1e6:.0f}M"
    if (big / "manifest.json").is_file():
        return big
    manifest = json.loads((demo / "manifest.json").read_text())
    train = pa.concat_tables(ipc.open_file(demo / s["file"]).read_all()
                             for s in manifest["shards"] if s["split"] == "train")
    per_copy = sum(train.column("num_tokens").to_pylist())
    copies = max(1, round(tokens / per_copy))
    tmp = out / f".{big.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "shards").mkdir(parents=True)
    rows_per_shard = max(1, SHARD_TOKENS // (per_copy // train.num_rows + 1))
    shards: list[dict[str, Any]] = []
    written = 0
    total_rows = copies * train.num_rows
    while written < total_rows:
        n = min(rows_per_shard, total_rows - written)
        # One chunk, then record batches of 1,024 rows, as prepare writes them (not 23-row pieces).
        table = pa.concat_tables([train] * (n // train.num_rows + 2)).slice(written % train.num_rows, n)
        table = table.combine_chunks()
        name = f"shards/train-{len(shards):05d}.arrow"
        with ipc.new_file(tmp / name, SHARD_SCHEMA) as w:
            w.write_table(table, max_chunksize=1024)
        shards.append({"file": name, "split": "train", "rows": n,
                       "tokens": sum(table.column("num_tokens").to_pylist()),
                       "trainable": sum(table.column("num_trainable").to_pylist()),
                       "sha256": sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size})
        written += n
    for s in manifest["shards"]:
        if s["split"] == "val":
            shutil.copyfile(demo / s["file"], tmp / s["file"])
            shards.append({**s, "bytes": (tmp / s["file"]).stat().st_size})
    for f in ("samples.parquet", "quarantine.parquet", "duplicates.parquet"):
        shutil.copyfile(demo / f, tmp / f)
    shutil.copytree(demo / "tokenizer", tmp / "tokenizer")
    manifest["shards"] = shards
    manifest["fingerprint"] = f"bench-{manifest['fingerprint']}-x{copies}"
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.rename(big)
    return big


def evict(prepared: Path, drop_caches: bool) -> str:
    files = sorted((prepared / "shards").glob("*.arrow"))
    if drop_caches:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
        how = "drop_caches"
    else:
        for f in files:
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)  # dirty (just written) pages cannot be evicted
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        how = "posix_fadvise(DONTNEED)"
    return f"{how}; resident after: {resident(files)}"


def resident(files: list[Path]) -> str:
    if not shutil.which("fincore"):
        return "unknown (no fincore)"
    done = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", *map(str, files)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        return "unknown"
    res = sum(int(x) for x in done.stdout.split())
    total = sum(f.stat().st_size for f in files)
    return f"{res / 2**20:,.0f} MiB of {total / 2**20:,.0f} MiB"


def measured(work: Any) -> dict[str, float]:
    """Runs work() -> (tokens, open seconds) and times it: wall, this process's CPU, and the other processes'
    share of the machine meanwhile (on a shared box, tokens per CPU-second of this process is the number that
    depends least on how much of a core the scheduler gave it)."""
    cpu0, own0, start = psutil.cpu_times(), time.process_time(), time.perf_counter()
    tokens, opened = work()
    seconds, own, cpu1 = time.perf_counter() - start, time.process_time() - own0, psutil.cpu_times()
    busy = sum(getattr(cpu1, k) - getattr(cpu0, k) for k in ("user", "system", "nice"))
    other = max(0.0, busy - own) / seconds / (psutil.cpu_count() or 1)
    return {"tokens": tokens, "open_s": opened, "seconds": seconds, "cpu_s": own, "tokens_per_s": tokens / seconds,
            "tokens_per_cpu_s": tokens / own, "other_load": other}


def epoch(prepared: Path, mbs: int, seed: int, opened_data: Any = None, epochs: int = 1,
          prefetch: bool = False) -> dict[str, float]:
    """`epochs` epochs; with opened_data, on a dataset already open (as a training run reads its epochs: the
    memory maps' pages are already mapped, so no page faults), else from open_prepared on. prefetch as
    iterate_batches takes it (off by default, as the trainer uses it)."""
    def work() -> tuple[int, float]:
        start = time.perf_counter()
        data = opened_data if opened_data is not None else open_prepared(prepared)
        opened = time.perf_counter() - start
        tokens = batches = 0
        for batch, _ in iterate_batches(data, "train", mbs, seed=seed, epochs=epochs, prefetch=prefetch):
            tokens += batch.num_tokens
            batches += 1
        assert batches == epochs * batches_per_epoch(data, "train", mbs)
        return tokens, opened

    return measured(work)


def floor(prepared: Path, seed: int) -> dict[str, float]:
    """The floor (module docstring): the epoch's rows in iterate_batches' order for `seed` (the permutation
    drawn from (seed, 0)), each row's three token columns copied once into an int64 buffer. Opening and indexing
    the shards are not timed."""
    manifest = json.loads((prepared / "manifest.json").read_text())
    columns, where = [], []
    for s in (s for s in manifest["shards"] if s["split"] == "train"):
        reader = ipc.open_file(pa.memory_map(str(prepared / s["file"]), "r"))
        for i in range(reader.num_record_batches):
            b = reader.get_batch(i)
            columns.append([b.column(k).values.to_numpy(zero_copy_only=True)
                            for k in ("input_ids", "labels", "position_ids")])
            off = b.column("input_ids").offsets.to_numpy()
            where += [(len(columns) - 1, x, y) for x, y in zip(off[:-1].tolist(), off[1:].tolist(), strict=True)]
    order = np.random.default_rng([seed, 0]).permutation(len(where)).tolist()
    out = np.empty((3, max(y - x for _, x, y in where)), np.int64)

    def work() -> tuple[int, float]:
        tokens = 0
        for j in order:
            c, x, y = where[j]
            ids, labels, positions = columns[c]
            n = y - x
            out[0, :n], out[1, :n], out[2, :n] = ids[x:y], labels[x:y], positions[x:y]
            tokens += n
        return tokens, 0.0

    return measured(work)


def row(r: dict[str, float]) -> str:
    return (f"{r['open_s']:.2f} | {r['seconds']:.2f} | {r['cpu_s']:.2f} | {r['tokens_per_s'] / 1e6:,.1f}M | "
            f"{r['tokens_per_cpu_s'] / 1e6:,.1f}M | {r['other_load']:.0%}")


def step_time(out: Path, steps: int) -> str:
    """The demo model of examples/demo.yaml (its base_model_init and trainer keys) trained by the trainer's own
    loop (train.loop.train) on the demo shards for `steps` steps, without evaluation or checkpoints; the median
    step_time_s of metrics.jsonl, step 1 (warm-up) excluded."""
    try:
        from train.loop import train
    except ImportError:
        return "skipped: train/loop.py is not on this branch (the trainer branch adds it)"
    import yaml

    from schemas.config import load_config

    demo = yaml.safe_load((ROOT / "examples/demo.yaml").read_text())
    if "base_model_init" not in demo:
        return "skipped: examples/demo.yaml has no base_model_init (the demo model)"
    for ds in demo["datasets"]:
        ds["path"] = str(ROOT / "examples" / ds["path"])
    run = out / "step"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    cfg = {**demo, "dataset_prepared_path": str(out / "demo"), "output_dir": str(run / "out"), "max_steps": steps,
           "logging_steps": 1, "eval_steps": None, "save_steps": None}
    path = run / "step.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    train(load_config(path), out / "demo", path)
    lines = [json.loads(x) for x in (run / "out/metrics.jsonl").read_text().splitlines()]
    steps_ = [x for x in lines if "step_time_s" in x][1:]
    cpu = statistics.median(x["step_time_s"] for x in steps_)
    tokens = statistics.median(x["tokens"] for x in steps_)
    return (f"{len(steps_)} steps after step 1: median {cpu:.2f} s/step, {tokens:,.0f} tokens/step "
            f"({tokens / cpu:,.0f} tokens/s), loss {lines[0]['loss']:.2f} -> {steps_[-1]['loss']:.2f}")


def dist_step_time(out: Path, steps: int) -> list[str]:
    """Issue 11: the demo model's step with 2 CPU processes (torchrun, gloo; DDP and FSDP2), each taking
    micro_batch_size 1, against 1 process with micro_batch_size 2: the same global batch of 2 packed rows. Each
    is `python -m train` (or torchrun -m train) on the demo shards for `steps` steps, no checkpoints; the median
    step_time_s of metrics.jsonl after step 1, and the other processes' share of the CPUs meanwhile."""
    import statistics

    import yaml

    demo = yaml.safe_load((ROOT / "examples/demo.yaml").read_text())
    for ds in demo["datasets"]:
        ds["path"] = str(ROOT / "examples" / ds["path"])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    runs = [("1 process, micro_batch_size 2", [sys.executable], {"micro_batch_size": 2}),
            ("2 processes (DDP), micro_batch_size 1", torchrun, {"micro_batch_size": 1}),
            ("2 processes (FSDP2), micro_batch_size 1", torchrun,
             {"micro_batch_size": 1, "fsdp_version": 2, "fsdp_config": {"reshard_after_forward": True}})]
    lines = ["| run | threads per process | median step s | tokens / step | tokens/s | loss (step 1 → last) | "
             "other load |", "|---|---:|---:|---:|---:|---|---:|"]
    for name, launcher, keys in runs:
        run = out / "dist" / name.split(",")[0].replace(" ", "_").replace("(", "").replace(")", "")
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir(parents=True)
        cfg = {**demo, "dataset_prepared_path": str(out / "demo"), "output_dir": str(run / "out"),
               "max_steps": steps, "logging_steps": 1, "save_steps": steps + 1, **keys}
        path = run / "step.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        cpu0, kids0, start = psutil.cpu_times(), _children_cpu(), time.perf_counter()
        done = subprocess.run([*launcher, "-m", "train", str(path)], capture_output=True, text=True, cwd=ROOT,
                              env=env)
        seconds = time.perf_counter() - start
        (run / "stdout.txt").write_text(done.stdout)
        if done.returncode != 0:
            lines.append(f"| {name} | failed: {done.stderr.strip().splitlines()[-1]} | | | | | |")
            continue
        cpu1 = psutil.cpu_times()
        busy = sum(getattr(cpu1, k) - getattr(cpu0, k) for k in ("user", "system", "nice"))
        other = max(0.0, busy - (_children_cpu() - kids0)) / seconds / (psutil.cpu_count() or 1)
        rows = [json.loads(x) for x in (run / "out/metrics.jsonl").read_text().splitlines()]
        timed = [x for x in rows if "step_time_s" in x][1:]
        step_s = statistics.median(x["step_time_s"] for x in timed)
        tokens = statistics.median(x["tokens"] for x in timed)
        threads = "1 (torchrun's default)" if launcher is torchrun else str(torch_threads())
        lines.append(f"| {name} | {threads} | {step_s:.2f} | {tokens:,.0f} | {tokens / step_s:,.0f} | "
                     f"{rows[0]['loss']:.2f} → {timed[-1]['loss']:.2f} | {other:.0%} |")
    return lines


def _children_cpu() -> float:
    """CPU seconds of the finished child processes (the launched runs, their workers included)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    versions = {p: metadata.version(p) for p in ("torch", "pyarrow", "numpy")}
    return {"cpu": f"{cpu}, {psutil.cpu_count()} cores", "ram": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
            "python": platform.python_version(), **versions}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "bench/out")
    p.add_argument("--tokens", type=float, default=100e6, help="train tokens in the benchmark shards")
    p.add_argument("--mbs", default="1,8", help="micro-batch sizes, comma-separated")
    p.add_argument("--repeat", type=int, default=3, help="warm epochs per micro-batch size (best counts)")
    p.add_argument("--runs", type=int, default=1, help="repeat every loader measurement; summary: best, median")
    p.add_argument("--drop-caches", action="store_true", help="cold = drop the whole page cache (root)")
    p.add_argument("--steps", type=int, default=10, help="demo-model training steps for the step time (0: skip)")
    p.add_argument("--dist-steps", type=int, default=0, help="steps of the demo model with 2 processes (DDP, "
                   "FSDP2) vs 1 process, the same global batch (0: skip)")
    args = p.parse_args()

    print("machine:", ", ".join(f"{k} {v}" for k, v in machine().items()))
    prepared = build_data(args.out, args.tokens)
    data = open_prepared(prepared)
    rows, tokens = data.num_rows("train"), data.num_tokens("train")
    size = sum(f.stat().st_size for f in (prepared / "shards").glob("*.arrow"))
    print(f"data: {prepared}: {rows:,} train rows, {tokens:,} tokens ({tokens / rows:,.0f} per row), "
          f"{size / 2**30:.2f} GiB of shards")
    del data
    results: dict[tuple[int, str], list[float]] = {}
    ratios: dict[tuple[int, str], list[float]] = {}
    per_cpu: dict[tuple[int, str], list[float]] = {}  # tokens per CPU-second, and its ratio to the floor's
    cpu_ratios: dict[tuple[int, str], list[float]] = {}
    for run in range(args.runs):
        if args.runs > 1:
            print(f"\nrun {run + 1} of {args.runs}")
        print("| micro_batch_size | cache | open s | epoch s | CPU s | tokens/s | tokens per CPU-s | other load | "
              "target |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|---|")
        for mbs in (int(x) for x in args.mbs.split(",")):
            load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
            print(f"| {mbs} | load average before: {load} | | | | | | | |")
            how = evict(prepared, args.drop_caches)
            rows_ = {"cold": epoch(prepared, mbs, seed=0)}
            rows_["warm"] = max((epoch(prepared, mbs, seed=1 + r) for r in range(args.repeat)),
                                key=lambda r: r["tokens_per_s"])
            data = open_prepared(prepared)  # one open, several epochs: what a training run does
            rows_["warm, opened once"] = max((epoch(prepared, mbs, seed=1 + r, opened_data=data)
                                              for r in range(args.repeat + 1)), key=lambda r: r["tokens_per_s"])
            rows_["opened once, prefetch"] = max((epoch(prepared, mbs, seed=1 + r, opened_data=data, prefetch=True)
                                                  for r in range(args.repeat + 1)), key=lambda r: r["tokens_per_s"])
            del data
            demo = open_prepared(args.out / "demo")  # the bundled example's 23 rows, cycled for ~20M tokens
            cycles = max(1, round(20e6 / demo.num_tokens("train")))
            rows_["demo"] = max((epoch(args.out / "demo", mbs, seed=1 + r, opened_data=demo, epochs=cycles)
                                 for r in range(args.repeat)), key=lambda r: r["tokens_per_s"])
            del demo
            rows_["floor"] = max((floor(prepared, seed=1 + r) for r in range(args.repeat)),
                                 key=lambda r: r["tokens_per_s"])
            names = {"cold": f"cold ({how})", "warm": f"warm (best of {args.repeat})",
                     "warm, opened once": f"warm, opened once (best of {args.repeat + 1} epochs)",
                     "opened once, prefetch": f"warm, opened once, prefetch=True (best of {args.repeat + 1})",
                     "demo": f"demo shards, opened once, {cycles} epochs (best of {args.repeat})",
                     "floor": f"floor: per-row read + widen, no batch (best of {args.repeat})"}
            for kind, r in rows_.items():
                met = "" if kind in ("cold", "floor") else (
                    f"wall {'met' if r['tokens_per_s'] >= TARGET else 'not met'}, per CPU-s "
                    f"{'met' if r['tokens_per_cpu_s'] >= TARGET else 'not met'} (≥ 50M)")
                print(f"| {mbs} | {names[kind]} | {row(r)} | {met} |")
                results.setdefault((mbs, kind), []).append(r["tokens_per_s"])
                ratios.setdefault((mbs, kind), []).append(r["tokens_per_s"] / rows_["floor"]["tokens_per_s"])
                per_cpu.setdefault((mbs, kind), []).append(r["tokens_per_cpu_s"])
                cpu_ratios.setdefault((mbs, kind), []).append(r["tokens_per_cpu_s"]
                                                              / rows_["floor"]["tokens_per_cpu_s"])
    if args.runs > 1:
        print(f"\nsummary of {args.runs} runs: best / median; loader / floor of the same run, median")
        print("| micro_batch_size | cache | tokens/s | / floor | tokens per CPU-s | / floor (CPU) |")
        print("|---:|---|---:|---:|---:|---:|")
        for (mbs, kind), v in results.items():
            c = per_cpu[(mbs, kind)]
            print(f"| {mbs} | {kind} | {max(v) / 1e6:,.1f}M / {statistics.median(v) / 1e6:,.1f}M | "
                  f"{statistics.median(ratios[(mbs, kind)]):.0%} | {max(c) / 1e6:,.1f}M / "
                  f"{statistics.median(c) / 1e6:,.1f}M | {statistics.median(cpu_ratios[(mbs, kind)]):.0%} |")
    print("step:", step_time(args.out, args.steps) if args.steps else "skipped (--steps 0)")
    if args.dist_steps:
        print("\n".join(dist_step_time(args.out, args.dist_steps)))
    with contextlib.suppress(Exception):
        print("gpu: none lent to this run" if not __import__("torch").cuda.is_available() else "gpu: present")
    return 0


if __name__ == "__main__":
    sys.exit(main())
