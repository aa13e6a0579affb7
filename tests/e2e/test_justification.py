"""Justification over real mTLS (issue 16): the policy requires a legal basis and a case reference
per kind and handling code; a send without one is refused, stores nothing and leaves one bounded
refusal entry; disclosures record the justification and the agency-asserted operator."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from broker.api.v1 import payload_pb2
from broker.audit import AuditEvent
from broker.pki.dev import DevPki
from clients import AgencyClient, RemoteError
from clients.audit.verify import verify_export
from clients.auditor import AuditorClient
from clients.cli import main as isb
from clients.watchlist import create_watchlist, publish_update
from tests.e2e.broker_support import Database, RunningBroker, copy_pki
from tests.e2e.pki_support import dev_policy_plus

REQUIREMENT = """
[[justification]]
kinds = ["ALERT", "REQUEST"]
handling = ["AMBER..RED"]
require = ["legal_basis", "case_reference"]

[[justification]]
kinds = ["WATCHLIST_UPDATE"]
require = ["legal_basis"]
"""


@pytest.fixture
def broker(broker_factory: Any, tmp_path: Path) -> RunningBroker:
    """A broker whose policy is the dev policy plus a justification requirement for AMBER and above."""
    started: RunningBroker = broker_factory(policy_file=dev_policy_plus(tmp_path, REQUIREMENT))
    return started


def _entries(database: Database, event: str) -> list[dict[str, Any]]:
    rows = database.rows("SELECT entry FROM audit_entries WHERE event = :event ORDER BY leaf_index", event=event)
    return [json.loads(bytes(row[0])) for row in rows]


def _refused_send(database: Database, send: Any, expected: str) -> dict[str, Any]:
    """Run a send that must be refused: INVALID_ARGUMENT with `expected`, nothing stored, one refusal entry."""
    messages, refusals = database.scalar("SELECT count(*) FROM messages"), len(_entries(database, "request.rejected"))
    with pytest.raises(RemoteError) as refused:
        send()
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert expected in refused.value.message
    assert database.scalar("SELECT count(*) FROM messages") == messages
    entries = _entries(database, "request.rejected")
    assert len(entries) == refusals + 1
    entry = entries[-1]
    assert (entry["fields"]["rpc"], entry["fields"]["status"]) == ("Send", "INVALID_ARGUMENT")
    assert expected in entry["fields"]["reason"]
    assert len(entry["fields"]["reason"]) <= 512
    return entry


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"tlp": "AMBER", "case_reference": "FR-2026-0042"}, "header.legal_basis is required for ALERT at AMBER"),
        ({"tlp": "RED", "kind": 2, "legal_basis": "LED-ART8"}, "header.case_reference is required for REQUEST at RED"),
        (
            {"tlp": "GREEN", "legal_basis": "GDPR-ART6"},
            "header.legal_basis 'GDPR-ART6' is not an accepted legal-basis "
            "code; accepted: LED-ART8, NAPLES-II, REG-515-97, FD-2006-960, SIS-ART36",
        ),
        (
            {"tlp": "GREEN", "case_reference": "C" * 500},
            "header.case_reference is 500 characters long, over the limit of 128",
        ),
    ],
    ids=["missing-legal-basis", "missing-case-reference", "unknown-code", "over-long-case-reference"],
)
def test_unjustified_send_is_refused_naming_the_field_and_stores_nothing(
    agencies: dict[str, AgencyClient],
    database: Database,
    options: dict[str, Any],
    expected: str,
) -> None:
    """A required field missing, a code off the policy's list or a field over its limit: INVALID_ARGUMENT naming
    the field (and the accepted codes), nothing stored, one bounded refusal entry that quotes no long value."""
    customs = agencies["FR-CUSTOMS"]
    entry = _refused_send(database, lambda: customs.send(["DE-BKA"], b"cash courier", **options), expected)
    assert entry["agency"] == "FR-CUSTOMS"
    assert "C" * 129 not in json.dumps(entry)


def test_disclosures_record_legal_basis_case_reference_and_the_asserted_operator(
    agencies: dict[str, AgencyClient],
    database: Database,
    broker: RunningBroker,
    pki: DevPki,
    tmp_path: Path,
) -> None:
    """A send, and the forward of it, record their justification; the operator is marked as asserted by the sender."""
    police, fiod = agencies["DE-BKA"], agencies["NL-FIOD"]
    customs = AgencyClient.from_dir(
        broker.target, pki.directory, "FR-CUSTOMS", operator="op-7f3a", keystore=tmp_path / "keys" / "FR-CUSTOMS"
    )
    with customs:
        sent = customs.send(
            ["DE-BKA"], b"cash courier", tlp="AMBER", legal_basis="NAPLES-II", case_reference="FR-2026-0042"
        )
    received = next(police.deliveries(timeout=10))
    police.ack(received)
    forwarded = police.forward(
        received, ["NL-FIOD"], legal_basis="LED-ART8", case_reference="BKA-77", operator="kommissar-12"
    )
    next(fiod.deliveries(timeout=10))
    accepted = {e["message_id"]: e["fields"] for e in _entries(database, "envelope.accepted")}
    assert {
        k: accepted[sent.message_id][k] for k in ("legal_basis", "case_reference", "operator", "operator_asserted_by")
    } == {
        "legal_basis": "NAPLES-II",
        "case_reference": "FR-2026-0042",
        "operator": "op-7f3a",
        "operator_asserted_by": "FR-CUSTOMS",
    }
    assert accepted[forwarded.message_id]["references"] == sent.message_id
    assert (
        accepted[forwarded.message_id]["legal_basis"],
        accepted[forwarded.message_id]["operator"],
        accepted[forwarded.message_id]["operator_asserted_by"],
    ) == ("LED-ART8", "kommissar-12", "DE-BKA")
    # The recipient sees the justification in the verified header.
    assert (received.header.legal_basis, received.header.case_reference) == ("NAPLES-II", "FR-2026-0042")


def test_isb_send_takes_the_justification_options(
    agencies: dict[str, AgencyClient],
    database: Database,
    broker: RunningBroker,
    pki: DevPki,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`isb send --legal-basis --case-ref --operator` carries all three into the audit entry."""
    certs = copy_pki(pki, tmp_path / "pki")  # the CLI keeps its trust state under --certs
    assert (
        isb(
            [
                "send",
                "--broker",
                broker.target,
                "--agency",
                "FR-CUSTOMS",
                "--certs",
                str(certs),
                "--to",
                "DE-BKA",
                "--tlp",
                "AMBER",
                "--text",
                "x",
                "--legal-basis",
                "REG-515-97",
                "--case-ref",
                "DOS-9",
                "--operator",
                "agent-4",
                "--json",
            ]
        )
        == 0
    )
    sent = json.loads(capsys.readouterr().out)
    fields = next(e["fields"] for e in _entries(database, "envelope.accepted") if e["message_id"] == sent["message_id"])
    assert (fields["legal_basis"], fields["case_reference"], fields["operator"]) == ("REG-515-97", "DOS-9", "agent-4")


