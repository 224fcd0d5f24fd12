"""Error types that decide the exit code.

Exit codes: 0 success; 1 a bug (anything unexpected escapes); 2 `BadInput`: the user
must fix something (a missing file, a wrong column, a broken config, an endpoint that is
down or rejects the key), one line naming what and where, no traceback; 3 `RunFailed`:
the run (or an evaluation) finished but lost records to failed model requests (a rerun
asks only for those); 4 `TooFewPairs`: the run finished with no pairs, or fewer
than the configured share of its sources, and says which stage and setting dropped them.

A malformed model answer or one failed request is *not* an error: stages record it on
the record and go on; the run counts them at the end.
"""

BAD_INPUT = 2
LOST_RECORDS = 3
TOO_FEW_PAIRS = 4


class BadInput(Exception):
    """Bad input or config; the message is one line that names what and where."""

    exit_code = BAD_INPUT


class MissingCapability(BadInput):
    """A stage needs something the configured backend cannot do (log-probs, n, JSON schema)."""


class EndpointDown(BadInput):
    """An endpoint stopped answering mid-batch (or rejected the key or the model).
    `partial` holds the results that did finish (index in the batch -> result), so the
    cache can keep them before exiting."""

    def __init__(self, message: str, partial: dict[int, object] | None = None) -> None:
        super().__init__(message)
        self.partial = partial or {}


class RunFailed(Exception):
    """The run finished and wrote its files, but what it made is not what was asked:
    the message (one line or a few) says what went wrong, where, and what to do."""

    exit_code = LOST_RECORDS


class LostRecords(RunFailed):
    """Records were lost to failed model requests past `success.max_failed_share`."""

    exit_code = LOST_RECORDS


class TooFewPairs(RunFailed):
    """The run made no pairs, or fewer than `success.min_pair_share` of its sources."""

    exit_code = TOO_FEW_PAIRS
