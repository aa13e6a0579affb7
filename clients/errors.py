"""The SDK's errors: one root, `ClientError`, with a few meaningful subclasses."""

from __future__ import annotations

import grpc

from broker.errors import VerificationError as _ProtocolVerificationError


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


# Verification failures of the shared protocol (envelopes, bundles, receipts) keep their own type,
# so `except VerificationError` works whether the broker or the SDK detected the problem.
VerificationError = _ProtocolVerificationError

__all__ = ["CertificateProblem", "ClientError", "ConnectionFailed", "RemoteError", "VerificationError"]
