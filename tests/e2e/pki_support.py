"""Certificates that the dev PKI does not make: from another CA, expired, revoked."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from broker.config import DEV_POLICY_FILE
from broker.identity import Role, make_spiffe_id
from broker.pki.authority import (
    CertificateAuthority,
    create_root_ca,
    generate_identity_key,
    issue_certificate,
)
from broker.pki.dev import DevPki
from broker.pki.store import CaDirectory

REPO = Path(__file__).resolve().parents[2]


def _write(
    tmp: Path, name: str, authority: CertificateAuthority, key: ec.EllipticCurvePrivateKey, cert_pem: bytes
) -> tuple[Path, Path]:
    cert_path, key_path = tmp / f"{name}.crt", tmp / f"{name}.key"
    cert_path.write_bytes(cert_pem + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in authority.chain))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return cert_path, key_path


def foreign_agency_certificate(tmp: Path, agency: str, trust_domain: str = "isb.dev") -> tuple[Path, Path]:
    """A well-formed agency certificate for `agency`, issued by an unrelated CA of the same name."""
    other = create_root_ca(trust_domain)
    key = generate_identity_key()
    cert = issue_certificate(other, key.public_key(), make_spiffe_id(trust_domain, Role.AGENCY, agency))
    return _write(tmp, f"foreign-{agency}", other, key, cert.public_bytes(serialization.Encoding.PEM))


def expired_agency_certificate(pki: DevPki, tmp: Path, agency: str) -> tuple[Path, Path]:
    """A certificate for `agency` from the deployment's CA that expired yesterday."""
    authority = CaDirectory.open(pki.directory).load_authority()
    key = generate_identity_key()
    now = dt.datetime.now(dt.UTC)
    cert = issue_certificate(
        authority,
        key.public_key(),
        make_spiffe_id(pki.trust_domain, Role.AGENCY, agency),
        not_before=now - dt.timedelta(days=10),
        not_after=now - dt.timedelta(days=1),
    )
    return _write(tmp, f"expired-{agency}", authority, key, cert.public_bytes(serialization.Encoding.PEM))


def raw_csr(key: ec.EllipticCurvePrivateKey, uri: str) -> bytes:
    """A CSR carrying `uri` as its only URI SAN, however malformed (to test refusals)."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def dev_policy_plus(tmp: Path, extra: str) -> Path:
    """`tmp/policy.toml`: the dev policy (examples/policy-dev.toml) with `extra` TOML appended."""
    policy = tmp / "policy.toml"
    policy.write_text(DEV_POLICY_FILE.read_text() + extra)
    return policy


def extended_pki(pki: DevPki, tmp: Path, extra: dict[str, str], policy_text: str | None = None) -> tuple[Path, Path]:
    """A copy of the dev PKI with more agencies (id -> country), and a policy file: `policy_text`, or
    by default the dev policy extended with the new agencies.

    Returns the PKI folder (the broker seeds the agencies listed in its agencies.json) and the
    policy file to give the broker.
    """
    directory = tmp / "pki-extended"
    shutil.copytree(pki.directory, directory)
    authority = CaDirectory.open(directory).load_authority()
    listing = json.loads((directory / "agencies.json").read_text())
    for agency, country in extra.items():
        key = generate_identity_key()
        cert = issue_certificate(authority, key.public_key(), make_spiffe_id(pki.trust_domain, Role.AGENCY, agency))
        _write(directory, agency, authority, key, cert.public_bytes(serialization.Encoding.PEM))
        listing.append({"agency": agency, "display_name": agency, "country": country, "contact": ""})
    (directory / "agencies.json").write_text(json.dumps(listing))
    policy_file = tmp / "policy.toml"
    if policy_text is not None:
        policy_file.write_text(policy_text)
        return directory, policy_file
    policy = DEV_POLICY_FILE.read_text()
    dev = '"FR-CUSTOMS", "DE-BKA", "NL-FIOD"'
    everyone = dev + "".join(f', "{a}"' for a in extra)
    policy = policy.replace(f"members = [{dev}]", f"members = [{everyone}]", 1)
    policy = policy.replace(f"recipients = [{dev}]", f"recipients = [{everyone}]")
    for agency, country in extra.items():
        policy += f'\n[[agencies]]\nid = "{agency}"\nname = "{agency}"\ncountry = "{country}"\nkind = "police"\n'
    policy_file.write_text(policy)
    return directory, policy_file
