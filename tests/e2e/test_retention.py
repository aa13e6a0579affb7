"""Issue 16, retention: a message past its period is purged (payload gone, digest kept), the purge is one
audit entry, and the auditor's export and inclusion proofs covering the purged message still verify.

Runs on SQLite and, with ISB_TEST_DATABASE=postgresql, on PostgreSQL. The period is 2 seconds and the
purge is an admin's real run (`isb admin retention`), so nothing waits for the hourly job.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from broker.api.v1 import envelope_pb2, payload_pb2
from broker.identity import Role
from broker.pki.dev import DevPki
from broker.pki.revocation import revoke
from broker.pki.store import CaDirectory
from clients import AgencyClient, RemoteError
from clients.admin import AdminClient
from clients.attachments import Attachment
from clients.audit import verify_export
from clients.auditor import AuditorClient
from clients.cli import main as isb
from clients.watchlist import WatchlistReplica, create_watchlist, publish_update
from tests.e2e.broker_support import Database, RunningBroker, copy_pki
from tests.e2e.pki_support import dev_policy_plus
from tests.e2e.test_revocation_checks import _second_certificate

PERIOD_SECONDS = 2
RETENTION = f"""
[retention]
default = "3y"

[[retention.rules]]
name = "short-alerts"
kinds = ["ALERT"]
envelopes = "{PERIOD_SECONDS}s"
attachments = "{PERIOD_SECONDS}s"
receipts = "{PERIOD_SECONDS}s"

[[retention.rules]]
name = "old-watchlist-versions"
kinds = ["WATCHLIST_UPDATE"]
envelopes = "{PERIOD_SECONDS}s"
"""


@pytest.fixture
def retention_broker(broker_factory: Any, tmp_path: Path) -> RunningBroker:
    """A broker whose policy keeps ALERT envelopes, attachments and receipts two seconds."""
    broker: RunningBroker = broker_factory(policy_file=dev_policy_plus(tmp_path, RETENTION))
    return broker


def _client(broker: RunningBroker, pki: DevPki, agency: str, tmp_path: Path) -> AgencyClient:
    client = AgencyClient.from_dir(broker.target, pki.directory, agency, keystore=tmp_path / "keys" / agency)
    client.publish_key()
    return client


def _entries(database: Database, event: str) -> list[dict[str, Any]]:
    rows = database.rows("SELECT entry FROM audit_entries WHERE event = :e ORDER BY leaf_index", e=event)
    return [json.loads(bytes(r[0])) for r in rows]


def test_purge_removes_payloads_keeps_digests_and_proofs_still_verify(
    retention_broker: RunningBroker,
    pki: DevPki,
    database: Database,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Past the period: ciphertext, wrapped keys, the attachment blob and the receipt go; the queue entry of an
    undelivered copy is dropped; one `retention.purged` entry says what; export and proofs verify."""
    broker = retention_broker
    customs, police, fiod = (_client(broker, pki, a, tmp_path) for a in ("FR-CUSTOMS", "DE-BKA", "NL-FIOD"))
    photo = Attachment(io.BytesIO(b"scan" * 5000), "image/jpeg")
    delivered = customs.send(["DE-BKA"], b"courier with cash", tlp="GREEN", attachments=[photo])
    received = next(iter(police.deliveries(timeout=5)))
    assert received.message_id == delivered.message_id
    police.ack(received)
    undelivered = customs.send(["NL-FIOD"], b"never fetched", tlp="GREEN")
    kept = customs.send(["DE-BKA"], b"a request, kept 3 years", tlp="GREEN", kind=envelope_pb2.REQUEST)
    cert, key = pki.admin
    admin = AdminClient(broker.target, cert=cert, key=key, ca=pki.ca_cert)  # closed with the broker
    assert not admin.retention(dry_run=True).counts  # nothing is two seconds old yet

    time.sleep(PERIOD_SECONDS + 0.5)
    preview = admin.retention(dry_run=True)
    counts = {(c.what, c.rule, c.period): c.count for c in preview.counts}
    assert counts == {
        ("envelopes", "short-alerts", "2s"): 2,
        ("attachments", "short-alerts", "2s"): 1,
        ("receipts", "short-alerts", "2s"): 1,
    }
    assert not _entries(database, "retention.purged")  # a dry run changes nothing

    report = admin.retention(dry_run=False)
    assert {(c.what, c.count) for c in report.counts} == {("envelopes", 2), ("attachments", 1), ("receipts", 1)}
    assert sorted(report.message_ids) == sorted([delivered.message_id, undelivered.message_id])
    assert report.undelivered_dropped == 1
    [entry] = _entries(database, "retention.purged")
    assert entry["index"] == report.audit_indexes[0]
    assert entry["actor"] == f"spiffe://isb.dev/admin/{pki.admin_name}"
    f = entry["fields"]
    assert (f["envelopes"], f["attachments"], f["receipts"], f["key_bundles"], f["undelivered_dropped"]) == (
        2,
        1,
        1,
        0,
        1,
    )
    assert f["trigger"] == "admin"
    assert sorted(f["rules"]) == [
        "attachments:short-alerts:2s:1",
        "envelopes:short-alerts:2s:2",
        "receipts:short-alerts:2s:1",
    ]

    # The payload is gone, the digest and the audit index stay; the REQUEST is kept.
    rows = {
        r.message_id: r
        for r in database.rows("SELECT message_id, length(envelope) AS size, envelope_sha256, purge_rule FROM messages")
    }
    assert (rows[delivered.message_id].size, rows[undelivered.message_id].size) == (0, 0)
    assert rows[delivered.message_id].purge_rule == "short-alerts"
    assert len(bytes(rows[delivered.message_id].envelope_sha256)) == 32
    assert rows[kept.message_id].size > 0
    assert rows[kept.message_id].purge_rule is None
    assert database.scalar("SELECT count(*) FROM deliveries WHERE receipt IS NOT NULL") == 0
    assert database.scalar("SELECT blob FROM attachments") == ""
    assert database.scalar("SELECT count(*) FROM blob_chunks") == 0

    # The undelivered copy is dropped; the sender sees why; the recipient of the attachment is told.
    assert [m.message_id for m in fiod.deliveries(timeout=1.5)] == []
    states = {r.recipient: r.state for r in customs.status(undelivered.message_id)}
    assert states == {"NL-FIOD": "PURGED"}
    with pytest.raises(RemoteError) as refused:
        received.attachments[0].open().read()
    assert refused.value.code is grpc.StatusCode.NOT_FOUND
    assert "purged under retention rule 'short-alerts'" in refused.value.message
    capsys.readouterr()
    online = ["--broker", broker.target, "--certs", str(pki.directory)]
    assert isb(["admin", "retention", "--json", *online]) == 0  # a second run finds nothing
    assert json.loads(capsys.readouterr().out)["counts"] == []

    # The auditor: the export verifies, and the purged message's acceptance is still proven.
    auditor_cert, auditor_key = pki.auditor
    auditor = AuditorClient(
        broker.target,
        cert=auditor_cert,
        key=auditor_key,
        ca=pki.ca_cert,
        audit_key=load_pem_public_key(pki.audit_pub.read_bytes()),  # type: ignore[arg-type]
    )
    checkpoint = auditor.checkpoint(fresh=True)
    proven = auditor.prove(delivered.audit_index, checkpoint)
    assert (proven.event.event, proven.event.message_id) == ("envelope.accepted", delivered.message_id)
    assert auditor.prove(entry["index"], checkpoint).event.event == "retention.purged"
    export = tmp_path / "audit.jsonl"
    with export.open("wb") as stream:
        written = auditor.export(stream)
    assert verify_export(export, auditor.audit_key).entries == written
    assert isb(["audit", "verify", str(export), "--key", str(pki.audit_pub), "--quiet"]) == 0
    assert isb(["audit", "prove", delivered.message_id, "--json", *online]) == 0
    for client in (customs, police, fiod):
        client.close()


