"""The protocol's errors, shared by the broker and the SDK; no transport (gRPC) in sight.

`ProtocolError` is data that does not follow the protocol: a field out of range, over a limit, of
the wrong format, or bytes that do not parse. `VerificationError` is the subset where a signature,
digest or proof did not match. The broker maps both to a gRPC status in `broker.errors`; the SDK
raises its own subclasses of them (`clients.errors`). A parse failure is always one of these, never
a raw `ValueError` (the rule sigstore-python keeps; see tests/unit/protocol/test_parse_errors.py).
"""

from __future__ import annotations

__all__ = ["OutOfRange", "ProtocolError", "VerificationError"]


class ProtocolError(Exception):
    """Data that does not follow the protocol; the message names the field and the limit."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class OutOfRange(ProtocolError):
    """A well-formed value outside the range the protocol allows (a time, a counter)."""


class VerificationError(ProtocolError):
    """A signature, digest or proof did not verify; the message says what did not match."""
