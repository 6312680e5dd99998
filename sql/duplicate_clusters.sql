-- Duplicate clusters: each kept sample whose content appears again, with every removed copy.
-- One row per kept sample that has duplicates, largest clusters first. copies counts the removed rows;
-- duplicate_locations lists them as source_file:source_row, in input order. Duplicates are exact on the
-- normalised content (content_hash), across datasets; the first occurrence is the one kept.
--   tessera query prepared/demo sql/duplicate_clusters.sql
with

duplicates as (
    select sample_id, kept_sample_id, content_hash from duplicates
),

samples as (
    select sample_id, dataset, source_file, source_row from samples
),

clusters as (
    select
        duplicates.kept_sample_id,
        count(*) as copies,
        list(duplicates.sample_id order by duplicates.sample_id) as duplicate_ids,
        list(samples.source_file || ':' || samples.source_row order by duplicates.sample_id)
            as duplicate_locations,
        any_value(duplicates.content_hash) as content_hash,
    from duplicates
    join samples on samples.sample_id = duplicates.sample_id
    group by duplicates.kept_sample_id
),

final as (
    select
        clusters.kept_sample_id,
        kept.dataset,
        kept.source_file || ':' || kept.source_row as kept_location,
        clusters.copies,
        clusters.duplicate_ids,
        clusters.duplicate_locations,
        clusters.content_hash,
    from clusters
    join samples as kept on kept.sample_id = clusters.kept_sample_id
    order by clusters.copies desc, clusters.kept_sample_id
)

select * from final
