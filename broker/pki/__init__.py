"""The deployment's PKI (DESIGN.md section 2): CA, issuance from CSRs, revocation, the dev PKI.

Modules, each with one job:

- `authority`: in-memory CAs and `issue_certificate` (the mechanism, no policy);
- `inspect`: SPIFFE id, fingerprint and serial of a certificate;
- `csr`: creating (agency side) and verifying (CA side) signing requests;
- `store`: a CA kept in a directory, with its issued-certificate index;
- `issuance`: `issue_from_csr` and `renew`, with lifetime and identity policy;
- `crl`: revocation reasons, CRL validity and `sign_crl`;
- `revocation`: `revoke`, publishing and verifying the CRL, and the broker's per-call `RevocationList`;
- `dev`: `ensure_dev_pki`, everything a local demo needs.
"""

from broker.pki.authority import (
    CertificateAuthority,
    create_intermediate_ca,
    create_root_ca,
    issue_certificate,
)
from broker.pki.csr import CertificateRequest, create_csr, verify_csr
from broker.pki.dev import DevPki, ensure_dev_pki
from broker.pki.inspect import certificate_identity, fingerprint_sha256, parse_serial, serial_hex
from broker.pki.issuance import chain_pem, issue_from_csr, renew
from broker.pki.revocation import RevocationList, crl_der, publish_crl, revoke, verify_crl
from broker.pki.store import CaDirectory, CertificateRecord, CertificateStatus, list_certificates

__all__ = [
    "CaDirectory",
    "CertificateAuthority",
    "CertificateRecord",
    "CertificateRequest",
    "CertificateStatus",
    "DevPki",
    "RevocationList",
    "certificate_identity",
    "chain_pem",
    "create_csr",
    "create_intermediate_ca",
    "create_root_ca",
    "crl_der",
    "ensure_dev_pki",
    "fingerprint_sha256",
    "issue_certificate",
    "issue_from_csr",
    "list_certificates",
    "parse_serial",
    "publish_crl",
    "renew",
    "revoke",
    "serial_hex",
    "verify_crl",
    "verify_csr",
]
