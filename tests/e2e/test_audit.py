"""Issue 4 over real mTLS: every exchange lands in the signed Merkle log, auditors prove it, and
tampering with the stored log is caught by the offline verifier."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from sqlalchemy import text

from broker.api.v1 import audit_pb2, audit_pb2_grpc
from broker.errors import VerificationError
from broker.pki.dev import DevPki
from clients import AgencyClient, RemoteError
from clients.audit import verify_export
from clients.auditor import AuditorClient
from clients.cli import main as isb
from tests.e2e.broker_support import Database, RunningBroker


@pytest.fixture
def auditor(broker: RunningBroker, pki: DevPki) -> AuditorClient:
    key = load_pem_public_key(pki.audit_pub.read_bytes())
    cert, private = pki.auditor
    return AuditorClient(broker.target, cert=cert, key=private, ca=pki.ca_cert, audit_key=key)  # type: ignore[arg-type]


def _session(agencies: dict[str, AgencyClient]) -> str:
    """Send, deliver, receipt, and one rejection (a zeroed outer signature); return the sent message id."""
    customs, police = agencies["FR-CUSTOMS"], agencies["DE-BKA"]
    sent = customs.send(["DE-BKA"], b"cash courier alert", tlp="GREEN")
    for message in police.deliveries(timeout=5):
        police.ack(message)
        break
    envelope = customs.seal(["DE-BKA"], b"x")
    envelope.header_signature = bytes(64)
    with pytest.raises(RemoteError):
        customs.send_envelope(envelope)
    return sent.message_id


def test_session_yields_expected_entries_in_order_and_export_verifies(
    agencies: dict[str, AgencyClient],
    auditor: AuditorClient,
    tmp_path: Path,
    pki: DevPki,
) -> None:
    """Accepted, delivered, receipt and rejection entries appear in order; the export verifies offline."""
    message_id = _session(agencies)
    events = [e.event for _, e in auditor.entries(message_id=message_id)]
    # The auditor's own query about the message is recorded too, after the message's life.
    assert events == ["envelope.accepted", "delivery.delivered", "receipt.received", "audit.query"]
    rejected = [e for _, e in auditor.entries(event="request.rejected")]
    assert len(rejected) == 1
    assert "signature" in str(rejected[0].fields["reason"])
    auditor.checkpoint(fresh=True)
    export = tmp_path / "audit.jsonl"
    with export.open("wb") as stream:
        written = auditor.export(stream)
    report = verify_export(export, auditor.audit_key)
    assert report.entries == written
    assert report.tree_size == written
    assert report.checkpoints >= 1


def test_send_response_index_is_provable_against_a_signed_checkpoint(
    agencies: dict[str, AgencyClient],
    auditor: AuditorClient,
) -> None:
    """The audit index in a send response is an entry about that message, included in a signed checkpoint."""
    sent = agencies["FR-CUSTOMS"].send(["NL-FIOD"], b"strategic goods")
    checkpoint = auditor.checkpoint(fresh=True)
    proven = auditor.prove(sent.audit_index, checkpoint)
    assert proven.event.event == "envelope.accepted"
    assert proven.event.message_id == sent.message_id
    later = agencies["FR-CUSTOMS"].send(["NL-FIOD"], b"more")
    newer = auditor.checkpoint(fresh=True)
    assert newer.size > checkpoint.size > later.audit_index - 10
    auditor.check_consistency(checkpoint, newer)


def test_tampered_entry_in_database_is_named_by_offline_verify(
    agencies: dict[str, AgencyClient],
    auditor: AuditorClient,
    database: Database,
    tmp_path: Path,
) -> None:
    """Changing one stored entry makes `audit verify` on a fresh export fail and name that entry."""
    _session(agencies)
    auditor.checkpoint(fresh=True)
    victim = database.scalar("SELECT leaf_index FROM audit_entries WHERE event = 'receipt.received'")
    with database.engine.begin() as conn:
        entry = conn.execute(text("SELECT entry FROM audit_entries WHERE leaf_index = :i"), {"i": victim}).scalar_one()
        forged = bytes(entry).replace(b"DELIVERED", b"REJECTED!")
        conn.execute(text("UPDATE audit_entries SET entry = :e WHERE leaf_index = :i"), {"e": forged, "i": victim})
    export = tmp_path / "tampered.jsonl"
    with export.open("wb") as stream:
        auditor.export(stream)
    with pytest.raises(VerificationError, match=f"entry {victim}"):
        verify_export(export, auditor.audit_key)


def test_agency_calling_audit_service_is_refused_and_the_attempt_is_logged(
    broker: RunningBroker,
    pki: DevPki,
    database: Database,
) -> None:
    """An agency certificate gets PERMISSION_DENIED from AuditService, and the refusal is an audit entry."""
    cert, key = pki.agency("FR-CUSTOMS")
    creds = grpc.ssl_channel_credentials(
        root_certificates=pki.ca_cert.read_bytes(), private_key=key.read_bytes(), certificate_chain=cert.read_bytes()
    )
    stub = audit_pb2_grpc.AuditServiceStub(grpc.secure_channel(broker.target, creds))
    with pytest.raises(grpc.RpcError) as refused:
        stub.QueryEntries(audit_pb2.QueryEntriesRequest(), timeout=5)
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "only auditor may call this" in str(refused.value.details())
    row = database.rows("SELECT actor, entry FROM audit_entries WHERE event = 'request.rejected'")
    assert [r.actor for r in row] == ["spiffe://isb.dev/agency/FR-CUSTOMS"]
    assert json.loads(bytes(row[0].entry))["fields"]["rpc"] == "QueryEntries"


def test_auditor_queries_are_themselves_audited(auditor: AuditorClient, database: Database) -> None:
    """Every auditor query leaves an `audit.query` entry naming the auditor."""
    auditor.checkpoint(fresh=True)
    list(auditor.entries(event="envelope.accepted"))
    actors = {r.actor for r in database.rows("SELECT actor FROM audit_entries WHERE event = 'audit.query'")}
    assert actors == {"spiffe://isb.dev/auditor/audit-1"}


def test_cli_export_then_verify_passes_and_prove_checks_inclusion(
    broker: RunningBroker,
    agencies: dict[str, AgencyClient],
    pki: DevPki,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`isb audit export` writes a file that `isb audit verify` accepts; `isb audit prove` verifies a message."""
    sent = agencies["FR-CUSTOMS"].send(["DE-BKA"], b"small arms")
    online = ["--broker", broker.target, "--certs", str(pki.directory)]
    assert isb(["audit", "checkpoint", "--fresh", *online]) == 0
    assert isb(["audit", "export", "--out", str(tmp_path / "log.jsonl"), *online]) == 0
    assert isb(["audit", "verify", str(tmp_path / "log.jsonl"), "--key", str(pki.audit_pub), "--quiet"]) == 0
    assert isb(["audit", "prove", sent.message_id, "--json", *online]) == 0
    out = capsys.readouterr().out
    assert '"inclusion": "verified"' in out
    assert "OK: isb.dev/audit" in out


def test_checkpoints_are_signed_periodically_while_entries_arrive(
    agencies: dict[str, AgencyClient],
    database: Database,
) -> None:
    """Without being asked, the broker signs a checkpoint covering new entries within a few seconds."""
    agencies["FR-CUSTOMS"].send(["DE-BKA"], b"x")
    size = database.scalar("SELECT count(*) FROM audit_entries")
    deadline = time.monotonic() + 5
    while (database.scalar("SELECT max(tree_size) FROM audit_checkpoints") or 0) < size:
        assert time.monotonic() < deadline, "no checkpoint covered the new entries"
        time.sleep(0.1)
