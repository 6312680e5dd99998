"""Benchmark of `tessera prepare` on synthetic data, next to the raw tokenizer floor measured in the same run.

    python bench/prepare.py                                  # 50,000 alpaca + 50,000 chat rows, 1 worker
    python bench/prepare.py --workers 1,2 --profile          # also 2 workers, and a cProfile of the 1-worker run
    python bench/prepare.py --workers 1,2 --repeat 3         # on a shared box: best of 3 interleaved rounds
    python bench/prepare.py --rows 5000 --tokenizer /path/to/tokenizer_dir

What it does, in order:

    data      seeded, deterministic JSONL under --out/data (reused when the same --rows/--seed wrote it):
              alpaca rows and OpenAI-style chats (1-8 turns), long-tailed lengths (lognormal word counts),
              prose from a Zipf-weighted word list with numbers, some unicode and code blocks; ~1% of rows
              are longer than sequence_len (dropped as too_long) and ~3% are duplicates (2% byte-identical,
              1% differing only in whitespace, which the content hash folds)
    floor     child process: runs every row through the pipeline's own RowProcessor (parse -> format ->
              render) with its encode() swapped for a recorder, so it gets the exact strings, batches (512 rows)
              and add_special_tokens the pipeline tokenizes; then times only `Tokenizer.encode_batch` over them.
              The floor's tokens/s is the most the tokenize step can do on this machine. Measured before each
              round and after the last; the fastest counts.
    pipeline  child process per --workers value: `run_pipeline` (sequence_len 2048, sample_packing) with
              force=True. Its peak RSS is its own: ru_maxrss of the child and of its (reaped) worker processes,
              and the whole process tree's RSS summed, sampled by this process every 0.1 s.
    profile   (--profile) one more 1-worker pipeline run under cProfile; the top functions are printed and the
              stats saved to --out/profile-w1.prof (cProfile slows Python-heavy code: read shares, not seconds).
              The row pass's two threads are profiled too, batch by batch, and merged with the main thread,
              whose wait for them shows as `acquire` of `_thread.lock`: leave that row out when reading shares.

tokens/s for the pipeline counts every token it tokenized (kept, duplicate and too_long rows; the sum of
samples.parquet num_tokens), which must equal the floor's count: the script checks that the strings are the
same by comparing the two. Targets (2-core machine): pipeline tokens/s >= 60% of the floor's, peak RSS < 2 GiB,
packing efficiency >= 99%.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import platform
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import yaml
from prepare_data import generate  # bench/ is on sys.path: this file runs as a script

ROOT = Path(__file__).resolve().parent.parent
FLOOR_BATCH = 512  # rows per encode_batch call; dataprep.pipeline.BATCH_SIZE
SEQUENCE_LEN = 2048
TARGET_RATIO, TARGET_RSS, TARGET_PACKING = 0.60, 2 << 30, 0.99


def write_config(out: Path, alpaca: Path, chat: Path, tokenizer: str) -> Path:
    if not tokenizer.startswith("fixture:"):
        tokenizer = str(Path(tokenizer).resolve())  # the config lives in --out: relative paths would move
    cfg = {
        "tokenizer_config": tokenizer,
        "chat_template": "chatml",
        "datasets": [{"path": str(alpaca.resolve()), "type": "alpaca"},
                     {"path": str(chat.resolve()), "type": "chat_template"}],
        "sequence_len": SEQUENCE_LEN,
        "sample_packing": True,
        "dataset_exact_deduplication": True,
        "seed": 42,
    }
    path = out / "bench.yaml"
    path.write_text("# written by bench/prepare.py; `tessera prepare " + str(path) + "` runs the same config\n"
                    + yaml.safe_dump(cfg, sort_keys=False))
    return path


# ---------------------------------------------------------------------------------------------------- children


def child_floor(config_path: Path) -> dict[str, Any]:
    """Collect the exact strings the pipeline tokenizes, then time only encode_batch over them.

    The rows go through the pipeline's own RowProcessor (parse -> format -> render), with the encode() that
    RowProcessor calls swapped for one that records each batch's texts and add_special_tokens and returns
    placeholders. So the floor tokenizes the very strings, in the very batches, with the very flags of the
    pipeline, whatever the renderer does, without copying its code.
    """
    import dataprep.template_encoder as template_encoder
    import dataprep.transform as transform
    from dataprep.load import read_batches
    from dataprep.pipeline import BATCH_SIZE, setup
    from schemas.config import load_config

    assert BATCH_SIZE == FLOOR_BATCH, f"the pipeline now batches {BATCH_SIZE} rows: update FLOOR_BATCH"
    # Every module that tokenizes rendered rows calls dataprep.encode.encode through its own name: instruct and
    # completion rows through transform's, chat rows through template_encoder's. Both are recorded.
    for module in (transform, template_encoder):
        assert callable(getattr(module, "encode", None)), f"{module.__name__} no longer calls encode(): fix the floor"
    batches: list[tuple[list[str], bool]] = []

    def record(tok: Any, rendered: list[Any], add_special_tokens: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
        batches.append(([r.text for r in rendered], add_special_tokens))
        return [(np.zeros(1, np.int32), np.full(1, -100, np.int32)) for _ in rendered]

    cfg = load_config(config_path)
    st = setup(cfg, config_path)
    transform.encode = template_encoder.encode = record  # type: ignore[assignment]
    start = time.perf_counter()
    for source in st.sources:
        proc = transform.RowProcessor(cfg, source.dataset_index, st.tok, st.template_text)
        for batch in read_batches(source.path, source.fmt, BATCH_SIZE):
            proc.process(batch)
    render_s = time.perf_counter() - start
    tok = st.tok.tokenizer
    encode_s, tokens, rows = 0.0, 0, 0
    cpu0 = _cpu_seconds()
    for texts, add_special_tokens in batches:
        t0 = time.perf_counter()
        encodings = tok.encode_batch(texts, add_special_tokens=add_special_tokens)
        encode_s += time.perf_counter() - t0
        tokens += sum(len(e.ids) for e in encodings)
        rows += len(texts)
        # Freed here, outside the timer and before the next call, as the pipeline frees them. Rebinding
        # `encodings` instead keeps the previous 512 Encodings alive during the next call, which measured ~25%
        # slower on the 2-core box (the allocator cannot reuse their memory), and would flatter the pipeline.
        del encodings
    return {"rows": rows, "tokens": tokens, "encode_s": encode_s, "encode_cpu_s": _cpu_seconds() - cpu0,
            "render_s": render_s, "chars": sum(len(t) for b, _ in batches for t in b),
            "cpu_s": _cpu_seconds(), "maxrss": _maxrss(resource.RUSAGE_SELF)}


def child_pipeline(config_path: Path, out: Path, workers: int, profile: Path | None) -> dict[str, Any]:
    from dataprep.pipeline import run_pipeline
    from dataprep.report import Progress
    from schemas.config import load_config

    cfg = load_config(config_path)
    profiler = cProfile.Profile() if profile else None
    batches = _profile_row_threads() if profile else []
    start = time.perf_counter()
    if profiler:
        profiler.enable()
    result = run_pipeline(cfg, config_path, out, workers=workers, force=True, progress=Progress(enabled=False))
    if profiler:
        profiler.disable()
        assert profile is not None
        stats = pstats.Stats(profiler)
        for p in batches:
            stats.add(p)
        stats.dump_stats(profile)
    wall = time.perf_counter() - start
    return {"wall_s": wall, "cpu_s": _cpu_seconds(),
            "maxrss": _maxrss(resource.RUSAGE_SELF), "maxrss_children": _maxrss(resource.RUSAGE_CHILDREN),
            "manifest": str(result.out / "manifest.json")}


def _profile_row_threads() -> list[cProfile.Profile]:
    """With 1 worker the row pass runs on two pool threads, which a profiler enabled on the main thread does
    not see (it sees the main thread waiting for them). Each batch is profiled on its own thread instead; the
    returned list fills with one profile per batch, to merge into the main thread's."""
    import dataprep.transform as transform

    profiles: list[cProfile.Profile] = []
    process = transform.RowProcessor.process

    def profiled(self: Any, batch: list[Any]) -> Any:
        p = cProfile.Profile()
        p.enable()
        try:
            return process(self, batch)
        finally:
            p.disable()
            profiles.append(p)

    transform.RowProcessor.process = profiled  # type: ignore[method-assign]
    return profiles


