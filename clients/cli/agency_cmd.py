"""Agency commands: `isb keys publish`, `isb send`, `isb listen`, `isb status`."""

from __future__ import annotations

import argparse
import json
import mimetypes
import sys
from pathlib import Path

from broker.api.v1 import envelope_pb2
from broker.config import DEFAULT_CERT_DIR
from broker.policy import tlp_from_proto
from clients.agency import MLKEM768_X25519, X25519, AgencyClient, ReceivedMessage
from clients.cli.progress import ProgressBar
from clients.errors import ClientError, VerificationError

__all__ = ["add_connection_arguments", "agency_client", "register"]

MAX_BODY_BYTES = 4 * 1024 * 1024


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every agency command takes: broker address, agency id, PKI folder, trust domain."""
    parser.add_argument("--broker", default="127.0.0.1:7443", help="host:port of the broker (default %(default)s)")
    parser.add_argument("--agency", required=True, help="our agency id, e.g. FR-CUSTOMS")
    parser.add_argument("--certs", type=Path, default=DEFAULT_CERT_DIR,
                        help="folder with <AGENCY>.crt, <AGENCY>.key and ca.crt (default %(default)s)")
    parser.add_argument("--trust-domain", default="isb.dev")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the agency commands."""
    keys = subparsers.add_parser("keys", help="publish this agency's encryption key")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    publish = keys_commands.add_parser("publish", help="generate and publish a new HPKE key bundle")
    add_connection_arguments(publish)
    publish.add_argument("--post-quantum", action="store_true", help="use ML-KEM-768+X25519 (hybrid)")
    publish.add_argument("--days", type=int, default=30, help="validity of the key bundle (default %(default)s)")
    publish.set_defaults(func=_publish)

    send = subparsers.add_parser("send", help="seal and send a message")
    add_connection_arguments(send)
    send.add_argument("--to", required=True, action="append", help="recipient agency or group (repeatable)")
    kinds = [k for k in envelope_pb2.Kind.keys() if k != "KIND_UNSPECIFIED"]  # noqa: SIM118 - protobuf enum API
    send.add_argument("--kind", default="ALERT", choices=kinds)
    send.add_argument("--tlp", default="AMBER", choices=["CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"])
    send.add_argument("--priority", default="NORMAL", choices=["LOW", "NORMAL", "HIGH", "FLASH"])
    send.add_argument("--content-type", default="text/plain; charset=utf-8")
    body = send.add_mutually_exclusive_group(required=True)
    body.add_argument("--text", help="the message body")
    body.add_argument("--file", type=Path, help="read the body from a file ('-' for standard input)")
    send.add_argument("--attach", type=Path, action="append", default=[], metavar="FILE",
                      help="attach a file, encrypted and uploaded in chunks (repeatable; up to 16)")
    send.set_defaults(func=_send)

    listen = subparsers.add_parser("listen", help="receive, verify, print and acknowledge deliveries")
    add_connection_arguments(listen)
    listen.add_argument("--count", type=int, default=0, help="stop after this many messages (0: run until idle)")
    listen.add_argument("--idle", type=float, default=None, help="stop after this many seconds without a delivery")
    listen.add_argument("--save-attachments", type=Path, default=None, metavar="DIR",
                        help="download, verify and save attachments as DIR/<message id>-<n><extension>")
    listen.set_defaults(func=_listen)

    status = subparsers.add_parser("status", help="delivery state and verified receipts of a message we sent")
    add_connection_arguments(status)
    status.add_argument("message_id")
    status.set_defaults(func=_status)


def agency_client(args: argparse.Namespace) -> AgencyClient:
    """The SDK client the connection options describe."""
    return AgencyClient.from_dir(args.broker, args.certs, args.agency, trust_domain=args.trust_domain)


