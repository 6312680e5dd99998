-- Near-duplicate clusters (dataset_near_deduplication): each kept sample with the samples removed as its near
-- duplicates. One row per cluster, largest first. cluster_id is the kept sample's id; size counts the kept
-- sample and its removed members; similarities are each member's estimated Jaccard to the kept sample, in
-- member order (a member joined through another one can be below the threshold). Empty when near-dedup is off.
--   tessera query prepared/demo sql/near_duplicate_clusters.sql
with

near as (
    select sample_id, kept_sample_id, similarity, cluster_id from duplicates where kind = 'near'
),

samples as (
    select sample_id, dataset, source_file, source_row from samples
),

clusters as (
    select
        near.cluster_id,
        any_value(near.kept_sample_id) as kept_sample_id,
        count(*) + 1 as size,
        list(near.sample_id order by near.sample_id) as member_ids,
        list(samples.source_file || ':' || samples.source_row order by near.sample_id) as member_locations,
        list(round(near.similarity, 3) order by near.sample_id) as similarities,
        min(near.similarity) as min_similarity,
        avg(near.similarity) as mean_similarity,
    from near
    join samples on samples.sample_id = near.sample_id
    group by near.cluster_id
),

final as (
    select
        clusters.cluster_id,
        clusters.size,
        kept.dataset,
        kept.source_file || ':' || kept.source_row as kept_location,
        clusters.member_ids,
        clusters.member_locations,
        clusters.similarities,
        round(clusters.min_similarity, 3) as min_similarity,
        round(clusters.mean_similarity, 3) as mean_similarity,
    from clusters
    join samples as kept on kept.sample_id = clusters.kept_sample_id
    order by clusters.size desc, clusters.cluster_id
)

select * from final
