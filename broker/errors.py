"""The broker's error types. Each maps to exactly one gRPC status code, here and nowhere else.

The protocol's own errors (`broker.protocol.errors`, shared with the SDK and free of gRPC) are
refusals of the broker too: `status_of` maps them, so a bad header or a signature that does not
verify is INVALID_ARGUMENT (OUT_OF_RANGE for a value outside its range) wherever it is detected.
"""

from __future__ import annotations

import grpc

from broker.protocol.errors import OutOfRange, ProtocolError, VerificationError


class BrokerError(Exception):
    """Root of every error the broker raises on purpose; the message is shown to the caller."""

    status: grpc.StatusCode = grpc.StatusCode.INTERNAL
    # Trailing metadata the caller gets with the status (for example gRPC's retry pushback).
    trailing: tuple[tuple[str, str], ...] = ()


class InvalidRequest(BrokerError):
    """The request is malformed, incomplete or over a size limit."""

    status = grpc.StatusCode.INVALID_ARGUMENT


class AuthenticationError(BrokerError):
    """The caller's certificate is missing, unknown, revoked or not an identity we accept."""

    status = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(BrokerError):
    """The caller is authenticated but its role may not do this."""

    status = grpc.StatusCode.PERMISSION_DENIED


class PolicyViolation(PermissionDenied):
    """The sharing policy forbids this send or forward; the message names the rule."""


class NotFound(BrokerError):
    """The named message, agency or entry does not exist (or is not visible to the caller)."""

    status = grpc.StatusCode.NOT_FOUND


class AlreadyExists(BrokerError):
    """An object with this id exists with different content."""

    status = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(BrokerError):
    """The request is well formed but the system is not in a state to accept it."""

    status = grpc.StatusCode.FAILED_PRECONDITION


class ConfigurationError(BrokerError):
    """The broker's own configuration or PKI material is unusable."""


# How long a client should wait before retrying a call the store could not serve: about one probe
# of the writer (see Writer), so a retry lands soon after the store is back.
RETRY_PUSHBACK_MS = 1000


class StorageUnavailable(BrokerError):
    """The database did not commit; nothing was stored and the call may be retried (sends are idempotent).

    The caller gets gRPC's retry pushback (`grpc-retry-pushback-ms`, gRFC A6), which the SDK's
    retry policy honours.
    """

    status = grpc.StatusCode.UNAVAILABLE
    trailing = (("grpc-retry-pushback-ms", str(RETRY_PUSHBACK_MS)),)


class StorageFull(BrokerError):
    """The database's disk is full: nothing was stored, and retrying will not help until an operator frees space."""

    status = grpc.StatusCode.RESOURCE_EXHAUSTED


class QuotaExceeded(BrokerError):
    """The caller's agency would exceed a storage quota it is allowed (attachments)."""

    status = grpc.StatusCode.RESOURCE_EXHAUSTED


class StorageCorrupt(BrokerError):
    """Stored data no longer matches the hash recorded when it was stored (a storage fault, not the caller's)."""

    status = grpc.StatusCode.DATA_LOSS


# The store's faults (as opposed to refusals of a request): not the caller's doing.
STORAGE_FAULTS = (StorageUnavailable, StorageFull)


Refusal = BrokerError | ProtocolError
"""Anything the broker answers with a status of its own (as opposed to a failure: INTERNAL)."""
REFUSALS: tuple[type[BrokerError], type[ProtocolError]] = (BrokerError, ProtocolError)


def status_of(error: Refusal) -> grpc.StatusCode:
    """The one gRPC status code of a refusal."""
    if isinstance(error, BrokerError):
        return error.status
    if isinstance(error, OutOfRange):
        return grpc.StatusCode.OUT_OF_RANGE
    return grpc.StatusCode.INVALID_ARGUMENT


__all__ = [
    "REFUSALS",
    "STORAGE_FAULTS",
    "AlreadyExists",
    "AuthenticationError",
    "BrokerError",
    "ConfigurationError",
    "FailedPrecondition",
    "InvalidRequest",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "PolicyViolation",
    "ProtocolError",
    "Refusal",
    "StorageFull",
    "StorageUnavailable",
    "VerificationError",
    "status_of",
]