def test_key_bundle_of_a_revoked_certificate_is_purged_after_its_period(
    broker_factory: Any,
    pki: DevPki,
    database: Database,
    tmp_path: Path,
) -> None:
    """`revoked_key_bundles` counts from the revocation date on the CRL: the bundle under the revoked
    certificate goes, the agency's current bundle stays, and the run's entry counts it."""
    certs = copy_pki(pki, tmp_path / "pki")
    policy = dev_policy_plus(tmp_path, f'\n[retention]\nrevoked_key_bundles = "{PERIOD_SECONDS}s"\n')
    broker = broker_factory(cert_dir=certs, policy_file=policy)
    with AgencyClient.from_dir(broker.target, certs, "DE-BKA", keystore=tmp_path / "police") as police:
        police.publish_key()
    cert_path, key_path, serial = _second_certificate(certs, "DE-BKA", tmp_path)
    with AgencyClient(
        broker.target, cert=cert_path, key=key_path, ca=certs / "ca.crt", keystore=tmp_path / "second-key"
    ) as second:
        second.publish_key()
    assert database.scalar("SELECT count(*) FROM key_bundles") == 2
    revoke(CaDirectory.open(certs), serial, "superseded")
    with AdminClient(broker.target, cert=certs / "admin.crt", key=certs / "admin.key", ca=certs / "ca.crt") as admin:
        assert not admin.retention(dry_run=True).counts
        time.sleep(PERIOD_SECONDS + 0.5)
        report = admin.retention(dry_run=False)
    assert [(c.what, c.rule, c.count) for c in report.counts] == [
        ("revoked_key_bundles", "retention.revoked_key_bundles", 1)
    ]
    remaining = [bytes(r[0]) for r in database.rows("SELECT certificate FROM key_bundles")]
    assert len(remaining) == 1
    assert x509.load_der_x509_certificate(remaining[0]).serial_number != serial
    [entry] = _entries(database, "retention.purged")
    assert entry["fields"]["key_bundles"] == 1