def _cpu_seconds() -> float:
    """User + system seconds of this process and its reaped children (worker processes)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all processes, all cores)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _maxrss(who: int) -> int:
    return resource.getrusage(who).ru_maxrss * 1024  # KiB on Linux


def spawn(args: list[str]) -> tuple[dict[str, Any], int]:
    """Run this file as a child with `args`; (its JSON result, the tree's peak RSS sampled every 0.1 s).

    The result gets `other_load`: the share of the machine's CPU that other processes used meanwhile (other
    people's test runs on a shared box), so a noisy measurement shows as one."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_path = Path(f.name)
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *args, "--result", str(result_path)],
                            cwd=ROOT)
    peak = 0
    busy0, mine0, wall0 = _busy_seconds(), _cpu_seconds(), time.perf_counter()
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            total = 0
            for p in tree:
                with contextlib.suppress(psutil.Error):  # a worker may exit between the two calls
                    total += p.memory_info().rss
            peak = max(peak, total)
        except psutil.Error:
            pass
        time.sleep(0.1)
    if proc.returncode != 0:
        raise SystemExit(f"child {' '.join(args)} failed with exit code {proc.returncode} (its output is above)")
    wall = time.perf_counter() - wall0
    result = json.loads(result_path.read_text())
    result_path.unlink()
    # _cpu_seconds() now includes the child (reaped): what is left of the machine's busy time is foreign.
    foreign = _busy_seconds() - busy0 - (_cpu_seconds() - mine0)
    result["other_load"] = max(0.0, foreign) / (wall * len(os.sched_getaffinity(0)))
    return result, peak


