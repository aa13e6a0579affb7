"""The policy's own error: a document that does not validate."""

from __future__ import annotations

from collections.abc import Sequence

from broker.errors import InvalidRequest


class PolicyError(InvalidRequest):
    """A policy document failed validation; `errors` holds one `file:line: problem` string each.

    Raised before anything changes, so the policy in force stays in force. Maps to
    INVALID_ARGUMENT (it is a `BrokerError` through `InvalidRequest`).
    """

    def __init__(self, errors: Sequence[str]) -> None:
        """Keep every error line; the message is all of them, one per line."""
        self.errors: list[str] = list(errors)
        super().__init__("\n".join(self.errors))