def test_watchlist_versions_before_the_latest_snapshot_are_purged_and_sync_still_works(
    retention_broker: RunningBroker,
    pki: DevPki,
    database: Database,
    tmp_path: Path,
) -> None:
    """Versions superseded by a later snapshot are never served again: past the period their envelopes go
    (digests stay); the latest snapshot and its deltas stay, and a new replica still syncs."""
    broker = retention_broker
    owner, subscriber = (_client(broker, pki, a, tmp_path) for a in ("FR-CUSTOMS", "DE-BKA"))
    watchlist = create_watchlist(owner, "FR-CUSTOMS/kept", subscribers=["DE-BKA"])

    def entry(entry_id: str) -> payload_pb2.WatchlistEntry:
        return payload_pb2.WatchlistEntry(
            entry_id=entry_id, entity_type=payload_pb2.ENTITY_PERSON, family_name=entry_id, reason="wanted"
        )

    for version, snapshot, upserts in ((1, True, ["a"]), (2, False, ["b"]), (3, True, ["c"]), (4, False, ["d"])):
        publish_update(
            owner,
            payload_pb2.WatchlistUpdate(
                watchlist_id="FR-CUSTOMS/kept", version=version, snapshot=snapshot, upserts=[entry(e) for e in upserts]
            ),
            watchlist=watchlist,
        )
    time.sleep(PERIOD_SECONDS + 0.5)
    with AdminClient(broker.target, cert=pki.admin[0], key=pki.admin[1], ca=pki.ca_cert) as admin:
        assert [(c.what, c.rule, c.count) for c in admin.retention(dry_run=True).counts] == [
            ("watchlist_versions", "old-watchlist-versions", 2)
        ]
        report = admin.retention(dry_run=False)
    sizes = dict(database.rows("SELECT version, length(envelope) FROM watchlist_versions ORDER BY version"))
    assert sizes[1] == sizes[2] == 0
    assert sizes[3] > 0
    assert sizes[4] > 0
    purged_ids = {r[0] for r in database.rows("SELECT message_id FROM watchlist_versions WHERE version < 3")}
    assert set(report.message_ids) == purged_ids
    [purge] = _entries(database, "retention.purged")
    assert purge["fields"]["watchlist_versions"] == 2
    replica = WatchlistReplica(tmp_path / "replica.db", watchlist_id="FR-CUSTOMS/kept", owner="FR-CUSTOMS")
    assert replica.sync(subscriber).version == 4
    assert sorted(replica.entries()) == ["c", "d"]
    replica.close()
    for client in (owner, subscriber):
        client.close()


def test_an_agency_may_not_run_or_preview_a_purge(
    retention_broker: RunningBroker,
    pki: DevPki,
    database: Database,
    tmp_path: Path,
) -> None:
    """AdminService.Retention from an agency certificate: PERMISSION_DENIED naming the role, nothing purged,
    one `request.rejected` entry per call (dry run or not)."""
    broker = retention_broker
    customs, police = (_client(broker, pki, a, tmp_path) for a in ("FR-CUSTOMS", "DE-BKA"))
    sent = customs.send(["DE-BKA"], b"due in two seconds", tlp="GREEN")
    time.sleep(PERIOD_SECONDS + 0.5)
    cert, key = pki.agency("FR-CUSTOMS")
    with AdminClient(broker.target, cert=cert, key=key, ca=pki.ca_cert, role=Role.AGENCY) as hostile:
        for dry_run in (True, False):
            with pytest.raises(RemoteError) as refused:
                hostile.retention(dry_run=dry_run)
            assert refused.value.code is grpc.StatusCode.PERMISSION_DENIED
            assert "is a agency; only admin may call this" in refused.value.message
    assert not _entries(database, "retention.purged")
    assert database.scalar("SELECT length(envelope) FROM messages WHERE message_id = :m", m=sent.message_id) > 0
    rejected = [e for e in _entries(database, "request.rejected") if e["fields"].get("rpc") == "Retention"]
    assert len(rejected) == 2
    assert all(e["actor"] == "spiffe://isb.dev/agency/FR-CUSTOMS" for e in rejected)
    assert all("only admin may call this" in e["fields"]["reason"] for e in rejected)
    customs.close()
    police.close()
