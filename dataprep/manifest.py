"""manifest.json's content: what was prepared, from what, how (pipeline.py writes it last, after every other
file, so that its presence means the directory is complete). The keys train/data.py and `tessera inspect` read
are checked by shards.manifest_problem."""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import dataprep
from dataprep.near_dedup import near_dedup_settings
from dataprep.report import StageTimer
from dataprep.shards import ShardInfo, sha256_file
from schemas.shard import FORMAT_VERSION

if TYPE_CHECKING:
    from dataprep.pipeline import Setup


def build_manifest(st: Setup, counts: dict[str, Any], stages: list[dict[str, Any]], shards: list[ShardInfo],
              longest: int, timer: StageTimer, saved_tokenizer: dict[str, str]) -> dict[str, Any]:
    cfg = st.cfg
    total_tokens = sum(s.tokens for s in shards)
    trainable = sum(s.trainable for s in shards)
    rows = sum(s.rows for s in shards)
    return {
        "tessera_version": dataprep.__version__,
        "format_version": FORMAT_VERSION,
        "fingerprint": st.fingerprint,
        "config": cfg.model_dump(mode="json"),
        "tokenizer": {"path": str(st.tok.path), "files": st.tok.files, "vocab_size": st.tok.vocab_size,
                      "bos_token": st.tok.variables.get("bos_token"), "eos_token": st.tok.eos_text,
                      "adds_bos": st.tok.adds_bos, "saved": saved_tokenizer},
        "chat_template": None if st.template_text is None else {
            "name": st.template_name, "sha256": hashlib.sha256(st.template_text.encode()).hexdigest(),
            "text": st.template_text, "date": cfg.chat_template_date,
            # Inference must pass these to apply_chat_template too, or it renders other text than was trained.
            **({"kwargs": cfg.chat_template_kwargs} if cfg.chat_template_kwargs else {})},
        "probes": st.probes,
        **({"curation": st.curation.manifest()} if st.curation is not None else {}),
        "warnings": st.warnings,
        "sources": [{"dataset": cfg.datasets[s.dataset_index].path, "file": s.display, "format": s.fmt,
                     "sha256": sha256_file(s.path), **({"rows": list(s.rows)} if s.rows else {})}
                    for s in st.sources],
        "shards": [asdict(s) for s in shards],
        "accounting": counts["accounting"],
        "stages": stages,
        **({"near_deduplication": near.record()} if (near := near_dedup_settings(cfg)) else {}),
        "stats": {
            "by_reason": counts["by_reason"],
            "per_dataset": counts["per_dataset"],
            "truncated": counts["truncated"],
            "samples": counts["samples"],
            "chunked_rows": counts["chunked_rows"],
            "repeated_samples": counts["repeated_samples"],
            "mixing": counts["mixing"],
            "tokens": total_tokens,
            "trainable_tokens": trainable,
            "trainable_share": trainable / total_tokens if total_tokens else 0.0,
            "rows": rows,
            "rows_by_split": {sp: sum(s.rows for s in shards if s.split == sp) for sp in ("train", "val")},
            "sequence_len": cfg.sequence_len,
            "sample_packing": cfg.sample_packing,
            "packing_efficiency": total_tokens / (rows * cfg.sequence_len) if rows else 0.0,
            "longest_sample": longest,
            "seconds": timer.seconds(),
        },
    }