def _auditor(
    broker: RunningBroker, pki: DevPki, legal_basis: str = "", case_reference: str = "", operator: str = ""
) -> AuditorClient:
    cert, private = pki.auditor
    key = load_pem_public_key(pki.audit_pub.read_bytes())
    assert isinstance(key, Ed25519PublicKey)
    return AuditorClient(
        broker.target,
        cert=cert,
        key=private,
        ca=pki.ca_cert,
        audit_key=key,
        legal_basis=legal_basis,
        case_reference=case_reference,
        operator=operator,
    )


def test_consultations_record_their_justification_in_the_verified_export(
    agencies: dict[str, AgencyClient],
    broker: RunningBroker,
    pki: DevPki,
    tmp_path: Path,
) -> None:
    """An auditor's query, proof and export and an agency's directory lookup show their justification in
    the export, which verifies offline."""
    police = AgencyClient.from_dir(
        broker.target, pki.directory, "DE-BKA", operator="kommissar-12", keystore=tmp_path / "keys" / "DE-BKA"
    )
    with police:
        police.recipient_keys(["FR-CUSTOMS"], refresh=True)
    with _auditor(broker, pki, legal_basis="LED-ART8", case_reference="DPO-2026-3", operator="dpo-1") as auditor:
        list(auditor.entries(event="envelope.accepted"))
        auditor.prove(0, auditor.checkpoint(fresh=True))
        auditor.checkpoint(fresh=True)
        export = tmp_path / "audit.jsonl"
        with export.open("wb") as stream:
            auditor.export(stream)
    verify_export(export, auditor.audit_key)
    events = [
        AuditEvent.from_entry_bytes(base64.b64decode(json.loads(line)["entry"]))[1]
        for line in export.read_text().splitlines()
        if '"type":"entry"' in line.replace(" ", "")
    ]
    queries = {str(e.fields["rpc"]): dict(e.fields) for e in events if e.event == "audit.query"}
    auditor_id = "spiffe://isb.dev/auditor/audit-1"
    for rpc in ("QueryEntries", "GetInclusionProof"):
        assert {k: queries[rpc][k] for k in ("legal_basis", "case_reference", "operator", "operator_asserted_by")} == {
            "legal_basis": "LED-ART8",
            "case_reference": "DPO-2026-3",
            "operator": "dpo-1",
            "operator_asserted_by": auditor_id,
        }
    lookups = [e for e in events if e.event == "directory.lookup" and e.fields.get("operator") == "kommissar-12"]
    assert lookups[0].agency == "DE-BKA"
    assert (lookups[0].fields["operator_asserted_by"], lookups[0].fields["agencies"]) == (
        "spiffe://isb.dev/agency/DE-BKA",
        ("FR-CUSTOMS",),
    )