# ---------------------------------------------------------------------------------------------------- report


def machine() -> dict[str, str]:
    model = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    usable = len(os.sched_getaffinity(0))
    return {
        "cpu": model,
        "cores": f"{usable} usable ({os.cpu_count()} online, {psutil.cpu_count(logical=False)} physical)",
        "ram": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": platform.platform(),
        "python": platform.python_version(),
        "tokenizers": metadata.version("tokenizers"),
        "polars / pyarrow / numpy": " / ".join(metadata.version(p) for p in ("polars", "pyarrow", "numpy")),
        "tessera": metadata.version("tessera"),
    }


def measure_floor(config: Path) -> dict[str, Any]:
    floor, _ = spawn(["--child", "floor", "--config", str(config)])
    print(f"floor: {floor['tokens']:,} tokens, encode_batch {floor['encode_s']:.2f} s "
          f"({floor['tokens'] / floor['encode_s']:,.0f} tokens/s, other processes' load {floor['other_load']:.0%})",
          flush=True)
    return floor


def pipeline_tokens(prepared: Path) -> int:
    """Every token the pipeline tokenized: num_tokens of kept, duplicate and too_long rows."""
    import polars as pl

    samples = pl.read_parquet(prepared / "samples.parquet", columns=["status", "num_tokens"])
    return int(samples.filter(pl.col("status") != "quarantined")["num_tokens"].sum())


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def report(rows: int, floors: list[dict[str, Any]], runs: list[dict[str, Any]]) -> list[str]:
    """The floor is the fastest of its measurements (one before each round, one after the last): the stricter
    ratio. Each pipeline row is that worker count's fastest round."""
    floor = max(floors, key=lambda f: f["tokens"] / f["encode_s"])
    floor_tps = floor["tokens"] / floor["encode_s"]
    lines = [
        f"floor: encode_batch over {floor['rows']:,} rendered rows ({floor['chars']:,} chars, "
        f"{floor['tokens']:,} tokens) in batches of {FLOOR_BATCH}; rendering them with the pipeline's "
        f"RowProcessor took {floor['render_s']:.2f} s (not counted)",
    ]
    for i, f in enumerate(floors):
        when = f"before round {i + 1}" if i < len(floors) - 1 else "after the last round"
        lines.append(f"  {when}: {f['encode_s']:.2f} s = {f['tokens'] / f['encode_s']:,.0f} "
                     f"tokens/s, CPU/wall {f['encode_cpu_s'] / f['encode_s']:.2f}, other processes' load "
                     f"{f['other_load']:.0%}")
    lines += [
        "",
        "| workers | setup s | rows s | stages s | write s | total s | samples/s | tokens/s | floor tokens/s "
        "| ratio | peak RSS (tree) | main / largest worker RSS | packing eff. | other load | accounting |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        m, sec = r["manifest"], r["manifest"]["stats"]["seconds"]
        # the stages after the row pass (exact_dedup, ..., split, pack), or the old fused split+pack
        stages_s = sum(v for k, v in sec.items() if k not in ("setup", "rows", "write"))
        acc = m["accounting"]
        tps = r["tokens"] / r["wall_s"]
        worker_rss = gib(r["maxrss_children"]) if r["workers"] > 1 else "-"
        lines.append(
            f"| {r['workers']} | {sec.get('setup', 0):.2f} | {sec.get('rows', 0):.2f} "
            f"| {stages_s:.2f} | {sec.get('write', 0):.2f} | {r['wall_s']:.2f} "
            f"| {acc['input_rows'] / r['wall_s']:,.0f} | {tps:,.0f} | {floor_tps:,.0f} | {tps / floor_tps:.0%} "
            f"| {gib(max(r['peak_tree'], r['maxrss']))} | {gib(r['maxrss'])} / {worker_rss} "
            f"| {m['stats']['packing_efficiency']:.2%} | {r['other_load']:.0%} "
            f"| in {acc['input_rows']:,} = kept {acc['kept']:,} + dup {acc['duplicates']:,} + dropped "
            f"{acc['dropped']:,} + quarantined {acc['quarantined']:,} "
            f"({'balanced' if acc['balanced'] else 'NOT balanced'}) |")
    lines.append("")
    for r in runs:
        stats = r["manifest"]["stats"]
        same = ("identical to the floor's" if r["tokens"] == floor["tokens"]
                else f"DIFFERENT from the floor's {floor['tokens']:,}: the comparison is not like for like")
        lines.append(
            f"workers {r['workers']}: tokenized {r['tokens']:,} tokens ({same}); kept {stats['tokens']:,} tokens "
            f"({stats['tokens'] / r['wall_s']:,.0f} kept tokens/s) in {stats['rows']:,} packed rows; reasons "
            f"{stats['by_reason']}; CPU {r['cpu_s']:.1f} s over {r['wall_s']:.1f} s wall")
    best = max(r["tokens"] / r["wall_s"] for r in runs) / floor_tps
    peak = max(max(r["peak_tree"], r["maxrss"]) for r in runs)
    packing = min(r["manifest"]["stats"]["packing_efficiency"] for r in runs)
    noisy = max([r["other_load"] for r in runs] + [f["other_load"] for f in floors])
    lines += ["", "targets: " + "; ".join([
        f"ratio {best:.0%} (best run) {'>=' if best >= TARGET_RATIO else '<'} {TARGET_RATIO:.0%}",
        f"peak RSS {gib(peak)} {'<' if peak < TARGET_RSS else '>='} {gib(TARGET_RSS)}",
        f"packing {packing:.2%} {'>=' if packing >= TARGET_PACKING else '<'} {TARGET_PACKING:.0%}",
    ]) + f" ({rows:,} rows per dataset)"]
    if noisy > 0.1:
        lines.append(f"warning: other processes used up to {noisy:.0%} of the CPU during a measurement; "
                     "rerun on a quiet machine before trusting the ratio")
    return lines


def print_profile(path: Path, top: int = 30) -> None:
    stats = pstats.Stats(str(path))
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (file, line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{Path(file).name}:{line}({func})" if line else func
        rows.append((tt, ct, nc, where))
    for title, key in (("own time (tottime)", 0), ("cumulative", 1)):
        print(f"\nprofile, top {top} by {title}; total {total:.1f} s (cProfile overhead included)")
        print(f"{'own s':>8} {'own %':>6} {'cum s':>8} {'cum %':>6} {'calls':>10}  function")
        for tt, ct, nc, where in sorted(rows, key=lambda r: r[key], reverse=True)[:top]:
            print(f"{tt:8.2f} {tt / total:6.1%} {ct:8.2f} {ct / total:6.1%} {nc:10,}  {where}")


# ---------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000, help="rows per dataset (alpaca and chat each)")
    parser.add_argument("--workers", default="1", help="comma-separated worker counts to run, e.g. 1,2")
    parser.add_argument("--tokenizer", default="fixture:qwen2.5",
                        help="tokenizer folder (with tokenizer.json) or fixture:<family>")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out", help="work folder (git-ignored)")
    parser.add_argument("--seed", type=int, default=0, help="data generator seed")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of floor + pipeline runs; the fastest of each is reported (use 3 on a busy box)")
    parser.add_argument("--profile", action="store_true", help="also profile a 1-worker run with cProfile")
    parser.add_argument("--child", choices=["floor", "pipeline"], help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--prepared", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        assert args.config is not None and args.result is not None
        if args.child == "floor":
            result = child_floor(args.config)
        else:
            result = child_pipeline(args.config, args.prepared, int(args.workers), args.profile_to)
        args.result.write_text(json.dumps(result))
        return 0

    workers = [int(w) for w in args.workers.split(",")]
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    info = machine()
    for k, v in info.items():
        print(f"{k:>24}: {v}")
    alpaca, chat, gen_s = generate(out, args.rows, args.seed)
    print(f"data: {alpaca} and {chat} ({args.rows:,} rows each; "
          + (f"generated in {gen_s:.1f} s)" if gen_s else "reused)"), flush=True)
    config = write_config(out, alpaca, chat, args.tokenizer)
    print(f"config: {config}", flush=True)

    floors: list[dict[str, Any]] = []
    best: dict[int, dict[str, Any]] = {}
    for round_ in range(args.repeat):
        floors.append(measure_floor(config))
        for w in workers:
            prepared = out / f"prepared-w{w}"
            r, peak = spawn(["--child", "pipeline", "--config", str(config), "--prepared", str(prepared),
                             "--workers", str(w)])
            r.update(workers=w, peak_tree=peak, manifest=json.loads(Path(r["manifest"]).read_text()))
            r["tokens"] = pipeline_tokens(prepared)
            print(f"pipeline, {w} worker(s), round {round_ + 1}: {r['wall_s']:.2f} s, "
                  f"{r['tokens'] / r['wall_s']:,.0f} tokens/s (other processes' load {r['other_load']:.0%})",
                  flush=True)
            if w not in best or r["wall_s"] < best[w]["wall_s"]:
                best[w] = r
    floors.append(measure_floor(config))
    runs = [best[w] for w in workers]

    lines = report(args.rows, floors, runs)
    print("\n" + "\n".join(lines))
    (out / "results.json").write_text(json.dumps({"machine": info, "rows": args.rows, "floors": floors,
                                                  "runs": runs}, indent=1, default=str) + "\n")
    if args.profile:
        prof = out / "profile-w1.prof"
        spawn(["--child", "pipeline", "--config", str(config), "--prepared", str(out / "prepared-profile"),
               "--workers", "1", "--profile-to", str(prof)])
        print_profile(prof)
    return 0


if __name__ == "__main__":
    sys.exit(main())
