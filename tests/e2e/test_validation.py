"""Issue 12, input acceptance: every header and request field in its range, refused before anything is
stored, with a status and a message that names the field, and exactly one bounded audit entry."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from broker.api.v1 import broker_pb2, envelope_pb2
from broker.protocol import _pae
from broker.protocol.envelope import uuid7
from broker.protocol.keys import EncryptionKey, make_key_bundle, sign_identity
from broker.protocol.receipts import make_receipt
from clients import AgencyClient, RemoteError
from tests.e2e.broker_support import Database

MAX_ENTRY_BYTES = 4096  # a refusal entry: a few bounded fields of at most 512 characters


def _resigned(
    client: AgencyClient, change: Callable[[envelope_pb2.Header], None], recipients: tuple[str, ...] = ("DE-BKA",)
) -> envelope_pb2.Envelope:
    """A sealed envelope whose header `change` edits, signed again by the sender (a hostile sender can)."""
    envelope = client.seal(list(recipients), b"payload")
    header = envelope_pb2.Header.FromString(envelope.header)
    change(header)
    envelope.header = header.SerializeToString()
    envelope.header_signature = sign_identity(client.identity.private_key, _pae.header_signing_input(envelope.header))
    return envelope


def _stored(database: Database) -> tuple[Any, ...]:
    return (
        database.scalar("SELECT count(*) FROM messages"),
        database.scalar("SELECT count(*) FROM deliveries"),
        database.scalar("SELECT count(*) FROM key_bundles"),
        database.scalar("SELECT count(*) FROM deliveries WHERE state = 3"),
    )


def _rejections(database: Database) -> list[tuple[dict[str, Any], int]]:
    rows = database.rows("SELECT entry FROM audit_entries WHERE event = 'request.rejected' ORDER BY leaf_index")
    return [(json.loads(bytes(r[0])), len(bytes(r[0]))) for r in rows]


def _refused(
    database: Database, call: Callable[[], object], code: grpc.StatusCode, message: str, rpc: str
) -> dict[str, Any]:
    """`call` fails with `code` and `message`, stores nothing, and leaves exactly one bounded entry."""
    before, entries = _stored(database), len(_rejections(database))
    with pytest.raises(RemoteError) as refused:
        call()
    assert refused.value.code is code, refused.value.message
    assert message in refused.value.message
    assert len(refused.value.message) <= 512
    assert _stored(database) == before
    after = _rejections(database)
    assert len(after) == entries + 1, "one refusal, one audit entry"
    entry, size = after[-1]
    assert entry["fields"]["rpc"] == rpc
    assert entry["fields"]["status"] == code.name
    assert message in entry["fields"]["reason"]
    assert size <= MAX_ENTRY_BYTES
    return entry


def refused_message(entry: dict[str, Any]) -> str:
    """The reason recorded in a refusal entry."""
    return str(entry["fields"]["reason"])


def _seconds(value: int) -> Callable[[envelope_pb2.Header], None]:
    def change(h: envelope_pb2.Header) -> None:
        h.created.seconds = value

    return change


HEADER_CASES: list[tuple[str, Callable[[envelope_pb2.Header], None], str]] = [
    ("created-2^62", _seconds(2**62), "header.created is outside the range of a protobuf Timestamp"),
    ("created-negative-nanos", lambda h: setattr(h.created, "nanos", -1), "header.created has nanos -1"),
    ("expires-2^62", lambda h: setattr(h.expires, "seconds", 2**62), "header.expires is outside the range"),
    (
        "expires-before-created",
        lambda h: setattr(h.expires, "seconds", h.created.seconds - 60),
        "header.expires is not later than header.created",
    ),
    ("priority-minus-1", lambda h: setattr(h, "priority", -1), "header.priority is unknown (-1)"),
    ("priority-99", lambda h: setattr(h, "priority", 99), "header.priority is unknown (99)"),
    (
        "source-reliability-minus-5",
        lambda h: setattr(h.handling, "source_reliability", -5),
        "header.handling.source_reliability is unknown (-5)",
    ),
    (
        "information-accuracy-77",
        lambda h: setattr(h.handling, "information_accuracy", 77),
        "header.handling.information_accuracy is unknown (77)",
    ),
    ("kind-42", lambda h: setattr(h, "kind", 42), "header.kind is unknown (42)"),
    ("tlp-9", lambda h: setattr(h.handling, "tlp", 9), "header.handling.tlp is unknown (9)"),
    ("uuid4", lambda h: setattr(h, "message_id", str(uuid.uuid4())), "is not a UUIDv7"),
    ("nil-uuid", lambda h: setattr(h, "message_id", str(uuid.UUID(int=0))), "is not a UUIDv7"),
    (
        "classification-too-long",
        lambda h: setattr(h.handling, "classification", "C" * 65),
        "header.handling.classification is 65 characters long, over the limit of 64",
    ),
    (
        "in-reply-to-not-a-uuid",
        lambda h: setattr(h, "in_reply_to", "yesterday's message"),
        "header.in_reply_to is 19 characters long; a UUID has 36",
    ),
    (
        "watchlist-version-2^64",
        lambda h: setattr(h, "watchlist_version", 2**64 - 1),
        "header.watchlist_version is over",
    ),
    (
        "recipient-not-an-address",
        lambda h: h.recipients.append("not an agency"),
        "header.recipients[1] 'not an agency' is neither an agency id nor a group name",
    ),
]


@pytest.mark.parametrize(("change", "message"), [c[1:] for c in HEADER_CASES], ids=[c[0] for c in HEADER_CASES])
def test_header_field_out_of_range_is_invalid_argument_naming_the_field(
    agencies: dict[str, AgencyClient],
    database: Database,
    change: Callable[[envelope_pb2.Header], None],
    message: str,
) -> None:
    """A validly signed header with one field out of range or format is INVALID_ARGUMENT, stored nowhere."""
    customs = agencies["FR-CUSTOMS"]

    def with_expiry(h: envelope_pb2.Header) -> None:
        h.expires.FromSeconds(h.created.seconds + 3600)
        change(h)

    envelope = _resigned(customs, with_expiry)
    entry = _refused(
        database, lambda: customs.send_envelope(envelope), grpc.StatusCode.INVALID_ARGUMENT, message, "Send"
    )
    assert entry["actor"] == "spiffe://isb.dev/agency/FR-CUSTOMS"
    assert entry["fields"]["envelope_sha256"]


@pytest.mark.parametrize(("offset", "side"), [(-3600, "behind"), (3600, "ahead of")])
def test_created_outside_the_clock_skew_window_is_out_of_range(
    agencies: dict[str, AgencyClient],
    database: Database,
    offset: int,
    side: str,
) -> None:
    """`created` an hour from the broker's clock is OUT_OF_RANGE (default window: 10 minutes)."""
    customs = agencies["FR-CUSTOMS"]
    envelope = _resigned(customs, lambda h: h.created.FromSeconds(h.created.seconds + offset))
    _refused(
        database,
        lambda: customs.send_envelope(envelope),
        grpc.StatusCode.OUT_OF_RANGE,
        f"s {side} the broker's clock, outside the allowed skew of 600 s",
        "Send",
    )


