"""`isb witness`: the C2SP tlog-witness a partner agency runs (docs/protocol.md section 18).

    isb witness keygen --name witness.customs.example/w1 --out witness.key
    isb witness serve --name witness.customs.example/w1 --key witness.key --logs policy.txt \\
        --state witness.db --listen 0.0.0.0:7446 --cert witness.crt --tls-key witness-tls.key --ca ca.crt

`keygen` writes a new Ed25519 key (PKCS#8 PEM, mode 0600) and prints the vkey to pin in the
policy. `serve` follows the logs of the `log` lines of a tlog-policy file and serves
`POST <prefix>/add-checkpoint` over mutual TLS until Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import threading
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from broker.errors import ConfigurationError
from broker.protocol import _cosignature
from broker.protocol.witness_policy import load_policy
from broker.witness.core import Witness, WitnessState
from broker.witness.http import WitnessHTTPServer, server_context
from clients.cli.output import output

__all__ = ["load_witness_key", "register"]

EXIT_OK = 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `witness` command to the `isb` parser."""
    witness = subparsers.add_parser("witness", help="run a transparency-log witness that cosigns the broker's log")
    commands = witness.add_subparsers(dest="witness_command", required=True, metavar="COMMAND")
    keygen = commands.add_parser("keygen", help="create the witness's Ed25519 cosigning key and print its vkey")
    keygen.add_argument("--name", required=True, help="the witness name, e.g. witness.customs.example/w1")
    keygen.add_argument("--out", type=Path, required=True, help="where to write the key (refuses to overwrite)")
    keygen.set_defaults(func=_cmd_keygen)
    serve = commands.add_parser("serve", help="serve add-checkpoint (C2SP tlog-witness) over mutual TLS")
    serve.add_argument("--name", required=True, help="the witness name (the key name of its cosignatures)")
    serve.add_argument("--key", type=Path, required=True, help="the Ed25519 cosigning key (from keygen)")
    serve.add_argument("--logs", type=Path, required=True, help="a tlog-policy file: its `log` lines are followed")
    serve.add_argument("--state", type=Path, required=True, help="the SQLite file of the latest cosigned checkpoints")
    serve.add_argument("--listen", default="127.0.0.1:7446", help="host:port (default %(default)s)")
    serve.add_argument("--prefix", default="", help="the submission prefix path, e.g. /witness (default none)")
    serve.add_argument("--cert", type=Path, required=True, help="the witness's TLS certificate (role witness)")
    serve.add_argument("--tls-key", type=Path, required=True, help="the TLS certificate's key")
    serve.add_argument(
        "--ca", type=Path, required=True, help="the deployment CA; clients must present its certificates"
    )
    serve.set_defaults(func=_cmd_serve)


def load_witness_key(path: Path) -> Ed25519PrivateKey:
    """An unencrypted PKCS#8 PEM Ed25519 key."""
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigurationError(f"cannot load the witness key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"the witness key {path} is not an Ed25519 key")
    return key


def _cmd_keygen(args: argparse.Namespace) -> int:
    key = Ed25519PrivateKey.generate()
    try:
        vkey = _cosignature.encode_cosigner_vkey(args.name, key.public_key())
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    try:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise ConfigurationError(f"cannot create {args.out}: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as stream:
        stream.write(pem)
    output(args).record(
        {"key": str(args.out), "vkey": vkey, "policy_line": f"witness <name> {vkey}"},
        title="witness key created: pin the vkey in the partners' tlog-policy",
    )
    return EXIT_OK


def build_server(args: argparse.Namespace) -> WitnessHTTPServer:
    """The witness server the `serve` arguments describe (not started)."""
    policy = load_policy(args.logs)
    if not policy.logs:
        raise ConfigurationError(f"{args.logs} has no `log` line: the witness would follow no log")
    witness = Witness(
        args.name,
        load_witness_key(args.key),
        {log.origin: log.public_key for log in policy.logs},
        WitnessState(args.state),
    )
    host, _, port = args.listen.rpartition(":")
    try:
        context = server_context(args.cert, args.tls_key, args.ca)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot load the witness's TLS files: {exc}") from exc
    return WitnessHTTPServer((host or "127.0.0.1", int(port)), witness, context, args.prefix)


def _cmd_serve(args: argparse.Namespace) -> int:
    server = build_server(args)
    host = str(server.server_address[0])
    output(args).record(
        {
            "url": f"https://{host}:{server.port}{server.prefix}",
            "vkey": server.witness.vkey,
            "logs": sorted(server.witness.logs),
            "stop": "Ctrl-C",
        },
        title="ISB witness serving",
    )
    stop = threading.Event()
    thread = server.start()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        thread.join(5)
        server.witness.state.close()
    return EXIT_OK
