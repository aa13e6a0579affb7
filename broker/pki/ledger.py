"""The CA ledger: certificates issued or revoked with the offline CLI (`isb pki`) also become audit
entries, so the audit log records every certificate event (DESIGN.md section 8), whoever made it.

The broker cannot know which admin ran an offline command; those entries name the CA directory
as their actor. Events made through AdminService are audited there, with the admin's identity,
and are not repeated here (the ledger recognises their serials in the log).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection

from broker.audit import AuditEvent
from broker.audit.events import CERTIFICATE_ISSUED, CERTIFICATE_REVOKED
from broker.audit.tables import entries_table
from broker.errors import ConfigurationError
from broker.identity import Role
from broker.pki.store import CaDirectory, CertificateRecord, list_certificates
from broker.store.writer import Batch, Writer

log = structlog.get_logger(__name__)

ISSUED, REVOKED = CERTIFICATE_ISSUED, CERTIFICATE_REVOKED


def audited_serials(conn: Connection) -> dict[str, set[str]]:
    """Serials already in the log, per event (certificate events are few: one per issuance)."""
    seen: dict[str, set[str]] = {ISSUED: set(), REVOKED: set()}
    rows = conn.execute(
        sa.select(entries_table.c.event, entries_table.c.entry).where(entries_table.c.event.in_([ISSUED, REVOKED]))
    )
    for event, entry in rows:
        serial = json.loads(bytes(entry)).get("fields", {}).get("serial")
        if serial:
            seen[event].add(serial)
    return seen


@dataclass
class RecordCaEvents:
    """Writer operation: audit CA events not yet in the log (checked again inside the transaction)."""

    records: list[CertificateRecord]
    actor: str

    def stage(self, batch: Batch) -> int:
        seen = audited_serials(batch.conn)
        written = 0
        for r in self.records:
            agency = r.name if r.role is Role.AGENCY else None
            if r.serial not in seen[ISSUED]:
                batch.audit(
                    AuditEvent(
                        event=ISSUED,
                        actor=self.actor,
                        time=batch.now,
                        agency=agency,
                        fields={
                            "serial": r.serial,
                            "spiffe_id": r.spiffe_id,
                            "fingerprint": r.fingerprint_sha256,
                            "via": "offline CA",
                        },
                    )
                )
                written += 1
            if r.revoked_at is not None and r.serial not in seen[REVOKED]:
                batch.audit(
                    AuditEvent(
                        event=REVOKED,
                        actor=self.actor,
                        time=batch.now,
                        agency=agency,
                        fields={
                            "serial": r.serial,
                            "spiffe_id": r.spiffe_id,
                            "reason": r.revocation_reason or "unspecified",
                            "via": "offline CA",
                        },
                    )
                )
                written += 1
        return written


class CaLedger:
    """Watches the CA directory's index and audits what the offline CLI did."""

    def __init__(self, ca_dir: Path, writer: Writer) -> None:
        self._ca_dir = ca_dir
        self._writer = writer
        self._stamp: tuple[int, int] | None = None
        # AdminService holds this while it changes the CA and audits the change with the admin's
        # identity, so the ledger never mistakes that change for an offline one.
        self.lock = asyncio.Lock()

    async def sync(self) -> int:
        """Audit new issuances and revocations of the index; return how many entries were written."""
        async with self.lock:
            return await self._sync()

    async def _sync(self) -> int:
        index = self._ca_dir / "index.json"
        try:
            stat = index.stat()
        except FileNotFoundError:
            return 0  # no CA directory here (the CA is offline): nothing to mirror
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return 0
        try:
            records = await asyncio.get_running_loop().run_in_executor(
                None, lambda: list_certificates(CaDirectory.open(self._ca_dir))
            )
        except ConfigurationError as exc:
            log.warning("ca_ledger.unreadable", error=str(exc))
            return 0
        written: int = await self._writer.submit(RecordCaEvents(records, actor=f"ca:{self._ca_dir.name}"))
        self._stamp = stamp
        if written:
            log.info("ca_ledger.audited", entries=written)
        return written

    async def run(self, interval: float = 1.0) -> None:
        """Sync now and then every `interval` seconds."""
        while True:
            try:
                await self.sync()
            except Exception:  # keep watching; the cause is logged
                log.exception("ca_ledger.failed")
            await asyncio.sleep(interval)


__all__ = ["CaLedger", "RecordCaEvents", "audited_serials"]
