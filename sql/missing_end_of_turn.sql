-- Samples whose trained tokens do not end with an end-of-turn token: taught to answer, never to stop.
-- Usual causes: a template or train_on_eos setting that leaves the closing token masked, or raw segments
-- (input_output) with no end token.
-- One row per kept sample whose last trained token is not one of: the tokenizer's eos_token (manifest), or
-- a special token that chat templates use to close turns (<|im_end|>, <|eot_id|>, <end_of_turn>, </s>,
-- <|end|>). last_trained_text is that token's text.
--   tessera query prepared/demo sql/missing_end_of_turn.sql
with

tokens as (
    select sample_id, position, token_id, trained from tokens
),

vocab as (
    select token_id, piece, text, special from vocab
),

samples as (
    select sample_id, dataset, source_file, source_row, num_trainable, shard, shard_row from samples
),

manifest as (
    select eos_token from manifest
),

end_of_turn as (
    select vocab.token_id
    from vocab, manifest
    where vocab.special
        and (vocab.piece = manifest.eos_token
             or vocab.piece in ('<|im_end|>', '<|eot_id|>', '<end_of_turn>', '</s>', '<|end|>'))
),

last_trained as (
    select
        sample_id,
        arg_max(token_id, position) as token_id,
    from tokens
    where trained
    group by sample_id
),

final as (
    select
        samples.sample_id,
        samples.dataset,
        samples.source_file || ':' || samples.source_row as location,
        samples.num_trainable,
        last_trained.token_id as last_trained_id,
        vocab.text as last_trained_text,
        samples.shard,
        samples.shard_row,
    from last_trained
    join samples on samples.sample_id = last_trained.sample_id
    join vocab on vocab.token_id = last_trained.token_id
    where last_trained.token_id not in (select token_id from end_of_turn)
    order by samples.sample_id
)

select * from final
