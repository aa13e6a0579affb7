"""The dev PKI: complete, idempotent, private keys 0600, certificates that openssl accepts."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID

from broker.errors import ConfigurationError
from broker.identity import Role
from broker.pki.dev import DevPki, ensure_dev_pki
from broker.pki.inspect import certificate_identity
from tests.openssl_support import OpenSsl

LEAVES = ["broker", "FR-CUSTOMS", "DE-BKA", "NL-FIOD", "auditor", "admin"]
EXPECTED_FILES = [
    "ca.crt",
    "ca.key",
    "audit.key",
    "audit.pub",
    "agencies.json",
    "crl.pem",
    *(f"{leaf}.{ext}" for leaf in LEAVES for ext in ("crt", "key")),
]


@pytest.fixture(scope="module")
def shared_dev(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    """One dev PKI for the tests that only read it."""
    return ensure_dev_pki(tmp_path_factory.mktemp("shared") / "dev")


@pytest.fixture
def dev(tmp_path: Path) -> DevPki:
    """A dev PKI of this test alone, for tests that change it."""
    return ensure_dev_pki(tmp_path / "dev")


def _snapshot(directory: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(directory)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_dev_pki_creates_every_listed_file(shared_dev: DevPki) -> None:
    """Every file the foundation issue names exists after one run."""
    missing = [name for name in EXPECTED_FILES if not (shared_dev.directory / name).is_file()]
    assert missing == []


def test_second_run_changes_no_file(dev: DevPki) -> None:
    """Running ensure_dev_pki again leaves every file byte- and mtime-identical."""
    before = _snapshot(dev.directory)
    ensure_dev_pki(dev.directory)
    assert _snapshot(dev.directory) == before


def test_private_keys_have_mode_0600(shared_dev: DevPki) -> None:
    """Every private key file is readable by its owner only."""
    keys = sorted(shared_dev.directory.glob("*.key"))
    assert len(keys) == len(LEAVES) + 2  # leaves, CA, audit
    assert {oct(stat.S_IMODE(k.stat().st_mode)) for k in keys} == {"0o600"}


def test_identity_keys_are_p256_pkcs8(shared_dev: DevPki) -> None:
    """Identity and CA keys are unencrypted PKCS#8 PEM on P-256."""
    for name in ("ca", *LEAVES):
        data = (shared_dev.directory / f"{name}.key").read_bytes()
        assert data.startswith(b"-----BEGIN PRIVATE KEY-----")
        key = serialization.load_pem_private_key(data, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.curve.name == "secp256r1"


def test_audit_key_is_ed25519_and_matches_audit_pub(shared_dev: DevPki) -> None:
    """audit.key is an Ed25519 private key and audit.pub its public key."""
    key = serialization.load_pem_private_key(shared_dev.audit_key.read_bytes(), password=None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    public = serialization.load_pem_public_key(shared_dev.audit_pub.read_bytes())
    assert isinstance(public, ed25519.Ed25519PublicKey)
    assert public.public_bytes_raw() == key.public_key().public_bytes_raw()


@pytest.mark.parametrize(
    ("leaf", "role", "name", "usage"),
    [
        ("broker", Role.BROKER, "node-1", ExtendedKeyUsageOID.SERVER_AUTH),
        ("FR-CUSTOMS", Role.AGENCY, "FR-CUSTOMS", ExtendedKeyUsageOID.CLIENT_AUTH),
        ("DE-BKA", Role.AGENCY, "DE-BKA", ExtendedKeyUsageOID.CLIENT_AUTH),
        ("NL-FIOD", Role.AGENCY, "NL-FIOD", ExtendedKeyUsageOID.CLIENT_AUTH),
        ("auditor", Role.AUDITOR, "audit-1", ExtendedKeyUsageOID.CLIENT_AUTH),
        ("admin", Role.ADMIN, "admin-1", ExtendedKeyUsageOID.CLIENT_AUTH),
    ],
)
def test_leaf_has_its_spiffe_id_and_only_its_usage(
    shared_dev: DevPki, leaf: str, role: Role, name: str, usage: x509.ObjectIdentifier
) -> None:
    """Each leaf names its SPIFFE id in its single URI SAN and carries exactly its role's EKU."""
    cert = _cert(shared_dev.directory / f"{leaf}.crt")
    identity = certificate_identity(cert, "isb.dev")
    assert (identity.role, identity.name) == (role, name)
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [usage]


def test_broker_certificate_names_localhost_and_loopback(shared_dev: DevPki) -> None:
    """The broker certificate is valid for DNS localhost and IP 127.0.0.1."""
    san = _cert(shared_dev.broker_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_leaves_pass_openssl_verify(shared_dev: DevPki, openssl: OpenSsl) -> None:
    """openssl verify accepts every leaf against ca.crt."""
    leaves = [shared_dev.directory / f"{leaf}.crt" for leaf in LEAVES]
    result = openssl("verify", "-CAfile", shared_dev.ca_cert, *leaves)
    assert result.returncode == 0, result.stdout + result.stderr


def test_crl_is_empty_and_passes_openssl_crl_verify(shared_dev: DevPki, openssl: OpenSsl) -> None:
    """crl.pem verifies against ca.crt with openssl and lists nobody."""
    result = openssl("crl", "-in", shared_dev.crl, "-CAfile", shared_dev.ca_cert, "-verify", "-noout")
    assert result.returncode == 0, result.stderr
    assert len(x509.load_pem_x509_crl(shared_dev.crl.read_bytes())) == 0


def test_agencies_json_lists_the_three_sample_agencies(shared_dev: DevPki) -> None:
    """agencies.json holds id, display name, country and contact of the three dev agencies."""
    entries = json.loads(shared_dev.agencies_json.read_text())
    assert [(e["agency"], e["country"]) for e in entries] == [
        ("FR-CUSTOMS", "FR"),
        ("DE-BKA", "DE"),
        ("NL-FIOD", "NL"),
    ]
    assert entries[0]["display_name"] == "French Customs (DGDDI)"
    assert all(set(e) == {"agency", "display_name", "country", "contact"} for e in entries)


def test_missing_leaf_is_reissued_and_others_untouched(dev: DevPki) -> None:
    """Deleting one agency's files re-creates just those on the next run."""
    cert_path, _ = dev.agency("DE-BKA")
    cert_path.unlink()
    before = {k: v for k, v in _snapshot(dev.directory).items() if not k.startswith(("index", "issued"))}
    ensure_dev_pki(dev.directory)
    after = _snapshot(dev.directory)
    assert cert_path.is_file()
    assert after["DE-BKA.key"] != before["DE-BKA.key"]
    unchanged = {k: v for k, v in before.items() if k != "DE-BKA.key"}
    assert {k: after[k] for k in unchanged} == unchanged


def test_leaf_whose_key_does_not_match_is_reissued(dev: DevPki) -> None:
    """A key file that does not belong to its certificate gets a fresh key and certificate."""
    cert_path, key_path = dev.agency("NL-FIOD")
    other_key = (dev.directory / "DE-BKA.key").read_bytes()
    key_path.write_bytes(other_key)
    ensure_dev_pki(dev.directory)
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert key_path.read_bytes() != other_key
    assert key.public_key() == _cert(cert_path).public_key()


def test_dev_directory_of_another_trust_domain_is_refused(dev: DevPki) -> None:
    """Asking for isb.other in a directory made for isb.dev raises ConfigurationError."""
    with pytest.raises(ConfigurationError, match=r"isb\.other"):
        ensure_dev_pki(dev.directory, "isb.other")


def test_agency_lookup_of_unknown_id_raises_key_error(shared_dev: DevPki) -> None:
    """DevPki.agency refuses ids that are not dev agencies."""
    with pytest.raises(KeyError):
        shared_dev.agency("XX-NOBODY")