def _run(args: argparse.Namespace, action: str) -> int:
    try:
        with agency_client(args) as client:
            if action == "publish":
                key_id = client.publish_key(MLKEM768_X25519 if args.post_quantum else X25519)
                print(json.dumps({"agency": client.agency, "key_id": key_id}))
            elif action == "send":
                return _do_send(client, args)
            elif action == "listen":
                _do_listen(client, args)
            else:
                for r in client.status(args.message_id):
                    receipt = envelope_pb2.ReceiptStatus.Name(r.receipt.status) if r.receipt else None
                    print(json.dumps({"recipient": r.recipient, "state": r.state, "attempts": r.attempts,
                                      "receipt": receipt, "receipt_verified": r.receipt is not None}))
    except ClientError as exc:
        print(f"isb: {exc}", file=sys.stderr)
        return 1
    return 0


def _do_send(client: AgencyClient, args: argparse.Namespace) -> int:
    if args.text is not None:
        body = args.text.encode()
    else:
        source = sys.stdin.buffer if str(args.file) == "-" else args.file.open("rb")
        with source:
            body = source.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        print(f"isb: the body is over {MAX_BODY_BYTES} bytes", file=sys.stderr)
        return 1
    missing = [str(path) for path in args.attach if not path.is_file()]
    if missing:
        print(f"isb: cannot attach {', '.join(missing)}: not a file", file=sys.stderr)
        return 1
    bar = ProgressBar("uploading")
    try:
        response = client.send(args.to, body, content_type=args.content_type,
                               kind=envelope_pb2.Kind.Value(args.kind), tlp=args.tlp,
                               priority=envelope_pb2.Priority.Value(args.priority), attachments=args.attach,
                               progress=bar)
    finally:
        bar.close()
    print(json.dumps({"message_id": response.message_id, "audit_index": response.audit_index,
                      "delivered_to": list(response.delivered_to), "duplicate": response.duplicate}))
    return 0


def _save_attachments(message: ReceivedMessage, directory: Path | None) -> tuple[list[dict[str, object]], bool]:
    """Each attachment's description, saved under `directory` if given; False if one was refused."""
    described: list[dict[str, object]] = []
    intact = True
    for attachment in message.attachments:
        item: dict[str, object] = {"index": attachment.index, "size": attachment.size,
                                   "media_type": attachment.media_type}
        if directory is not None:
            extension = mimetypes.guess_extension(attachment.media_type) or ".bin"
            path = directory / f"{message.message_id}-{attachment.index}{extension}"
            bar = ProgressBar(f"downloading {path.name}")
            try:
                attachment.save(path, progress=bar)
                item["saved"] = str(path)
            except VerificationError as exc:
                item["error"] = str(exc)
                intact = False
            finally:
                bar.close()
        described.append(item)
    return described, intact


def _do_listen(client: AgencyClient, args: argparse.Namespace) -> None:
    if args.save_attachments is not None:
        args.save_attachments.mkdir(parents=True, exist_ok=True, mode=0o700)
    for received, message in enumerate(client.deliveries(timeout=args.idle), start=1):
        text = message.body.decode("utf-8", errors="replace") if message.content_type.startswith("text/") else None
        attachments, intact = _save_attachments(message, args.save_attachments)
        print(json.dumps({
            "message_id": message.message_id, "sender": message.sender,
            "kind": envelope_pb2.Kind.Name(message.header.kind),
            "tlp": tlp_from_proto(message.header.handling.tlp), "content_type": message.content_type,
            "body": text if text is not None else f"<{len(message.body)} bytes>",
            **({"attachments": attachments} if attachments else {}),
        }), flush=True)
        # An attachment that failed verification is refused with the message: it will not verify later.
        client.ack(message, envelope_pb2.DELIVERED if intact else envelope_pb2.REJECTED)
        if args.count and received >= args.count:
            return


def _publish(args: argparse.Namespace) -> int:
    return _run(args, "publish")


def _send(args: argparse.Namespace) -> int:
    return _run(args, "send")


def _listen(args: argparse.Namespace) -> int:
    return _run(args, "listen")


def _status(args: argparse.Namespace) -> int:
    return _run(args, "status")
