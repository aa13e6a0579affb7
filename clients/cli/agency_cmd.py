"""Agency commands: `isb keys publish`, `isb send`, `isb recall`, `isb listen`, `isb status`."""

from __future__ import annotations

import argparse
import mimetypes
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.text import Text

from broker.api.v1 import envelope_pb2
from broker.policy import TLP_CODES
from broker.protocol.errors import ProtocolError
from broker.protocol.witness_policy import load_policy
from clients.agency import MLKEM768_X25519, X25519, AgencyClient, ReceivedMessage
from clients.cli.failures import CommandError
from clients.cli.options import add_broker_arguments, add_justification_arguments, justification, settings
from clients.cli.output import output, value_style
from clients.cli.progress import ProgressBar
from clients.erasure import LocalStore, SavedFiles
from clients.errors import VerificationError

__all__ = ["add_connection_arguments", "agency_client", "register"]

MAX_BODY_BYTES = 4 * 1024 * 1024


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every agency command takes: broker address, agency id, PKI folder, trust domain."""
    agency = settings().agency
    parser.add_argument(
        "--agency",
        required=agency is None,
        default=agency,
        metavar="ID",
        help="our agency id, e.g. FR-CUSTOMS"
        + (
            f" (default {agency}, from ISB_AGENCY or the config file)"
            if agency
            else "; ISB_AGENCY or the config file may set it"
        ),
    )
    add_broker_arguments(parser, holds="<AGENCY>.crt, <AGENCY>.key and ca.crt")


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
    send.add_argument("--tlp", default="AMBER", choices=list(TLP_CODES), help="handling code (default %(default)s)")
    send.add_argument("--priority", default="NORMAL", choices=["LOW", "NORMAL", "HIGH", "FLASH"])
    send.add_argument("--content-type", default="text/plain; charset=utf-8")
    body = send.add_mutually_exclusive_group(required=True)
    body.add_argument("--text", help="the message body")
    body.add_argument("--file", type=Path, help="read the body from a file ('-' for standard input)")
    send.add_argument(
        "--attach",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="attach a file, encrypted and uploaded in chunks (repeatable; up to 16)",
    )
    send.add_argument(
        "--witness-policy",
        type=Path,
        default=None,
        metavar="FILE",
        help="a C2SP tlog-policy: use only key bundles proven to a checkpoint its witness quorum"
        " cosigned (docs/protocol.md section 18.4)",
    )
    add_justification_arguments(send, what="this disclosure")
    send.set_defaults(func=_send)

    recall = subparsers.add_parser("recall", help="recall a message we sent: recipients erase their copies and confirm")
    add_connection_arguments(recall)
    recall.add_argument("message_id")
    recall.add_argument(
        "--to",
        action="append",
        default=None,
        help="recipient to ask (repeatable; default: every recipient of the message)",
    )
    recall.add_argument("--tlp", default="AMBER", choices=list(TLP_CODES), help="handling code (default %(default)s)")
    add_justification_arguments(recall, what="this recall")
    recall.set_defaults(func=_recall)

    listen = subparsers.add_parser("listen", help="receive, verify, print and acknowledge deliveries")
    add_connection_arguments(listen)
    listen.add_argument("--count", type=int, default=0, help="stop after this many messages (0: run until idle)")
    listen.add_argument("--idle", type=float, default=None, help="stop after this many seconds without a delivery")
    listen.add_argument(
        "--save-attachments",
        type=Path,
        default=None,
        metavar="DIR",
        help="download, verify and save attachments as DIR/<message id>-<n><extension>; a RECALL"
        " deletes them and is confirmed with a signed ERASED receipt",
    )
    listen.set_defaults(func=_listen)

    status = subparsers.add_parser(
        "status", help="delivery state, verified receipts and erasure confirmations of a message we sent"
    )
    add_connection_arguments(status)
    status.add_argument("message_id")
    status.set_defaults(func=_status)


def agency_client(args: argparse.Namespace, local_stores: Sequence[LocalStore] = ()) -> AgencyClient:
    """The SDK client the connection options describe."""
    policy_file: Path | None = getattr(args, "witness_policy", None)
    try:
        policy = load_policy(policy_file) if policy_file is not None else None
    except ProtocolError as exc:
        raise CommandError(str(exc), "give a C2SP tlog-policy file (docs/protocol.md section 18.2)") from exc
    return AgencyClient.from_dir(
        args.broker,
        args.certs,
        args.agency,
        trust_domain=args.trust_domain,
        witness_policy=policy,
        local_stores=local_stores,
    )


def _publish(args: argparse.Namespace) -> int:
    with agency_client(args) as client:
        key_id = client.publish_key(MLKEM768_X25519 if args.post_quantum else X25519)
    output(args).record(
        {"agency": client.agency, "key_id": key_id, "suite": "ML-KEM-768+X25519" if args.post_quantum else "X25519"},
        title="key bundle published",
    )
    return 0


def _read_body(args: argparse.Namespace) -> bytes:
    if args.text is not None:
        body: bytes = args.text.encode()
    else:
        source = sys.stdin.buffer if str(args.file) == "-" else args.file.open("rb")
        with source:
            body = source.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise CommandError(
            f"the body is over {MAX_BODY_BYTES} bytes", "send a smaller body (the broker refuses larger envelopes)"
        )
    return body


def _send(args: argparse.Namespace) -> int:
    body = _read_body(args)
    missing = [str(path) for path in args.attach if not path.is_file()]
    if missing:
        raise CommandError(f"cannot attach {', '.join(missing)}: not a file", "check the path given to --attach")
    bar = ProgressBar("uploading")
    with agency_client(args) as client:
        try:
            response = client.send(
                args.to,
                body,
                content_type=args.content_type,
                kind=envelope_pb2.Kind.Value(args.kind),
                tlp=args.tlp,
                priority=envelope_pb2.Priority.Value(args.priority),
                attachments=args.attach,
                progress=bar,
                **justification(args),
            )
        finally:
            bar.close()
    output(args).record(
        {
            "message_id": response.message_id,
            "audit_index": response.audit_index,
            "queued_for": list(response.queued_for),
            "duplicate": response.duplicate,
        },
        title="sent; `isb status MESSAGE_ID` shows deliveries and receipts",
    )
    return 0


def _recall(args: argparse.Namespace) -> int:
    with agency_client(args) as client:
        response = client.recall(args.message_id, args.to, tlp=args.tlp, **justification(args))
    output(args).record(
        {
            "recall_id": response.message_id,
            "recalls": args.message_id,
            "audit_index": response.audit_index,
            "asked": list(response.queued_for),
        },
        title=f"recalled; `isb status {args.message_id}` shows who confirmed erasure",
    )
    return 0


def _delivery_line(message: ReceivedMessage, text: str) -> Text:
    line = Text()
    line.append(f"{message.tlp:<12}", style=value_style(message.tlp))
    line.append(f" {message.kind:<16} from {message.sender:<12} {message.message_id}\n", style="bold")
    line.append(text)
    return line


def _save_attachments(message: ReceivedMessage, directory: Path | None) -> tuple[list[dict[str, object]], bool]:
    """Each attachment's description, saved under `directory` if given; False if one was refused."""
    described: list[dict[str, object]] = []
    intact = True
    for attachment in message.attachments:
        item: dict[str, object] = {
            "index": attachment.index,
            "size": attachment.size,
            "media_type": attachment.media_type,
        }
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


