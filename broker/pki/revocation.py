"""Revocation: revoking, publishing and verifying the CRL, and the broker's per-call `RevocationList`.

grpcio's Python API has no CRL hook (DESIGN.md section 2), so the broker checks every call's peer
serial against `RevocationList`, which follows the CRL file the CA re-signs on each revocation.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from broker.audit.events import CERTIFICATE_REVOKED
from broker.errors import ConfigurationError, FailedPrecondition, VerificationError
from broker.pki import _files
from broker.pki.crl import CRL_VALIDITY, parse_reason
from broker.pki.inspect import parse_serial
from broker.pki.store import CaDirectory, CertificateRecord, mark_revoked, publish_crl_locked

__all__ = ["RevocationList", "crl_der", "publish_crl", "revoke", "verify_crl"]

log = structlog.get_logger(__name__)


def publish_crl(ca: CaDirectory, *, validity: timedelta = CRL_VALIDITY) -> x509.CertificateRevocationList:
    """Re-sign crl.pem (refreshing its nextUpdate, `validity` from now) from the index."""
    with ca.locked():
        return publish_crl_locked(ca, validity=validity)


def revoke(ca: CaDirectory, serial: str | int, reason: str = "unspecified") -> CertificateRecord:
    """Revoke a certificate this CA issued and re-sign the CRL; the broker notices within ~50 ms."""
    number = parse_serial(serial) if isinstance(serial, str) else serial
    canonical = parse_reason(reason)
    with ca.locked():
        index = ca.read_index()
        record = index.find(number)
        if record.revoked_at is not None:
            raise FailedPrecondition(
                f"certificate {record.serial} ({record.spiffe_id}) is already revoked"
                f" ({record.revocation_reason}, {record.revoked_at.isoformat()})"
            )
        revoked = mark_revoked(record, canonical, datetime.now(UTC).replace(microsecond=0))
        index.put(revoked)
        ca.write_index(index)
        publish_crl_locked(ca)
    log.info(CERTIFICATE_REVOKED, serial=revoked.serial, spiffe_id=revoked.spiffe_id, reason=canonical)
    return revoked


def crl_der(ca: CaDirectory) -> bytes:
    """The published CRL in DER, as served to agencies and auditors."""
    crl = verify_crl(_read(ca.crl_path), _files.load_certificate(ca.issuing_cert_path))
    return crl.public_bytes(serialization.Encoding.DER)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read CRL {path}: {exc.strerror}") from exc


def verify_crl(data: bytes, issuer: x509.Certificate) -> x509.CertificateRevocationList:
    """Parse a PEM or DER CRL and check it was signed by `issuer`; raise `VerificationError` if not."""
    try:
        crl = x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----BEGIN") else x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise VerificationError(f"CRL does not parse: {exc}") from exc
    if crl.issuer != issuer.subject:
        raise VerificationError(
            f"CRL issuer {crl.issuer.rfc4514_string()!r} is not {issuer.subject.rfc4514_string()!r}"
        )
    public_key = issuer.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not crl.is_signature_valid(public_key):
        raise VerificationError(f"CRL signature does not verify with {issuer.subject.rfc4514_string()!r}")
    return crl


@dataclass(frozen=True, slots=True)
class _FileState:
    mtime_ns: int
    size: int
    inode: int


class RevocationList:
    """The revoked serials of one CRL file, reloaded when the file changes.

    `is_revoked` is called on every RPC: it is a set lookup plus, at most every `check_interval`
    seconds, one `os.stat`. A changed file is re-verified before use; one that does not verify
    (half-written, forged, signed by another CA) is logged and the previous list stays in force,
    so an attacker who can write the file can at worst freeze, never shrink, the list.
    """

    def __init__(self, crl_path: Path, issuer: x509.Certificate, *, check_interval: float = 0.05) -> None:
        """Load and verify `crl_path`; raise `ConfigurationError` if it is missing or invalid."""
        self._path = crl_path
        self._issuer = issuer
        self._check_interval = check_interval
        self._lock = threading.Lock()
        self._generation = 0
        self._next_check = 0.0
        state = self._stat()
        if state is None:
            raise ConfigurationError(f"CRL {crl_path} does not exist")
        try:
            crl = verify_crl(_read(crl_path), issuer)
        except VerificationError as exc:
            raise ConfigurationError(f"CRL {crl_path} is unusable: {exc}") from exc
        self._state: _FileState | None = state
        self._revoked = _serials(crl)
        self._dates = _dates(crl)
        self._der = crl.public_bytes(serialization.Encoding.DER)
        self._next_update = crl.next_update_utc
        self._next_check = time.monotonic() + check_interval

    @property
    def generation(self) -> int:
        """Increases on every successful reload: lets the broker re-check open streams only on change."""
        self.refresh()
        return self._generation

    @property
    def revoked_serials(self) -> frozenset[int]:
        """The serials currently revoked."""
        self.refresh()
        return self._revoked

    @property
    def revocation_dates(self) -> Mapping[int, datetime]:
        """Serial -> when it was revoked, as the CRL says (the retention of revoked key bundles counts from it)."""
        self.refresh()
        return self._dates

    @property
    def der(self) -> bytes:
        """The CRL in force, DER, exactly as the CA signed it: what GetRevocationList serves."""
        self.refresh()
        return self._der

    def is_revoked(self, serial: int) -> bool:
        """Whether `serial` is on the current CRL (reloading it first if the file changed)."""
        self.refresh()
        return serial in self._revoked

    def refresh(self, *, force: bool = False) -> None:
        """Reload the CRL if its file changed since the last look (rate-limited unless `force`)."""
        now = time.monotonic()
        if not force and now < self._next_check:
            return
        with self._lock:
            self._next_check = now + self._check_interval
            state = self._stat()
            if state is None:
                if self._state is not None:  # log the disappearance once, not every 50 ms
                    log.error("pki.crl_missing", path=str(self._path))
                self._state = None
                return
            if state == self._state and not force:
                return
            self._state = state
            crl = self._load_verified()
            if crl is None:
                return
            revoked = _serials(crl)
            # Swap in the new set with one assignment: readers on other threads see old or new.
            self._revoked = revoked
            self._dates = _dates(crl)
            self._der = crl.public_bytes(serialization.Encoding.DER)
            self._next_update = crl.next_update_utc
            self._generation += 1
            log.info("pki.crl_loaded", path=str(self._path), revoked=len(revoked), generation=self._generation)
            if self._next_update is not None and self._next_update < datetime.now(UTC):
                log.warning("pki.crl_stale", path=str(self._path), next_update=self._next_update.isoformat())

    def _load_verified(self) -> x509.CertificateRevocationList | None:
        try:
            return verify_crl(_read(self._path), self._issuer)
        except (VerificationError, ConfigurationError) as exc:
            rejection = str(exc)
        # Logged outside the handler: the message says what failed; a traceback would add nothing.
        log.error("pki.crl_rejected", path=str(self._path), error=rejection)
        return None

    def _stat(self) -> _FileState | None:
        try:
            result = os.stat(self._path)
        except FileNotFoundError:
            return None
        return _FileState(result.st_mtime_ns, result.st_size, result.st_ino)


def _serials(crl: x509.CertificateRevocationList) -> frozenset[int]:
    return frozenset(entry.serial_number for entry in crl)


def _dates(crl: x509.CertificateRevocationList) -> Mapping[int, datetime]:
    return MappingProxyType({entry.serial_number: entry.revocation_date_utc for entry in crl})
