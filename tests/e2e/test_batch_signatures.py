"""Issue 19 over real mTLS: batch-signed envelopes and receipts (docs/protocol.md section 21). A
producer's batch shares one signature, each envelope and receipt verifies alone, and every tampering
with a batch proof is refused with INVALID_ARGUMENT, a message, nothing stored and one audit entry."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from broker.api.v1 import broker_pb2, envelope_pb2
from broker.protocol.envelope import sign_envelopes
from broker.protocol.receipts import new_receipt, sign_receipts
from clients import AgencyClient, ClientError, RemoteError
from tests.e2e.broker_support import Database


def _message_id(envelope: envelope_pb2.Envelope) -> str:
    return envelope_pb2.Header.FromString(envelope.header).message_id


def _signed_batch(client: AgencyClient, label: str, n: int = 4) -> list[envelope_pb2.Envelope]:
    envelopes = [client.seal(["DE-BKA"], f"{label} {i}".encode(), sign=False) for i in range(n)]
    sign_envelopes(envelopes, client.identity.private_key)
    return envelopes


def _last_refusal(database: Database) -> dict[str, Any]:
    entry = database.scalar(
        "SELECT entry FROM audit_entries WHERE event = 'request.rejected' ORDER BY leaf_index DESC LIMIT 1"
    )
    return dict(json.loads(bytes(entry)))


def test_a_producer_batch_shares_one_signature_and_receipts_come_back_batch_signed(
    agencies: dict[str, AgencyClient],
    database: Database,
) -> None:
    """Eight envelopes sealed unsigned go out in one stream message under one batch signature; the
    recipient opens each, acknowledges them with one batch-signed Ack, and the sender verifies its
    receipts one message at a time."""
    customs, police = agencies["FR-CUSTOMS"], agencies["DE-BKA"]
    envelopes = [customs.seal(["DE-BKA"], b"batched %d" % i, sign=False) for i in range(8)]
    with customs.producer(linger=0.2, batch_size=8) as producer:
        futures = [producer.submit(e) for e in envelopes]
    assert [f.result().message_id for f in futures] == [_message_id(e) for e in envelopes]
    assert len({e.batch_signature.signature for e in envelopes}) == 1
    assert {e.batch_signature.tree_size for e in envelopes} == {8}
    stored = envelope_pb2.Envelope.FromString(
        bytes(database.scalar("SELECT envelope FROM messages WHERE message_id = :m", m=_message_id(envelopes[3])))
    )
    assert stored.batch_signature == envelopes[3].batch_signature
    assert not stored.header_signature
    received = []
    for message in police.deliveries(timeout=5):
        received.append(message)
        if len(received) == 8:
            break
    assert sorted(m.body for m in received) == sorted(b"batched %d" % i for i in range(8))
    assert police.ack(received) == 8
    for envelope in envelopes:
        (status,) = customs.status(_message_id(envelope))
        assert status.state == "ACKNOWLEDGED"
        assert status.receipt is not None
    stored_batches = [b for (b,) in database.rows("SELECT receipt_batch FROM deliveries")]
    assert None not in stored_batches
    # One signature, eight leaves: each receipt carries its own index and path.
    proofs = [envelope_pb2.BatchSignature.FromString(bytes(b)) for b in stored_batches]
    assert len({p.signature for p in proofs}) == 1
    assert sorted(p.leaf_index for p in proofs) == list(range(8))


def test_a_message_acknowledged_twice_in_one_call_is_acknowledged_once(
    agencies: dict[str, AgencyClient],
    database: Database,
) -> None:
    """A subscriber that got a copy again (its lease ran out) and passes both to `ack` gets one
    receipt sent, not the broker's refusal of an Ack that names a message twice."""
    customs, police = agencies["FR-CUSTOMS"], agencies["DE-BKA"]
    sent = customs.send(["DE-BKA"], b"twice")
    message = next(police.deliveries(timeout=5))
    assert message.message_id == sent.message_id
    assert police.ack([message, message]) == 1
    (status,) = customs.status(sent.message_id)
    assert status.state == "ACKNOWLEDGED"
    assert database.scalar("SELECT count(*) FROM audit_entries WHERE event = 'request.rejected'") == 0


def test_an_unsigned_envelope_is_not_sent_alone(agencies: dict[str, AgencyClient]) -> None:
    """`send_envelope` refuses an envelope sealed for a batch (sign=False) before it leaves the SDK."""
    customs = agencies["FR-CUSTOMS"]
    with pytest.raises(ClientError, match="no outer signature"):
        customs.send_envelope(customs.seal(["DE-BKA"], b"unsigned", sign=False))


