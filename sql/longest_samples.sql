-- Longest samples: the 20 samples with the most tokens, kept or not (rows dropped as too_long show here, except
-- those too long to be worth tokenizing, whose num_tokens is null: see the reason codes in README.md).
-- One row per sample, longest first (ties by sample_id). shard, shard_row and row_offset say where a kept
-- sample sits; `tessera inspect DIR --sample ID` shows its tokens.
--   tessera query prepared/demo sql/longest_samples.sql
with

samples as (
    select
        sample_id,
        status,
        reason,
        dataset,
        source_file,
        source_row,
        num_tokens,
        num_trainable,
        split,
        shard,
        shard_row,
        row_offset,
    from samples
    where num_tokens is not null and repeat_of is null  -- a copy (datasets[].weight) is its original again
),

final as (
    select
        sample_id,
        status,
        reason,
        dataset,
        source_file || ':' || source_row as location,
        num_tokens,
        num_trainable,
        split,
        shard,
        shard_row,
        row_offset,
    from samples
    order by num_tokens desc, sample_id
    limit 20
)

select * from final
