"""Curation sections (Tessera's own keys): MinHash near-dedup, SQL filters and decontamination sources.

They are data keys: each one changes the prepared bytes, so each is part of the prepare fingerprint.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.base import ConfigModel


class NearDeduplication(ConfigModel):
    """`dataset_near_deduplication:` (Tessera): MinHash near-duplicate removal after exact dedup, across all
    datasets (dataprep/near_dedup.py). `true` means these defaults."""

    threshold: float = Field(0.8, gt=0, le=1)
    """Estimated Jaccard similarity of the word n-gram sets at or above which two samples are duplicates."""
    num_perm: int = Field(128, ge=16, le=1024)
    """MinHash permutations (signature length; 4 bytes each per sample). More: finer estimates, slower."""
    ngram: int = Field(5, ge=1, le=64)
    """Words per shingle, after NFC, case folding and whitespace folding. Words are whitespace-separated: text in
    a script without spaces (Chinese, Japanese, Thai) is one word per run, so only its normalised copies match."""
    fields: list[str] = Field(default_factory=lambda: ["all"], min_length=1)
    """Which text is compared: `all`, or roles (system, user, assistant, tool) for chat rows, instruct fields
    (instruction, input, output, system) or column names for other types; see dataprep/dedup_text.py."""
    keep: Literal["first", "longest", "most_trained"] = "first"
    """Which sample of a cluster is kept: first (lowest sample_id), longest (most tokens), most_trained (most
    trained tokens); ties go to the lowest sample_id."""


class FilterRule(ConfigModel):
    """One entry of `filters:` (Tessera): kept samples for which `where` is not true are quarantined with reason
    `filter:<name>` (dataprep/filters.py documents the columns)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=100)
    """Names the filter in the reason code (`filter:<name>`) and the report: letters, digits, `_`, `.`, `-`."""
    where: str = Field(min_length=1, max_length=10_000)
    """A DuckDB SQL expression over the per-sample columns, e.g. `num_trainable between 8 and 4000`. A sample is
    kept when it is true; false or NULL quarantines it. Read-only: no subqueries, no file or setting access."""


class DecontaminateSource(ConfigModel):
    """One entry of `decontaminate:` (Tessera): an evaluation file whose texts training samples must not share
    a word n-gram with (dataprep/decontam.py)."""

    path: str = Field(min_length=1)
    """An evaluation data file (jsonl, json, parquet, csv, arrow), relative to the config file."""
    field: str
    """The eval rows' top-level text field, or a list of messages (`messages`: every message's content)."""
    ngram: int = Field(13, ge=1, le=1000)
    """Words per n-gram: a training sample sharing any n consecutive (normalised) words with an eval text is
    quarantined as `contaminated`. An eval text shorter than n words matches a sample equal to it."""

