"""Two broker replicas on one PostgreSQL database keep one consistent audit log (DESIGN.md section 9)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from broker.api.v1.broker_pb2 import ACKNOWLEDGED
from broker.pki.dev import DevPki
from clients import AgencyClient
from clients.audit import verify_export
from clients.auditor import AuditorClient
from tests.e2e.broker_support import Database

LEASE = 3.0  # seconds a delivery handed to a stream stays leased to it


def test_sends_through_two_replicas_land_in_one_verifiable_log(
    broker_factory: Any,
    pki: DevPki,
    database: Database,
    tmp_path: Path,
) -> None:
    """Alternating sends through two replicas commit without conflict, wake a subscriber on either, and
    export as one verifiable tree."""
    if database.kind != "postgresql":
        pytest.skip("replicas share a PostgreSQL database; the embedded SQLite default serves one broker process")
    first, second = broker_factory(node="node-1"), broker_factory(node="node-2")
    clients = [
        AgencyClient.from_dir(b.target, pki.directory, "FR-CUSTOMS", keystore=tmp_path / "fr") for b in (first, second)
    ]
    police = AgencyClient.from_dir(first.target, pki.directory, "DE-BKA", keystore=tmp_path / "de")
    police.publish_key()
    # The police's stream on the first replica is open (it has received one message) before the
    # other sends alternate between the replicas: those via the second must wake it.
    sent = [clients[0].send(["DE-BKA"], b"opening")]
    stream = police.deliveries(timeout=5)
    first_message = next(stream)
    police.ack(first_message)
    sent += [clients[i % 2].send(["DE-BKA"], b"via replica %d" % (i % 2)) for i in range(1, 20)]
    assert len({s.audit_index for s in sent}) == 20
    received = [first_message.message_id]
    for message in stream:
        received.append(message.message_id)
        police.ack(message)
        if len(received) == 20:
            break
    assert sorted(received) == sorted(s.message_id for s in sent)
    key = load_pem_public_key(pki.audit_pub.read_bytes())
    cert, private = pki.auditor
    auditor = AuditorClient(second.target, cert=cert, key=private, ca=pki.ca_cert, audit_key=key)  # type: ignore[arg-type]
    auditor.checkpoint(fresh=True)
    with (tmp_path / "log.jsonl").open("wb") as out:
        written = auditor.export(out)
    report = verify_export(tmp_path / "log.jsonl", key)  # type: ignore[arg-type]
    assert report.entries == written
    assert database.scalar("SELECT count(*) FROM messages") == 20
    seqs = [r[0] for r in database.rows("SELECT seq FROM messages ORDER BY seq")]
    assert len(set(seqs)) == 20


def test_acks_through_the_other_replica_release_the_lease_holder_no_redelivery(
    broker_factory: Any,
    pki: DevPki,
    database: Database,
    tmp_path: Path,
) -> None:
    """A stream on replica A, its receipts sent through replica B: A takes the deliveries off its queue
    (NOTIFY on commit of the receipts), so nothing is redelivered. One delivery in flight at a time:
    the next comes only once B's receipt for the last released it on A, and each lease covers one
    round trip (with 20 leases of 1 s running at once, a loaded machine could let the last expire
    before the sequential acks reached them)."""
    if database.kind != "postgresql":
        pytest.skip("replicas share a PostgreSQL database; the embedded SQLite default serves one broker process")
    first, second = (
        broker_factory(node="node-1", lease_seconds=LEASE),
        broker_factory(node="node-2", lease_seconds=LEASE),
    )
    customs = AgencyClient.from_dir(first.target, pki.directory, "FR-CUSTOMS", keystore=tmp_path / "fr")
    on_a = AgencyClient.from_dir(first.target, pki.directory, "DE-BKA", keystore=tmp_path / "de")
    on_b = AgencyClient.from_dir(second.target, pki.directory, "DE-BKA", keystore=tmp_path / "de")
    on_a.publish_key()
    sent = {customs.send(["DE-BKA"], b"message %d" % i).message_id for i in range(20)}
    deliveries = []
    # The stream ends LEASE + 1.5 s after its last delivery: past its lease, so a redelivery would show.
    for message in on_a.deliveries(max_in_flight=1, timeout=LEASE + 1.5, reconnect=False):
        deliveries.append(message.message_id)
        on_b.ack(message)
        if len(deliveries) > 100:
            break
    assert sorted(deliveries) == sorted(sent), f"{len(deliveries)} deliveries of {len(sent)} messages"
    assert database.scalar("SELECT count(*) FROM deliveries WHERE state = :s", s=ACKNOWLEDGED) == 20
    # Each hand-out is audited with its attempt (A's writer records it without waiting): one each, the first.
    # Not the deliveries' attempts column: A's count of an attempt skips a delivery B's receipt already
    # settled, so a quick receipt leaves it at 0.
    deadline = time.monotonic() + 30
    while database.scalar(_HANDED_OUT) < len(sent) and time.monotonic() < deadline:
        time.sleep(0.05)
    entries = [json.loads(bytes(row[0])) for row in database.rows(_HANDED_OUT_ENTRIES)]
    assert sorted(e["message_id"] for e in entries) == sorted(sent)
    assert {e["fields"]["attempt"] for e in entries} == {1}


_HANDED_OUT = "SELECT count(*) FROM audit_entries WHERE event = 'delivery.delivered'"
_HANDED_OUT_ENTRIES = "SELECT entry FROM audit_entries WHERE event = 'delivery.delivered'"