def test_skew_window_is_configurable(broker_factory: Any, pki: Any, database: Database, tmp_path: Any) -> None:
    """With max_clock_skew_seconds = 7200, a message created an hour ago is accepted."""
    broker = broker_factory(max_clock_skew_seconds=7200)
    clients = {}
    for agency in ("FR-CUSTOMS", "DE-BKA"):
        clients[agency] = AgencyClient.from_dir(broker.target, pki.directory, agency, keystore=tmp_path / agency)
        clients[agency].publish_key()
    envelope = _resigned(clients["FR-CUSTOMS"], lambda h: h.created.FromSeconds(h.created.seconds - 3600))
    assert clients["FR-CUSTOMS"].send_envelope(envelope).message_id


def test_retry_of_a_stored_message_after_the_skew_window_is_still_a_duplicate(
    broker_factory: Any,
    pki: Any,
    database: Database,
    tmp_path: Any,
) -> None:
    """A send retried after the window (same id, same bytes) gets the first answer, not OUT_OF_RANGE."""
    wide = broker_factory(max_clock_skew_seconds=7200)
    customs = AgencyClient.from_dir(wide.target, pki.directory, "FR-CUSTOMS", keystore=tmp_path / "fr")
    police = AgencyClient.from_dir(wide.target, pki.directory, "DE-BKA", keystore=tmp_path / "de")
    police.publish_key()
    envelope = _resigned(customs, lambda h: h.created.FromSeconds(h.created.seconds - 3600))
    first = customs.send_envelope(envelope)
    wide.stop()
    narrow = broker_factory()
    again = AgencyClient.from_dir(narrow.target, pki.directory, "FR-CUSTOMS", keystore=tmp_path / "fr")
    retried = again.send_envelope(envelope)
    assert (retried.duplicate, retried.audit_index) == (True, first.audit_index)


def test_three_megabyte_message_id_gets_its_reason_and_a_bounded_entry(
    agencies: dict[str, AgencyClient],
    database: Database,
) -> None:
    """A 3 MB message id: the client sees the real reason (not "Stream removed"); the entry stays small."""
    customs = agencies["FR-CUSTOMS"]
    envelope = _resigned(customs, lambda h: setattr(h, "message_id", "7" * 3_000_000))
    entry = _refused(
        database,
        lambda: customs.send_envelope(envelope),
        grpc.StatusCode.INVALID_ARGUMENT,
        "bytes, over the limit of 65536",
        "Send",
    )
    assert refused_message(entry).startswith("envelope.header is 3000")
    assert "message_id" not in entry
    assert "cut: 3000000 bytes, sha256:" in entry["fields"]["claimed_message_id"]


