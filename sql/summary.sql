-- Summary of a prepared directory: where every input row went and what the shards hold.
-- One row. Row counts come from samples (one row per input row, plus one per further chunk of a completion or
-- pretrain row split at sequence_len, plus one per copy made by datasets[].weight > 1), token counts from the
-- shards themselves, so the two sides check each other (kept = packed_samples when no row was chunked or
-- repeated; kept samples + repeated = packed_samples always).
-- trained_share = trained tokens / tokens; packing_efficiency = tokens / (packed rows * sequence_len), the
-- share of the batch that is data rather than padding.
--   tessera query prepared/demo sql/summary.sql
with

samples as (
    select
        status,
        reason,
        num_tokens,
        coalesce(chunk, 0) = 0 and repeat_of is null as input_row,
        repeat_of is not null as copy,
    from samples
),

packed as (
    select split, sample_ids, num_tokens, num_trainable from packed
),

manifest as (
    select sequence_len from manifest
),

row_counts as (
    select
        count(*) filter (where input_row) as input_rows,
        count(*) filter (where input_row and status = 'kept') as kept,
        count(*) filter (where status = 'quarantined') as quarantined,
        count(*) filter (where status = 'duplicate') as duplicates,
        count(*) filter (where input_row and status = 'dropped') as dropped,
        count(*) filter (where input_row and reason = 'truncated') as truncated,
        count(*) filter (where copy) as repeated,
        max(num_tokens) filter (where status = 'kept') as longest_sample,
    from samples
),

shard_counts as (
    select
        sum(len(sample_ids))::bigint as packed_samples,
        count(*) as packed_rows,
        count(*) filter (where split = 'train') as train_rows,
        count(*) filter (where split = 'val') as val_rows,
        sum(num_tokens)::bigint as tokens,
        sum(num_trainable)::bigint as trained_tokens,
    from packed
),

final as (
    select
        row_counts.input_rows,
        row_counts.kept,
        row_counts.quarantined,
        row_counts.duplicates,
        row_counts.dropped,
        row_counts.truncated,
        row_counts.repeated,
        shard_counts.packed_samples,
        shard_counts.packed_rows,
        shard_counts.train_rows,
        shard_counts.val_rows,
        shard_counts.tokens,
        shard_counts.trained_tokens,
        round(shard_counts.trained_tokens / nullif(shard_counts.tokens, 0), 4) as trained_share,
        manifest.sequence_len,
        round(shard_counts.tokens / nullif(shard_counts.packed_rows * manifest.sequence_len, 0), 4)
            as packing_efficiency,
        row_counts.longest_sample,
    from row_counts, shard_counts, manifest
)

select * from final
