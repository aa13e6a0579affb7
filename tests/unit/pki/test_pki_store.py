"""The CA directory: creation, refusal to overwrite, key modes, record status."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker.errors import ConfigurationError, NotFound
from broker.identity import Role
from broker.pki.store import CaDirectory, CertificateRecord, CertificateStatus
from tests.openssl_support import OpenSsl

TRUST_DOMAIN = "isb.test"


def test_init_refuses_to_overwrite_an_existing_ca(ca: CaDirectory) -> None:
    """A second init in the same directory raises and leaves the CA key as it was."""
    key_before = ca.root_key_path.read_bytes()
    with pytest.raises(ConfigurationError, match="refusing to overwrite"):
        CaDirectory.init(ca.path, TRUST_DOMAIN)
    assert ca.root_key_path.read_bytes() == key_before


def test_ca_keys_have_mode_0600(intermediate_ca: CaDirectory) -> None:
    """Root and intermediate keys are created with mode 0600."""
    modes = {
        stat.S_IMODE(p.stat().st_mode) for p in (intermediate_ca.root_key_path, intermediate_ca.intermediate_key_path)
    }
    assert modes == {0o600}


def test_open_reads_back_what_init_wrote(intermediate_ca: CaDirectory) -> None:
    """open() recovers the trust domain and the intermediate flag from ca.json."""
    assert CaDirectory.open(intermediate_ca.path) == intermediate_ca


def test_open_of_a_plain_directory_explains_itself(tmp_path: Path) -> None:
    """Opening a directory without ca.json raises ConfigurationError naming `pki init`."""
    with pytest.raises(ConfigurationError, match="pki init"):
        CaDirectory.open(tmp_path)


def test_intermediate_is_signed_by_the_root(intermediate_ca: CaDirectory, openssl: OpenSsl) -> None:
    """openssl verifies intermediate.crt against ca.crt."""
    result = openssl("verify", "-CAfile", intermediate_ca.root_cert_path, intermediate_ca.intermediate_cert_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_issuing_authority_works_without_the_root_key(intermediate_ca: CaDirectory) -> None:
    """With an intermediate, the root key can be moved offline and the CA still loads."""
    intermediate_ca.root_key_path.unlink()
    authority = intermediate_ca.load_authority()
    assert authority.certificate.subject.rfc4514_string().endswith("issuing CA,O=isb.test")


def test_unknown_serial_is_not_found(ca: CaDirectory) -> None:
    """Asking the index for a serial never issued raises NotFound."""
    with pytest.raises(NotFound):
        ca.read_index().find(0x1234)


def _record(*, not_after: datetime, revoked: bool) -> CertificateRecord:
    now = datetime.now(UTC)
    return CertificateRecord(
        serial="01",
        fingerprint_sha256="00" * 32,
        spiffe_id=f"spiffe://{TRUST_DOMAIN}/agency/FR-CUSTOMS",
        role=Role.AGENCY,
        name="FR-CUSTOMS",
        not_before=now - timedelta(days=2),
        not_after=not_after,
        issued_at=now - timedelta(days=2),
        revoked_at=now if revoked else None,
        revocation_reason="keyCompromise" if revoked else None,
    )


@pytest.mark.parametrize(
    ("days_left", "revoked", "status"),
    [
        (10, False, CertificateStatus.VALID),
        (-1, False, CertificateStatus.EXPIRED),
        (-1, True, CertificateStatus.REVOKED),
        (10, True, CertificateStatus.REVOKED),
    ],
)
def test_status_is_revoked_over_expired_over_valid(days_left: int, revoked: bool, status: CertificateStatus) -> None:
    """Revocation wins over expiry, which wins over valid."""
    record = _record(not_after=datetime.now(UTC) + timedelta(days=days_left), revoked=revoked)
    assert record.status() is status


def test_record_survives_a_json_round_trip() -> None:
    """CertificateRecord.from_json(to_json()) is the identity."""
    record = _record(not_after=datetime.now(UTC), revoked=True)
    assert CertificateRecord.from_json(record.to_json()) == record
