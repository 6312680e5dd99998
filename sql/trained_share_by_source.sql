-- Trained-token share by dataset and source file: how much of what each source contributes is trained on.
-- One row per (dataset, source_file), in config order. Row counts cover every input row; tokens and
-- trained_tokens cover kept samples only (what is in the shards, less the copies datasets[].weight > 1 adds:
-- stats.mixing in the manifest counts those). trained_share = trained_tokens / tokens:
-- low values mean long prompts or templates around short answers.
--   tessera query prepared/demo sql/trained_share_by_source.sql
with

samples as (
    select dataset, dataset_index, source_file, status, num_tokens, num_trainable from samples
    where repeat_of is null
),

per_source as (
    select
        dataset,
        min(dataset_index) as dataset_index,
        source_file,
        count(*) as rows_in,
        count(*) filter (where status = 'kept') as kept,
        count(*) filter (where status = 'quarantined') as quarantined,
        count(*) filter (where status = 'duplicate') as duplicates,
        count(*) filter (where status = 'dropped') as dropped,
        coalesce(sum(num_tokens) filter (where status = 'kept'), 0)::bigint as tokens,
        coalesce(sum(num_trainable) filter (where status = 'kept'), 0)::bigint as trained_tokens,
    from samples
    group by dataset, source_file
),

final as (
    select
        dataset,
        source_file,
        rows_in,
        kept,
        quarantined,
        duplicates,
        dropped,
        tokens,
        trained_tokens,
        round(trained_tokens / nullif(tokens, 0), 4) as trained_share,
        round(tokens / nullif(kept, 0), 1) as mean_tokens,
    from per_source
    order by dataset_index, source_file
)

select * from final
