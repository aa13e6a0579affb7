"""Issue 2: an alert relayed between agencies over mutual TLS, store-and-forward, at-least-once."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from broker.api.v1 import broker_pb2, broker_pb2_grpc, envelope_pb2
from broker.identity import Role
from broker.pki.dev import DevPki
from broker.protocol.envelope import seal
from broker.protocol.keys import EncryptionKey
from clients import AgencyClient, CertificateProblem, ConnectionFailed, RemoteError
from clients._tls import diagnose_handshake, load_identity
from tests.e2e.broker_support import Database, RunningBroker
from tests.e2e.pki_support import expired_agency_certificate, foreign_agency_certificate

ALERT = b'{"category": "PASSENGER_RISK", "subject": "traveller on flight AF1234"}'


def received(client: AgencyClient, count: int, timeout: float = 5.0) -> list[Any]:
    """Up to `count` deliveries (or fewer if `timeout` passes with none)."""
    out = []
    for message in client.deliveries(timeout=timeout):
        out.append(message)
        if len(out) == count:
            break
    return out


def last_audit(db: Database) -> dict[str, Any]:
    entry = db.scalar("SELECT entry FROM audit_entries ORDER BY leaf_index DESC LIMIT 1")
    return dict(json.loads(bytes(entry)))


def counts(db: Database) -> tuple[int, int]:
    return db.scalar("SELECT count(*) FROM messages"), db.scalar("SELECT count(*) FROM deliveries")


def test_alert_reaches_police_and_partner_who_ack_and_sender_sees_both_receipts(
    agencies: dict[str, AgencyClient],
) -> None:
    """Customs sends one alert to police and partner; both get it as sent, ack it, and GetStatus shows the acks."""
    customs, police, partner = agencies["FR-CUSTOMS"], agencies["DE-BKA"], agencies["NL-FIOD"]
    sent = customs.send(["DE-BKA", "NL-FIOD"], ALERT, content_type="application/json", tlp="AMBER")
    assert sorted(sent.queued_for) == ["DE-BKA", "NL-FIOD"]
    for recipient in (police, partner):
        [message] = received(recipient, 1)
        assert message.body == ALERT
        assert message.sender == "FR-CUSTOMS"
        assert message.content_type == "application/json"
        assert message.header.handling.tlp == envelope_pb2.TLP_AMBER
        assert recipient.ack(message) == 1
    status = customs.status(sent.message_id)
    assert [(r.recipient, r.state) for r in status] == [("DE-BKA", "ACKNOWLEDGED"), ("NL-FIOD", "ACKNOWLEDGED")]
    assert all(r.receipt is not None and r.receipt.status == envelope_pb2.DELIVERED for r in status)


def test_offline_recipient_gets_backlog_after_broker_restart(
    broker: RunningBroker,
    agencies: dict[str, AgencyClient],
    pki: DevPki,
    tmp_path: Path,
) -> None:
    """A message sent while the recipient is offline survives a broker restart and is delivered on connect."""
    customs = agencies["FR-CUSTOMS"]
    sent = [customs.send(["DE-BKA"], ALERT + bytes([i])) for i in range(3)]
    broker.restart()
    police = AgencyClient.from_dir(broker.target, pki.directory, "DE-BKA", keystore=tmp_path / "keys" / "DE-BKA")
    messages = received(police, 3)
    assert [m.message_id for m in messages] == [s.message_id for s in sent]
    assert [m.body for m in messages] == [ALERT + bytes([i]) for i in range(3)]
    police.close()


def test_delivery_comes_back_after_lease_expires_when_not_acked(
    broker_factory: Any, pki: DevPki, tmp_path: Path
) -> None:
    """An unacknowledged delivery is delivered again, with a higher attempt number, after its lease."""
    broker = broker_factory(lease_seconds=1.0)
    customs = AgencyClient.from_dir(broker.target, pki.directory, "FR-CUSTOMS", keystore=tmp_path / "fr")
    police = AgencyClient.from_dir(broker.target, pki.directory, "DE-BKA", keystore=tmp_path / "de")
    police.publish_key()
    sent = customs.send(["DE-BKA"], ALERT)
    first = received(police, 1)
    assert [m.message_id for m in first] == [sent.message_id]
    again = received(police, 1, timeout=5)
    assert [m.message_id for m in again] == [sent.message_id]
    assert again[0].attempt == 2
    police.ack(again[0])
    assert received(police, 1, timeout=1.5) == []


def test_open_stream_gets_an_unacknowledged_delivery_again_when_its_lease_runs_out(
    broker_factory: Any, pki: DevPki, tmp_path: Path
) -> None:
    """The broker's lease sweeper requeues a delivery whose lease ran out while its stream stays open
    (closing the stream would requeue it too, so the stream is kept open here)."""
    broker = broker_factory(lease_seconds=1.0)
    customs = AgencyClient.from_dir(broker.target, pki.directory, "FR-CUSTOMS", keystore=tmp_path / "fr")
    police = AgencyClient.from_dir(broker.target, pki.directory, "DE-BKA", keystore=tmp_path / "de")
    police.publish_key()
    sent = customs.send(["DE-BKA"], ALERT)
    stream = police.deliveries(timeout=5)
    first = next(stream)
    again = next(stream, None)  # the same stream, nothing acknowledged
    assert again is not None, "the delivery did not come back on the open stream within 5 s of its 1 s lease"
    assert (first.message_id, first.attempt) == (sent.message_id, 1)
    assert (again.message_id, again.attempt) == (sent.message_id, 2)
    police.ack(again)
    police.close()
    customs.close()


def test_higher_priority_is_delivered_first(agencies: dict[str, AgencyClient]) -> None:
    """A FLASH message sent after two NORMAL ones to an offline recipient is delivered first."""
    customs, police = agencies["FR-CUSTOMS"], agencies["DE-BKA"]
    normal = [customs.send(["DE-BKA"], b"normal %d" % i).message_id for i in range(2)]
    flash = customs.send(["DE-BKA"], b"flash", priority=envelope_pb2.FLASH).message_id
    assert [m.message_id for m in received(police, 3)] == [flash, *normal]


def test_repeated_send_is_idempotent_and_other_bytes_under_same_id_are_refused(
    agencies: dict[str, AgencyClient],
    database: Database,
) -> None:
    """The same envelope twice creates one delivery; the same message id with other bytes gets ALREADY_EXISTS."""
    customs = agencies["FR-CUSTOMS"]
    envelope = customs.seal(["DE-BKA"], ALERT)
    first = customs.send_envelope(envelope)
    second = customs.send_envelope(envelope)
    assert (second.duplicate, second.audit_index) == (True, first.audit_index)
    assert counts(database) == (1, 1)
    header = envelope_pb2.Header.FromString(envelope.header)
    other = customs.seal(["DE-BKA"], b"other bytes", message_id=header.message_id)
    with pytest.raises(RemoteError) as refused:
        customs.send_envelope(other)
    assert refused.value.code is grpc.StatusCode.ALREADY_EXISTS
    assert "already accepted with different content" in refused.value.message
    assert counts(database) == (1, 1)
    assert last_audit(database)["event"] == "request.rejected"
    assert len(received(agencies["DE-BKA"], 2, timeout=1.5)) == 1


# -- refusals that change nothing ------------------------------------------------------------------


def _raw_stub(target: str, *, ca: bytes, cert: bytes | None = None, key: bytes | None = None) -> Any:
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    return broker_pb2_grpc.BrokerServiceStub(grpc.secure_channel(target, creds))


def test_client_without_certificate_fails_handshake_and_stores_nothing(
    broker: RunningBroker,
    pki: DevPki,
    database: Database,
) -> None:
    """A client that presents no certificate never gets past the TLS handshake."""
    stub = _raw_stub(broker.target, ca=pki.ca_cert.read_bytes())
    with pytest.raises(grpc.RpcError) as failed:
        stub.GetDirectory(broker_pb2.GetDirectoryRequest(), timeout=5)
    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
    assert counts(database) == (0, 0)


def test_certificate_from_another_ca_is_refused_with_a_named_cause(
    broker: RunningBroker,
    pki: DevPki,
    database: Database,
    tmp_path: Path,
) -> None:
    """The SDK names the cause of a handshake refused because our certificate comes from another CA."""
    cert, key = foreign_agency_certificate(tmp_path, "FR-CUSTOMS")
    stub = _raw_stub(broker.target, ca=pki.ca_cert.read_bytes(), cert=cert.read_bytes(), key=key.read_bytes())
    with pytest.raises(grpc.RpcError) as failed:
        stub.GetDirectory(broker_pb2.GetDirectoryRequest(), timeout=5)
    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
    with pytest.raises(CertificateProblem, match="does not chain to the CA"):
        AgencyClient(broker.target, cert=cert, key=key, ca=pki.ca_cert)
    from_dev = load_identity(
        pki.agency("FR-CUSTOMS")[0], pki.agency("FR-CUSTOMS")[1], pki.ca_cert, "isb.dev", Role.AGENCY
    )
    identity = dataclasses.replace(from_dev, cert_pem=cert.read_bytes(), key_pem=key.read_bytes())
    cause = diagnose_handshake(broker.target, identity)
    assert isinstance(cause, ConnectionFailed)
    assert "does not accept it" in str(cause)
    assert counts(database) == (0, 0)


def test_expired_certificate_is_refused_by_the_sdk_before_connecting(
    broker: RunningBroker,
    pki: DevPki,
    tmp_path: Path,
    database: Database,
) -> None:
    """An expired agency certificate is refused with a clear cause, and the broker refuses its handshake."""
    cert, key = expired_agency_certificate(pki, tmp_path, "FR-CUSTOMS")
    with pytest.raises(CertificateProblem, match="expired"):
        AgencyClient(broker.target, cert=cert, key=key, ca=pki.ca_cert)
    stub = _raw_stub(broker.target, ca=pki.ca_cert.read_bytes(), cert=cert.read_bytes(), key=key.read_bytes())
    with pytest.raises(grpc.RpcError) as failed:
        stub.GetDirectory(broker_pb2.GetDirectoryRequest(), timeout=5)
    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE
    assert counts(database) == (0, 0)


def _seal_as(
    client: AgencyClient, *, sender: str | None = None, recipients: list[str], body: bytes = ALERT
) -> envelope_pb2.Envelope:
    """An envelope sealed with the client's key, for recipients with throwaway keys."""
    keys = {}
    for r in recipients:
        key = EncryptionKey.generate()
        bundle = envelope_pb2.KeyBundle(agency=r, key_id=key.key_id, suite=key.suite, public_key=key.public_key_bytes)
        keys[r] = bundle
    return seal(
        sender=sender or client.agency,
        identity_key=client.identity.private_key,
        certificate=client.identity.certificate,
        recipients=recipients,
        recipient_keys=keys,
        kind=envelope_pb2.ALERT,
        body=body,
        content_type="text/plain",
        handling=envelope_pb2.Handling(tlp=envelope_pb2.TLP_AMBER),
    )


