"""Why a row did not make it into the shards. One enum, shared by dataprep, sql/ and the tests.

Every input row ends in exactly one status (see `Status`); rows that are not `kept` carry one of these
reasons. The values are stable strings: they are written to `samples.parquet` and `quarantine.parquet` and
users filter on them with SQL, so never rename one.

Stages after the row pass (dataprep/stage.py) may also write reasons that are not in this enum: a filter's is
`filter:<name>` (its name in the config). Accounting, samples.parquet and the reports take any reason string;
the enum lists the fixed ones.
"""

from enum import StrEnum


class Status(StrEnum):
    kept = "kept"
    quarantined = "quarantined"
    duplicate = "duplicate"
    dropped = "dropped"


class Reason(StrEnum):
    # Quarantine: the row could not be turned into a training sample.
    malformed_json = "malformed_json"  # the line/record is not valid JSON
    malformed_csv = "malformed_csv"  # a CSV line with more or fewer values than the header has columns
    invalid_utf8 = "invalid_utf8"  # the bytes are not UTF-8 (a JSONL line, a Parquet/Arrow/CSV string cell)
    invalid_unicode = "invalid_unicode"  # a string holds a lone UTF-16 surrogate (e.g. JSON "\\ud83d" alone)
    too_deep = "too_deep"  # JSON nested deeper than Python's parser reads (~1,000 levels; formats.py), in any field
    number_too_large = "number_too_large"  # an integer with more digits than Python reads (4,300)
    line_too_long = "line_too_long"  # a JSONL line over the read limit (see load.line_limit); never read whole
    not_an_object = "not_an_object"  # a JSON value that is not an object ({...})
    missing_field = "missing_field"  # a configured field is absent
    wrong_type = "wrong_type"  # a field has the wrong type (e.g. content is a number)
    empty_content = "empty_content"  # a field that must have text is null or empty
    unknown_role = "unknown_role"  # a message role not in the dataset's `roles` mapping
    bad_training_detail = "bad_training_detail"  # message_field_training_detail offsets out of range
    template_error = "template_error"  # the chat template raised (e.g. roles must alternate)
    template_timeout = "template_timeout"  # the chat template ran longer than its time limit on this row
    template_too_large = "template_too_large"  # the chat template built text far larger than the row
    content_not_rendered = "content_not_rendered"  # the template dropped or rewrote trained content
    bad_token_ids = "bad_token_ids"  # pre-tokenized ids out of vocab or labels of another length
    no_trainable_tokens = "no_trainable_tokens"  # nothing left to train on after masking
    row_error = "row_error"  # last resort: any other failure on this row; the message has the exception type
    contaminated = "contaminated"  # shares a long n-gram with an evaluation text (decontaminate; stage)
    # Dropped: valid, but longer than sequence_len (excess_length_strategy: drop). Rows whose text alone is
    # too long to fit are dropped before rendering and tokenizing (num_tokens is then null; see transform.py).
    too_long = "too_long"
    too_short = "too_short"  # fewer tokens than min_sample_len
    weighted_out = "weighted_out"  # not in the seeded selection of a dataset with weight < 1 (dataprep/mix.py)
    # Duplicate: same normalised content as an earlier kept row.
    duplicate = "duplicate"
    near_duplicate = "near_duplicate"  # estimated Jaccard >= threshold with a kept row (near-dedup stage)
    # Kept, but with a note.
    truncated = "truncated"  # cut to sequence_len (excess_length_strategy: truncate)


QUARANTINE_REASONS = frozenset(
    r for r in Reason if r not in (Reason.too_long, Reason.too_short, Reason.weighted_out, Reason.duplicate,
                                   Reason.near_duplicate, Reason.truncated)
)
