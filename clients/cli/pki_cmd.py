"""`isb pki ...`: create and run the deployment's certificate authority from the command line.

The top-level `isb` parser (clients/cli/__init__.py) calls `register`; every subcommand sets
`func(args) -> int` (the exit status) as its default.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from broker.errors import InvalidRequest
from broker.identity import Role, make_spiffe_id
from broker.pki import _files
from broker.pki.authority import generate_identity_key
from broker.pki.crl import CRL_VALIDITY, MAX_CRL_VALIDITY, REVOCATION_REASONS
from broker.pki.csr import CertificateRequest, create_csr, csr_pem, verify_csr
from broker.pki.dev import ensure_dev_pki
from broker.pki.inspect import parse_serial
from broker.pki.issuance import chain_pem, check_lifetime, issue_request, renew
from broker.pki.revocation import publish_crl, revoke
from broker.pki.store import CaDirectory, CertificateRecord, CertificateStatus, list_certificates
from clients.cli import install_cmd
from clients.cli.failures import CommandError
from clients.cli.options import add_trust_domain_argument, settings
from clients.cli.output import output

__all__ = ["register", "render_certificate_table"]

EXPIRY_WARNING = timedelta(days=30)
_RED, _YELLOW, _DIM, _RESET = "\033[31m", "\033[33m", "\033[2m", "\033[0m"

Handler = Callable[[argparse.Namespace], int]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `pki` command and its subcommands to the `isb` parser."""
    pki = subparsers.add_parser("pki", help="certificate authority: init, issue, revoke, list, renew")
    commands = pki.add_subparsers(dest="pki_command", required=True, metavar="COMMAND")

    init = commands.add_parser("init", help="create the deployment's root CA (refuses to overwrite)")
    init.add_argument("--dir", type=Path, required=True, help="directory for the new CA")
    init.add_argument(
        "--trust-domain",
        required=True,
        metavar="DOMAIN",
        help="SPIFFE trust domain of the new deployment, e.g. isb.example.eu",
    )
    init.add_argument(
        "--intermediate",
        action="store_true",
        help="also create an intermediate CA so the root key can go offline",
    )
    _set(init, _cmd_init)

    dev = commands.add_parser("dev", help="create the development PKI if missing (idempotent)")
    dev.add_argument("--dir", type=Path, default=settings().cert_dir, help="default %(default)s (ISB_CERT_DIR)")
    add_trust_domain_argument(dev)
    _set(dev, _cmd_dev)

    request = commands.add_parser("request", help="generate an identity key and a CSR (agency side)")
    who = request.add_mutually_exclusive_group(required=True)
    who.add_argument("--agency", metavar="ID", help="agency id, e.g. FR-CUSTOMS")
    who.add_argument("--auditor", metavar="NAME")
    who.add_argument("--admin", metavar="NAME")
    who.add_argument("--broker", metavar="NODE", help="broker node name (server certificate)")
    who.add_argument(
        "--witness",
        metavar="NAME",
        help="a witness's TLS identity (server, and the broker's submitter), e.g. fr-customs-w1",
    )
    add_trust_domain_argument(request)
    request.add_argument("--out", type=Path, required=True, help="directory for <name>.key and <name>.csr")
    request.add_argument("--dns", action="append", default=[], help="DNS name (broker, witness; repeatable)")
    request.add_argument("--ip", action="append", default=[], help="IP address (broker, witness; repeatable)")
    _set(request, _cmd_request)
    install_cmd.register(commands)
    audit_key = commands.add_parser("audit-key", help="create the broker's audit signing key (audit.key, audit.pub)")
    audit_key.add_argument("--dir", type=Path, default=settings().cert_dir, help="default %(default)s (ISB_CERT_DIR)")
    _set(audit_key, _cmd_audit_key)
    _add_admin_commands(commands)


