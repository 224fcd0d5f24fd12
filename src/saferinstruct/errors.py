"""Error types that decide the exit code.

`BadInput` means the user must fix something (a missing file, a wrong column, a broken
config, an endpoint that is down): the CLI prints its one-line message and exits 2,
without a traceback. Anything else that escapes is a bug and exits 1.
A malformed model answer or one failed request is *not* an error: stages record it on
the record and go on.
"""


class BadInput(Exception):
    """Bad input or config; the message is one line that names what and where."""


class MissingCapability(BadInput):
    """A stage needs something the configured backend cannot do (log-probs, n, JSON schema)."""


class EndpointDown(BadInput):
    """An endpoint stopped answering mid-batch. `partial` holds the results that did
    finish (index in the batch -> result), so the cache can keep them before exiting."""

    def __init__(self, message: str, partial: dict[int, object] | None = None) -> None:
        super().__init__(message)
        self.partial = partial or {}
