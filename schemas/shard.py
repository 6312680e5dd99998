"""Arrow schemas of everything `tessera prepare` writes. Defined once; writers and readers both use these.

A prepared directory:

    manifest.json          written last: its presence means the directory is complete
    shards/<split>-NNNNN.arrow   Arrow IPC files, SHARD_SCHEMA, one row = one training sequence
    samples.parquet        SAMPLES_SCHEMA, one row per input row (every row, whatever happened to it); a
                           completion/pretrain row split into chunks has one row per chunk (`chunk` 0, 1, ...),
                           and a copy made by datasets[].weight > 1 one row of its own (`repeat_of`)
    quarantine.parquet     QUARANTINE_SCHEMA, rows that could not become samples, with their original text
    duplicates.parquet     DUPLICATES_SCHEMA, removed row -> the kept row it duplicates (exact or near)
    tokenizer/             the tokenizer used, with the chat template that rendered the data (AutoTokenizer)

Shard rows are unpadded. With sample_packing a row holds several samples back to back; `cu_seqlens` gives
their boundaries and `position_ids` restart at 0 for each, which is what flash-attention's varlen kernels and
HF's position_ids-based packing expect. Labels are aligned with input_ids (not shifted; the model shifts) and
are -100 where nothing is trained. The first token of every sample is never a target: in a packed row it
would otherwise be predicted from the previous sample, and unpacked, HF's shift never uses it anyway.
"""

import pyarrow as pa

FORMAT_VERSION = 1
IGNORE_INDEX = -100

# Sequence kind of a sample (samples.parquet `kind`; the sample table's `kind` holds the index). A sample is
# what the stages keep or reject as one unit; today every sample is one training sequence, "sft" (supervised,
# completion and pretrain rows alike: labels say what is trained). A preference pair will be one sample with
# two sequences, "chosen" and "rejected", kept or removed together: new kinds are appended, never renumbered.
KINDS = ("sft",)

SHARD_SCHEMA = pa.schema(
    [
        pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("labels", pa.list_(pa.int32()), nullable=False),  # -100 = not trained
        pa.field("position_ids", pa.list_(pa.int32()), nullable=False),  # restart at 0 per sample
        pa.field("cu_seqlens", pa.list_(pa.int32()), nullable=False),  # [0, end of sample 1, ..., len]
        pa.field("sample_ids", pa.list_(pa.int64()), nullable=False),  # samples.parquet ids, cu_seqlens order
        pa.field("num_tokens", pa.int32(), nullable=False),
        pa.field("num_trainable", pa.int32(), nullable=False),  # labels != -100
    ],
    metadata={"tessera.format_version": str(FORMAT_VERSION)},
)

SAMPLES_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.int64(), nullable=False),  # input order over all datasets, from 0
        pa.field("dataset", pa.string(), nullable=False),  # `path` of the datasets[] entry
        pa.field("dataset_index", pa.int32(), nullable=False),  # position in datasets[]
        pa.field("format", pa.string(), nullable=False),  # alpaca, chat_template, pretokenized, ...
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("source_row", pa.int64(), nullable=False),  # 0-based row in source_file; blank lines skipped
        pa.field("status", pa.string(), nullable=False),  # kept | quarantined | duplicate | dropped
        pa.field("reason", pa.string()),  # schemas.reasons.Reason; null for plainly kept rows
        pa.field("duplicate_of", pa.int64()),  # sample_id of the kept row, for duplicates
        pa.field("content_hash", pa.string()),  # hash of the normalised content (dedup key)
        pa.field("num_tokens", pa.int32()),  # after truncation; null when never tokenized
        pa.field("num_trainable", pa.int32()),
        pa.field("split", pa.string()),  # train | val, for kept rows
        pa.field("shard", pa.string()),  # shard file name, for kept rows
        pa.field("shard_row", pa.int32()),  # row in that shard
        pa.field("row_offset", pa.int32()),  # first token of this sample in that row
        # n-th consecutive piece of a completion/pretrain row split at sequence_len (same source_file/source_row,
        # consecutive sample_ids, from 0); null when the row is one sample. Input rows: where coalesce(chunk, 0) = 0.
        pa.field("chunk", pa.int32()),
        pa.field("kind", pa.string(), nullable=False),  # sequence kind, one of KINDS ("sft")
        # A copy made by datasets[].weight > 1 (dataprep/mix.py): the sample_id of the original it repeats; its
        # own sample_id comes after every input row's. Null for input rows: where repeat_of is null.
        pa.field("repeat_of", pa.int64()),
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.int64(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("source_row", pa.int64(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("field", pa.string()),  # the offending field, e.g. messages[2].content
        pa.field("message", pa.string(), nullable=False),  # what is wrong and how to fix it
        pa.field("original", pa.string(), nullable=False),  # the row as read (invalid bytes replaced)
        # contaminated rows (decontaminate:): the eval file (as in the config) and its 0-based row sharing text
        pa.field("eval_file", pa.string()),
        pa.field("eval_row", pa.int64()),
    ]
)

# One row per removed duplicate, in sample_id order. A cluster is a kept sample and every sample removed as a
# copy of it: for exact duplicates cluster_id is the kept sample's id (so it equals kept_sample_id); near-dedup
# numbers its connected components the same way, by the sample it keeps.
DUPLICATES_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.int64(), nullable=False),
        pa.field("kept_sample_id", pa.int64(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # exact | near
        pa.field("similarity", pa.float64(), nullable=False),  # estimated Jaccard to the kept sample; 1.0 for exact
        pa.field("cluster_id", pa.int64(), nullable=False),  # sample_id of the cluster's kept sample
        pa.field("content_hash", pa.string()),  # the shared normalised-content hash, for exact; null for near
    ]
)
