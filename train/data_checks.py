"""What the loader checks in a prepared directory beyond its files' sizes and the manifest's shape
(dataprep/shards.py, manifest_problem): that samples.parquet accounts for every sample a shard holds, so that a
samples.parquet from another run is one line, not an IndexError (or a 3 TiB allocation) from deep inside.
"""

from __future__ import annotations

import numpy as np


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
