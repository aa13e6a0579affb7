"""The DPO report counts disclosures, consultations, purges, erasures and reviews from audit events."""

from __future__ import annotations

import datetime as dt

from broker.audit import AuditEvent
from clients.audit.report import ReportBuilder
from clients.audit.verify import VerifyReport

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
VERIFIED = VerifyReport(
    origin="isb.dev/audit", entries=9, checkpoints=1, tree_size=9, root_hash=bytes(32), unverified_entries=0
)


def _event(
    event: str,
    minutes: int = 0,
    *,
    actor: str = "spiffe://isb.dev/agency/FR-CUSTOMS",
    agency: str | None = None,
    message_id: str | None = None,
    fields: dict[str, str | int | list[str]] | None = None,
) -> AuditEvent:
    return AuditEvent(
        event, actor, T0 + dt.timedelta(minutes=minutes), message_id=message_id, agency=agency, fields=fields or {}
    )


EVENTS = [
    _event(
        "envelope.accepted",
        agency="FR-CUSTOMS",
        message_id="m1",
        fields={
            "kind": "ALERT",
            "recipients": ["DE-BKA", "NL-FIOD"],
            "legal_basis": "NAPLES-II",
            "case_reference": "C-1",
        },
    ),
    _event(
        "envelope.accepted",
        agency="FR-CUSTOMS",
        message_id="m2",
        fields={"kind": "HIT_REPORT", "recipients": ["DE-BKA"], "legal_basis": "NAPLES-II"},
    ),
    _event(
        "envelope.accepted", agency="FR-CUSTOMS", message_id="m3", fields={"kind": "RECALL", "recipients": ["DE-BKA"]}
    ),
    _event("watchlist.published", agency="DE-BKA", fields={"wrapped_for": ["DE-BKA", "FR-CUSTOMS"]}),
    _event(
        "audit.query", actor="spiffe://isb.dev/auditor/audit-1", fields={"rpc": "Export", "legal_basis": "LED-ART8"}
    ),
    _event("directory.lookup", actor="spiffe://isb.dev/agency/DE-BKA", agency="DE-BKA", fields={"asked": 1}),
    _event(
        "retention.purged",
        actor="broker:node-1",
        fields={
            "envelopes": 3,
            "attachments": 1,
            "receipts": 0,
            "key_bundles": 0,
            "rules": ["envelopes:retention.default:P3Y:3"],
            "trigger": "schedule",
        },
    ),
    _event(
        "receipt.received",
        actor="spiffe://isb.dev/agency/DE-BKA",
        agency="DE-BKA",
        message_id="m3",
        fields={"status": "ERASED", "erased": "m1"},
    ),
    _event(
        "watchlist.review_notice",
        actor="broker:node-1",
        agency="DE-BKA",
        fields={"watchlist_id": "WL-1", "due": ["2026-07-01=2"], "entries": 2},
    ),
    _event("envelope.accepted", minutes=120, agency="FR-CUSTOMS", fields={"kind": "ALERT", "recipients": ["X-Y"]}),
]


def _report() -> list[tuple[str, str, str, int, str]]:
    builder = ReportBuilder(T0, T0 + dt.timedelta(hours=1))
    for index, event in enumerate(EVENTS):
        builder.add(index, event)
    return [(r.section, r.subject, r.legal_basis, r.count, r.detail) for r in builder.finish(VERIFIED).rows]


def test_report_counts_each_section_in_order_within_the_period() -> None:
    """Disclosures per recipient and basis (no RECALL, no owner copy), consultations per caller, then the rest."""
    assert _report() == [
        ("disclosures", "DE-BKA", "NAPLES-II", 2, "ALERT=1, HIT_REPORT=1; with case reference: 1"),
        ("disclosures", "FR-CUSTOMS", "(none)", 1, "WATCHLIST_UPDATE=1; with case reference: 0"),
        ("disclosures", "NL-FIOD", "NAPLES-II", 1, "ALERT=1; with case reference: 1"),
        ("consultations", "spiffe://isb.dev/agency/DE-BKA", "(none)", 1, "GetDirectory=1"),
        ("consultations", "spiffe://isb.dev/auditor/audit-1", "LED-ART8", 1, "Export=1"),
        (
            "purges",
            "entry 6 at 2026-03-01 12:00Z (schedule)",
            "",
            3,
            "attachments=1, envelopes=3; rules: envelopes:retention.default:P3Y:3",
        ),
        ("erasures", "DE-BKA", "", 1, "erased m1 (RECALL m3)"),
        ("reviews", "WL-1 (DE-BKA)", "", 2, "due: 2026-07-01=2"),
    ]
