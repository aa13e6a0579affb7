"""Issue 7: the SDK producer sends bursts over one SendStream, envelopes sharing stream messages."""

from __future__ import annotations

import hashlib
import json

import grpc
import pytest

from broker.api.v1 import broker_pb2, envelope_pb2
from clients import AgencyClient, ClientError, RemoteError
from tests.e2e.broker_support import Database, RunningBroker


def _message_id(envelope: envelope_pb2.Envelope) -> str:
    return envelope_pb2.Header.FromString(envelope.header).message_id


def _forged(envelope: envelope_pb2.Envelope) -> envelope_pb2.Envelope:
    """The envelope with one bit of its outer signature flipped."""
    forged = envelope_pb2.Envelope()
    forged.CopyFrom(envelope)
    signature = bytearray(forged.header_signature)
    signature[-1] ^= 1
    forged.header_signature = bytes(signature)
    return forged


def test_burst_is_accepted_and_each_future_gets_its_own_acceptance(
    agencies: dict[str, AgencyClient],
    database: Database,
) -> None:
    """200 envelopes through one producer: each future names its message, all are stored, audited and delivered."""
    customs, police = agencies["FR-CUSTOMS"], agencies["DE-BKA"]
    envelopes = [customs.seal(["DE-BKA"], b"alert %d" % i) for i in range(200)]
    with customs.producer(linger=0.005, batch_size=32) as producer:
        futures = [producer.submit(e) for e in envelopes]
        producer.flush(timeout=30)
        assert all(f.done() for f in futures)
    responses = [f.result() for f in futures]
    assert [r.message_id for r in responses] == [_message_id(e) for e in envelopes]
    assert all(list(r.queued_for) == ["DE-BKA"] and not r.duplicate for r in responses)
    assert len({r.audit_index for r in responses}) == 200
    assert database.scalar("SELECT count(*) FROM messages") == 200
    assert database.scalar("SELECT count(*) FROM audit_entries WHERE event = 'envelope.accepted'") == 200
    got = set()
    for message in police.deliveries(timeout=5):
        got.add(message.body)
        police.ack(message)
        if len(got) == 200:
            break
    assert got == {b"alert %d" % i for i in range(200)}


def test_refused_envelope_fails_alone_and_the_rest_of_its_batch_is_stored(
    agencies: dict[str, AgencyClient],
    database: Database,
) -> None:
    """A forged signature among good envelopes: its future fails INVALID_ARGUMENT, audited; the others pass."""
    customs = agencies["FR-CUSTOMS"]
    good = [customs.seal(["DE-BKA"], b"good %d" % i) for i in range(4)]
    forged = _forged(customs.seal(["DE-BKA"], b"forged"))
    with customs.producer(linger=0.05, batch_size=8) as producer:  # one batch: all five share a message
        futures = [producer.submit(e) for e in [good[0], good[1], forged, good[2], good[3]]]
    with pytest.raises(RemoteError) as refused:
        futures[2].result()
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "signature" in refused.value.message
    assert [f.result().message_id for f in futures[:2] + futures[3:]] == [_message_id(e) for e in good]
    stored = {row[0] for row in database.rows("SELECT message_id FROM messages")}
    assert stored == {_message_id(e) for e in good}
    rejection = json.loads(
        bytes(
            database.scalar(
                "SELECT entry FROM audit_entries WHERE event = 'request.rejected' ORDER BY leaf_index DESC LIMIT 1"
            )
        )
    )
    assert rejection["message_id"] == _message_id(forged)
    assert rejection["actor"] == "spiffe://isb.dev/agency/FR-CUSTOMS"


