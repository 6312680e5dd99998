-- Token-length histogram of the kept samples (not the copies datasets[].weight > 1 adds): all tokens vs
-- trained tokens, on the same bins.
-- One row per bin [tokens_from, tokens_to), from 0 up to the longest sample, empty bins included. The bin
-- width is a round number (1, 2 or 5 times a power of ten) giving at most about 20 bins.
-- samples_by_length counts samples whose num_tokens falls in the bin, samples_by_trained those whose
-- num_trainable does.
--   tessera query prepared/demo sql/token_length_histogram.sql
with

kept as (
    select num_tokens, num_trainable from samples where status = 'kept' and repeat_of is null
),

width as (
    -- raw = the width 20 bins would need; round it up to 1, 2 or 5 x 10^k.
    select
        max(num_tokens) as longest,
        greatest(max(num_tokens) / 20, 1) as raw,
        pow(10, floor(log10(greatest(max(num_tokens) / 20, 1)))) as magnitude,
    from kept
),

bins as (
    select
        (case
            when raw <= magnitude then magnitude
            when raw <= 2 * magnitude then 2 * magnitude
            when raw <= 5 * magnitude then 5 * magnitude
            else 10 * magnitude
        end)::bigint as bin_width,
        longest,
    from width
),

edges as (
    select
        unnest(range(0, (longest // bin_width + 1) * bin_width, bin_width)) as tokens_from,
        bin_width,
    from bins
),

by_length as (
    select (num_tokens // bins.bin_width) * bins.bin_width as tokens_from, count(*) as samples,
    from kept, bins
    group by all
),

by_trained as (
    select (num_trainable // bins.bin_width) * bins.bin_width as tokens_from, count(*) as samples,
    from kept, bins
    group by all
),

final as (
    select
        edges.tokens_from,
        edges.tokens_from + edges.bin_width as tokens_to,
        coalesce(by_length.samples, 0) as samples_by_length,
        coalesce(by_trained.samples, 0) as samples_by_trained,
    from edges
    left join by_length on by_length.tokens_from = edges.tokens_from
    left join by_trained on by_trained.tokens_from = edges.tokens_from
)

select * from final order by tokens_from
