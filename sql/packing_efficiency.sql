-- Packing efficiency by shard: how full the packed rows are (the rest of each row is padding at train time).
-- One row per shard file. efficiency = tokens / (rows * sequence_len); samples_per_row is the mean number of
-- samples packed into a row; fullest_row and emptiest_row are row lengths in tokens.
--   tessera query prepared/demo sql/packing_efficiency.sql
with

packed as (
    select shard, split, sample_ids, num_tokens, num_trainable from packed
),

manifest as (
    select sequence_len from manifest
),

per_shard as (
    select
        shard,
        split,
        count(*) as rows,
        sum(len(sample_ids))::bigint as samples,
        sum(num_tokens)::bigint as tokens,
        sum(num_trainable)::bigint as trained_tokens,
        min(num_tokens) as emptiest_row,
        max(num_tokens) as fullest_row,
    from packed
    group by shard, split
),

final as (
    select
        per_shard.shard,
        per_shard.split,
        per_shard.rows,
        per_shard.samples,
        round(per_shard.samples / per_shard.rows, 2) as samples_per_row,
        per_shard.tokens,
        per_shard.trained_tokens,
        per_shard.rows * manifest.sequence_len as capacity,
        round(per_shard.tokens / (per_shard.rows * manifest.sequence_len), 4) as efficiency,
        per_shard.emptiest_row,
        per_shard.fullest_row,
    from per_shard, manifest
    order by per_shard.shard
)

select * from final
