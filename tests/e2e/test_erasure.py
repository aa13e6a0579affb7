"""Erasure propagation over real mTLS (issue 16): a RECALL makes every recipient's SDK erase its local
copies and confirm with a signed ERASED receipt, which the sender lists and verifies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from broker.api.v1 import broker_pb2, envelope_pb2
from broker.pki.dev import DevPki
from broker.protocol.receipts import make_receipt
from clients import AgencyClient, RemoteError
from clients.cli import main as isb
from clients.erasure import SavedFiles
from tests.e2e.broker_support import Database, RunningBroker, copy_pki


def _entries(database: Database, event: str) -> list[dict[str, Any]]:
    rows = database.rows("SELECT entry FROM audit_entries WHERE event = :event ORDER BY leaf_index", event=event)
    return [json.loads(bytes(row[0])) for row in rows]


def _receive_one(client: AgencyClient) -> Any:
    message = next(client.deliveries(timeout=10))
    client.ack(message)
    return message


def test_recall_is_confirmed_by_every_recipients_sdk_and_saved_copies_are_deleted(
    agencies: dict[str, AgencyClient],
    broker: RunningBroker,
    pki: DevPki,
    database: Database,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Both recipients erase what they saved, sign ERASED receipts naming the message; the sender sees both."""
    customs, fiod = agencies["FR-CUSTOMS"], agencies["NL-FIOD"]
    inbox = tmp_path / "bka-inbox"
    inbox.mkdir()
    police = AgencyClient.from_dir(
        broker.target, pki.directory, "DE-BKA", keystore=tmp_path / "keys" / "DE-BKA", local_stores=[SavedFiles(inbox)]
    )
    attachment = tmp_path / "scan.txt"
    attachment.write_bytes(b"passenger manifest")
    sent = customs.send(["DE-BKA", "NL-FIOD"], b"cash courier", tlp="GREEN", attachments=[attachment])
    received = _receive_one(police)
    saved = inbox / f"{sent.message_id}-0.txt"
    received.attachments[0].save(saved)
    _receive_one(fiod)
    assert customs.erasure_status(sent.message_id) == []  # nothing recalled yet

    recall = customs.recall(sent.message_id)
    assert sorted(recall.queued_for) == ["DE-BKA", "NL-FIOD"]
    honoured = {client.agency: _receive_one(client) for client in (police, fiod)}
    assert not saved.exists()
    assert honoured["DE-BKA"].erased == f"{sent.message_id}: erased 1 from saved attachments"
    assert honoured["NL-FIOD"].erased == f"{sent.message_id}: erased no local copy held"

    confirmations = customs.erasure_status(sent.message_id)
    assert [(c.recipient, c.recall_id, c.confirmed) for c in confirmations] == [
        ("DE-BKA", recall.message_id, True),
        ("NL-FIOD", recall.message_id, True),
    ]
    assert confirmations[0].detail == f"{sent.message_id}: erased 1 from saved attachments"
    # The log records each confirmation with the message it erased.
    erased = [e for e in _entries(database, "receipt.received") if e["fields"]["status"] == "ERASED"]
    assert sorted((e["agency"], e["message_id"], e["fields"]["erased"]) for e in erased) == [
        ("DE-BKA", recall.message_id, sent.message_id),
        ("NL-FIOD", recall.message_id, sent.message_id),
    ]

    certs = copy_pki(pki, tmp_path / "pki")
    assert (
        isb(
            [
                "status",
                "--broker",
                broker.target,
                "--agency",
                "FR-CUSTOMS",
                "--certs",
                str(certs),
                sent.message_id,
                "--json",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["recipient"], r["erasure"]) for r in rows] == [("DE-BKA", "confirmed"), ("NL-FIOD", "confirmed")]
    police.close()


def test_erased_receipt_for_a_message_that_is_not_a_recall_is_refused(
    agencies: dict[str, AgencyClient],
    database: Database,
) -> None:
    """ERASED acknowledges a RECALL only: on an alert it is INVALID_ARGUMENT, nothing recorded, one refusal entry."""
    customs, police = agencies["FR-CUSTOMS"], agencies["DE-BKA"]
    sent = customs.send(["DE-BKA"], b"x", tlp="GREEN")
    message = next(police.deliveries(timeout=10))
    receipt = make_receipt(
        message_id=sent.message_id,
        envelope_sha256=message.envelope_sha256,
        recipient="DE-BKA",
        status=envelope_pb2.ERASED,
        identity_key=police.identity.private_key,
        reason=f"{sent.message_id}: erased",
    )
    refusals = len(_entries(database, "request.rejected"))
    with pytest.raises(RemoteError) as refused:
        police._call(police._stub.Ack, broker_pb2.AckRequest(receipts=[receipt]))
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "ERASED confirms a RECALL, and this message is of kind ALERT" in refused.value.message
    assert database.scalar("SELECT count(*) FROM deliveries WHERE state = 3") == 0
    entries = _entries(database, "request.rejected")
    assert len(entries) == refusals + 1
    assert entries[-1]["fields"]["rpc"] == "Ack"