def _wrong_path(batch: list[envelope_pb2.Envelope], _other: list[envelope_pb2.Envelope]) -> envelope_pb2.Envelope:
    batch[1].batch_signature.path[0] = bytes(32)
    return batch[1]


def _moved_leaf(batch: list[envelope_pb2.Envelope], other: list[envelope_pb2.Envelope]) -> envelope_pb2.Envelope:
    batch[1].batch_signature.CopyFrom(other[1].batch_signature)
    return batch[1]


def _other_tree_size(batch: list[envelope_pb2.Envelope], _other: list[envelope_pb2.Envelope]) -> envelope_pb2.Envelope:
    batch[0].batch_signature.tree_size = 3  # leaf 0's path of a tree of 4 has the shape of one in a tree of 3
    return batch[0]


def _wrong_index(batch: list[envelope_pb2.Envelope], _other: list[envelope_pb2.Envelope]) -> envelope_pb2.Envelope:
    batch[1].batch_signature.leaf_index = 0
    return batch[1]


def _flipped_signature(
    batch: list[envelope_pb2.Envelope], _other: list[envelope_pb2.Envelope]
) -> envelope_pb2.Envelope:
    signature = bytearray(batch[2].batch_signature.signature)
    signature[12] ^= 0x01
    batch[2].batch_signature.signature = bytes(signature)
    return batch[2]


TAMPERINGS: dict[str, Callable[[list[envelope_pb2.Envelope], list[envelope_pb2.Envelope]], envelope_pb2.Envelope]] = {
    "wrong path": _wrong_path,
    "leaf moved to another batch": _moved_leaf,
    "root reused with another tree size": _other_tree_size,
    "wrong index": _wrong_index,
    "bit flip in the root signature": _flipped_signature,
}


@pytest.mark.parametrize("tampering", list(TAMPERINGS))
def test_a_tampered_batch_envelope_is_refused_audited_and_not_stored(
    agencies: dict[str, AgencyClient],
    database: Database,
    tampering: str,
) -> None:
    """Each tampering of a batch proof: INVALID_ARGUMENT naming the batch signature, nothing stored,
    exactly one request.rejected entry naming the message."""
    customs = agencies["FR-CUSTOMS"]
    tampered = TAMPERINGS[tampering](_signed_batch(customs, "first"), _signed_batch(customs, "second"))
    with pytest.raises(RemoteError) as refused:
        customs.send_envelope(tampered)
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "envelope header batch signature does not verify" in refused.value.message
    assert database.scalar("SELECT count(*) FROM messages") == 0
    assert database.scalar("SELECT count(*) FROM audit_entries WHERE event = 'request.rejected'") == 1
    entry = _last_refusal(database)
    assert entry["message_id"] == _message_id(tampered)
    assert "batch signature does not verify" in entry["fields"]["reason"]


def test_a_tampered_batch_receipt_is_refused_and_acknowledges_nothing(
    agencies: dict[str, AgencyClient],
    database: Database,
) -> None:
    """An Ack whose batch-signed receipt carries a wrong path is INVALID_ARGUMENT: no delivery is
    settled, one request.rejected entry; the same receipts untampered are accepted."""
    customs, police = agencies["FR-CUSTOMS"], agencies["DE-BKA"]
    sent = [customs.send(["DE-BKA"], b"ack me %d" % i) for i in range(2)]
    received = []
    for message in police.deliveries(timeout=5):
        received.append(message)
        if len(received) == 2:
            break
    receipts = sign_receipts(
        [
            new_receipt(
                message_id=m.message_id,
                envelope_sha256=m.envelope_sha256,
                recipient="DE-BKA",
                status=envelope_pb2.DELIVERED,
            )
            for m in received
        ],
        police.identity.private_key,
    )
    tampered = [envelope_pb2.SignedReceipt.FromString(r.SerializeToString()) for r in receipts]
    tampered[1].batch_signature.path[0] = bytes(32)
    with pytest.raises(RemoteError) as refused:
        police._call(police._stub.Ack, broker_pb2.AckRequest(receipts=tampered))
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "receipt batch signature does not verify" in refused.value.message
    assert database.scalar("SELECT count(*) FROM deliveries WHERE state = 3") == 0
    assert database.scalar("SELECT count(*) FROM audit_entries WHERE event = 'request.rejected'") == 1
    assert _last_refusal(database)["fields"]["rpc"] == "Ack"
    reply = police._call(police._stub.Ack, broker_pb2.AckRequest(receipts=receipts))
    assert reply.acknowledged == 2
    assert {s.message_id for s in sent} == {m.message_id for m in received}