def _refused(
    client: AgencyClient, envelope: envelope_pb2.Envelope, database: Database, code: grpc.StatusCode, message: str
) -> dict[str, Any]:
    before = counts(database)
    with pytest.raises(RemoteError) as refused:
        client.send_envelope(envelope)
    assert refused.value.code is code, refused.value.message
    assert message in refused.value.message
    assert counts(database) == before
    entry = last_audit(database)
    assert entry["event"] == "request.rejected"
    assert message in entry["fields"]["reason"]
    return entry


def test_header_claiming_another_sender_is_refused(agencies: dict[str, AgencyClient], database: Database) -> None:
    """An envelope whose header names another agency as sender is PERMISSION_DENIED, audited, not stored."""
    customs = agencies["FR-CUSTOMS"]
    envelope = _seal_as(customs, sender="DE-BKA", recipients=["NL-FIOD"])
    entry = _refused(customs, envelope, database, grpc.StatusCode.PERMISSION_DENIED, "may only send as itself")
    assert entry["actor"] == "spiffe://isb.dev/agency/FR-CUSTOMS"


def test_unknown_recipient_is_refused(agencies: dict[str, AgencyClient], database: Database) -> None:
    """An envelope for an agency the broker does not know is NOT_FOUND, audited, not stored."""
    customs = agencies["FR-CUSTOMS"]
    envelope = _seal_as(customs, recipients=["XX-NOBODY"])
    _refused(
        customs, envelope, database, grpc.StatusCode.NOT_FOUND, "XX-NOBODY is neither a registered agency nor a group"
    )


