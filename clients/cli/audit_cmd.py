"""`isb audit ...`: the auditor's commands.

`isb audit verify EXPORT --key audit.pub` checks an export file offline (clients/audit/verify.py):
exit 0 when every checkpoint verifies, 1 when the log does not verify (the message names the first
entry that does not match) or entries follow the last checkpoint (unless `--allow-unsigned-tail`),
2 when the export or the key cannot be read. Every failure is one `FAILED: ...` line.

`--key` takes the broker's audit public key as a C2SP verifier key (one line,
`<name>+<key id>+<base64>`) or as a PEM public key (then the key name comes from the export header).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from broker.protocol import _cosignature, _note
from broker.protocol.errors import ProtocolError, VerificationError
from broker.protocol.witness_policy import Policy, load_policy
from clients.audit.report import SECTIONS, DpoReport, report_from_export
from clients.audit.verify import verify_export
from clients.auditor import AuditorClient
from clients.cli.failures import CommandError
from clients.cli.options import add_broker_arguments, add_justification_arguments
from clients.cli.output import output

__all__ = ["register"]

EXIT_OK, EXIT_FAILED, EXIT_TROUBLE = 0, 1, 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `audit` command and its subcommands to the `isb` parser."""
    audit = subparsers.add_parser("audit", help="audit log: checkpoints, proofs, export, offline verification")
    commands = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")

    verify = commands.add_parser(
        "verify",
        help="recompute the tree of an export, check every checkpoint, name the first bad entry",
    )
    verify.add_argument("export", type=Path, metavar="EXPORT", help="export file (JSON Lines)")
    verify.add_argument(
        "--key",
        type=Path,
        required=True,
        metavar="FILE",
        help="the broker's audit public key: a vkey line or a PEM public key",
    )
    verify.add_argument("--quiet", action="store_true", help="no progress bar")
    verify.add_argument(
        "--policy",
        type=Path,
        default=None,
        metavar="FILE",
        help="a C2SP tlog-policy: the last checkpoint must carry its quorum of witness cosignatures",
    )
    verify.add_argument(
        "--allow-unsigned-tail",
        action="store_true",
        help="accept entries after the last checkpoint (reported, not verified); without it they fail",
    )
    verify.set_defaults(func=_cmd_verify)

    checkpoint = commands.add_parser("checkpoint", help="fetch and verify the latest signed checkpoint")
    _online(checkpoint)
    checkpoint.add_argument("--fresh", action="store_true", help="ask the broker to sign one now")
    checkpoint.set_defaults(func=_cmd_checkpoint)

    export = commands.add_parser("export", help="stream the log (entries and checkpoints) to a file")
    _online(export)
    export.add_argument("--out", type=Path, required=True, help="export file to write (JSON Lines)")
    export.set_defaults(func=_cmd_export)

    prove = commands.add_parser("prove", help="print and check the inclusion proof of a message's entries")
    _online(prove)
    prove.add_argument("message_id")
    prove.set_defaults(func=_cmd_prove)

    report = commands.add_parser(
        "report",
        help="the proven life of one message (MESSAGE_ID), or the data protection officer's report "
        "over a period (--from/--to): disclosures, consultations, purges, erasures, reviews",
    )
    _online(report)
    report.add_argument("message_id", nargs="?", default=None, help="a message whose life to prove")
    report.add_argument(
        "--from",
        dest="start",
        type=_instant,
        default=None,
        metavar="WHEN",
        help="start of the period, ISO 8601 (2026-01-01 or 2026-01-01T08:00Z), inclusive",
    )
    report.add_argument(
        "--to",
        dest="end",
        type=_instant,
        default=None,
        metavar="WHEN",
        help="end of the period, exclusive (default: now)",
    )
    report.add_argument(
        "--export",
        type=Path,
        default=None,
        metavar="FILE",
        help="report from this export file, verified offline with --key (default: export now)",
    )
    report.add_argument("--csv", action="store_true", help="write the report as CSV")
    report.set_defaults(func=_cmd_report)


def _online(parser: argparse.ArgumentParser) -> None:
    add_broker_arguments(parser, holds="auditor.crt, auditor.key and ca.crt")
    parser.add_argument(
        "--key",
        type=Path,
        default=None,
        metavar="FILE",
        help="the broker's audit public key (default: audit.pub in --certs)",
    )
    parser.add_argument(
        "--policy",
        type=Path,
        default=None,
        metavar="FILE",
        help="a C2SP tlog-policy: accept checkpoints only with its quorum of witness cosignatures",
    )
    add_justification_arguments(parser, what="this consultation of the log")


