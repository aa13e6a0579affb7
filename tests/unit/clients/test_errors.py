"""The SDK's error root (clients/errors.py): one `ClientError` root, the protocol's errors raised as
subclasses of both, one status table, and an UNAVAILABLE the broker answered keeps its message."""

from __future__ import annotations

import socket
from pathlib import Path

import grpc
import pytest

from broker.identity import Role
from broker.pki.dev import DevPki, ensure_dev_pki
from broker.protocol import errors as protocol
from broker.protocol.revocation import RevokedCertificate
from clients._connection import Connection
from clients.errors import (
    ClientError,
    ConnectionFailed,
    ProtocolViolation,
    RemoteError,
    Unavailable,
    VerificationError,
    error_for_status,
    protocol_errors,
)


class _Answered(grpc.RpcError):
    """A status as grpc raises it client-side: code, details and the trailing metadata of the answer."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: tuple[tuple[str, str], ...]) -> None:
        super().__init__(details)
        self._code, self._details, self._trailing = code, details, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:  # type: ignore[override]  # (key, value) at run time
        return self._trailing


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return ensure_dev_pki(tmp_path_factory.mktemp("pki") / "dev", "isb.test")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _connection(pki: DevPki, target: str) -> Connection:
    d: Path = pki.directory
    return Connection(
        target, cert=d / "FR-CUSTOMS.crt", key=d / "FR-CUSTOMS.key", ca=d / "ca.crt", role=Role.AGENCY,
        trust_domain="isb.test", timeout=2,
    )  # fmt: skip


def test_protocol_errors_become_sdk_errors_of_both_roots() -> None:
    """A protocol error raised inside protocol_errors() is a ClientError and still the protocol's type."""
    with pytest.raises(VerificationError) as verification, protocol_errors():
        raise protocol.VerificationError("signature does not verify", field="header_signature")
    assert isinstance(verification.value, ClientError)
    assert isinstance(verification.value, protocol.VerificationError)
    assert verification.value.field == "header_signature"
    with pytest.raises(ProtocolViolation) as violation, protocol_errors():
        raise protocol.ProtocolError("header.kind is unknown (99)")
    assert isinstance(violation.value, protocol.ProtocolError)
    assert not isinstance(violation.value, protocol.VerificationError)


def test_a_specific_protocol_error_keeps_its_type() -> None:
    """RevokedCertificate raised through protocol_errors() is caught by `except RevokedCertificate` and ClientError."""
    with pytest.raises(RevokedCertificate) as revoked, protocol_errors():
        raise RevokedCertificate("certificate 0a of DE-BKA is revoked")
    assert isinstance(revoked.value, ClientError)
    assert isinstance(revoked.value, VerificationError)


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (grpc.StatusCode.UNAVAILABLE, Unavailable),
        (grpc.StatusCode.PERMISSION_DENIED, RemoteError),
        (grpc.StatusCode.INVALID_ARGUMENT, RemoteError),
    ],
)
def test_one_table_maps_a_status_to_its_error_and_keeps_the_message(
    code: grpc.StatusCode, kind: type[RemoteError]
) -> None:
    """error_for_status gives the table's type, with the broker's own code and message."""
    error = error_for_status(code, "storage unavailable, retry in a few seconds")
    assert type(error) is kind
    assert (error.code, error.message) == (code, "storage unavailable, retry in a few seconds")


def test_unavailable_answered_by_the_broker_keeps_its_message(pki: DevPki) -> None:
    """An UNAVAILABLE carrying the broker's request id is the broker's answer: no handshake diagnosis."""
    with _connection(pki, f"127.0.0.1:{_free_port()}") as connection:
        answered = _Answered(grpc.StatusCode.UNAVAILABLE, "storage unavailable, retry", (("x-request-id", "r1"),))
        error = connection.translate_error(answered)
    assert isinstance(error, Unavailable)
    assert error.message == "storage unavailable, retry"


def test_unavailable_without_an_answer_is_diagnosed_as_a_connection_failure(pki: DevPki) -> None:
    """A call to a port nobody serves fails in the transport; the SDK names the cause (ConnectionFailed)."""
    with _connection(pki, f"127.0.0.1:{_free_port()}") as connection, pytest.raises(ConnectionFailed):
        connection._call(connection.channel.unary_unary("/isb.v1.BrokerService/GetStatus"), b"")