def _add_admin_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    issue = commands.add_parser("issue", help="issue a certificate from a CSR after confirmation (admin side)")
    issue.add_argument("csr", type=Path, help="the CSR file (PEM or DER)")
    _ca_argument(issue)
    issue.add_argument("--out", type=Path, help="certificate chain file (default: the CSR path with .crt)")
    issue.add_argument("--days", type=int, help="lifetime in days (default: 90 for agencies)")
    issue.add_argument("--role", choices=[role.value for role in Role], help="refuse a CSR for another role")
    issue.add_argument("--yes", action="store_true", help="do not ask for confirmation (scripts)")
    _set(issue, _cmd_issue)

    listing = commands.add_parser("list", help="show every issued certificate and its status")
    _ca_argument(listing)
    _set(listing, _cmd_list)

    revoking = commands.add_parser("revoke", help="revoke a certificate and re-sign the CRL")
    revoking.add_argument("serial", help="serial number in hex, as `isb pki list` shows it")
    revoking.add_argument(
        "--reason",
        default="unspecified",
        metavar="REASON",
        help="RFC 5280 reason: "
        + ", ".join(r for r in REVOCATION_REASONS if r not in ("certificateHold", "removeFromCRL")),
    )
    _ca_argument(revoking)
    _set(revoking, _cmd_revoke)

    renewing = commands.add_parser("renew", help="issue a successor of a certificate (same SPIFFE id)")
    renewing.add_argument("serial", help="serial of the certificate to renew")
    _ca_argument(renewing)
    renewing.add_argument("--csr", type=Path, help="CSR with a new key (default: keep the current key)")
    renewing.add_argument("--out", type=Path, required=True, help="certificate chain file to write")
    renewing.add_argument("--days", type=int, help="lifetime in days (default: the role's default)")
    renewing.add_argument("--yes", action="store_true", help="do not ask for confirmation (scripts)")
    _set(renewing, _cmd_renew)

    crl = commands.add_parser(
        "crl", help="re-sign the CRL (refreshes its next update) and optionally export it; schedule it daily"
    )
    _ca_argument(crl)
    crl.add_argument(
        "--days",
        type=float,
        default=CRL_VALIDITY.total_seconds() / 86400,
        metavar="DAYS",
        help="validity of the new CRL (its nextUpdate), default %(default)g days; SDKs refuse a CRL"
        " past its nextUpdate, so re-sign well before (e.g. daily from cron or a systemd timer)",
    )
    crl.add_argument("--out", type=Path, help="also write the CRL here")
    crl.add_argument("--der", action="store_true", help="write --out in DER instead of PEM")
    _set(crl, _cmd_crl)


def _set(parser: argparse.ArgumentParser, handler: Handler) -> None:
    # Errors (BrokerError with a message written for the operator) are reported by `isb`'s main.
    parser.set_defaults(func=handler)


def _ca_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ca",
        type=Path,
        default=settings().cert_dir,
        metavar="DIR",
        help="CA directory (default %(default)s; ISB_CERT_DIR or the config file set it)",
    )


def _cmd_init(args: argparse.Namespace) -> int:
    _check_trust_domain(args.trust_domain)
    ca = CaDirectory.init(args.dir, args.trust_domain, intermediate=args.intermediate)
    out = output(args)
    out.record(
        {
            "trust_domain": ca.trust_domain,
            "directory": ca.path,
            "trust_anchor": ca.root_cert_path,
            "crl": ca.crl_path,
            "issuing_ca": ca.intermediate_cert_path if ca.has_intermediate else None,
        },
        title=f"created CA for trust domain {ca.trust_domain}",
    )
    if ca.has_intermediate:
        out.say(f"the root key {ca.root_key_path} is not needed to issue or revoke: move it offline")
    return 0


def _check_trust_domain(trust_domain: str) -> None:
    try:
        make_spiffe_id(trust_domain, Role.ADMIN, "admin")
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc


def _cmd_audit_key(args: argparse.Namespace) -> int:
    # The checkpoint signing key of a deployment: Ed25519, 0600; auditors get audit.pub.
    args.dir.mkdir(parents=True, exist_ok=True)
    key = ed25519.Ed25519PrivateKey.generate()
    _files.write_private_key(args.dir / "audit.key", key)  # refuses to overwrite an existing key
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    _files.write_public_file(args.dir / "audit.pub", public)
    output(args).record(
        {"signing_key": args.dir / "audit.key", "public_key": args.dir / "audit.pub"},
        title="audit key created: give audit.pub to the auditors",
    )
    return 0


def _cmd_dev(args: argparse.Namespace) -> int:
    pki = ensure_dev_pki(args.dir, args.trust_domain)
    output(args).record({"directory": pki.directory, "trust_domain": pki.trust_domain}, title="dev PKI ready")
    return 0


