"""`isb admin ...`: administer a running broker over AdminService with an admin certificate.

Everything here acts on the broker at once: a revocation bites on the next call, a policy applies
on the next send. For the offline CA (init, CSRs, renewal) see `isb pki`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from broker.identity import Role
from clients.admin import AdminClient
from clients.cli.options import add_broker_arguments
from clients.cli.output import output

__all__ = ["register"]

Action = Callable[[AdminClient, argparse.Namespace], int]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `admin` and its subcommands."""
    admin = subparsers.add_parser("admin", help="administer a running broker: registry, certificates, policy")
    commands = admin.add_subparsers(dest="admin_command", required=True, metavar="COMMAND")

    reg = _online(commands.add_parser("register", help="register or update an agency"), _register)
    reg.add_argument("agency")
    reg.add_argument("--name", default="")
    reg.add_argument("--country", default="")
    reg.add_argument("--contact", default="")

    revoke = _online(commands.add_parser("revoke", help="revoke a certificate now (RFC 5280 reason)"), _revoke)
    revoke.add_argument("serial")
    revoke.add_argument("--reason", default="unspecified")

    _online(commands.add_parser("certificates", help="every issued certificate with its status"), _certificates)

    show = _online(commands.add_parser("policy-show", help="print the running sharing policy"), _policy_show)
    show.add_argument("--out", type=Path, help="write it to a file instead")

    validate = _online(
        commands.add_parser("policy-validate", help="validate a policy file and diff it against the running one"),
        _policy_validate,
    )
    validate.add_argument("file", type=Path)

    apply = _online(commands.add_parser("policy-apply", help="apply a policy file (refused if invalid)"), _policy_apply)
    apply.add_argument("file", type=Path)
    apply.add_argument(
        "--force",
        action="store_true",
        help="apply even a policy that names no agency or leaves a registered agency unable to send or receive",
    )

    retention = _online(
        commands.add_parser(
            "retention", help="purge what the policy's retention periods make due (--dry-run: only show it)"
        ),
        _retention,
    )
    retention.add_argument(
        "--dry-run", action="store_true", help="count what would go, per kind of data and rule, and change nothing"
    )

    explain = _online(commands.add_parser("explain", help="ask the running broker which rule decides a send"), _explain)
    explain.add_argument("--sender", default="", help="default: the caller (an agency may ask only about itself)")
    explain.add_argument("--kind", required=True)
    explain.add_argument("--tlp", required=True)
    explain.add_argument("--to", action="append", default=[], metavar="ADDR")
    explain.add_argument(
        "--as",
        dest="who",
        default="admin",
        help="certificate to ask with: admin, auditor or an agency id (default admin)",
    )


def _online(parser: argparse.ArgumentParser, action: Action) -> argparse.ArgumentParser:
    add_broker_arguments(parser, holds="admin.crt, admin.key and ca.crt")
    parser.set_defaults(func=lambda args: _run(args, action))
    return parser


def _run(args: argparse.Namespace, action: Action) -> int:
    who = getattr(args, "who", "admin")
    role = {"admin": Role.ADMIN, "auditor": Role.AUDITOR}.get(who, Role.AGENCY)
    with AdminClient(
        args.broker,
        cert=args.certs / f"{who}.crt",
        key=args.certs / f"{who}.key",
        ca=args.certs / "ca.crt",
        trust_domain=args.trust_domain,
        role=role,
    ) as client:
        return action(client, args)


def _register(client: AdminClient, args: argparse.Namespace) -> int:
    record = client.register_agency(args.agency, args.name, args.country, args.contact)
    output(args).record(
        {"agency": record.agency, "display_name": record.display_name, "country": record.country}, title="registered"
    )
    return 0


def _revoke(client: AdminClient, args: argparse.Namespace) -> int:
    record = client.revoke(args.serial, args.reason)
    output(args).record(
        {
            "serial": record.serial,
            "spiffe_id": record.spiffe_id,
            "status": record.status,
            "reason": record.revocation_reason,
        },
        title="revoked",
    )
    return 0


def _certificates(client: AdminClient, args: argparse.Namespace) -> int:
    output(args).rows(
        [
            {
                "serial": r.serial,
                "spiffe_id": r.spiffe_id,
                "role": r.role,
                "status": r.status,
                "not_after": r.not_after.ToDatetime().isoformat() + "Z",
            }
            for r in client.certificates()
        ],
        empty="no certificates issued",
    )
    return 0


def _policy_show(client: AdminClient, args: argparse.Namespace) -> int:
    text = client.policy()
    if args.out:
        args.out.write_text(text, encoding="utf-8")
        output(args).record({"written_to": args.out, "bytes": len(text.encode())}, title="running policy saved")
    elif output(args).json:
        output(args).record({"toml": text})
    else:
        sys.stdout.write(text)
    return 0


def _policy_validate(client: AdminClient, args: argparse.Namespace) -> int:
    report = client.validate_policy(args.file.read_text(encoding="utf-8"), source=str(args.file))
    if output(args).json:
        output(args).record(
            {"file": args.file, "valid": report.valid, "errors": list(report.errors), "diff": report.diff}
        )
    else:
        for error in report.errors:
            output(args).problem(error)
        output(args).say(report.diff or "(no change against the running policy)")
    return 0 if report.valid else 1


def _policy_apply(client: AdminClient, args: argparse.Namespace) -> int:
    report = client.apply_policy(args.file.read_text(encoding="utf-8"), force=args.force, source=str(args.file))
    output(args).record({"file": args.file, "sha256": report.digest}, title="policy applied")
    return 0


def _explain(client: AdminClient, args: argparse.Namespace) -> int:
    recipients = [r for item in args.to for r in item.split(",") if r]
    decision = client.explain(sender=args.sender, kind=args.kind, tlp=args.tlp, recipients=recipients)
    output(args).record(
        {
            "verdict": "ALLOWED" if decision.allowed else "REFUSED",
            "allowed": decision.allowed,
            "rule": decision.rule,
            "reason": decision.reason,
            "recipients": list(decision.expanded_recipients),
        }
    )
    return 0 if decision.allowed else 1


def _retention(client: AdminClient, args: argparse.Namespace) -> int:
    report = client.retention(dry_run=args.dry_run)
    out = output(args)
    rows = [{"what": c.what, "rule": c.rule, "period": c.period, "count": c.count} for c in report.counts]
    if out.json:
        out.record(
            {
                "dry_run": report.dry_run,
                "counts": rows,
                "message_ids": list(report.message_ids),
                "undelivered_dropped": report.undelivered_dropped,
                "audit_indexes": list(report.audit_indexes),
                "policy_sha256": report.policy_sha256,
            }
        )
        return 0
    out.rows(rows, empty="nothing is due under the retention periods" if report.dry_run else "nothing was due")
    if not report.dry_run and report.counts:
        out.say(
            f"purged; {report.undelivered_dropped} undelivered deliveries dropped; audit entries "
            f"{', '.join(str(i) for i in report.audit_indexes)}"
        )
    return 0
