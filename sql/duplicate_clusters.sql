-- Duplicate clusters: each kept sample that has copies, with every removed copy.
-- One row per cluster, largest clusters first. copies counts the removed rows; duplicate_locations lists them
-- as source_file:source_row, in input order. kinds says how they were found: exact (same normalised content,
-- content_hash, across datasets; the first occurrence is kept) or near (near-dedup: estimated Jaccard at or
-- above its threshold); min_similarity is the lowest estimated Jaccard of a copy to the kept sample (1.0 when
-- all copies are exact). cluster_id is the kept sample's id.
--   tessera query prepared/demo sql/duplicate_clusters.sql
with

duplicates as (
    select sample_id, kept_sample_id, kind, similarity, cluster_id, content_hash from duplicates
),

samples as (
    select sample_id, dataset, source_file, source_row from samples
),

clusters as (
    select
        duplicates.cluster_id,
        any_value(duplicates.kept_sample_id) as kept_sample_id,
        count(*) as copies,
        list(duplicates.sample_id order by duplicates.sample_id) as duplicate_ids,
        list(samples.source_file || ':' || samples.source_row order by duplicates.sample_id)
            as duplicate_locations,
        list(distinct duplicates.kind order by duplicates.kind) as kinds,
        min(duplicates.similarity) as min_similarity,
        any_value(duplicates.content_hash) as content_hash,
    from duplicates
    join samples on samples.sample_id = duplicates.sample_id
    group by duplicates.cluster_id
),

final as (
    select
        clusters.kept_sample_id,
        kept.dataset,
        kept.source_file || ':' || kept.source_row as kept_location,
        clusters.copies,
        clusters.duplicate_ids,
        clusters.duplicate_locations,
        clusters.kinds,
        clusters.min_similarity,
        clusters.cluster_id,
        clusters.content_hash,
    from clusters
    join samples as kept on kept.sample_id = clusters.kept_sample_id
    order by clusters.copies desc, clusters.kept_sample_id
)

select * from final
