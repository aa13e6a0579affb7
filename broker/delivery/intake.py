"""The first checks of every envelope the broker takes in (a send or a watchlist publication).

Cheap checks come before any cryptography: the caller's role, the size, the header's fields through
the shared validation layer, and that the header names the caller as its sender. The refusal scope
learns the envelope's digest and claimed message id first, so a refusal names what was refused.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from broker.api.v1 import envelope_pb2
from broker.audit import refusals
from broker.errors import InvalidRequest, PermissionDenied
from broker.identity import Principal, Role
from broker.protocol import validation


@dataclass(frozen=True, slots=True)
class Intake:
    """An envelope past its first checks: its bytes, their SHA-256, and its validated (unverified) header."""

    envelope_bytes: bytes
    digest: bytes
    header: envelope_pb2.Header


def take_in(
    caller: Principal,
    envelope: envelope_pb2.Envelope,
    size: int,
    refusal: refusals.RefusalScope,
    *,
    max_bytes: int,
    max_recipients: int,
    action: str,
    what: str,
) -> Intake:
    """Check who sends, how big and how well formed; `action` and `what` word the refusals ("send", "envelopes")."""
    if caller.role is not Role.AGENCY:
        raise PermissionDenied(f"{caller.spiffe_id} is not an agency; only agencies {action} {what}")
    if size > max_bytes:
        raise InvalidRequest(f"envelope is {size} bytes, over the limit of {max_bytes} bytes")
    envelope_bytes = envelope.SerializeToString()
    digest = hashlib.sha256(envelope_bytes).digest()
    refusal.note(digest=digest.hex())
    claimed = envelope_pb2.Header()
    with contextlib.suppress(DecodeError):  # only to name the message in a refusal of the header
        claimed.ParseFromString(envelope.header)
    refusal.note(message_id=claimed.message_id)
    # Never above the protocol's own limit: `verify_outer(checked=True)` relies on this check.
    header = validation.parse_header(envelope, max_recipients=min(max_recipients, validation.MAX_RECIPIENTS))
    if header.sender != caller.name:
        raise PermissionDenied(
            f"header names sender {header.sender!r} but the caller's certificate is {caller.spiffe_id}; "
            f"an agency may only {action} as itself"
        )
    return Intake(envelope_bytes, digest, header)


__all__ = ["Intake", "take_in"]
