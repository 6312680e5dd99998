-- Quarantine reasons with examples: why rows could not become samples, and the first row of each kind.
-- One row per reason, most frequent first. The example is the reason's first row in input order: where it
-- is (source_file:source_row, 0-based rows as in samples), the offending field, the message (what is wrong
-- and how to fix it) and the start of the original text.
--   tessera query prepared/demo sql/quarantine_reasons.sql
with

quarantine as (
    select sample_id, source_file, source_row, reason, field, message, original from quarantine
),

ranked as (
    select
        *,
        count(*) over (partition by reason) as rows,
        row_number() over (partition by reason order by sample_id) as nth,
    from quarantine
),

final as (
    select
        reason,
        rows,
        round(rows / sum(rows) over (), 4) as share,
        sample_id as example_sample_id,
        source_file || ':' || source_row as example_location,
        field as example_field,
        message as example_message,
        left(original, 120) as example_original,
    from ranked
    where nth = 1
    order by rows desc, reason
)

select * from final
