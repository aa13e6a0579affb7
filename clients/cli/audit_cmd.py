"""`isb audit ...`: the auditor's commands.

`isb audit verify EXPORT --key audit.pub` checks an export file offline (clients/audit/verify.py):
exit 0 when every checkpoint verifies, 1 when the log does not verify (the message names the first
entry that does not match), 2 when the export or the key cannot be read.

`--key` takes the broker's audit public key as a C2SP verifier key (one line,
`<name>+<key id>+<base64>`) or as a PEM public key (then the key name comes from the export header).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from broker.config import DEFAULT_CERT_DIR
from broker.errors import VerificationError
from broker.protocol import _note
from clients.audit.verify import verify_export
from clients.auditor import AuditorClient
from clients.errors import ClientError

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

    report = commands.add_parser("report", help="the proven life of one message: sent, delivered, receipts")
    _online(report)
    report.add_argument("message_id")
    report.set_defaults(func=_cmd_report)


def _online(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", default="127.0.0.1:7443", help="host:port of the broker (default %(default)s)")
    parser.add_argument("--certs", type=Path, default=DEFAULT_CERT_DIR,
                        help="folder with auditor.crt, auditor.key and ca.crt (default %(default)s)")
    parser.add_argument("--key", type=Path, default=None, metavar="FILE",
                        help="the broker's audit public key (default: audit.pub in --certs)")
    parser.add_argument("--trust-domain", default="isb.dev")


def _auditor(args: argparse.Namespace) -> AuditorClient:
    key = load_audit_key(args.key or args.certs / "audit.pub")
    key_name = None
    if isinstance(key, str):
        key_name, key = _note.parse_vkey(key)
    return AuditorClient(args.broker, cert=args.certs / "auditor.crt", key=args.certs / "auditor.key",
                         ca=args.certs / "ca.crt", audit_key=key, key_name=key_name, trust_domain=args.trust_domain)


def _online_command(action: Callable[[AuditorClient, argparse.Namespace], None]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            with _auditor(args) as auditor:
                action(auditor, args)
        except (ClientError, VerificationError, OSError) as exc:
            print(f"isb audit: {exc}", file=sys.stderr)
            return EXIT_FAILED
        return EXIT_OK
    return run


def _checkpoint(auditor: AuditorClient, args: argparse.Namespace) -> None:
    cp = auditor.checkpoint(fresh=args.fresh)
    print(json.dumps({"origin": cp.origin, "tree_size": cp.size, "root_hash": cp.root.hex(),
                      "time": cp.time.isoformat() if cp.time else None, "signature": "verified"}))


def _export(auditor: AuditorClient, args: argparse.Namespace) -> None:
    with args.out.open("wb") as stream:
        count = auditor.export(stream)
    print(f"exported {count} entries to {args.out}; check it with: isb audit verify {args.out} --key audit.pub")


def _prove(auditor: AuditorClient, args: argparse.Namespace) -> None:
    for proven in auditor.prove_message(args.message_id):
        print(json.dumps({"index": proven.index, "event": proven.event.event, "tree_size": proven.checkpoint.size,
                          "root_hash": proven.checkpoint.root.hex(), "proof": [h.hex() for h in proven.proof],
                          "inclusion": "verified"}))


def _report(auditor: AuditorClient, args: argparse.Namespace) -> None:
    for row in auditor.report(args.message_id):
        print(json.dumps(row, default=list))


_cmd_checkpoint = _online_command(_checkpoint)
_cmd_export = _online_command(_export)
_cmd_prove = _online_command(_prove)
_cmd_report = _online_command(_report)


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


def _cmd_verify(args: argparse.Namespace) -> int:
    try:
        key = load_audit_key(args.key)
    except OSError as exc:
        print(f"isb audit verify: cannot read the key: {exc}", file=sys.stderr)
        return EXIT_TROUBLE
    except VerificationError as exc:
        print(f"isb audit verify: {exc}", file=sys.stderr)
        return EXIT_TROUBLE
    progress = None if args.quiet else ProgressBar(sys.stderr, "verifying")
    try:
        report = verify_export(args.export, key, progress)
    except OSError as exc:
        print(f"isb audit verify: cannot read the export: {exc}", file=sys.stderr)
        return EXIT_TROUBLE
    except VerificationError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"OK: {report.origin}: {report.entries} entries, {report.checkpoints} checkpoints verified;"
        f" tree size {report.tree_size}, root {report.root_hash.hex()}"
    )
    if report.unverified_entries:
        print(f"note: {report.unverified_entries} entries after the last checkpoint are not covered by any")
    return EXIT_OK
