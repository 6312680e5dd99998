"""The row pass: read -> parse -> format -> render -> tokenize -> length, in batches (worker processes), into
the sample table (table.py). transform.py does the per-row work; this module feeds it and keeps the results:
each batch is appended to the table as columns, kept rows' tokens to the spill, and quarantined rows' records
(with the original text) are streamed to `_work/quarantine.arrow` (renumbered at the end, outputs.py).
"""

from __future__ import annotations

import multiprocessing as mp
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.ipc as ipc

from dataprep.errors import PrepareError
from dataprep.load import RawRow, line_limit
from dataprep.table import SampleTable, TableBuilder
from dataprep.transform import (
    CHUNK_TEXT_FACTOR,
    RowProcessor,
    RowResult,
    init_worker,
    process_in_worker,
    text_limit,
)
from schemas.reasons import Reason, Status
from schemas.shard import QUARANTINE_SCHEMA

if TYPE_CHECKING:
    from dataprep.pipeline import Setup, Source

BATCH_SIZE = 512


def read_rows(st: Setup, work: Path, workers: int, bar: Any) -> SampleTable:
    """Every input row into the table; quarantine records to `work / quarantine.arrow` (table sample ids), one
    record batch per row batch that has any: Arrow IPC, not Parquet, whose reader and writer hold every row
    group's metadata (~10 KB each: ~1,800 groups, +35 MB at 1M rows with 0.5% quarantined)."""
    cfg = st.cfg
    builder = TableBuilder(work)
    source_index = {id(s): i for i, s in enumerate(st.sources)}
    with ipc.new_file(work / "quarantine.arrow", QUARANTINE_SCHEMA) as quarantine_w:
        for source, batch, results in _processed(st, workers, bar):
            ds = cfg.datasets[source.dataset_index]
            first = builder.add(source.dataset_index, source_index[id(source)], results)
            quarantine_rows = []
            for k, (raw, r) in enumerate(zip(batch, results, strict=True)):
                if r.status is Status.quarantined:
                    quarantine_rows.append({"sample_id": first + k, "dataset": ds.path, "source_file": source.display,
                                            "source_row": raw.source_row, "reason": str(r.reason),
                                            "field": r.field, "message": r.message, "original": r.original})
                elif r.reason is Reason.too_long and cfg.excess_length_strategy == "raise":
                    raise PrepareError(f"{source.display}:{raw.source_row}: {r.message} (excess_length_strategy: "
                                       "raise); raise sequence_len, shorten or remove the row, or set "
                                       "excess_length_strategy to drop or truncate")
            if quarantine_rows:
                quarantine_w.write_table(pa.Table.from_pylist(quarantine_rows, QUARANTINE_SCHEMA))
    return builder.finish()


def _processed(st: Setup, workers: int, bar: Any) -> Iterator[tuple[Source, list[RawRow], list[RowResult]]]:
    max_line = line_limit(text_limit(st.tok, st.cfg.sequence_len))
    # completion / pretrain rows may be many sequences long (they are split, not dropped): transform.py
    chunked_line = line_limit(text_limit(st.tok, st.cfg.sequence_len) * CHUNK_TEXT_FACTOR)

    def jobs() -> Iterator[tuple[Source, list[RawRow]]]:
        for source in st.sources:
            chunked = st.cfg.datasets[source.dataset_index].type in ("completion", "pretrain")
            for batch in source.batches(BATCH_SIZE, chunked_line if chunked else max_line):
                yield source, batch
                bar.advance(len(batch))

    if workers <= 1:
        # Two batches in flight on threads: one renders (Python, holding the GIL) while the other is inside
        # encode_batch, which releases it. Results are taken in order, so the output is the same.
        processors: dict[int, RowProcessor] = {}
        with ThreadPoolExecutor(2) as pool:
            window: deque[tuple[Source, list[RawRow], Future[list[RowResult]]]] = deque()
            for source, batch in jobs():
                if source.dataset_index not in processors:
                    processors[source.dataset_index] = RowProcessor(st.cfg, source.dataset_index, st.tok,
                                                                    st.template_for(source.dataset_index))
                window.append((source, batch, pool.submit(processors[source.dataset_index].process, batch)))
                if len(window) >= 2:
                    source, batch, future = window.popleft()
                    yield source, batch, future.result()
            while window:
                source, batch, future = window.popleft()
                yield source, batch, future.result()
        return
    # spawn, not fork: the parent's tokenizer may already have started its thread pool. At most two batches
    # per worker are in flight (Pool.imap would read the whole input ahead), and results are taken in order.
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=init_worker,
                  initargs=(st.cfg.model_dump_json(), str(st.config_dir),
                                [st.template_for(i) for i in range(len(st.cfg.datasets))])) as pool:
        window: deque[tuple[Source, list[RawRow], Any]] = deque()
        for source, batch in jobs():
            window.append((source, batch, pool.apply_async(process_in_worker, ((source.dataset_index, batch),))))
            if len(window) >= 2 * workers:
                source, batch, pending = window.popleft()
                yield source, batch, pending.get()
        while window:
            source, batch, pending = window.popleft()
            yield source, batch, pending.get()
