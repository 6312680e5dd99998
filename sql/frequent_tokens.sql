-- Most frequent tokens in trained vs masked positions: what the loss sees, and what only the context sees.
-- 15 rows per group (trained = true: label is the token, so it is a target; false: label -100), most
-- frequent first, ties by token_id. share is the token's part of its group; text is the token's bytes as
-- UTF-8 with spaces shown as ␣ (a leading space is part of the token); special marks tokenizer special
-- tokens such as <|im_end|>.
--   tessera query prepared/demo sql/frequent_tokens.sql
with

tokens as (
    select token_id, trained from tokens
),

vocab as (
    select token_id, text, special from vocab
),

counts as (
    select
        trained,
        token_id,
        count(*) as count,
    from tokens
    group by trained, token_id
),

ranked as (
    select
        *,
        row_number() over (partition by trained order by count desc, token_id) as rank,
        round(count / sum(count) over (partition by trained), 4) as share,
    from counts
),

final as (
    select
        ranked.trained,
        ranked.rank,
        ranked.token_id,
        replace(vocab.text, ' ', '␣') as text,
        vocab.special,
        ranked.count,
        ranked.share,
    from ranked
    join vocab on vocab.token_id = ranked.token_id
    where ranked.rank <= 15
    order by ranked.trained desc, ranked.rank
)

select * from final