def test_consultation_with_an_unknown_legal_basis_is_refused_and_audited(
    agencies: dict[str, AgencyClient],
    broker: RunningBroker,
    pki: DevPki,
    database: Database,
) -> None:
    """An export asked with a code outside the policy's list is INVALID_ARGUMENT listing the codes; one refusal."""
    refusals = len(_entries(database, "request.rejected"))
    with _auditor(broker, pki, legal_basis="CURIOSITY") as auditor, pytest.raises(RemoteError) as refused:
        list(auditor.entries())
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "legal_basis 'CURIOSITY' is not an accepted legal-basis code; accepted: LED-ART8" in refused.value.message
    entries = _entries(database, "request.rejected")
    assert len(entries) == refusals + 1
    assert entries[-1]["fields"]["rpc"] == "QueryEntries"


def test_watchlist_version_needs_its_required_legal_basis_and_records_it(
    agencies: dict[str, AgencyClient],
    database: Database,
) -> None:
    """A watchlist publication is a disclosure: refused without its required legal basis, recorded with it."""
    owner = agencies["FR-CUSTOMS"]
    watchlist = create_watchlist(
        owner, "FR-CUSTOMS/wanted", subscribers=["DE-BKA"], title="Wanted", entry_types=[payload_pb2.ENTITY_PERSON]
    )
    update = payload_pb2.WatchlistUpdate(watchlist_id="FR-CUSTOMS/wanted", version=1, snapshot=True)
    refusals = len(_entries(database, "request.rejected"))
    with pytest.raises(RemoteError) as refused:
        publish_update(owner, update, watchlist=watchlist)
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "header.legal_basis is required for WATCHLIST_UPDATE at AMBER" in refused.value.message
    assert len(_entries(database, "request.rejected")) == refusals + 1
    assert database.scalar("SELECT count(*) FROM watchlist_versions") == 0
    publish_update(owner, update, watchlist=watchlist, legal_basis="SIS-ART36", operator="op-9")
    (published,) = _entries(database, "watchlist.published")
    assert (
        published["fields"]["legal_basis"],
        published["fields"]["operator"],
        published["fields"]["operator_asserted_by"],
    ) == ("SIS-ART36", "op-9", "FR-CUSTOMS")