def test_long_message_id_is_named_by_its_length_not_echoed(
    agencies: dict[str, AgencyClient], database: Database
) -> None:
    """A 40,000-character message id (under the header limit) is refused by its length, and cut in the entry."""
    customs = agencies["FR-CUSTOMS"]
    envelope = _resigned(customs, lambda h: setattr(h, "message_id", "7" * 40_000))
    entry = _refused(
        database,
        lambda: customs.send_envelope(envelope),
        grpc.StatusCode.INVALID_ARGUMENT,
        "header.message_id is 40000 characters long; a UUID has 36",
        "Send",
    )
    assert "cut: 40000 bytes, sha256:" in entry["fields"]["claimed_message_id"]


def test_message_id_already_used_is_refused_with_one_entry(
    agencies: dict[str, AgencyClient], database: Database
) -> None:
    """Same id, other bytes: ALREADY_EXISTS with exactly one audit entry (it used to write two)."""
    customs = agencies["FR-CUSTOMS"]
    message_id = uuid7()
    customs.send_envelope(customs.seal(["DE-BKA"], b"first", message_id=message_id))
    other = customs.seal(["DE-BKA"], b"second", message_id=message_id)
    _refused(
        database,
        lambda: customs.send_envelope(other),
        grpc.StatusCode.ALREADY_EXISTS,
        "was already accepted with different content",
        "Send",
    )


def test_receipt_with_the_wrong_digest_is_refused_with_one_entry(
    agencies: dict[str, AgencyClient], database: Database
) -> None:
    """A receipt naming another envelope digest than the one delivered: NOT_FOUND, one entry (it used to write two)."""
    customs, police = agencies["FR-CUSTOMS"], agencies["DE-BKA"]
    sent = customs.send(["DE-BKA"], b"for the police")
    receipt = make_receipt(
        message_id=sent.message_id,
        envelope_sha256=bytes(32),
        recipient="DE-BKA",
        status=envelope_pb2.DELIVERED,
        identity_key=police.identity.private_key,
    )
    _refused(
        database,
        lambda: police._call(police._stub.Ack, broker_pb2.AckRequest(receipts=[receipt])),
        grpc.StatusCode.NOT_FOUND,
        "receipt names another envelope digest than the one delivered",
        "Ack",
    )


def test_ack_for_a_delivery_not_owned_is_refused_with_one_entry(
    agencies: dict[str, AgencyClient], database: Database
) -> None:
    """An Ack for a message delivered to someone else: NOT_FOUND, one entry (it used to write two)."""
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
    )


def test_key_bundle_with_not_after_out_of_range_is_invalid_argument(
    agencies: dict[str, AgencyClient], database: Database
) -> None:
    """A signed key bundle whose not_after is past year 9999 is INVALID_ARGUMENT, not INTERNAL."""
    police = agencies["DE-BKA"]
    now = dt.datetime.now(dt.UTC)
    signed = make_key_bundle(
        "DE-BKA",
        EncryptionKey.generate(),
        identity_key=police.identity.private_key,
        certificate=police.identity.certificate,
        not_before=now,
        not_after=now + dt.timedelta(days=1),
    )
    bundle = envelope_pb2.KeyBundle.FromString(signed.bundle)
    bundle.not_after.seconds = 2**62
    signed.bundle = bundle.SerializeToString()
    signed.signature = sign_identity(police.identity.private_key, _pae.key_bundle_signing_input(signed.bundle))
    _refused(
        database,
        lambda: police._call(police._stub.PublishKeyBundle, signed),
        grpc.StatusCode.INVALID_ARGUMENT,
        "key_bundle.not_after is outside the range of a protobuf Timestamp",
        "PublishKeyBundle",
    )


def test_status_of_a_message_id_that_is_not_a_uuid_is_invalid_argument(
    agencies: dict[str, AgencyClient], database: Database
) -> None:
    """GetStatus with an id that is no UUID names the field and its length."""
    customs = agencies["FR-CUSTOMS"]
    _refused(
        database,
        lambda: customs.status("x" * 10_000),
        grpc.StatusCode.INVALID_ARGUMENT,
        "message_id is 10000 characters long; a UUID has 36",
        "GetStatus",
    )


def test_directory_query_naming_no_agency_lists_every_agency(agencies: dict[str, AgencyClient]) -> None:
    """An empty GetDirectoryRequest is "every registered agency" (it used to be INTERNAL)."""
    customs = agencies["FR-CUSTOMS"]
    directory = customs._call(customs._stub.GetDirectory, broker_pb2.GetDirectoryRequest())
    assert {"FR-CUSTOMS", "DE-BKA", "NL-FIOD"} <= {a.agency for a in directory.agencies}
    assert all(a.key_bundles for a in directory.agencies if a.agency in agencies)


def test_directory_query_with_a_malformed_agency_id_names_it(
    agencies: dict[str, AgencyClient], database: Database
) -> None:
    """A directory query for something that is not an agency id is INVALID_ARGUMENT naming the entry."""
    customs = agencies["FR-CUSTOMS"]
    _refused(
        database,
        lambda: customs._call(
            customs._stub.GetDirectory, broker_pb2.GetDirectoryRequest(agencies=["DE-BKA", "x" * 5000])
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "agencies[1] is 5000 characters long",
        "GetDirectory",
    )
