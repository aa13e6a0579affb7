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

from broker.errors import BrokerError
from broker.policy import KINDS, TLP_CODES, Decision, Policy, PolicyError, diff

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



def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"isb policy: error: cannot read {path}: {exc}", file=sys.stderr)
        return None


def _cmd_check(args: argparse.Namespace) -> int:
    status = EXIT_OK
    for path in args.files:
        text = _read(path)
        if text is None:
            status = EXIT_NO
            continue
        try:
            policy = Policy.parse(text, source=str(path))
        except PolicyError as exc:
            for line in exc.errors:
                print(line, file=sys.stderr)
            print(f"{path}: invalid ({len(exc.errors)} error(s)); nothing would change", file=sys.stderr)
            status = EXIT_NO
            continue
        print(
            f"{path}: valid: {len(policy.agencies)} agencies, {len(policy.groups)} groups, "
            f"{len(policy.rules)} rules; sha256 {policy.digest}"
        )
    return status


def _print_decision(decision: Decision) -> None:
    verdict = "ALLOWED" if decision.allowed else "REFUSED"
    print(f"{verdict} ({decision.rule})")
    if decision.expanded:
        print(f"  recipients: {', '.join(decision.expanded)}")
    print(f"  reason: {decision.reason}")


def _cmd_explain(args: argparse.Namespace) -> int:
    text = _read(args.policy)
    if text is None:
        return EXIT_TROUBLE
    try:
        policy = Policy.parse(text, source=str(args.policy))
    except PolicyError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return EXIT_TROUBLE
    recipients = [item.strip() for value in args.to for item in value.split(",") if item.strip()]
    if args.forwarded_by:
        if not recipients:
            print("isb policy: error: --forwarded-by needs --to", file=sys.stderr)
            return EXIT_TROUBLE
        try:
            decision = policy.decide_forward(args.forwarded_by, args.sender, args.kind, args.tlp, recipients)
        except BrokerError as exc:
            print(f"isb policy: error: {exc}", file=sys.stderr)
            return EXIT_TROUBLE
    else:
        decision = policy.explain(args.sender, args.kind, args.tlp, recipients)
    _print_decision(decision)
    return EXIT_OK if decision.allowed else EXIT_NO


def _cmd_diff(args: argparse.Namespace) -> int:
    old, new = _read(args.old), _read(args.new)
    if old is None or new is None:
        return EXIT_TROUBLE
    sys.stdout.write(diff(old, new, str(args.old), str(args.new)))
    try:
        Policy.parse(new, source=str(args.new))
    except PolicyError as exc:
        print(f"{args.new} does not validate:", file=sys.stderr)
        for line in exc.errors:
            print(line, file=sys.stderr)
        return EXIT_TROUBLE
    return EXIT_OK if old == new else EXIT_NO
