"""Why a record was dropped: one name per outcome, for every stage.

A record's `drop_reason` reads `<stage>: <outcome>` with details after it in brackets,
after ': ' or as ' of <id>' ('filter: no (0.25): the text is ...', 'assemble: duplicate
instruction of hate-3'); `records.reason_key` strips the stage and the details, and what
is left is always one of `ALL` (tests/test_run.py checks every stage file). The funnel
counts by it, and `outcome.SETTINGS` names the setting that decides each.
"""

from __future__ import annotations

# ---------------------------------------------------------------- any stage
REQUEST_FAILED = "request_failed"
"""A model request failed after its retries (the record is lost, not judged)."""
NO_INSTRUCTION = "no_instruction"
"""The record reached a stage without an induced instruction."""

# ---------------------------------------------------------------- 00 sources, 01 induce
EMPTY_TEXT = "empty text"
NO_VALID_CANDIDATE = "no valid candidate"
"""Every induced candidate was empty, too long, or copied the text."""

# ---------------------------------------------------------------- 02 filter, 04 judge (verdicts)
NO = "no"
"""The expert said no."""
BELOW_THRESHOLD = "below_threshold"
"""The expert's P(yes) (or its contrast) fell below the verdict threshold."""
UNPARSED = "unparsed"
"""The expert's answer could not be read as a verdict, twice."""

# ---------------------------------------------------------------- 03 respond
EMPTY_RESPONSE = "empty response"

# ---------------------------------------------------------------- 04 judge (pair checks)
EMPTY_CHOSEN = "empty_chosen"
EMPTY_REJECTED = "empty_rejected"
NEAR_COPY = "near_copy"
DEGENERATE_CHOSEN = "degenerate_chosen"
CARRIES_REJECTED = "carries_rejected"
COMPLIES_WITH_HARMFUL = "complies_with_harmful"

# ---------------------------------------------------------------- 05 assemble
EMPTY_SOURCE_TEXT = "empty source text"
NO_CHOSEN_RESPONSE = "no chosen response"
CHOSEN_EQUALS_REJECTED = "chosen equals rejected"
DUPLICATE_SOURCE_TEXT = "duplicate source text"
DUPLICATE_INSTRUCTION = "duplicate instruction"
NEAR_DUPLICATE_INSTRUCTION = "near-duplicate instruction"

ALL = frozenset({
    REQUEST_FAILED, NO_INSTRUCTION, EMPTY_TEXT, NO_VALID_CANDIDATE, NO, BELOW_THRESHOLD,
    UNPARSED, EMPTY_RESPONSE, EMPTY_CHOSEN, EMPTY_REJECTED, NEAR_COPY, DEGENERATE_CHOSEN,
    CARRIES_REJECTED, COMPLIES_WITH_HARMFUL, EMPTY_SOURCE_TEXT, NO_CHOSEN_RESPONSE,
    CHOSEN_EQUALS_REJECTED, DUPLICATE_SOURCE_TEXT, DUPLICATE_INSTRUCTION,
    NEAR_DUPLICATE_INSTRUCTION,
})  # fmt: skip
"""Every outcome a stage file's drop reason groups to."""
