"""AdminService: registry, certificates and policy for admins; the CRL and policy explanations for
everyone. Every change is an audit entry; refusals are audited by the RPC layer."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from broker.api.v1 import admin_pb2, admin_pb2_grpc
from broker.audit import AuditEvent
from broker.directory import AgencyRecord, RegisterAgency, Registry
from broker.errors import FailedPrecondition, InvalidRequest, PermissionDenied
from broker.identity import AGENCY_ID, Principal, Role
from broker.pki.crl import REVOCATION_REASONS
from broker.pki.online import OnlineCa
from broker.pki.store import CertificateRecord
from broker.policy import Policy, RunningPolicy
from broker.retention import RetentionJob
from broker.store.writer import RecordEvent, Writer
from broker.transport.auth import Authenticator
from broker.transport.rpc import Context
from broker.transport.timestamps import timestamp

MAX_CSR_BYTES = 16 * 1024
MAX_POLICY_BYTES = 1024 * 1024
MAX_TEXT = 200
APPLIED_POLICY = "policy.toml"  # in the broker's state directory


def _record(r: CertificateRecord) -> admin_pb2.CertificateRecord:
    return admin_pb2.CertificateRecord(
        serial=r.serial,
        spiffe_id=r.spiffe_id,
        role=r.role.value,
        fingerprint_sha256=r.fingerprint_sha256,
        not_before=timestamp(r.not_before),
        not_after=timestamp(r.not_after),
        status=r.status().value,
        revocation_reason=r.revocation_reason or "",
    )


def _agency(request: admin_pb2.RegisterAgencyRequest) -> AgencyRecord:
    if not AGENCY_ID.fullmatch(request.agency):
        raise InvalidRequest(f"{request.agency!r} is not an agency id (e.g. FR-CUSTOMS)")
    if len(request.country) not in (0, 2) or (not request.country.isalpha() and request.country):
        raise InvalidRequest(f"country {request.country!r} is not an ISO 3166 alpha-2 code")
    for name in ("display_name", "contact"):
        if len(getattr(request, name)) > MAX_TEXT:
            raise InvalidRequest(f"{name} is longer than {MAX_TEXT} characters")
    return AgencyRecord(request.agency, request.display_name, request.country.upper(), request.contact)


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    """AdminService. The CA key is used only when this broker is configured with a CA directory."""

    def __init__(
        self,
        auth: Authenticator,
        writer: Writer,
        registry: Registry,
        policy: RunningPolicy,
        ca: OnlineCa,
        retention: RetentionJob,
        applied_policy: Path | None = None,
    ) -> None:
        self._auth = auth
        self._writer = writer
        self._registry = registry
        self._policy = policy
        self._ca = ca
        self._applied_policy = applied_policy
        self._retention = retention

    async def _audit(self, caller: Principal, event: str, agency: str | None = None, **fields: str | int) -> int:
        index: int = await self._writer.submit(
            RecordEvent(
                AuditEvent(event=event, actor=str(caller), time=dt.datetime.now(dt.UTC), agency=agency, fields=fields)
            )
        )
        return index

    async def RegisterAgency(
        self, request: admin_pb2.RegisterAgencyRequest, context: Context
    ) -> admin_pb2.AgencyRecord:
        caller = self._auth.require(context, Role.ADMIN)
        record = await self._writer.submit(RegisterAgency(_agency(request), str(caller), self._registry))
        return admin_pb2.AgencyRecord(
            agency=record.agency_id, display_name=record.display_name, country=record.country, contact=record.contact
        )

    async def IssueCertificate(
        self, request: admin_pb2.IssueCertificateRequest, context: Context
    ) -> admin_pb2.IssuedCertificate:
        caller = self._auth.require(context, Role.ADMIN)
        if not request.csr_pem or len(request.csr_pem) > MAX_CSR_BYTES:
            raise InvalidRequest(f"csr_pem must hold one PEM certificate request of at most {MAX_CSR_BYTES} bytes")
        agency = _agency(request.agency) if request.HasField("agency") else None
        issued = await self._ca.issue(
            caller,
            request.csr_pem,
            request.lifetime_days or None,
            for_agency=agency.agency_id if agency is not None else None,
        )
        if agency is not None:
            await self._writer.submit(RegisterAgency(agency, str(caller), self._registry))
        return admin_pb2.IssuedCertificate(
            certificate_pem=issued.certificate.public_bytes(Encoding.PEM),
            chain_pem=issued.chain_pem,
            record=_record(issued.record),
        )

    async def RevokeCertificate(
        self, request: admin_pb2.RevokeCertificateRequest, context: Context
    ) -> admin_pb2.CertificateRecord:
        caller = self._auth.require(context, Role.ADMIN)
        reason = request.reason or "unspecified"
        if reason not in REVOCATION_REASONS:
            raise InvalidRequest(f"unknown revocation reason {reason!r}; use one of {', '.join(REVOCATION_REASONS)}")
        return _record(await self._ca.revoke(caller, request.serial, reason))

    async def ListCertificates(
        self, request: admin_pb2.ListCertificatesRequest, context: Context
    ) -> admin_pb2.ListCertificatesResponse:
        self._auth.require(context, Role.ADMIN)
        return admin_pb2.ListCertificatesResponse(certificates=[_record(r) for r in await self._ca.certificates()])

    async def GetCrl(self, request: admin_pb2.GetCrlRequest, context: Context) -> admin_pb2.Crl:
        self._auth.authenticate(context)
        return admin_pb2.Crl(der=await self._ca.crl())

    async def ValidatePolicy(self, request: admin_pb2.PolicyDocument, context: Context) -> admin_pb2.PolicyValidation:
        self._auth.require(context, Role.ADMIN)
        _check_policy_size(request.toml)
        report = self._policy.validate(request.toml, request.source[:200])
        return admin_pb2.PolicyValidation(
            valid=report.valid, errors=report.errors, digest=report.digest, diff=report.diff
        )

    async def ApplyPolicy(self, request: admin_pb2.PolicyDocument, context: Context) -> admin_pb2.PolicyValidation:
        caller = self._auth.require(context, Role.ADMIN)
        _check_policy_size(request.toml)
        report = self._policy.validate(request.toml, request.source[:200])
        if not report.valid:
            raise InvalidRequest("policy refused, the running policy stays in force: " + "; ".join(report.errors))
        if not request.force:
            _refuse_cut_off(self._policy, request.toml, [r.agency_id for r in self._registry.all()])
        self._own_policy_file()
        change = self._policy.apply(request.toml, str(caller))
        if change.changed:
            await self._audit(caller, "policy.changed", old_digest=change.old_digest, new_digest=change.new_digest)
        return admin_pb2.PolicyValidation(valid=True, digest=report.digest, diff=report.diff)

    def _own_policy_file(self) -> None:
        # ApplyPolicy writes the broker's own copy in its state directory, never the file it was
        # started with (which may be a tracked example); the copy is watched from then on.
        target = self._applied_policy
        if target is not None and self._policy.path != target:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._policy.move_to(target)

    async def GetPolicy(self, request: admin_pb2.GetPolicyRequest, context: Context) -> admin_pb2.PolicyDocument:
        self._auth.require(context, Role.ADMIN, Role.AUDITOR)
        return admin_pb2.PolicyDocument(toml=self._policy.current.text)

    async def ExplainPolicy(
        self, request: admin_pb2.ExplainPolicyRequest, context: Context
    ) -> admin_pb2.PolicyDecision:
        caller = self._auth.authenticate(context)
        sender = request.sender or caller.name
        if caller.role is Role.AGENCY and sender != caller.name:
            raise PermissionDenied(f"{caller.name} may ask which rules apply to itself only, not to {sender}")
        if caller.role is Role.BROKER:
            raise PermissionDenied("broker certificates do not call the admin service")
        if len(request.recipients) > 256 or any(len(r) > 64 for r in request.recipients):
            raise InvalidRequest("too many or too long recipients")
        decision = self._policy.current.explain(sender, request.kind, request.tlp, list(request.recipients))
        return admin_pb2.PolicyDecision(
            allowed=decision.allowed, rule=decision.rule, reason=decision.reason, expanded_recipients=decision.expanded
        )

    async def Retention(self, request: admin_pb2.RetentionRequest, context: Context) -> admin_pb2.RetentionReport:
        caller = self._auth.require(context, Role.ADMIN)
        reply = admin_pb2.RetentionReport(
            dry_run=request.dry_run, policy_sha256=self._policy.current.digest, at=timestamp(dt.datetime.now(dt.UTC))
        )
        reports = (
            [await self._retention.dry_run()] if request.dry_run else await self._retention.run(str(caller), "admin")
        )
        totals: dict[tuple[str, str, str], int] = {}
        for report in reports:
            for c in report.counts:
                totals[(c.what, c.rule, c.period)] = totals.get((c.what, c.rule, c.period), 0) + c.count
            reply.message_ids.extend(report.message_ids)
            reply.undelivered_dropped += report.undelivered_dropped
            if report.audit_index is not None:
                reply.audit_indexes.append(report.audit_index)
        reply.counts.extend(
            admin_pb2.RetentionCount(what=what, rule=rule, period=period, count=n)
            for (what, rule, period), n in totals.items()
        )
        return reply


def _refuse_cut_off(policy: RunningPolicy, text: str, registered: list[str]) -> None:
    # An operator slip (an empty or truncated document) must not silence the deployment.
    proposed = Policy.parse(text, source="proposed policy")
    if not proposed.agencies:
        raise FailedPrecondition(
            "policy refused, the running policy stays in force: it names no agency, so every "
            "send would be denied; apply it with --force if that is intended"
        )
    cut = policy.cut_off(text, registered)
    if cut:
        raise FailedPrecondition(
            f"policy refused, the running policy stays in force: it would cut off {', '.join(cut)} (registered, "
            "able to send or receive today, able to do neither under it); apply it with --force if that is intended"
        )


def _check_policy_size(text: str) -> None:
    if len(text.encode()) > MAX_POLICY_BYTES:
        raise InvalidRequest(f"policy document is over {MAX_POLICY_BYTES} bytes")
