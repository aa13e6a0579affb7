"""`isb console`: the auditor's web console, on 127.0.0.1 only (clients/console).

    isb console [--broker HOST:PORT] [--certs DIR] [--key audit.pub] [--port N]
    isb console --export FILE --key audit.pub [--port N]

It prints one URL with a random access token and serves until Ctrl-C. Online, it reads the log over
mutual TLS with `auditor.crt`/`auditor.key` from `--certs`, so the auditor's key never leaves this
machine; with `--export` it reads an export file and needs no broker.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from broker.protocol import _note
from clients.auditor import AuditorClient
from clients.cli.audit_cmd import load_audit_key
from clients.cli.options import add_broker_arguments
from clients.cli.output import output

if TYPE_CHECKING:
    from clients.console.sources import AuditSource

__all__ = ["register"]

EXIT_OK = 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `console` command to the `isb` parser."""
    console = subparsers.add_parser(
        "console", help="auditor's web console on 127.0.0.1: timeline, message life with proofs, checkpoints"
    )
    console.add_argument(
        "--export",
        type=Path,
        default=None,
        metavar="FILE",
        help="open this export file (offline) instead of connecting to a broker",
    )
    add_broker_arguments(console, holds="auditor.crt, auditor.key, ca.crt and audit.pub")
    console.add_argument(
        "--key",
        type=Path,
        default=None,
        metavar="FILE",
        help="the broker's audit public key, vkey line or PEM (default: audit.pub in --certs)",
    )
    console.add_argument(
        "--port", type=int, default=8787, help="port on 127.0.0.1 to serve on; 0 picks a free one (default %(default)s)"
    )
    console.add_argument(
        "--refresh",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="online: re-read the log when the pages' copy is older than this (default %(default)s)",
    )
    console.set_defaults(func=_cmd_console)


def _source(args: argparse.Namespace) -> tuple[AuditSource, AuditorClient | None]:
    # The web stack (starlette, uvicorn, jinja2) is imported only here: every other `isb` command,
    # `isb serve` included, starts without paying for it.
    from clients.console import ExportSource, LiveSource  # noqa: PLC0415

    key = load_audit_key(args.key or args.certs / "audit.pub")
    if args.export is not None:
        return ExportSource(args.export, key), None
    key_name = None
    if isinstance(key, str):
        key_name, key = _note.parse_vkey(key)
    auditor = AuditorClient(
        args.broker,
        cert=args.certs / "auditor.crt",
        key=args.certs / "auditor.key",
        ca=args.certs / "ca.crt",
        audit_key=key,
        key_name=key_name,
        trust_domain=args.trust_domain,
    )
    return LiveSource(auditor, args.broker, refresh_seconds=args.refresh), auditor


def _cmd_console(args: argparse.Namespace) -> int:
    # Failures (unreadable key or export, a port in use, certificate problems) are reported by `isb`'s main.
    from clients.console import ConsoleServer  # noqa: PLC0415 -- see _source

    source, auditor = _source(args)
    server = ConsoleServer(source, port=args.port)
    output(args).record(
        {"source": source.label, "url": server.url, "stop": "Ctrl-C"},
        title="ISB audit console: open the url in a browser on this machine",
    )
    sys.stdout.flush()
    try:
        server.run()
    finally:
        if auditor is not None:
            auditor.close()
    return EXIT_OK
