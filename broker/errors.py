"""The broker's error types. Each maps to exactly one gRPC status code, here and nowhere else."""

from __future__ import annotations

import grpc


class BrokerError(Exception):
    """Root of every error the broker raises on purpose; the message is shown to the caller."""

    status: grpc.StatusCode = grpc.StatusCode.INTERNAL
    # Set once the refusal has its audit entry, so the RPC layer does not write a second one.
    audited: bool = False


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


class VerificationError(BrokerError):
    """A signature, digest or proof did not verify; the message says what did not match."""

    status = grpc.StatusCode.INVALID_ARGUMENT


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


class StorageUnavailable(BrokerError):
    """The database did not commit; nothing was stored and the call may be retried (sends are idempotent)."""

    status = grpc.StatusCode.UNAVAILABLE


class QuotaExceeded(BrokerError):
    """The caller's agency would exceed a storage quota it is allowed (attachments)."""

    status = grpc.StatusCode.RESOURCE_EXHAUSTED


class StorageCorrupt(BrokerError):
    """Stored data no longer matches the hash recorded when it was stored (a storage fault, not the caller's)."""

    status = grpc.StatusCode.DATA_LOSS
