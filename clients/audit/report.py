"""The data protection officer's report (`isb audit report --from --to`), from a verified export only.

Directive 2016/680 Art. 25 asks for logs of disclosures and consultations with their justification;
Art. 5 for erasure and periodic review. The report counts, over a period, what the audit log says:

- disclosures per recipient agency and legal basis (`envelope.accepted` but RECALLs, and
  `watchlist.published`), with how many carried a case reference;
- consultations per caller and legal basis (`audit.query` by auditors, `directory.lookup` by agencies;
  not checkpoint or consistency-proof requests, which show no entry);
- purges (`retention.purged`, one entry per purge run) and erasures confirmed by recipients
  (`receipt.received` with status ERASED);
- entries due for review (`watchlist.review_notice`: the owner was told entries reach their review date).

Every number comes from entries whose inclusion under a signed checkpoint was verified first
(`report_from_export`): an auditor given the same export and audit key gets the same report.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.audit.events import AuditEvent
from broker.protocol.witness_policy import Policy
from clients.audit.exportfile import ExportEntry
from clients.audit.verify import VerifyReport, verify_export

__all__ = ["PURGE_EVENT", "REVIEW_EVENT", "SECTIONS", "DpoReport", "ReportBuilder", "ReportRow", "report_from_export"]

#: docs/protocol.md section 22, retention: one entry per purge run, one per review notice.
PURGE_EVENT: Final = "retention.purged"
REVIEW_EVENT: Final = "watchlist.review_notice"
SECTIONS: Final = ("disclosures", "consultations", "purges", "erasures", "reviews")
NONE: Final = "(none)"  # the legal basis of a disclosure or consultation that gave none
_PURGED = ("envelopes", "attachments", "receipts", "key_bundles")
_WITH_REFERENCE = " with case reference"
_NO_DATA = frozenset({"GetCheckpoint", "GetConsistencyProof"})  # tree heads and hashes: no entry is consulted


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One line of the report: in `section`, `count` events about `subject` under `legal_basis`."""

    section: str
    subject: str
    legal_basis: str
    count: int
    detail: str

    def as_dict(self) -> dict[str, str | int]:
        """The row as CSV/JSON members."""
        return {
            "section": self.section,
            "subject": self.subject,
            "legal_basis": self.legal_basis,
            "count": self.count,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class DpoReport:
    """The report over [start, end), and the verified checkpoint it rests on."""

    start: dt.datetime
    end: dt.datetime
    tree_size: int
    root_hash: bytes
    rows: tuple[ReportRow, ...]

    def section(self, name: str) -> list[ReportRow]:
        """The rows of one section, in report order."""
        return [row for row in self.rows if row.section == name]


def report_from_export(
    path: Path, key: Ed25519PublicKey | str, start: dt.datetime, end: dt.datetime, *, policy: Policy | None = None
) -> DpoReport:
    """The report over [start, end) from the export at `path`, verified in the same pass.

    Entries are counted as `verify_export` checks them; the report is returned only if the whole
    export then verifies (every checkpoint, no unsigned tail), so each number rests on entries
    included under a signed checkpoint.
    """
    builder = ReportBuilder(start, end)

    def count(record: ExportEntry) -> None:
        builder.add(*AuditEvent.from_entry_bytes(record.entry))

    verified = verify_export(path, key, policy=policy, on_entry=count)
    return builder.finish(verified)


def _basis(event: AuditEvent) -> str:
    return str(event.fields.get("legal_basis", NONE))


def _strings(value: object) -> list[str]:
    return [str(item) for item in value] if isinstance(value, tuple | list) else []


def _integer(value: object) -> int:
    return value if isinstance(value, int) else 0


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{name}={count}" for name, count in sorted(counter.items()))


class ReportBuilder:
    """Counts the report's sections over the entries timed in [start, end), one entry at a time."""

    def __init__(self, start: dt.datetime, end: dt.datetime) -> None:
        self.start, self.end = start, end
        self._disclosures: dict[tuple[str, str], Counter[str]] = {}
        self._consultations: dict[tuple[str, str], Counter[str]] = {}
        self._rows: list[ReportRow] = []

    def _disclosed(self, recipient: str, event: AuditEvent, kind: str) -> None:
        tally = self._disclosures.setdefault((recipient, _basis(event)), Counter())
        tally[kind] += 1
        tally[_WITH_REFERENCE] += "case_reference" in event.fields

    def add(self, index: int, event: AuditEvent) -> None:
        """Count one entry (ignored outside the period or of another event)."""
        if not self.start <= event.time < self.end:
            return
        fields = event.fields
        if event.event == "envelope.accepted" and fields.get("kind") != "RECALL":
            for recipient in _strings(fields.get("recipients")):
                self._disclosed(recipient, event, str(fields.get("kind", "?")))
        elif event.event == "watchlist.published":
            for recipient in _strings(fields.get("wrapped_for")):
                if recipient != event.agency:  # the owner's own copy is not a disclosure
                    self._disclosed(recipient, event, "WATCHLIST_UPDATE")
        elif event.event in ("audit.query", "directory.lookup") and fields.get("rpc") not in _NO_DATA:
            rpc = str(fields.get("rpc", "GetDirectory"))
            self._consultations.setdefault((event.actor, _basis(event)), Counter())[rpc] += 1
        elif event.event == PURGE_EVENT:
            purged = Counter({what: _integer(fields.get(what)) for what in _PURGED})
            rules = ", ".join(_strings(fields.get("rules"))) or "none"
            subject = f"entry {index} at {event.time:%Y-%m-%d %H:%M}Z ({fields.get('trigger', '?')})"
            self._rows.append(
                ReportRow(
                    "purges", subject, "", purged["envelopes"], f"{_counts(+purged) or 'nothing'}; rules: {rules}"
                )
            )
        elif event.event == "receipt.received" and fields.get("status") == "ERASED":
            self._rows.append(
                ReportRow(
                    "erasures",
                    str(event.agency),
                    "",
                    1,
                    f"erased {fields.get('erased', '?')} (RECALL {event.message_id})",
                )
            )
        elif event.event == REVIEW_EVENT:
            due = ", ".join(_strings(fields.get("due")))
            self._rows.append(
                ReportRow(
                    "reviews",
                    f"{fields.get('watchlist_id', '?')} ({event.agency})",
                    "",
                    _integer(fields.get("entries")),
                    f"due: {due}",
                )
            )

    def finish(self, verified: VerifyReport) -> DpoReport:
        """The report, resting on the checkpoint `verified` established."""
        rows = list(self._rows)
        for (recipient, basis), tally in sorted(self._disclosures.items()):
            with_reference = tally.pop(_WITH_REFERENCE)
            rows.append(
                ReportRow(
                    "disclosures",
                    recipient,
                    basis,
                    sum(tally.values()),
                    f"{_counts(tally)}; with case reference: {with_reference}",
                )
            )
        for (actor, basis), tally in sorted(self._consultations.items()):
            rows.append(ReportRow("consultations", actor, basis, sum(tally.values()), _counts(tally)))
        ordered = sorted(rows, key=lambda row: SECTIONS.index(row.section))  # stable within a section
        return DpoReport(self.start, self.end, verified.tree_size, verified.root_hash, tuple(ordered))
