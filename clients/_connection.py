"""The mutual-TLS connection every SDK client is: our checked identity, one channel, and the
translation of failed calls into SDK errors (a handshake failure gets its cause named)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Self, TypeVar, cast

import grpc

from broker.identity import DEFAULT_TRUST_DOMAIN, Role
from clients._tls import Identity, diagnose_handshake, load_identity
from clients.errors import ClientError, error_for_status

T = TypeVar("T")

MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# Idempotent calls are retried by gRPC itself (gRFC A6) when the broker answers UNAVAILABLE, as it
# does while its database is lost: a bounded number of attempts, each after the broker's
# `grpc-retry-pushback-ms` if it sent one, else after a jittered exponential backoff. Sends are
# idempotent by message id, receipts and key bundles by content, and the audit service only reads.
# Streams (Subscribe, SendStream) are not listed: deliveries() and the producer reopen them.
RETRY_ATTEMPTS = 4
_IDEMPOTENT = [
    {"service": "isb.v1.BrokerService", "method": name}
    for name in ("Send", "Ack", "GetStatus", "GetDirectory", "PublishKeyBundle")
]
SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [*_IDEMPOTENT, {"service": "isb.v1.AuditService"}],
                "retryPolicy": {
                    "maxAttempts": RETRY_ATTEMPTS,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)
# A call whose request is larger than gRPC's retry buffer (256 KiB by default) is never retried:
# make room for the largest envelope.
RETRY_BUFFER_BYTES = 8 * 1024 * 1024


class Connection:
    """A channel to the broker authenticated with our certificate, checked before connecting."""

    def __init__(
        self,
        target: str,
        *,
        cert: Path,
        key: Path,
        ca: Path,
        role: Role,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
        server_name: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.identity: Identity = load_identity(cert, key, ca, trust_domain, role)
        self.trust_domain = trust_domain
        self._target = target
        self._server_name = server_name
        self._timeout = timeout
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.identity.ca_pem,
            private_key=self.identity.key_pem,
            certificate_chain=self.identity.cert_pem,
        )
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.service_config", SERVICE_CONFIG),
            ("grpc.per_rpc_retry_buffer_size", RETRY_BUFFER_BYTES),
            # As on the broker: no bandwidth-delay probing, so a download
            # read slower than it arrives waits in a fixed window instead of
            # parking ~100 MiB in the transport on a loaded host.
            ("grpc.http2.bdp_probe", 0),
        ]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        self._channel = grpc.secure_channel(target, credentials, options=options)

    @property
    def channel(self) -> grpc.Channel:
        """The mutual-TLS channel, for stubs of other services."""
        return self._channel

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def translate_error(self, exc: grpc.RpcError) -> ClientError:
        """The SDK error for a failed call: the broker's status and message, or a named TLS cause."""
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        details = exc.details() if hasattr(exc, "details") else str(exc)
        if code is grpc.StatusCode.UNAVAILABLE and not _answered_by_broker(exc):
            return diagnose_handshake(self._target, self.identity, self._server_name)
        return error_for_status(code, details or "")

    def _call(self, method: Callable[..., T], request: Any, **kwargs: Any) -> T:
        try:
            return method(request, timeout=kwargs.pop("timeout", self._timeout), **kwargs)
        except grpc.RpcError as exc:
            raise self.translate_error(exc) from exc


def _answered_by_broker(exc: grpc.RpcError) -> bool:
    # The broker tags every answer with a request id; a transport failure (TLS handshake, no
    # route) has none, and only then is the handshake worth diagnosing.
    trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    # Metadata items are (key, value) tuples at run time (the stubs' _Metadatum has attributes).
    return any(item[0] == "x-request-id" for item in cast("Iterable[tuple[str, Any]]", trailing or ()))
