"""`isb policy ...`: check, explain and diff sharing-policy files offline, before they leak anything.

The top-level `isb` parser (clients/cli/__init__.py) calls `register`; every subcommand sets
`func(args) -> int` (the exit status) as its default.

Exit statuses: `check` 0 valid / 1 invalid; `explain` 0 allowed / 1 refused / 2 the policy file
or the question is unusable; `diff` 0 same / 1 different / 2 trouble (as diff(1)).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from rich.text import Text

from broker.errors import BrokerError
from broker.policy import KINDS, TLP_CODES, Decision, Policy, PolicyError, diff
from clients.cli.failures import CommandError
from clients.cli.output import Output, output, value_style

__all__ = ["register"]

Handler = Callable[[argparse.Namespace], int]

EXIT_OK, EXIT_NO, EXIT_TROUBLE = 0, 1, 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `policy` command and its subcommands to the `isb` parser."""
    policy = subparsers.add_parser("policy", help="sharing policy: check, explain, diff (offline)")
    commands = policy.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")

    check = commands.add_parser("check", help="validate policy files; print every error with its line")
    check.add_argument("files", type=Path, nargs="+", metavar="FILE")
    check.set_defaults(func=_cmd_check)

    explain = commands.add_parser(
        "explain",
        help="may SENDER send KIND at TLP to these recipients? (or, with --forwarded-by, forward it)",
    )
    explain.add_argument("--policy", type=Path, required=True, metavar="FILE", help="policy file to ask")
    explain.add_argument("--sender", required=True, help="sending agency (the original sender for a forward)")
    explain.add_argument("--kind", required=True, help=f"one of {', '.join(KINDS)}")
    explain.add_argument("--tlp", required=True, help=f"one of {', '.join(TLP_CODES)}")
    explain.add_argument(
        "--to",
        action="append",
        default=[],
        metavar="ADDR",
        help="agency id or group (repeatable or comma-separated); omit to list everyone reachable",
    )
    explain.add_argument(
        "--forwarded-by", metavar="AGENCY", help="explain a forward of SENDER's message by this recipient"
    )
    explain.set_defaults(func=_cmd_explain)

    diff_cmd = commands.add_parser("diff", help="unified diff of two policy files; also validates NEW")
    diff_cmd.add_argument("old", type=Path, metavar="OLD")
    diff_cmd.add_argument("new", type=Path, metavar="NEW")
    diff_cmd.set_defaults(func=_cmd_diff)


def _read(path: Path, trouble: int) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}", exit_status=trouble) from exc
    except UnicodeDecodeError as exc:
        raise CommandError(f"{path} is not UTF-8 text (byte {exc.start})", exit_status=trouble) from exc


def _cmd_check(args: argparse.Namespace) -> int:
    out = output(args)
    status = EXIT_OK
    for path in args.files:
        try:
            text = _read(path, EXIT_NO)
        except CommandError as exc:
            out.error(str(exc))
            status = EXIT_NO
            continue
        try:
            policy = Policy.parse(text, source=str(path))
        except PolicyError as exc:
            if out.json:
                out.record({"file": path, "valid": False, "errors": list(exc.errors)})
            else:
                for line in exc.errors:
                    out.problem(line)
                out.error(f"{path}: invalid ({len(exc.errors)} error(s)); nothing would change")
            status = EXIT_NO
            continue
        if out.json:
            out.record(
                {
                    "file": path,
                    "valid": True,
                    "agencies": len(policy.agencies),
                    "groups": len(policy.groups),
                    "rules": len(policy.rules),
                    "sha256": policy.digest,
                }
            )
        else:
            out.say(
                f"{path}: valid: {len(policy.agencies)} agencies, {len(policy.groups)} groups, "
                f"{len(policy.rules)} rules; sha256 {policy.digest}"
            )
    return status


def _print_decision(out: Output, decision: Decision) -> None:
    verdict = "ALLOWED" if decision.allowed else "REFUSED"
    if out.json:
        out.record(
            {
                "verdict": verdict,
                "allowed": decision.allowed,
                "rule": decision.rule,
                "recipients": list(decision.expanded),
                "reason": decision.reason,
            }
        )
        return
    out.say(Text(verdict, style=value_style(verdict)) + Text(f" ({decision.rule})"))
    if decision.expanded:
        out.say(f"  recipients: {', '.join(decision.expanded)}")
    out.say(f"  reason: {decision.reason}")


def _parse(path: Path, text: str, out: Output) -> Policy:
    try:
        return Policy.parse(text, source=str(path))
    except PolicyError as exc:
        for line in exc.errors:
            out.problem(line)
        raise CommandError(
            f"{path} does not validate ({len(exc.errors)} error(s))",
            f"`isb policy check {path}` lists them",
            exit_status=EXIT_TROUBLE,
        ) from exc


def _cmd_explain(args: argparse.Namespace) -> int:
    out = output(args)
    policy = _parse(args.policy, _read(args.policy, EXIT_TROUBLE), out)
    recipients = [item.strip() for value in args.to for item in value.split(",") if item.strip()]
    if args.forwarded_by:
        if not recipients:
            raise CommandError("--forwarded-by needs --to", exit_status=EXIT_TROUBLE)
        try:
            decision = policy.decide_forward(args.forwarded_by, args.sender, args.kind, args.tlp, recipients)
        except BrokerError as exc:
            raise CommandError(str(exc), exit_status=EXIT_TROUBLE) from exc
    else:
        decision = policy.explain(args.sender, args.kind, args.tlp, recipients)
    _print_decision(out, decision)
    return EXIT_OK if decision.allowed else EXIT_NO


def _cmd_diff(args: argparse.Namespace) -> int:
    out = output(args)
    old, new = _read(args.old, EXIT_TROUBLE), _read(args.new, EXIT_TROUBLE)
    text = diff(old, new, str(args.old), str(args.new))
    if out.json:
        out.record({"old": args.old, "new": args.new, "same": old == new, "diff": text})
    else:
        sys.stdout.write(text)
    _parse(args.new, new, out)
    return EXIT_OK if old == new else EXIT_NO