def _listen(args: argparse.Namespace) -> int:
    out = output(args)
    if args.save_attachments is not None:
        args.save_attachments.mkdir(parents=True, exist_ok=True, mode=0o700)
    stores = [SavedFiles(args.save_attachments)] if args.save_attachments is not None else []
    with agency_client(args, stores) as client:
        for received, message in enumerate(client.deliveries(timeout=args.idle), start=1):
            is_text = message.content_type.startswith("text/")
            text = message.body.decode("utf-8", errors="replace") if is_text else f"<{len(message.body)} bytes>"
            attachments, intact = _save_attachments(message, args.save_attachments)
            shown = text + "".join(
                f"\n  attachment {a['index']}: {a['media_type']}, {a['size']} bytes"
                f"{' -> ' + str(a['saved']) if 'saved' in a else ''}"
                f"{' REFUSED: ' + str(a['error']) if 'error' in a else ''}"
                for a in attachments
            )
            if message.erased is not None:
                shown += f"\n  recall honoured, confirmed ERASED: {message.erased}"
            out.item(
                {
                    "message_id": message.message_id,
                    "sender": message.sender,
                    "kind": message.kind,
                    "tlp": message.tlp,
                    "priority": message.priority,
                    "content_type": message.content_type,
                    "body": text,
                    **({"attachments": attachments} if attachments else {}),
                    **({"erased": message.erased} if message.erased is not None else {}),
                },
                _delivery_line(message, shown),
            )
            # An attachment that failed verification is refused with its message: it will not verify later.
            client.ack(message, envelope_pb2.DELIVERED if intact else envelope_pb2.REJECTED)
            if args.count and received >= args.count:
                break
    return 0


def _status(args: argparse.Namespace) -> int:
    with agency_client(args) as client:
        erasure = {e.recipient: e for e in client.erasure_status(args.message_id)}
        rows = [
            {
                "recipient": r.recipient,
                "state": r.state,
                "attempts": r.attempts,
                "receipt": envelope_pb2.ReceiptStatus.Name(r.receipt.status) if r.receipt else None,
                "receipt_verified": r.receipt is not None,
                **(
                    {
                        "erasure": "confirmed" if erasure[r.recipient].confirmed else "not confirmed",
                        "erasure_detail": erasure[r.recipient].detail,
                    }
                    if r.recipient in erasure
                    else {}
                ),
            }
            for r in client.status(args.message_id)
        ]
    output(args).rows(rows, title=f"message {args.message_id}")
    return 0