def test_send_many_answers_in_order_with_duplicates_and_refusals(
    agencies: dict[str, AgencyClient],
    database: Database,
) -> None:
    """send_many: one outcome per envelope in order; a repeat is an idempotent duplicate, a forgery an error."""
    customs = agencies["FR-CUSTOMS"]
    first, second = customs.seal(["DE-BKA"], b"one"), customs.seal(["NL-FIOD"], b"two")
    outcomes = customs.send_many([first, _forged(second), second, first])
    accepted, refused, other, repeated = outcomes
    assert isinstance(accepted, broker_pb2.SendResponse)
    assert not accepted.duplicate
    assert isinstance(refused, RemoteError)
    assert refused.code is grpc.StatusCode.INVALID_ARGUMENT
    assert isinstance(other, broker_pb2.SendResponse)
    assert other.message_id == _message_id(second)
    assert isinstance(repeated, broker_pb2.SendResponse)
    assert repeated.duplicate
    assert repeated.audit_index == accepted.audit_index
    assert database.scalar("SELECT count(*) FROM messages") == 2


def test_reused_message_id_is_refused_when_staged_and_audited_once_with_its_digest(
    agencies: dict[str, AgencyClient],
    database: Database,
) -> None:
    """Two envelopes over one stream with one message id and other bytes: the second passes its
    checks and is refused ALREADY_EXISTS by the writer, audited once with its own id and digest."""
    customs = agencies["FR-CUSTOMS"]
    first = customs.seal(["DE-BKA"], b"first")
    other = customs.seal(["DE-BKA"], b"other", message_id=_message_id(first))
    before = database.scalar("SELECT count(*) FROM audit_entries WHERE event = 'request.rejected'")
    accepted, refused = customs.send_many([first, other])
    assert isinstance(accepted, broker_pb2.SendResponse)
    assert not accepted.duplicate
    assert isinstance(refused, RemoteError)
    assert refused.code is grpc.StatusCode.ALREADY_EXISTS
    assert f"message id {_message_id(first)} was already accepted with different content" in refused.message
    rejections = [
        json.loads(bytes(row[0]))
        for row in database.rows("SELECT entry FROM audit_entries WHERE event = 'request.rejected' ORDER BY leaf_index")
    ][before:]
    assert len(rejections) == 1
    (rejection,) = rejections
    assert rejection["message_id"] == _message_id(first)
    assert rejection["fields"]["envelope_sha256"] == hashlib.sha256(other.SerializeToString()).hexdigest()
    assert rejection["fields"]["rpc"] == "SendStream"
    stored = database.scalar("SELECT envelope_sha256 FROM messages")
    assert bytes(stored) == hashlib.sha256(first.SerializeToString()).digest()


def test_unanswered_sends_fail_when_the_broker_goes_away(
    broker: RunningBroker, agencies: dict[str, AgencyClient]
) -> None:
    """Broker stopped under a producer: answered sends keep their result, the rest fail, new submits raise."""
    customs = agencies["FR-CUSTOMS"]
    producer = customs.producer(linger=0.0)
    answered = producer.submit(customs.seal(["DE-BKA"], b"before"))
    assert answered.result(timeout=10).message_id
    late = customs.seal(["DE-BKA"], b"after")
    broker.stop()
    with pytest.raises(ClientError):
        # Refused at once if the producer saw the stream break already, else its future fails.
        producer.submit(late).result(timeout=30)
    with pytest.raises(ClientError):
        producer.submit(customs.seal(["DE-BKA"], b"later"))
    producer.close()
    assert answered.result().message_id  # an answered send stays answered


@pytest.mark.parametrize("options", [{"linger": -0.1}, {"linger": 2.0}, {"batch_size": 0}, {"batch_size": 257}])
def test_producer_refuses_settings_the_broker_would_refuse(
    agencies: dict[str, AgencyClient], options: dict[str, float]
) -> None:
    """A linger outside 0-1 s or a batch size outside 1-256 (the broker's limit) is a ValueError."""
    with pytest.raises(ValueError, match=r"linger|batch_size"):
        agencies["FR-CUSTOMS"].producer(**options)  # type: ignore[arg-type]
