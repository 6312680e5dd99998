"""Benchmark of MinHash near-dedup (dataprep/minhash.py, dataprep/lsh.py) on a corpus with planted
near-duplicates, next to datasketch's in-memory MinHashLSH on the same corpus in the same run.

    python bench/dedup.py                          # 100,000 rows, seed 0, 2 worker processes for signatures
    python bench/dedup.py --rows 20000 --skip-datasketch
    python bench/dedup.py --threshold 0.8 --num-perm 128 --ngram 5 --workers 2

What it does, in order:

    corpus    seeded, deterministic JSONL under --out (reused when the same --rows/--seed wrote it). Base texts of
              40-400 words (Zipf-weighted made-up words, line breaks every ~12 words); some get variants, each
              made from its base by one kind of edit, repeated until the exact Jaccard of the two shingle sets
              (normalised word 5-grams, what the stage compares) falls to a target level: word substitutions,
              insertions, deletions, a partial rewrite (a run of words replaced), or only case and line-break
              changes (Jaccard 1.0 after normalisation; not byte-equal, so exact dedup does not catch them).
              Targets 0.97, 0.93, 0.88 (must be found), 0.75, 0.65 (grey zone: either way is fine), 0.5, 0.35,
              0.2 (must not be found); every variant also gets random case and line-break changes. Rows are
              shuffled, so a variant is rarely next to its base.
    truth     exact Jaccard of every pair inside a family (a base and its variants), from the shingle sets.
              Texts of different families share no 5-gram in practice; every cross-family pair a method puts in
              one cluster is measured too, so precision counts it whatever its Jaccard.
    tessera   child process: signatures in --workers processes over batches of 512 texts (as the pipeline's
              row pass computes them), then banding + verification + union-find over the signature array, keep
              first. docs/s = rows / (signatures + clustering seconds); peak RSS of the child and its workers.
    datasketch  child process: MinHash.bulk (its default SHA-1 hashing), MinHashLSH with the same (bands, rows)
              and threshold, insert all, query each, verify candidates with MinHash.jaccard >= threshold, union-find,
              keep first. Single process (datasketch has no parallel mode).

Scores, over pairs of rows: a pair with exact Jaccard >= 0.85 must end in one cluster, a pair <= 0.5 must not.
recall = found pairs >= 0.85 / all pairs >= 0.85; precision = found pairs >= 0.85 / (found pairs >= 0.85 + found
pairs <= 0.5); pairs in between count for neither. Targets (2 cores): recall >= 0.95, precision >= 0.98, >= 5,000
docs/s for the stage, peak RSS < 2 GiB.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from importlib import metadata
from itertools import combinations
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dataprep import lsh, minhash  # noqa: E402

GENERATOR_VERSION = 2
BATCH = 512
FOUND, NOT_FOUND = 0.85, 0.5
TARGET_RECALL, TARGET_PRECISION, TARGET_DOCS_S, TARGET_RSS = 0.95, 0.98, 5000, 2 << 30
LEVELS = (0.97, 0.93, 0.88, 0.75, 0.65, 0.5, 0.35, 0.2)
EDITS = ("substitute", "insert", "delete", "rewrite")


# ---- corpus


def _vocabulary(rng: random.Random, size: int = 30000) -> tuple[list[str], list[float]]:
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"] + ["th", "st", "qu", "ng"]
    words = sorted({"".join(rng.choices(syllables, k=rng.choice((1, 2, 2, 3, 3, 4)))) for _ in range(size * 2)})
    rng.shuffle(words)
    words = words[:size]
    # cumulative weights: rng.choices would sum 30,000 weights on every call otherwise
    return words, list(itertools.accumulate(1 / (rank + 1) ** 1.05 for rank in range(len(words))))


def _text(words: list[str], rng: random.Random, cosmetic: bool) -> str:
    """Words back to text: a line break every ~12 words; with `cosmetic`, random capitals and extra breaks."""
    out = []
    for k, w in enumerate(words):
        if cosmetic and rng.random() < 0.08:
            w = w.upper() if rng.random() < 0.5 else w.capitalize()
        out.append(w)
        out.append("\n" if (k + 1) % 12 == 0 or (cosmetic and rng.random() < 0.03) else " ")
    return "".join(out).strip()


def _shingle_set(words: list[str], n: int) -> set[str]:
    return set(minhash.shingles(" ".join(words), n))


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _variant(base: list[str], target: float, kind: str, rng: random.Random, vocab: list[str], weights: list[float],
             n: int) -> list[str]:
    """`base` edited by `kind` until the exact Jaccard of the shingle sets is <= target (1.0: cosmetic only)."""
    words = list(base)
    if target >= 1.0:
        return words
    base_set = _shingle_set(base, n)
    similar = 1.0
    while True:
        # one edit changes up to n shingles: take about half the edits the remaining distance needs at once
        for _ in range(max(1, int(0.5 * (similar - target) * len(words) / n))):
            _edit(words, kind, rng, vocab, weights, n)
        similar = jaccard(base_set, _shingle_set(words, n))
        if similar <= target:
            return words


def _edit(words: list[str], kind: str, rng: random.Random, vocab: list[str], weights: list[float], n: int) -> None:
    if kind == "substitute":
        words[rng.randrange(len(words))] = rng.choices(vocab, cum_weights=weights)[0]
    elif kind == "insert":
        words.insert(rng.randrange(len(words) + 1), rng.choices(vocab, cum_weights=weights)[0])
    elif kind == "delete" and len(words) > n + 1:
        del words[rng.randrange(len(words))]
    else:  # rewrite: a run of 3-10 words replaced by fresh ones (and delete on very short texts)
        start = rng.randrange(len(words))
        words[start:start + rng.randint(3, 10)] = rng.choices(vocab, cum_weights=weights, k=rng.randint(3, 10))


def make_corpus(path: Path, rows: int, seed: int, n: int) -> None:
    """JSONL rows {id, family, level, kind, text}, shuffled; a family is a base and its variants."""
    rng = random.Random(seed)
    vocab, weights = _vocabulary(rng)
    records: list[dict[str, Any]] = []
    family = 0
    while len(records) < rows:
        base = rng.choices(vocab, cum_weights=weights, k=int(min(400, max(40, rng.lognormvariate(4.7, 0.6)))))
        records.append({"family": family, "level": 1.0, "kind": "base", "text": _text(base, rng, False)})
        if rng.random() < 0.35:
            for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
                if len(records) >= rows:
                    break
                if rng.random() < 0.1:
                    level, kind = 1.0, "cosmetic"
                else:
                    level, kind = rng.choice(LEVELS), rng.choice(EDITS)
                words = _variant(base, level, kind, rng, vocab, weights, n)
                records.append({"family": family, "level": level, "kind": kind, "text": _text(words, rng, True)})
        family += 1
    rng.shuffle(records)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        for i, r in enumerate(records):
            f.write(json.dumps({"id": i, **r}, ensure_ascii=False) + "\n")
    tmp.rename(path)


def read_corpus(path: Path) -> tuple[list[str], np.ndarray]:
    texts, families = [], []
    with path.open() as f:
        for line in f:
            r = json.loads(line)
            texts.append(r["text"])
            families.append(r["family"])
    return texts, np.asarray(families, dtype=np.int64)


def truth(texts: list[str], families: np.ndarray, n: int) -> dict[tuple[int, int], float]:
    """Exact Jaccard of every pair of rows inside a family (i < j)."""
    order = np.argsort(families, kind="stable")
    bounds = np.flatnonzero(np.diff(families[order])) + 1
    out = {}
    for members in np.split(order, bounds):
        if len(members) < 2:
            continue
        sets = {int(m): set(minhash.shingles(texts[m], n)) for m in members}
        for a, b in combinations(sorted(sets), 2):
            out[(a, b)] = jaccard(sets[a], sets[b])
    return out


# ---- the two methods (each run in a child process, so that its peak RSS is its own)


def _signature_batch(job: tuple[list[str], int, int]) -> np.ndarray:
    texts, num_perm, n = job
    return minhash.signatures(texts, num_perm, n)


def run_tessera(path: Path, threshold: float, num_perm: int, n: int, workers: int) -> dict[str, Any]:
    texts, _ = read_corpus(path)
    cpu0 = _cpu()
    jobs = [(texts[i:i + BATCH], num_perm, n) for i in range(0, len(texts), BATCH)]
    t0 = time.perf_counter()
    if workers > 1:
        with get_context("spawn").Pool(workers) as pool:
            t0 = time.perf_counter()  # worker start-up is the pipeline's, paid once per run: not counted
            sigs = np.concatenate(pool.map(_signature_batch, jobs, chunksize=1))
    else:
        sigs = np.concatenate([_signature_batch(j) for j in jobs])
    t_sig = time.perf_counter() - t0
    bands, rows = lsh.lsh_params(threshold, num_perm)
    t1 = time.perf_counter()
    clusters = lsh.near_duplicates(sigs, threshold, bands, rows, np.arange(len(sigs)))
    t_cluster = time.perf_counter() - t1
    return {"signatures_s": t_sig, "clustering_s": t_cluster, "seconds": t_sig + t_cluster, "cpu_s": _cpu() - cpu0,
            "bands": bands,
            "rows": rows, "pairs_candidate": clusters.pairs_candidate, "pairs_verified": clusters.pairs_verified,
            "removed": clusters.removed.tolist(), "kept": clusters.kept.tolist(), **_rss()}


def run_datasketch(path: Path, threshold: float, num_perm: int, n: int, bands: int, rows: int) -> dict[str, Any]:
    from datasketch import MinHash, MinHashLSH

    texts, _ = read_corpus(path)
    cpu0 = _cpu()
    t0 = time.perf_counter()
    sketches = MinHash.bulk([[s.encode() for s in minhash.shingles(t, n)] for t in texts], num_perm=num_perm)
    t_sig = time.perf_counter() - t0
    t1 = time.perf_counter()
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=(bands, rows))
    with lsh.insertion_session() as session:
        for i, m in enumerate(sketches):
            session.insert(i, m)
    parent = list(range(len(texts)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, m in enumerate(sketches):
        for j in lsh.query(m):
            if j > i and m.jaccard(sketches[j]) >= threshold:
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)  # the root is the lowest id: keep first
    roots = [find(i) for i in range(len(texts))]
    t_cluster = time.perf_counter() - t1
    removed = [i for i, r in enumerate(roots) if r != i]
    return {"signatures_s": t_sig, "clustering_s": t_cluster, "seconds": t_sig + t_cluster, "cpu_s": _cpu() - cpu0,
            "removed": removed, "kept": [roots[i] for i in removed], **_rss()}


def _cpu() -> float:
    """CPU seconds of this process and its reaped children (the machine is shared: wall time depends on load)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _rss() -> dict[str, int]:
    # ru_maxrss is in KiB on Linux; RUSAGE_CHILDREN: the largest of the (reaped) worker processes
    return {"rss_self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "rss_workers": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}


# ---- scoring


def score(removed: list[int], kept: list[int], truth_pairs: dict[tuple[int, int], float], texts: list[str],
          n: int) -> dict[str, Any]:
    """Pairs inside each cluster (a kept row and the rows removed for it) against the exact Jaccard."""
    members: dict[int, list[int]] = {}
    for r, k in zip(removed, kept, strict=True):
        members.setdefault(k, [k]).append(r)
    found_hi = found_lo = found_grey = 0
    cross_family = 0
    for group in members.values():
        for a, b in combinations(sorted(group), 2):
            j = truth_pairs.get((a, b))
            if j is None:
                cross_family += 1
                j = jaccard(set(minhash.shingles(texts[a], n)), set(minhash.shingles(texts[b], n)))
            if j >= FOUND:
                found_hi += 1
            elif j <= NOT_FOUND:
                found_lo += 1
            else:
                found_grey += 1
    all_hi = sum(1 for j in truth_pairs.values() if j >= FOUND)
    return {"recall": found_hi / all_hi if all_hi else 1.0,
            "precision": found_hi / (found_hi + found_lo) if found_hi + found_lo else 1.0,
            "pairs_hi": all_hi, "found_hi": found_hi, "found_lo": found_lo, "found_grey": found_grey,
            "cross_family_pairs": cross_family, "removed": len(removed), "clusters": len(members)}


# ---- driver


def _child(args: argparse.Namespace) -> None:
    path = Path(args.corpus)
    if args.child == "tessera":
        out = run_tessera(path, args.threshold, args.num_perm, args.ngram, args.workers)
    else:
        out = run_datasketch(path, args.threshold, args.num_perm, args.ngram, args.bands, args.rows_per_band)
    Path(args.result).write_text(json.dumps(out))


def _in_child(kind: str, args: argparse.Namespace, corpus: Path, **extra: Any) -> dict[str, Any]:
    result = args.out / f"result-{kind}.json"
    cmd = [sys.executable, __file__, "--child", kind, "--corpus", str(corpus), "--result", str(result),
           "--threshold", str(args.threshold), "--num-perm", str(args.num_perm), "--ngram", str(args.ngram),
           "--workers", str(args.workers)]
    for k, v in extra.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    subprocess.run(cmd, check=True)
    return json.loads(result.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold", type=float, default=0.8)
    p.add_argument("--num-perm", type=int, default=128)
    p.add_argument("--ngram", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--skip-datasketch", action="store_true")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "dedup")
    p.add_argument("--child", choices=("tessera", "datasketch"), help=argparse.SUPPRESS)
    p.add_argument("--corpus", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--bands", type=int, help=argparse.SUPPRESS)
    p.add_argument("--rows-per-band", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    corpus = args.out / f"corpus-v{GENERATOR_VERSION}-{args.rows}-s{args.seed}-n{args.ngram}.jsonl"
    t = time.perf_counter()
    if not corpus.exists():
        make_corpus(corpus, args.rows, args.seed, args.ngram)
        print(f"corpus: wrote {corpus} in {time.perf_counter() - t:.1f}s")
    texts, families = read_corpus(corpus)
    truth_pairs = truth(texts, families, args.ngram)
    levels = np.array(list(truth_pairs.values()))
    print(f"corpus: {len(texts):,} rows, {len(set(families.tolist())):,} families, {len(truth_pairs):,} pairs in "
          f"families: {(levels >= FOUND).sum():,} >= {FOUND}, {((levels > NOT_FOUND) & (levels < FOUND)).sum():,} "
          f"grey, {(levels <= NOT_FOUND).sum():,} <= {NOT_FOUND}")
    load_before = os.getloadavg()
    results = {"tessera": _in_child("tessera", args, corpus)}
    if not args.skip_datasketch:
        results["datasketch"] = _in_child("datasketch", args, corpus, bands=results["tessera"]["bands"],
                                          rows_per_band=results["tessera"]["rows"])
    report = {"rows": len(texts), "seed": args.seed, "threshold": args.threshold, "num_perm": args.num_perm,
              "ngram": args.ngram, "workers": args.workers, "bands": results["tessera"]["bands"],
              "rows_per_band": results["tessera"]["rows"], "load_before": load_before, "load_after": os.getloadavg(),
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
              "versions": {k: metadata.version(k) for k in ("numpy", "datasketch")}, "methods": {}}
    for name, r in results.items():
        s = score(r["removed"], r["kept"], truth_pairs, texts, args.ngram)
        report["methods"][name] = {**{k: v for k, v in r.items() if k not in ("removed", "kept")}, **s,
                                   "docs_per_s": len(texts) / r["seconds"],
                                   "docs_per_cpu_s": len(texts) / r["cpu_s"]}
    print(json.dumps(report, indent=2))
    t_ = report["methods"]["tessera"]
    checks = {"recall": t_["recall"] >= TARGET_RECALL, "precision": t_["precision"] >= TARGET_PRECISION,
              "docs/s": t_["docs_per_s"] >= TARGET_DOCS_S,
              "rss": max(t_["rss_self"], t_["rss_workers"]) < TARGET_RSS}
    if "datasketch" in report["methods"]:
        ds = report["methods"]["datasketch"]
        print(f"speed ratio tessera / datasketch: {t_['docs_per_s'] / ds['docs_per_s']:.1f}x wall, "
              f"{t_['docs_per_cpu_s'] / ds['docs_per_cpu_s']:.1f}x per CPU second")
    print("targets: " + ", ".join(f"{k} {'met' if ok else 'MISSED'}" for k, ok in checks.items()))
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
