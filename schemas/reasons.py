"""Why a row did not make it into the shards. One enum, shared by dataprep, sql/ and the tests.

Every input row ends in exactly one status (see `Status`); rows that are not `kept` carry one of these
reasons. The values are stable strings: they are written to `samples.parquet` and `quarantine.parquet` and
users filter on them with SQL, so never rename one.
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
    invalid_utf8 = "invalid_utf8"  # the bytes are not UTF-8
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
    # Dropped: valid, but longer than sequence_len (excess_length_strategy: drop).
    too_long = "too_long"
    # Duplicate: same normalised content as an earlier kept row.
    duplicate = "duplicate"
    # Kept, but with a note.
    truncated = "truncated"  # cut to sequence_len (excess_length_strategy: truncate)


QUARANTINE_REASONS = frozenset(
    r for r in Reason if r not in (Reason.too_long, Reason.duplicate, Reason.truncated)
)
