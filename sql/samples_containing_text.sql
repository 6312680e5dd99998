-- Samples containing a given text (--param text=...), case-insensitive, with the text around the match.
-- Searches the rendered form of each kept sample, template and special tokens included.
-- Each sample's text is rebuilt from its tokens' bytes (vocab.bytes), so characters split across tokens
-- come out whole. One row per matching sample, in sample_id order.
--   tessera query prepared/demo sql/samples_containing_text.sql --param text=capital
with

tokens as (
    select sample_id, position, token_id from tokens
),

vocab as (
    select token_id, bytes from vocab
),

samples as (
    select sample_id, dataset, source_file, source_row, num_tokens, split, shard, shard_row from samples
),

texts as (
    select
        tokens.sample_id,
        decode(unhex(string_agg(hex(vocab.bytes), '' order by tokens.position))) as text,
    from tokens
    join vocab on vocab.token_id = tokens.token_id
    group by tokens.sample_id
),

matches as (
    select
        sample_id,
        text,
        instr(lower(text), lower($text)) as at,
    from texts
    where contains(lower(text), lower($text))
),

final as (
    select
        samples.sample_id,
        samples.dataset,
        samples.source_file || ':' || samples.source_row as location,
        samples.num_tokens,
        samples.split,
        samples.shard,
        samples.shard_row,
        -- 20 characters either side of the first match, newlines as spaces
        replace(substr(matches.text, greatest(matches.at - 20, 1), length($text) + 40), chr(10), ' ')
            as context,
    from matches
    join samples on samples.sample_id = matches.sample_id
    order by samples.sample_id
)

select * from final