def _cmd_request(args: argparse.Namespace) -> int:
    role, name = _requested_identity(args)
    try:
        spiffe_id = make_spiffe_id(args.trust_domain, role, name)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc
    if (args.dns or args.ip) and role not in {Role.BROKER, Role.WITNESS}:
        raise InvalidRequest("--dns and --ip are only for broker and witness certificates")
    args.out.mkdir(parents=True, exist_ok=True)
    key_path, request_path = args.out / f"{name}.key", args.out / f"{name}.csr"
    key = generate_identity_key()
    csr = create_csr(key, spiffe_id, dns_names=args.dns, ip_addresses=args.ip)
    _files.write_private_key(key_path, key)  # refuses to overwrite an existing key
    _files.write_public_file(request_path, csr_pem(csr))
    out = output(args)
    out.record(
        {"identity_key": key_path, "request": request_path, "spiffe_id": spiffe_id},
        title="identity key (mode 0600: keep it here, never send it) and certificate request",
    )
    out.say(
        f"send {request_path} to your ISB administrator, who runs `isb pki issue {request_path.name}`; "
        f"with the certificate and the CA's ca.crt, run `isb pki install CERT --ca-cert ca.crt --dir {args.out}`"
    )
    return 0


def _requested_identity(args: argparse.Namespace) -> tuple[Role, str]:
    for role in Role:
        value: str | None = getattr(args, role.value, None)
        if value is not None:
            return role, value
    raise InvalidRequest("name an identity: --agency, --auditor, --admin, --broker or --witness")


def _cmd_issue(args: argparse.Namespace) -> int:
    ca = CaDirectory.open(args.ca)
    data = _read_input(args.csr)
    request = verify_csr(data, ca.trust_domain)
    role = Role(args.role) if args.role else None
    if role is not None and request.spiffe_id.role is not role:
        raise InvalidRequest(f"{args.csr} requests a {request.spiffe_id.role.value} certificate, not {role.value}")
    # Check the lifetime before asking, so the admin does not confirm something that then fails.
    days = check_lifetime(ca.load_authority(), request.spiffe_id.role, args.days)
    out = output(args)
    holders = _valid_holders(ca, str(request.spiffe_id))
    question = "issue this certificate?"
    if holders:
        # A second valid certificate is a second identity key for the same agency: whoever holds
        # either key can publish encryption keys under that id. Say so before anyone confirms.
        out.warn(
            f"{request.spiffe_id} already holds {len(holders)} valid certificate(s): "
            + ", ".join(f"serial {r.serial} (expires {r.not_after.date().isoformat()})" for r in holders)
            + "; to replace a key, prefer `isb pki renew SERIAL --csr NEW.csr`, then revoke the old certificate"
        )
        question = f"issue a second valid certificate for {request.spiffe_id}?"
    if not args.yes:
        out.say(f"certificate signing request {args.csr}:")
        out.say(request.describe())
        out.say(f"  lifetime  : {days} days")
        if not _confirm(question):
            raise CommandError("not issued", "run the command again and answer y, or pass --yes")
    cert, record = issue_request(ca, request, lifetime_days=args.days, expected_role=role)
    path = args.out or args.csr.with_suffix(".crt")
    _files.write_public_file(path, chain_pem(ca, cert))
    _print_issued(args, path, record)
    out.say(
        f"send {path} and the trust anchor {ca.root_cert_path} to its holder, who runs "
        f"`isb pki install {path.name} --ca-cert ca.crt`"
    )
    return 0


def _valid_holders(ca: CaDirectory, spiffe_id: str) -> list[CertificateRecord]:
    return [r for r in list_certificates(ca) if r.spiffe_id == spiffe_id and r.status() is CertificateStatus.VALID]


def _cmd_renew(args: argparse.Namespace) -> int:
    ca = CaDirectory.open(args.ca)
    record = ca.read_index().find(parse_serial(args.serial))
    data = _read_input(args.csr) if args.csr else None
    out = output(args)
    out.say(f"renewing {record.serial} for {record.spiffe_id} (expires {record.not_after.date().isoformat()})")
    if data is not None:
        request: CertificateRequest = verify_csr(data, ca.trust_domain)
        out.say("with a new key from the CSR:")
        out.say(request.describe())
    else:
        out.say("keeping the current key")
    if not args.yes and not _confirm("issue the successor?"):
        raise CommandError("not renewed", "run the command again and answer y, or pass --yes")
    cert, successor = renew(ca, record.serial, csr_pem=data, lifetime_days=args.days)
    _files.write_public_file(args.out, chain_pem(ca, cert))
    _print_issued(args, args.out, successor)
    out.say(f"the predecessor {record.serial} stays valid until it expires; revoke it once the new one is in use")
    return 0