def test_empty_recipient_list_is_refused(agencies: dict[str, AgencyClient], database: Database) -> None:
    """An envelope with no recipients is INVALID_ARGUMENT, audited, not stored."""
    customs = agencies["FR-CUSTOMS"]
    envelope = _seal_as(customs, recipients=["DE-BKA"])
    header = envelope_pb2.Header.FromString(envelope.header)
    del header.recipients[:]
    envelope.header = header.SerializeToString()
    _refused(customs, envelope, database, grpc.StatusCode.INVALID_ARGUMENT, "empty recipient list")


def test_envelope_over_size_limit_is_refused(
    broker_factory: Any, pki: DevPki, database: Database, tmp_path: Path
) -> None:
    """An envelope over the configured size limit is INVALID_ARGUMENT, audited, not stored."""
    broker = broker_factory(max_envelope_bytes=64 * 1024)
    customs = AgencyClient.from_dir(broker.target, pki.directory, "FR-CUSTOMS", keystore=tmp_path / "fr")
    envelope = _seal_as(customs, recipients=["DE-BKA"], body=b"x" * (65 * 1024))
    _refused(customs, envelope, database, grpc.StatusCode.INVALID_ARGUMENT, "over the limit of 65536 bytes")


def test_malformed_header_is_refused(agencies: dict[str, AgencyClient], database: Database) -> None:
    """An envelope whose header bytes are not a Header is INVALID_ARGUMENT, audited, not stored."""
    customs = agencies["FR-CUSTOMS"]
    envelope = _seal_as(customs, recipients=["DE-BKA"])
    envelope.header = b"\xff\xff\xff not protobuf"
    _refused(customs, envelope, database, grpc.StatusCode.INVALID_ARGUMENT, "header does not parse")


