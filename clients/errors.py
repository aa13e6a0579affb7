"""The SDK's errors: one root, `ClientError`, with a few meaningful subclasses, and the one table
from a gRPC status to the error the SDK raises for it.

The protocol's own errors (`broker.protocol.errors`) are shared by the broker and the SDK. The SDK
raises its own subclasses of them, so one `except ClientError` catches everything the SDK raises on
purpose, and `except broker.protocol.errors.VerificationError` still works whichever side detected
the problem. Every verification site of the SDK goes through `protocol_errors()`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Final

import grpc

from broker.protocol import errors as protocol


class ClientError(Exception):
    """Root of every error the SDK raises on purpose."""


class CertificateProblem(ClientError):
    """Our own certificate, key or trust bundle is unusable (checked before connecting)."""


class ConnectionFailed(ClientError):
    """The TLS handshake or the connection failed; the message names the likely cause."""


class RemoteError(ClientError):
    """The broker refused a call; `code` is the gRPC status and the message is the broker's."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


class Unavailable(RemoteError):
    """The broker answered UNAVAILABLE (its store is down, it is stopping): retry later; the message is the broker's."""


class ProtocolViolation(ClientError, protocol.ProtocolError):
    """Data from the broker or another agency (or given to the SDK) that does not follow the protocol."""


class VerificationError(ProtocolViolation, protocol.VerificationError):
    """A signature, digest, certificate or proof did not verify; the message says what did not match."""


# The one table from a status the broker answered to the SDK's error type (RemoteError otherwise).
_BY_STATUS: Final[dict[grpc.StatusCode, type[RemoteError]]] = {
    grpc.StatusCode.UNAVAILABLE: Unavailable,
}


def error_for_status(code: grpc.StatusCode, message: str) -> RemoteError:
    """The SDK error for a status the broker answered, keeping the broker's message."""
    return _BY_STATUS.get(code, RemoteError)(code, message)


@contextlib.contextmanager
def protocol_errors() -> Iterator[None]:
    """Raise the protocol's errors inside as the SDK's (`VerificationError`, `ProtocolViolation`)."""
    try:
        yield
    except ClientError:
        raise
    except protocol.VerificationError as exc:
        raise _sdk_class(type(exc), VerificationError)(str(exc), field=exc.field) from exc
    except protocol.ProtocolError as exc:
        raise _sdk_class(type(exc), ProtocolViolation)(str(exc), field=exc.field) from exc


_SDK_CLASSES: dict[tuple[str, str, str], type[ProtocolViolation]] = {}


def _sdk_class(cls: type[protocol.ProtocolError], base: type[ProtocolViolation]) -> type[ProtocolViolation]:
    # A more specific protocol error (RevokedCertificate, StaleRevocationList...) keeps its type and
    # becomes a ClientError too, so `except RevokedCertificate` and `except ClientError` both work.
    if cls in (protocol.ProtocolError, protocol.VerificationError) or issubclass(cls, ClientError):
        return base
    key = (cls.__module__, cls.__qualname__, base.__name__)
    if key not in _SDK_CLASSES:
        _SDK_CLASSES[key] = type(cls.__name__, (base, cls), {"__module__": __name__, "__doc__": cls.__doc__})
    return _SDK_CLASSES[key]


__all__ = [
    "CertificateProblem",
    "ClientError",
    "ConnectionFailed",
    "ProtocolViolation",
    "RemoteError",
    "Unavailable",
    "VerificationError",
    "error_for_status",
    "protocol_errors",
]
