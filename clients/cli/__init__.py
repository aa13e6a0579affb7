"""`isb`: one command line for every user of the broker.

- operators: `isb serve`
- admins: `isb pki ...` (offline CA), `isb admin ...` (running broker), `isb policy ...` (files)
- agencies: `isb keys publish`, `isb send`, `isb listen`, `isb status`, `isb watchlist ...`
- auditors: `isb audit ...`, `isb console` (web console on 127.0.0.1)

Every subcommand sets `func(args) -> int`, the exit status.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from clients.cli import (
    admin_cmd,
    agency_cmd,
    audit_cmd,
    console_cmd,
    pki_cmd,
    policy_cmd,
    serve_cmd,
    watchlist_cmd,
)

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    """The `isb` argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="isb", description="Inter-agency secure broker")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (serve_cmd, pki_cmd, admin_cmd, policy_cmd, agency_cmd, watchlist_cmd, audit_cmd, console_cmd):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `isb` with `argv` (default: the process arguments); return the exit status."""
    args = build_parser().parse_args(argv)
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