def _print_issued(args: argparse.Namespace, path: Path, record: CertificateRecord) -> None:
    output(args).record(
        {
            "spiffe_id": record.spiffe_id,
            "serial": record.serial,
            "fingerprint": record.fingerprint_sha256,
            "expires": record.not_after,
            "written_to": path,
        },
        title=f"issued {record.spiffe_id}",
    )


def _cmd_list(args: argparse.Namespace) -> int:
    ca = CaDirectory.open(args.ca)
    records = list_certificates(ca)
    out = output(args)
    if out.json:
        now = datetime.now(UTC)
        out.rows(
            [
                {
                    "role": r.role.value,
                    "status": r.status(now).value,
                    "not_after": r.not_after,
                    "serial": r.serial,
                    "fingerprint": r.fingerprint_sha256,
                    "spiffe_id": r.spiffe_id,
                    "revocation_reason": r.revocation_reason,
                }
                for r in records
            ]
        )
    else:
        # Colours only for a person at a terminal: escape codes would corrupt a pipe or a file.
        print(render_certificate_table(records, colour=sys.stdout.isatty() and out.console.is_terminal))
    return 0


def render_certificate_table(records: Sequence[CertificateRecord], *, colour: bool, now: datetime | None = None) -> str:
    """The `pki list` table; with `colour`, expired in red, revoked dimmed, expiring within 30 days yellow."""
    now = now or datetime.now(UTC)
    lines = [f"{'ROLE':<8} {'STATUS':<8} {'EXPIRES':<10} {'SERIAL':<40} {'FINGERPRINT (SHA-256)':<64} SPIFFE ID"]
    for record in records:
        line = (
            f"{record.role.value:<8} {record.status(now).value:<8} {record.not_after.date().isoformat():<10} "
            f"{record.serial:<40} {record.fingerprint_sha256:<64} {record.spiffe_id}"
        )
        lines.append(_coloured(line, record, now) if colour else line)
    return "\n".join(lines)


def _coloured(line: str, record: CertificateRecord, now: datetime) -> str:
    status = record.status(now)
    if status is CertificateStatus.REVOKED:
        return f"{_DIM}{line}{_RESET}"
    if status is CertificateStatus.EXPIRED:
        return f"{_RED}{line}{_RESET}"
    if record.not_after - now <= EXPIRY_WARNING:
        return f"{_YELLOW}{line}{_RESET}"
    return line


def _cmd_revoke(args: argparse.Namespace) -> int:
    ca = CaDirectory.open(args.ca)
    record = revoke(ca, args.serial, args.reason)
    output(args).record(
        {
            "serial": record.serial,
            "spiffe_id": record.spiffe_id,
            "reason": record.revocation_reason,
            "crl": ca.crl_path,
        },
        title="revoked; CRL re-signed",
    )
    return 0


def _cmd_crl(args: argparse.Namespace) -> int:
    ca = CaDirectory.open(args.ca)
    if not 0 < args.days <= MAX_CRL_VALIDITY.days:
        raise InvalidRequest(f"--days must be more than 0 and at most {MAX_CRL_VALIDITY.days}, not {args.days:g}")
    crl = publish_crl(ca, validity=timedelta(days=args.days))
    if args.out:
        encoding = serialization.Encoding.DER if args.der else serialization.Encoding.PEM
        _files.write_public_file(args.out, crl.public_bytes(encoding))
    output(args).record(
        {
            "crl": ca.crl_path,
            "number": _crl_number(crl),
            "revoked": len(crl),
            "next_update": crl.next_update_utc,
            "written_to": args.out,
        },
        title="CRL re-signed",
    )
    return 0


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def _read_input(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidRequest(f"cannot read {path}: {exc.strerror}") from exc


def _confirm(question: str) -> bool:
    print(f"{question} [y/N] ", end="", flush=True)
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")
