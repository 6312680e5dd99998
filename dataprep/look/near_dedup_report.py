"""The read side of near-dedup: the HTML report's section and what `tessera inspect --sample ID` says about a
sample's cluster.

The section (only when the manifest has `near_deduplication`): the parameters (threshold, num_perm, ngram,
fields, keep, and the bands x rows chosen), cluster sizes, a histogram of the removed samples' estimated
Jaccard to their kept sample, and a few pairs side by side. The pairs show the text near-dedup compared
(dataprep/dedup_text.py), read again from the source files the manifest lists, so that they show exactly what
was compared; a source that is gone or has changed since (its sha256 differs) is said so instead.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any

import polars as pl

from dataprep.look.html import ALL, bar_chart, card, esc, src, table
from dataprep.look.query import run_file

EXAMPLES = 3  # pairs side by side: the least similar member of each of the largest clusters
EXCERPT = 1200  # characters of each text shown


def section(con: Any, manifest: dict[str, Any]) -> str:
    """The report section; empty when near-dedup was off."""
    params = manifest.get("near_deduplication")
    if params is None:
        return ""
    clusters = run_file(con, "near_duplicate_clusters").to_pylist()
    removed = sum(c["size"] - 1 for c in clusters)
    cards = "".join([
        card(f"{removed:,}", "samples removed"), card(f"{len(clusters):,}", "clusters"),
        card(f"{params['threshold']:g}", "threshold (est. Jaccard)"),
        card(f"{params['bands']} × {params['rows']}", f"bands × rows of {params['num_perm']}"),
        card(f"{params['ngram']}", "words per shingle"), card(esc(", ".join(params["fields"])), "fields"),
        card(esc(params["keep"]), "keep"),
    ])
    if not clusters:
        return (f'<section id="near-duplicates"><h2>Near duplicates: none found</h2><div class="cards">{cards}</div>'
                f"{src('near_duplicate_clusters')}</section>")
    sizes: dict[int, int] = {}
    for c in clusters:
        sizes[c["size"]] = sizes.get(c["size"], 0) + 1
    size_chart = bar_chart([str(s) for s in sorted(sizes)], [("clusters", [sizes[s] for s in sorted(sizes)], ALL)],
                           "cluster size (samples, kept one included)", "clusters", width=400, height=210)
    lo = min(params["threshold"], min(s for c in clusters for s in c["similarities"]))
    edges = [round(x / 40, 3) for x in range(int(lo * 40), 41)]  # bins of 0.025
    counts = [0] * len(edges)
    for c in clusters:
        for s in c["similarities"]:
            counts[min(int(s * 40) - int(lo * 40), len(edges) - 1)] += 1
    sim_chart = bar_chart([f"{e:.3f}" for e in edges], [("removed samples", counts, ALL)],
                          "estimated Jaccard to the kept sample (bins of 0.025)", "samples", width=560, height=210)
    shown = clusters[:20]
    more = f'<p class="meta">… and {len(clusters) - 20:,} more clusters</p>' if len(clusters) > 20 else ""
    columns = [("cluster_id", "cluster"), ("size", "size"), ("kept_location", "kept row"),
               ("member_locations", "removed rows"), ("similarities", "est. Jaccard")]
    return (f'<section id="near-duplicates"><h2>Near duplicates: {removed:,} samples removed, {len(clusters):,} '
            f'clusters</h2><div class="cards">{cards}</div><div class="grid"><div>{size_chart}</div>'
            f"<div>{sim_chart}</div></div>{table(shown, columns, wrap=frozenset({'member_locations'}))}{more}"
            f"{_pairs(con, manifest, clusters)}<p class=\"meta\">{esc(params['implementation'])}</p>"
            f"{src('near_duplicate_clusters')}</section>")


def _pairs(con: Any, manifest: dict[str, Any], clusters: list[dict[str, Any]]) -> str:
    picks = []
    for c in clusters[:EXAMPLES]:
        k = min(range(len(c["similarities"])), key=lambda i: (c["similarities"][i], i))
        picks.append((c["cluster_id"], c["member_ids"][k], c["similarities"][k]))
    texts = compared_texts(con, manifest, [i for p in picks for i in p[:2]])
    rows = []
    for kept, member, similarity in picks:
        cells = "".join(f'<td class="wrap code" style="white-space: pre-wrap; width: 50%">{esc(texts[i])}</td>'
                        for i in (kept, member))
        rows.append(f"<tr><th>kept {kept}</th><th>removed {member} (est. Jaccard {similarity:.3f})</th></tr>"
                    f"<tr>{cells}</tr>")
    return (f"<h2>Example pairs: the least similar member of the {len(picks)} largest clusters</h2>"
            f"<table>{''.join(rows)}</table><p class=\"meta\">the compared text (fields: "
            f"{esc(', '.join(manifest['near_deduplication']['fields']))}), normalised for comparison only "
            f"(case and whitespace fold), read again from the source files; first {EXCERPT:,} characters</p>")


def compared_texts(con: Any, manifest: dict[str, Any], sample_ids: list[int]) -> dict[int, str]:
    """The text near-dedup compared for each sample id, read again from its source file (or why it cannot be)."""
    from dataprep.dedup_text import dedup_text
    from dataprep.formats import RowError, parse, to_sample
    from dataprep.load import read_batches
    from schemas.config import Config

    cfg = Config.model_validate(manifest["config"])
    fields = manifest["near_deduplication"]["fields"]
    wanted = con.execute("select sample_id, dataset_index, source_file, source_row from samples "
                         "where list_contains($ids, sample_id)", {"ids": sample_ids}).fetchall()
    sources = {s["file"]: s for s in manifest.get("sources", [])}
    out = {i: "(not found in samples.parquet)" for i in sample_ids}
    by_file: dict[tuple[str, int], dict[int, int]] = {}
    for sid, dataset_index, source_file, source_row in wanted:
        by_file.setdefault((source_file, dataset_index), {})[source_row] = sid
    for (source_file, dataset_index), rows in by_file.items():
        path, info = Path(source_file), sources.get(source_file, {})
        if not path.is_file() or ("sha256" in info and _sha256(path) != info["sha256"]):
            for sid in rows.values():
                out[sid] = f"({source_file} is gone or has changed since prepare)"
            continue
        ds = cfg.datasets[dataset_index]
        for batch in read_batches(path, info.get("format", ds.ds_type or "jsonl"), 512):
            for raw in batch:
                sid = rows.get(raw.source_row)  # rows of the file, also for a split slice
                if sid is None:
                    continue
                try:
                    record = parse(raw.payload)
                    text = dedup_text(record, to_sample(record, ds, cfg.train_on_inputs, ""), ds, fields)
                except (RowError, ValueError, KeyError) as e:
                    text = f"(cannot read the row again: {e})"
                out[sid] = text if len(text) <= EXCERPT else text[:EXCERPT] + " …"
            if batch and batch[-1].source_row >= max(rows):
                break
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cluster_note(prepared: Path, sample_id: int) -> str | None:
    """What `tessera inspect --sample ID` says about the sample's near-duplicate cluster, if it is in one."""
    path = prepared / "duplicates.parquet"
    if not path.is_file():
        return None
    with contextlib.suppress(pl.exceptions.ColumnNotFoundError):
        dups = pl.read_parquet(path, columns=["sample_id", "kept_sample_id", "kind", "similarity", "cluster_id"])
        near = dups.filter(pl.col("kind") == "near")
        me = near.filter(pl.col("sample_id") == sample_id)
        if len(me):
            row = me.row(0, named=True)
            size = len(near.filter(pl.col("cluster_id") == row["cluster_id"])) + 1
            return (f"sample {sample_id} was removed as a near duplicate of sample {row['kept_sample_id']}: near-"
                    f"duplicate cluster {row['cluster_id']} ({size} samples, {row['kept_sample_id']} kept), "
                    f"estimated Jaccard {row['similarity']:.3f} to the kept sample")
        members = near.filter(pl.col("cluster_id") == sample_id).sort("sample_id")
        if len(members):
            ids = members["sample_id"].to_list()
            shown = ", ".join(map(str, ids[:10])) + (f", … ({len(ids) - 10} more)" if len(ids) > 10 else "")
            return (f"sample {sample_id} is the kept sample of near-duplicate cluster {sample_id} ({len(ids) + 1} "
                    f"samples; removed: {shown}; estimated Jaccard {members['similarity'].min():.3f}-"
                    f"{members['similarity'].max():.3f} to it)")
    return None
