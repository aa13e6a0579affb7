"""The admin's SDK over AdminService: registry, certificates and the running sharing policy.

Offline CA work (init, CSR issuance with the CA key on the admin's machine) is `broker.pki` and
`isb pki`; this client asks the broker, which acts at once (a revocation bites on the next call).
"""

from __future__ import annotations

from pathlib import Path

from broker.api.v1 import admin_pb2, admin_pb2_grpc
from broker.identity import DEFAULT_TRUST_DOMAIN, Role
from clients._connection import Connection

__all__ = ["AdminClient"]


class AdminClient(Connection):
    """A connection to the broker's AdminService: an admin certificate for administration; any
    certificate (`role`) for the CRL and for ExplainPolicy about itself."""

    def __init__(
        self,
        target: str,
        *,
        cert: Path,
        key: Path,
        ca: Path,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
        timeout: float = 30.0,
        role: Role = Role.ADMIN,
    ) -> None:
        super().__init__(target, cert=cert, key=key, ca=ca, role=role, trust_domain=trust_domain, timeout=timeout)
        self._stub = admin_pb2_grpc.AdminServiceStub(self.channel)

    def register_agency(
        self, agency: str, display_name: str = "", country: str = "", contact: str = ""
    ) -> admin_pb2.AgencyRecord:
        """Register (or update) an agency in the broker's directory."""
        reply: admin_pb2.AgencyRecord = self._call(
            self._stub.RegisterAgency,
            admin_pb2.RegisterAgencyRequest(agency=agency, display_name=display_name, country=country, contact=contact),
        )
        return reply

    def issue(
        self, csr_pem: bytes, *, lifetime_days: int = 0, agency: admin_pb2.RegisterAgencyRequest | None = None
    ) -> admin_pb2.IssuedCertificate:
        """Issue a certificate from a CSR with the broker's CA directory (and register the agency)."""
        request = admin_pb2.IssueCertificateRequest(csr_pem=csr_pem, lifetime_days=lifetime_days)
        if agency is not None:
            request.agency.CopyFrom(agency)
        reply: admin_pb2.IssuedCertificate = self._call(self._stub.IssueCertificate, request)
        return reply

    def revoke(self, serial: str, reason: str = "unspecified") -> admin_pb2.CertificateRecord:
        """Revoke a certificate; the broker refuses it from the next call on."""
        reply: admin_pb2.CertificateRecord = self._call(
            self._stub.RevokeCertificate, admin_pb2.RevokeCertificateRequest(serial=serial, reason=reason)
        )
        return reply

    def certificates(self) -> list[admin_pb2.CertificateRecord]:
        """Every certificate the broker's CA has issued, with its status."""
        reply = self._call(self._stub.ListCertificates, admin_pb2.ListCertificatesRequest())
        return list(reply.certificates)

    def crl(self) -> bytes:
        """The CA's current signed CRL (DER)."""
        reply: admin_pb2.Crl = self._call(self._stub.GetCrl, admin_pb2.GetCrlRequest())
        return reply.der

    def policy(self) -> str:
        """The running policy document."""
        reply: admin_pb2.PolicyDocument = self._call(self._stub.GetPolicy, admin_pb2.GetPolicyRequest())
        return reply.toml

    def validate_policy(self, text: str, source: str = "") -> admin_pb2.PolicyValidation:
        """Validate a proposed policy and diff it against the running one (changes nothing); errors name `source`."""
        reply: admin_pb2.PolicyValidation = self._call(
            self._stub.ValidatePolicy, admin_pb2.PolicyDocument(toml=text, source=source)
        )
        return reply

    def apply_policy(self, text: str, *, force: bool = False, source: str = "") -> admin_pb2.PolicyValidation:
        """Replace the running policy; an invalid one is refused and the old one stays, and so is one that names
        no agency or cuts a registered agency off, unless `force`."""
        reply: admin_pb2.PolicyValidation = self._call(
            self._stub.ApplyPolicy, admin_pb2.PolicyDocument(toml=text, force=force, source=source)
        )
        return reply

    def explain(self, *, sender: str = "", kind: str, tlp: str, recipients: list[str]) -> admin_pb2.PolicyDecision:
        """Which rule allows or refuses a send (an agency may ask about itself only)."""
        reply: admin_pb2.PolicyDecision = self._call(
            self._stub.ExplainPolicy,
            admin_pb2.ExplainPolicyRequest(sender=sender, kind=kind, tlp=tlp, recipients=recipients),
        )
        return reply

    def retention(self, *, dry_run: bool) -> admin_pb2.RetentionReport:
        """What the policy's retention periods make due now (`dry_run`), or purge it and say what went."""
        reply: admin_pb2.RetentionReport = self._call(self._stub.Retention, admin_pb2.RetentionRequest(dry_run=dry_run))
        return reply
