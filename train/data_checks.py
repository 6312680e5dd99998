"""What the loader checks in a prepared directory beyond its files' sizes: the shape of the manifest's parts it
reads, and that samples.parquet accounts for every sample a shard holds. A manifest is data (copied, edited,
half-written by another tool): a missing key or a string where a count belongs must be one line naming the
field, not a KeyError or TypeError from deep inside the loader.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# The keys of a manifest's shard entry the loader reads, with their types (bool is an int to Python: refused)
SHARD_KEYS: dict[str, type] = {"file": str, "split": str, "rows": int, "tokens": int}


def _is(value: Any, kind: type) -> bool:
    return isinstance(value, kind) and not isinstance(value, bool)


def manifest_problem(manifest: dict[str, Any]) -> str | None:
    """What is wrong with the manifest's shards, accounting and datasets, or None."""
    shards = manifest.get("shards")
    if not isinstance(shards, list):
        return f"'shards' is a {type(shards).__name__}, not a list"
    files: set[str] = set()
    for i, info in enumerate(shards):
        if not isinstance(info, dict):
            return f"shards[{i}] is a {type(info).__name__}, not an object"
        for key, kind in SHARD_KEYS.items():
            if not _is(info.get(key), kind):
                return f"shards[{i}].{key} is {info.get(key)!r}, not a {kind.__name__}"
        if "bytes" in info and not _is(info["bytes"], int):
            return f"shards[{i}].bytes is {info['bytes']!r}, not an int"
        if info["file"] in files:  # the same rows twice would train twice as often, silently
            return f"shards[{i}].file {info['file']!r} is listed twice"
        files.add(info["file"])
    if not isinstance(manifest.get("accounting"), dict):
        return "'accounting' is not an object"
    config = manifest.get("config")
    datasets = config.get("datasets") if isinstance(config, dict) else None
    if not isinstance(datasets, list) or not all(isinstance(d, dict) and _is(d.get("path"), str) for d in datasets):
        return "config.datasets is not a list of datasets with a path"
    return None


def samples_problem(sample_id: np.ndarray, dataset_index: np.ndarray, datasets: int) -> str | None:
    """What is wrong with samples.parquet's ids (0 .. rows-1, each once) and kept rows' dataset indexes."""
    if len(sample_id) and (sample_id.min() < 0 or sample_id.max() >= len(sample_id)):
        return f"sample ids run from {sample_id.min()} to {sample_id.max()} over {len(sample_id)} rows"
    if len(dataset_index) and (dataset_index.min() < 0 or dataset_index.max() >= datasets):
        return f"a kept row's dataset_index is {dataset_index.max()}, but the manifest lists {datasets} dataset(s)"
    return None


def unknown_sample(dataset_of: np.ndarray, shard_sample_ids: np.ndarray) -> int | None:
    """A sample id a shard holds that samples.parquet has no kept row for, or None."""
    ids = shard_sample_ids[shard_sample_ids >= 0]
    if not len(ids):
        return None
    outside = ids[ids >= len(dataset_of)]
    if len(outside):
        return int(outside[0])
    missing = ids[dataset_of[ids] < 0]
    return int(missing[0]) if len(missing) else None