def _auditor(args: argparse.Namespace) -> AuditorClient:
    key = load_audit_key(args.key or args.certs / "audit.pub")
    key_name = None
    if isinstance(key, str):
        key_name, key = _note.parse_vkey(key)
    policy = load_policy(args.policy) if args.policy is not None else None
    return AuditorClient(
        args.broker,
        cert=args.certs / "auditor.crt",
        key=args.certs / "auditor.key",
        ca=args.certs / "ca.crt",
        audit_key=key,
        key_name=key_name,
        trust_domain=args.trust_domain,
        policy=policy,
        legal_basis=args.legal_basis,
        case_reference=args.case_ref,
        operator=args.operator,
    )


def _online_command(action: Callable[[AuditorClient, argparse.Namespace], None]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        # Failures (ClientError, VerificationError, unreadable files) are reported by `isb`'s main.
        with _auditor(args) as auditor:
            action(auditor, args)
        return EXIT_OK

    return run


def _checkpoint(auditor: AuditorClient, args: argparse.Namespace) -> None:
    try:
        cp = auditor.checkpoint(fresh=args.fresh)
    except VerificationError as exc:  # a failed check of the broker's answer: the command's verdict, not a bug
        hint = (
            (
                "the broker may not have collected the cosignatures of its newest checkpoint yet: try again in a"
                " few seconds; if it persists, the witnesses refuse this log"
            )
            if "witness quorum" in str(exc)
            else None
        )
        raise CommandError(f"checkpoint refused: {exc}", hint) from exc
    # Every signature line after the broker's: witness cosignatures (verified only with --policy).
    _, lines = _cosignature.split_note(cp.note)
    others = sorted({name for name, _ in lines if name != auditor.key_name})
    record = {
        "origin": cp.origin,
        "tree_size": cp.size,
        "root_hash": cp.root.hex(),
        "time": cp.time,
        "signature": "verified",
        "cosignature_lines": ", ".join(others) or "none",
    }
    if auditor.policy is not None:
        record["witness_quorum"] = f"met: {', '.join(auditor.cosigned_by) or 'no cosignature needed'}"
    output(args).record(record, title="latest checkpoint")


def _export(auditor: AuditorClient, args: argparse.Namespace) -> None:
    with args.out.open("wb") as stream:
        count = auditor.export(stream)
    output(args).record(
        {"entries": count, "written_to": args.out},
        title=f"exported; check it with `isb audit verify {args.out} --key audit.pub`",
    )


def _prove(auditor: AuditorClient, args: argparse.Namespace) -> None:
    out = output(args)
    rows = [
        {
            "index": proven.index,
            "event": proven.event.event,
            "tree_size": proven.checkpoint.size,
            "root_hash": proven.checkpoint.root.hex(),
            "proof": [h.hex() for h in proven.proof],
            "inclusion": "verified",
        }
        for proven in auditor.prove_message(args.message_id)
    ]
    out.rows(
        rows,
        ["index", "event", "tree_size", "root_hash", "inclusion"] if not out.json else None,
        title=f"inclusion proofs of {args.message_id}",
        empty="no audit entries for this message",
    )


def _report(auditor: AuditorClient, args: argparse.Namespace) -> None:
    output(args).rows(
        [dict(row) for row in auditor.report(args.message_id)],
        title=f"life of {args.message_id}",
        empty="no audit entries for this message",
    )


def _instant(text: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 date or time") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def _cmd_report(args: argparse.Namespace) -> int:
    """The life of one message, or the DPO report over --from/--to, from an export verified first."""
    if args.message_id is not None:
        if args.start is not None or args.end is not None or args.export is not None:
            raise CommandError(
                "give a MESSAGE_ID or a period (--from/--to), not both",
                "`isb audit report MESSAGE_ID` or `isb audit report --from 2026-01-01`",
            )
        return _online_command(_report)(args)
    if args.start is None:
        raise CommandError("the report needs a period", "pass --from (and --to, default now), or a MESSAGE_ID")
    end = args.end or dt.datetime.now(dt.UTC)
    key = load_audit_key(args.key or args.certs / "audit.pub")
    policy = load_policy(args.policy) if args.policy is not None else None
    if args.export is not None:
        report = report_from_export(args.export, key, args.start, end, policy=policy)
    else:
        with tempfile.TemporaryDirectory(prefix="isb-report-") as folder, _auditor(args) as auditor:
            auditor.checkpoint(fresh=True)  # so that the export ends at a checkpoint covering the period
            export = Path(folder) / "audit.jsonl"
            with export.open("wb") as stream:
                auditor.export(stream)
            report = report_from_export(export, key, args.start, end, policy=policy)
    _print_report(args, report)
    return EXIT_OK


def _print_report(args: argparse.Namespace, report: DpoReport) -> None:
    rows = [row.as_dict() for row in report.rows]
    if args.csv:
        writer = csv.DictWriter(
            sys.stdout, fieldnames=["section", "subject", "legal_basis", "count", "detail"], lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(rows)
        return
    out = output(args)
    if out.json:
        for row in rows:
            out.record(row)
        return
    out.say(
        f"audit report {report.start.isoformat()} to {report.end.isoformat()}, from entries verified under "
        f"checkpoint {report.tree_size} (root {report.root_hash.hex()})",
        style="bold",
    )
    for section in SECTIONS:
        out.rows(
            [{k: v for k, v in row.items() if k != "section"} for row in rows if row["section"] == section],
            title=section,
            empty=f"{section}: none in this period",
        )


_cmd_checkpoint = _online_command(_checkpoint)
_cmd_export = _online_command(_export)
_cmd_prove = _online_command(_prove)


def load_audit_key(path: Path) -> Ed25519PublicKey | str:
    """Read an audit key file: a PEM Ed25519 public key, or a vkey string (returned as text)."""
    data = path.read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        try:
            key = load_pem_public_key(data)
        except ValueError as exc:
            raise VerificationError(f"{path}: not a PEM public key ({exc})") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise VerificationError(f"{path}: the audit key must be an Ed25519 public key")
        return key
    try:
        return data.decode().strip()
    except UnicodeDecodeError as exc:
        raise VerificationError(f"{path}: neither a PEM key nor a vkey line") from exc


class ProgressBar:
    """A one-line progress bar on a terminal; silent when the stream is not a tty."""

    def __init__(self, stream: TextIO, label: str, width: int = 40) -> None:
        """Draw on `stream`."""
        self._stream = stream
        self._label = label
        self._width = width
        self._enabled = stream.isatty()
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        """Show `done` of `total` (at most ten redraws a second, and always the final one)."""
        if not self._enabled:
            return
        now = time.monotonic()
        if done < total and now - self._last < 0.1:
            return
        self._last = now
        fraction = done / total if total else 1.0
        filled = int(fraction * self._width)
        bar = "#" * filled + "-" * (self._width - filled)
        self._stream.write(f"\r{self._label} [{bar}] {fraction:6.1%}")
        if done >= total:
            self._stream.write("\n")
        self._stream.flush()


class _InputTrouble(Exception):
    """The key or the policy file cannot be used (exit 2, not a verification failure)."""


def _verify_inputs(args: argparse.Namespace) -> tuple[Ed25519PublicKey | str, Policy | None]:
    try:
        key = load_audit_key(args.key)
    except OSError as exc:
        raise _InputTrouble(f"cannot read the key {args.key}: {exc.strerror}") from exc
    except ProtocolError as exc:
        raise _InputTrouble(f"{exc}; pass the broker's audit.pub (a vkey line or a PEM Ed25519 key)") from exc
    try:
        policy = load_policy(args.policy) if args.policy is not None else None
    except ProtocolError as exc:
        raise _InputTrouble(str(exc)) from exc
    return key, policy


def _cmd_verify(args: argparse.Namespace) -> int:
    """Every failure is one `FAILED: ...` line (or one JSON object): 1 when the log does not verify,
    2 when the key or the export cannot be read."""
    out = output(args)

    def failed(reason: str, status: int) -> int:
        if out.json:
            out.record({"result": "FAILED", "export": args.export, "reason": reason})
        else:
            out.error(f"FAILED: {reason}")
        return status

    try:
        key, policy = _verify_inputs(args)
    except _InputTrouble as exc:
        return failed(str(exc), EXIT_TROUBLE)
    progress = None if args.quiet or out.json else ProgressBar(sys.stderr, "verifying")
    try:
        report = verify_export(args.export, key, progress, allow_unsigned_tail=args.allow_unsigned_tail, policy=policy)
    except OSError as exc:
        return failed(f"cannot read the export {args.export}: {exc.strerror}", EXIT_TROUBLE)
    except ProtocolError as exc:
        return failed(str(exc), EXIT_FAILED)
    if out.json:
        out.record(
            {
                "result": "OK",
                "export": args.export,
                "origin": report.origin,
                "entries": report.entries,
                "checkpoints": report.checkpoints,
                "tree_size": report.tree_size,
                "root_hash": report.root_hash.hex(),
                "unverified_entries": report.unverified_entries,
                "cosigned_by": list(report.cosigned_by),
            }
        )
        return EXIT_OK
    out.say(
        f"OK: {report.origin}: {report.entries} entries, {report.checkpoints} checkpoints verified;"
        f" tree size {report.tree_size}, root {report.root_hash.hex()}",
        style="bold green",
    )
    if policy is not None:
        out.say(
            f"witness policy met: the last checkpoint is cosigned by {', '.join(report.cosigned_by) or 'nobody'}"
            f" ({policy.describe_quorum()})"
        )
    if report.unverified_entries:
        out.say(
            f"note: {report.unverified_entries} entries after the last checkpoint are covered by no signature"
            " and were accepted unverified (--allow-unsigned-tail)"
        )
    return EXIT_OK
