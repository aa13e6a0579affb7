"""The CA as the broker runs it for AdminService: issuance and revocation with the admin's audit entry.

The CA directory's files are written with locks and fsync, off the event loop; one lock serialises
the broker's own CA work with the ledger's (`broker.pki.ledger`), so that every certificate event
is audited once, with the admin who caused it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography import x509

from broker.audit import AuditEvent
from broker.audit.events import CERTIFICATE_ISSUED, CERTIFICATE_REVOKED
from broker.errors import BrokerError, FailedPrecondition, InvalidRequest
from broker.identity import Principal, Role
from broker.pki.csr import verify_csr
from broker.pki.issuance import chain_pem, issue_from_csr
from broker.pki.revocation import RevocationList, crl_der, revoke
from broker.pki.store import CaDirectory, CertificateRecord, list_certificates
from broker.store.writer import RecordEvent, Writer

T = TypeVar("T")


def open_ca(path: Path) -> CaDirectory:
    """The CA directory the broker issues and revokes with; FAILED_PRECONDITION if it holds no CA."""
    try:
        return CaDirectory.open(path)
    except BrokerError as exc:
        raise FailedPrecondition(f"this broker has no usable CA directory ({exc}); use `isb pki` offline") from exc


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate the online CA issued: the certificate, its chain (PEM) and its record."""

    certificate: x509.Certificate
    chain_pem: bytes
    record: CertificateRecord


class OnlineCa:
    """Issues and revokes with the CA directory `ca_dir`, each change audited with its admin."""

    def __init__(self, ca_dir: Path, lock: asyncio.Lock, writer: Writer, revocations: RevocationList) -> None:
        self._ca_dir = ca_dir
        self._lock = lock
        self._writer = writer
        self._revocations = revocations

    def _ca(self) -> CaDirectory:
        return open_ca(self._ca_dir)

    async def _file_work(self, fn: Callable[[], T]) -> T:
        # CA files are written with locks and fsync: keep that off the event loop.
        return await asyncio.get_running_loop().run_in_executor(None, fn)

    async def _audit(self, caller: Principal, event: str, record: CertificateRecord, **fields: str) -> None:
        await self._writer.submit(
            RecordEvent(
                AuditEvent(
                    event=event,
                    actor=str(caller),
                    time=dt.datetime.now(dt.UTC),
                    agency=record.name if record.role is Role.AGENCY else None,
                    fields={"serial": record.serial, "spiffe_id": record.spiffe_id, **fields, "via": "AdminService"},
                )
            )
        )

    async def issue(
        self, caller: Principal, csr_pem: bytes, lifetime_days: int | None, *, for_agency: str | None = None
    ) -> Issued:
        """Issue a certificate for `csr_pem`; with `for_agency`, only if the CSR is that agency's."""
        ca = self._ca()
        if for_agency is not None:
            request_id = verify_csr(csr_pem, ca.trust_domain).spiffe_id
            if request_id.role is not Role.AGENCY or request_id.name != for_agency:
                raise InvalidRequest(f"registry data names {for_agency} but the CSR is for {request_id}")
        async with self._lock:
            cert, record = await self._file_work(lambda: issue_from_csr(ca, csr_pem, lifetime_days))
            await self._audit(caller, CERTIFICATE_ISSUED, record, fingerprint=record.fingerprint_sha256)
        return Issued(cert, chain_pem(ca, cert), record)

    async def revoke(self, caller: Principal, serial: str, reason: str) -> CertificateRecord:
        """Revoke `serial` for `reason`; the broker enforces it from its very next call."""
        ca = self._ca()
        async with self._lock:
            record = await self._file_work(lambda: revoke(ca, serial, reason))
            # Take effect on the very next call, without waiting for the file watch.
            self._revocations.refresh(force=True)
            await self._audit(caller, CERTIFICATE_REVOKED, record, reason=reason)
        return record

    async def certificates(self) -> list[CertificateRecord]:
        """Every certificate the CA issued."""
        ca = self._ca()
        return await self._file_work(lambda: list_certificates(ca))

    async def crl(self) -> bytes:
        """The CA's current CRL (DER)."""
        ca = self._ca()
        return await self._file_work(lambda: crl_der(ca))


__all__ = ["Issued", "OnlineCa", "open_ca"]
