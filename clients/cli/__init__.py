# PYTHON_ARGCOMPLETE_OK
"""`isb`: one command line for every user of the broker.

- operators: `isb serve`
- admins: `isb pki ...` (offline CA), `isb admin ...` (running broker), `isb policy ...` (files)
- agencies: `isb keys publish`, `isb send`, `isb listen`, `isb status`, `isb watchlist ...`
- auditors: `isb audit ...`, `isb console` (web console on 127.0.0.1)
- everyone: `isb config` (the settings in force), `isb completion SHELL`

Every subcommand sets `func(args) -> int`, the exit status, and prints through `output(args)` (an
`Output`): tables for a person, JSON lines with `--json`, which every command accepts. A failure is
one line on standard error, `isb: error: <cause>; <fix>`; `--debug` adds the traceback.

argparse rather than typer: the commands are registered by several modules (and by other teams'
subcommands) on one parser tree, argparse is in the standard library and already holds every
command, and `rich` (output) with `argcomplete` (completion) add what typer would have brought.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from importlib import metadata
from typing import Any, NoReturn

import argcomplete

from broker.errors import ConfigurationError
from broker.logs import configure_logging
from clients.cli import (
    admin_cmd,
    agency_cmd,
    audit_cmd,
    config_cmd,
    console_cmd,
    pki_cmd,
    policy_cmd,
    serve_cmd,
    watchlist_cmd,
    witness_cmd,
)
from clients.cli.failures import EXIT_BUG, EXIT_FAILED, explain
from clients.cli.options import reload_settings
from clients.cli.output import ERROR_PREFIX, Output

__all__ = ["CommandParser", "build_parser", "main"]

EXIT_USAGE = 2


class CommandParser(argparse.ArgumentParser):
    """A parser whose every (sub)command accepts `--json` and `--debug`, and reports usage errors in
    the one error style."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """As `argparse.ArgumentParser`, plus the output options."""
        super().__init__(*args, **kwargs)
        # SUPPRESS: a subcommand that does not see the option leaves the value given before it.
        self.add_argument(
            "--json",
            action="store_true",
            default=argparse.SUPPRESS,
            help="print results as JSON lines (one object per line), errors as JSON on stderr",
        )
        self.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="on an unexpected error, print its traceback",
        )

    def error(self, message: str) -> NoReturn:
        """A usage error: the usage, then the one error line naming the help command."""
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{ERROR_PREFIX}{message}; see `{self.prog} --help`\n")
        sys.exit(EXIT_USAGE)


def _version() -> str:
    try:
        return metadata.version("isb")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The `isb` argument parser with every subcommand registered."""
    parser = CommandParser(prog="isb", description="Inter-agency secure broker")
    parser.add_argument("--version", action="version", version=f"isb {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (
        serve_cmd,
        pki_cmd,
        admin_cmd,
        policy_cmd,
        agency_cmd,
        watchlist_cmd,
        audit_cmd,
        console_cmd,
        config_cmd,
        witness_cmd,
    ):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `isb` with `argv` (default: the process arguments); return the exit status."""
    wants_json = "--json" in (sys.argv[1:] if argv is None else argv)
    try:
        reload_settings()
        parser = build_parser()
    except ConfigurationError as exc:
        Output(json_mode=wants_json).error(str(exc), "fix the file, or point ISB_CONFIG at another one")
        return EXIT_FAILED
    argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    # Library log lines (the SDK's, the CA's) would bury a command's output: warnings only, as JSON.
    configure_logging("warning")
    out = Output(json_mode=getattr(args, "json", False))
    args._output = out
    try:
        status: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (`| head`) has gone: say nothing more, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - the one place where any failure becomes one line
        failure = explain(exc)
        if getattr(args, "debug", False):
            traceback.print_exception(exc, file=sys.stderr)
        fields = {"code": failure.code} if failure.code else {}
        out.error(failure.message, failure.hint, **fields)
        return failure.exit_status if failure.known else EXIT_BUG
    return status


if __name__ == "__main__":
    sys.exit(main())