def test_expired_message_is_not_delivered_and_sender_learns_it(agencies: dict[str, AgencyClient]) -> None:
    """A message whose expiry passes before the recipient connects is not delivered; GetStatus says EXPIRED."""
    customs, police = agencies["FR-CUSTOMS"], agencies["DE-BKA"]
    sent = customs.send(["DE-BKA"], ALERT, expires=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    time.sleep(1.2)
    assert received(police, 1, timeout=1.5) == []
    deadline = time.monotonic() + 5
    while customs.status(sent.message_id)[0].state != "EXPIRED" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert customs.status(sent.message_id)[0].state == "EXPIRED"


def test_listener_reconnects_across_a_broker_restart_and_misses_nothing(
    broker: RunningBroker,
    pki: DevPki,
    tmp_path: Path,
) -> None:
    """An open deliveries() iterator survives a broker restart and receives what is sent before and after it."""
    police = AgencyClient.from_dir(broker.target, pki.directory, "DE-BKA", keystore=tmp_path / "de")
    police.publish_key()
    customs = AgencyClient.from_dir(broker.target, pki.directory, "FR-CUSTOMS", keystore=tmp_path / "fr")
    stream = police.deliveries(timeout=15)
    before = customs.send(["DE-BKA"], b"before the restart").message_id
    first = next(stream)
    police.ack(first)
    broker.restart()
    after = customs.send(["DE-BKA"], b"after the restart").message_id
    second = next(stream)
    police.ack(second)
    assert [first.message_id, second.message_id] == [before, after]
