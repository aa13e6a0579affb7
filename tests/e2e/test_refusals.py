"""Refusals of the other agency RPCs: each answers the right status with a clear message, changes
nothing, and leaves an audit entry naming the caller and the RPC."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import grpc
import pytest

from broker.api.v1 import broker_pb2, envelope_pb2
from broker.protocol.keys import EncryptionKey, make_key_bundle
from broker.protocol.receipts import make_receipt
from clients import AgencyClient, RemoteError
from tests.e2e.broker_support import Database


def _refusal(database: Database) -> dict[str, Any]:
    entry = database.scalar(
        "SELECT entry FROM audit_entries WHERE event = 'request.rejected' ORDER BY leaf_index DESC LIMIT 1"
    )
    return dict(json.loads(bytes(entry)))


def _state(database: Database) -> tuple[Any, ...]:
    return (
        database.scalar("SELECT count(*) FROM messages"),
        database.scalar("SELECT count(*) FROM deliveries WHERE state = 3"),
        database.scalar("SELECT count(*) FROM key_bundles"),
    )


def _refused(database: Database, call: Any, code: grpc.StatusCode, message: str, rpc: str, actor: str) -> None:
    before = _state(database)
    with pytest.raises(RemoteError) as refused:
        call()
    assert refused.value.code is code, refused.value.message
    assert message in refused.value.message
    assert _state(database) == before
    entry = _refusal(database)
    assert (entry["fields"]["rpc"], entry["actor"]) == (rpc, f"spiffe://isb.dev/agency/{actor}")
    assert message in entry["fields"]["reason"]


def test_receipt_for_a_message_not_delivered_to_the_caller_is_refused(
    agencies: dict[str, AgencyClient],
    database: Database,
) -> None:
    """An Ack whose receipt names a message the caller never received is NOT_FOUND and acknowledges nothing."""
    customs, partner = agencies["FR-CUSTOMS"], agencies["NL-FIOD"]
    sent = customs.send(["DE-BKA"], b"for the police")
    receipt = make_receipt(
        message_id=sent.message_id,
        envelope_sha256=bytes(32),
        recipient="NL-FIOD",
        status=envelope_pb2.DELIVERED,
        identity_key=partner.identity.private_key,
    )
    _refused(
        database,
        lambda: partner._call(partner._stub.Ack, broker_pb2.AckRequest(receipts=[receipt])),
        grpc.StatusCode.NOT_FOUND,
        "no delivery of this message to NL-FIOD",
        "Ack",
        "NL-FIOD",
    )


def test_receipt_signed_for_another_recipient_is_refused(agencies: dict[str, AgencyClient], database: Database) -> None:
    """A receipt naming another agency than the caller is INVALID_ARGUMENT (a receipt speaks for its signer)."""
    customs, police, partner = agencies["FR-CUSTOMS"], agencies["DE-BKA"], agencies["NL-FIOD"]
    sent = customs.send(["DE-BKA"], b"for the police")
    forged = make_receipt(
        message_id=sent.message_id,
        envelope_sha256=bytes(32),
        recipient="DE-BKA",
        status=envelope_pb2.DELIVERED,
        identity_key=partner.identity.private_key,
    )
    _refused(
        database,
        lambda: police._call(police._stub.Ack, broker_pb2.AckRequest(receipts=[forged])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "receipt signature does not verify",
        "Ack",
        "DE-BKA",
    )


def test_status_of_another_agencys_message_is_not_found(agencies: dict[str, AgencyClient], database: Database) -> None:
    """GetStatus answers only the sender; anyone else gets NOT_FOUND, as for a message that does not exist."""
    sent = agencies["FR-CUSTOMS"].send(["DE-BKA"], b"x")
    police = agencies["DE-BKA"]
    _refused(
        database,
        lambda: police.status(sent.message_id),
        grpc.StatusCode.NOT_FOUND,
        f"no message {sent.message_id} sent by DE-BKA",
        "GetStatus",
        "DE-BKA",
    )


def test_key_bundle_with_another_agencys_certificate_is_refused(
    agencies: dict[str, AgencyClient],
    database: Database,
) -> None:
    """An agency cannot publish a key bundle carrying another agency's certificate."""
    police, partner = agencies["DE-BKA"], agencies["NL-FIOD"]
    now = dt.datetime.now(dt.UTC)
    bundle = make_key_bundle(
        "NL-FIOD",
        EncryptionKey.generate(),
        identity_key=partner.identity.private_key,
        certificate=partner.identity.certificate,
        not_before=now,
        not_after=now + dt.timedelta(days=1),
    )
    _refused(
        database,
        lambda: police._call(police._stub.PublishKeyBundle, bundle),
        grpc.StatusCode.PERMISSION_DENIED,
        "signed with the certificate of the calling agency",
        "PublishKeyBundle",
        "DE-BKA",
    )


def test_directory_query_for_an_unknown_agency_is_refused(
    agencies: dict[str, AgencyClient], database: Database
) -> None:
    """GetDirectory for an agency that is not registered is INVALID_ARGUMENT naming it."""
    customs = agencies["FR-CUSTOMS"]
    _refused(
        database,
        lambda: customs._call(customs._stub.GetDirectory, broker_pb2.GetDirectoryRequest(agencies=["XX-NOBODY"])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "not registered: XX-NOBODY",
        "GetDirectory",
        "FR-CUSTOMS",
    )


def test_send_stream_batch_over_the_limit_is_refused_and_stores_nothing(
    agencies: dict[str, AgencyClient],
    database: Database,
) -> None:
    """A SendStream batch of more envelopes than the limit ends the stream with INVALID_ARGUMENT."""
    customs = agencies["FR-CUSTOMS"]
    envelope = customs.seal(["DE-BKA"], b"x")
    batch = broker_pb2.SendBatch(envelopes=[envelope] * 257)
    before = _state(database)
    with pytest.raises(grpc.RpcError) as refused:
        list(customs._stub.SendStream(iter([batch]), timeout=10))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "257 envelopes in one batch, over 256" in str(refused.value.details())
    assert _state(database) == before
    entry = _refusal(database)
    assert (entry["fields"]["rpc"], entry["actor"]) == ("SendStream", "spiffe://isb.dev/agency/FR-CUSTOMS")
