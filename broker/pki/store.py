"""A CA kept in a directory: its keys, its issued-certificate index and its CRL.

Layout (the dev PKI of `broker.pki.dev` uses the same one, so `isb pki revoke` works on it too):

    ca.json            trust domain and whether an intermediate issues
    ca.crt, ca.key     the root (with an intermediate, ca.key may be moved offline after `init`)
    intermediate.crt, intermediate.key, ca-chain.pem   only with an intermediate
    crl.pem            the CRL signed by the issuing CA
    index.json         every certificate issued, like openssl's index.txt
    issued/<serial>.pem
"""

from __future__ import annotations

import enum
import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from broker.errors import ConfigurationError, NotFound
from broker.identity import Role
from broker.pki import _files
from broker.pki.authority import CertificateAuthority, create_intermediate_ca, create_root_ca
from broker.pki.crl import CRL_VALIDITY, sign_crl
from broker.pki.inspect import certificate_identity, fingerprint_sha256, parse_serial, serial_hex

__all__ = [
    "CaDirectory",
    "CertificateIndex",
    "CertificateRecord",
    "CertificateStatus",
    "list_certificates",
    "publish_crl_locked",
]

_FORMAT_VERSION = 1


class CertificateStatus(enum.StrEnum):
    """Where a certificate stands: revocation wins over expiry."""

    VALID = "valid"
    REVOKED = "revoked"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class CertificateRecord:
    """One line of the issued-certificate index."""

    serial: str
    fingerprint_sha256: str
    spiffe_id: str
    role: Role
    name: str
    not_before: datetime
    not_after: datetime
    issued_at: datetime
    revoked_at: datetime | None = None
    revocation_reason: str | None = None  # RFC 5280 name, e.g. "keyCompromise"
    renewed_from: str | None = None  # serial of the predecessor for `pki renew`

    def status(self, now: datetime | None = None) -> CertificateStatus:
        """The status at `now` (default: the current time)."""
        if self.revoked_at is not None:
            return CertificateStatus.REVOKED
        if (now or datetime.now(UTC)) >= self.not_after:
            return CertificateStatus.EXPIRED
        return CertificateStatus.VALID

    @property
    def serial_number(self) -> int:
        """The serial as an integer."""
        return int(self.serial, 16)

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored in index.json."""
        return {
            "serial": self.serial,
            "fingerprint_sha256": self.fingerprint_sha256,
            "spiffe_id": self.spiffe_id,
            "role": self.role.value,
            "name": self.name,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "issued_at": self.issued_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "revocation_reason": self.revocation_reason,
            "renewed_from": self.renewed_from,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> CertificateRecord:
        """Parse one stored record."""
        revoked = obj.get("revoked_at")
        return cls(
            serial=str(obj["serial"]),
            fingerprint_sha256=str(obj["fingerprint_sha256"]),
            spiffe_id=str(obj["spiffe_id"]),
            role=Role(obj["role"]),
            name=str(obj["name"]),
            not_before=datetime.fromisoformat(obj["not_before"]),
            not_after=datetime.fromisoformat(obj["not_after"]),
            issued_at=datetime.fromisoformat(obj["issued_at"]),
            revoked_at=datetime.fromisoformat(revoked) if revoked else None,
            revocation_reason=obj.get("revocation_reason"),
            renewed_from=obj.get("renewed_from"),
        )


@dataclass(slots=True)
class CertificateIndex:
    """The whole index: records in issue order and the number of the last CRL signed."""

    records: list[CertificateRecord] = field(default_factory=list)
    crl_number: int = 0

    def find(self, serial: int) -> CertificateRecord:
        """The record of `serial`, or `NotFound`."""
        for record in self.records:
            if record.serial_number == serial:
                return record
        raise NotFound(f"no certificate with serial {serial_hex(serial)} was issued by this CA")

    def put(self, record: CertificateRecord) -> None:
        """Replace the record with the same serial, or append a new one."""
        for position, existing in enumerate(self.records):
            if existing.serial == record.serial:
                self.records[position] = record
                return
        self.records.append(record)


@dataclass(frozen=True, slots=True)
class CaDirectory:
    """A CA on disk. Create with `init`, open with `open`; mutate only under `locked()`."""

    path: Path
    trust_domain: str
    has_intermediate: bool = False

    @property
    def root_cert_path(self) -> Path:
        """The trust anchor: what brokers and clients put in their CA bundle."""
        return self.path / "ca.crt"

    @property
    def root_key_path(self) -> Path:
        """The root key (with an intermediate, keep it offline after `init`)."""
        return self.path / "ca.key"

    @property
    def intermediate_cert_path(self) -> Path:
        """The intermediate CA certificate, if any."""
        return self.path / "intermediate.crt"

    @property
    def intermediate_key_path(self) -> Path:
        """The intermediate CA key, if any."""
        return self.path / "intermediate.key"

    @property
    def chain_path(self) -> Path:
        """Intermediate then root, for `openssl crl -verify -CAfile` when the intermediate signs."""
        return self.path / "ca-chain.pem"

    @property
    def issuing_cert_path(self) -> Path:
        """The certificate of the CA that signs leaves and the CRL."""
        return self.intermediate_cert_path if self.has_intermediate else self.root_cert_path

    @property
    def crl_path(self) -> Path:
        """The published CRL (PEM)."""
        return self.path / "crl.pem"

    @property
    def index_path(self) -> Path:
        """The issued-certificate index."""
        return self.path / "index.json"

    @property
    def issued_dir(self) -> Path:
        """Copies of every certificate issued, named by serial."""
        return self.path / "issued"

    @classmethod
    def init(cls, path: Path, trust_domain: str, *, intermediate: bool = False) -> CaDirectory:
        """Create a new CA in `path`; refuse if one is there already. The CRL is published empty."""
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        ca = cls(path, trust_domain, intermediate)
        with ca.locked():
            # Checked under the lock: two concurrent inits must not both believe the directory empty.
            for existing in (path / "ca.json", ca.root_cert_path, ca.root_key_path):
                if existing.exists():
                    raise ConfigurationError(f"refusing to overwrite the existing CA in {path} ({existing.name})")
            root = create_root_ca(trust_domain)
            # Key first: a crash leaves a key without certificate, never a certificate whose key is lost.
            _files.write_private_key(ca.root_key_path, root.private_key)
            _files.write_public_file(ca.root_cert_path, _files.certificate_pem(root.certificate))
            if intermediate:
                issuing = create_intermediate_ca(root)
                _files.write_private_key(ca.intermediate_key_path, issuing.private_key)
                _files.write_public_file(ca.intermediate_cert_path, _files.certificate_pem(issuing.certificate))
                _files.write_public_file(ca.chain_path, _files.certificate_pem(*issuing.chain, root.root))
            ca.issued_dir.mkdir(exist_ok=True, mode=0o755)
            ca.write_index(CertificateIndex())
            meta = {"version": _FORMAT_VERSION, "trust_domain": trust_domain, "intermediate": intermediate}
            _files.write_public_file(path / "ca.json", (json.dumps(meta, indent=2) + "\n").encode())
            publish_crl_locked(ca)
        return ca

    @classmethod
    def open(cls, path: Path) -> CaDirectory:
        """Open the CA in `path`, raising `ConfigurationError` if there is none."""
        meta_path = path / "ca.json"
        try:
            meta = json.loads(meta_path.read_text())
            return cls(path, str(meta["trust_domain"]), bool(meta.get("intermediate", False)))
        except FileNotFoundError as exc:
            raise ConfigurationError(
                f"{path} is not a CA directory (no ca.json; create one with `isb pki init`)"
            ) from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(f"{meta_path} is unreadable or malformed: {exc}") from exc

    def load_authority(self) -> CertificateAuthority:
        """The issuing CA with its key (the intermediate when there is one)."""
        root = _files.load_certificate(self.root_cert_path)
        if not self.has_intermediate:
            key = _files.load_private_key(self.root_key_path)
            return CertificateAuthority(self.trust_domain, root, _require_ec(key, self.root_key_path), root)
        cert = _files.load_certificate(self.intermediate_cert_path)
        key = _files.load_private_key(self.intermediate_key_path)
        return CertificateAuthority(
            self.trust_domain, cert, _require_ec(key, self.intermediate_key_path), root, chain=(cert,)
        )

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the directory's exclusive lock (CLI and admin service may run at once). Not re-entrant."""
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def read_index(self) -> CertificateIndex:
        """The issued-certificate index."""
        try:
            raw = json.loads(self.index_path.read_text())
            return CertificateIndex(
                records=[CertificateRecord.from_json(item) for item in raw["certificates"]],
                crl_number=int(raw["crl_number"]),
            )
        except FileNotFoundError:
            return CertificateIndex()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(f"{self.index_path} is unreadable or malformed: {exc}") from exc

    def write_index(self, index: CertificateIndex) -> None:
        """Atomically replace the index (caller holds the lock)."""
        raw = {
            "version": _FORMAT_VERSION,
            "crl_number": index.crl_number,
            "certificates": [record.to_json() for record in index.records],
        }
        _files.write_public_file(self.index_path, (json.dumps(raw, indent=2) + "\n").encode())

    def record_issued(self, cert: x509.Certificate, *, renewed_from: str | None = None) -> CertificateRecord:
        """Add a just-issued certificate to the index and `issued/` (caller holds the lock)."""
        identity = certificate_identity(cert, self.trust_domain)
        record = CertificateRecord(
            serial=serial_hex(cert),
            fingerprint_sha256=fingerprint_sha256(cert),
            spiffe_id=str(identity),
            role=identity.role,
            name=identity.name,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            issued_at=datetime.now(UTC),
            renewed_from=renewed_from,
        )
        self.issued_dir.mkdir(exist_ok=True, mode=0o755)
        _files.write_public_file(self.issued_dir / f"{record.serial}.pem", _files.certificate_pem(cert))
        index = self.read_index()
        index.put(record)
        self.write_index(index)
        return record

    def issued_certificate(self, serial: str | int) -> x509.Certificate:
        """The stored copy of an issued certificate."""
        number = parse_serial(serial) if isinstance(serial, str) else serial
        path = self.issued_dir / f"{serial_hex(number)}.pem"
        if not path.exists():
            raise NotFound(f"no certificate with serial {serial_hex(number)} was issued by this CA")
        return _files.load_certificate(path)


def _require_ec(key: object, path: Path) -> ec.EllipticCurvePrivateKey:
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigurationError(f"{path} is not an ECDSA CA key")
    return key


def list_certificates(ca: CaDirectory) -> list[CertificateRecord]:
    """Every certificate the CA issued, in issue order."""
    return list(ca.read_index().records)


def mark_revoked(record: CertificateRecord, reason: str, when: datetime) -> CertificateRecord:
    """The record with revocation set (internal to `broker.pki.revocation`)."""
    return replace(record, revoked_at=when, revocation_reason=reason)


def publish_crl_locked(ca: CaDirectory, *, validity: timedelta = CRL_VALIDITY) -> x509.CertificateRevocationList:
    """Re-sign crl.pem from the index with the next CRL number (caller holds `ca.locked()`)."""
    authority = ca.load_authority()
    index = ca.read_index()
    index.crl_number += 1
    crl = sign_crl(authority, index.records, index.crl_number, validity=validity)
    # Index first: a CRL number must never be reused, even if writing the CRL then fails.
    ca.write_index(index)
    _files.write_public_file(ca.crl_path, crl.public_bytes(serialization.Encoding.PEM))
    return crl
