"""Watchlist commands: `isb watchlist create | publish | sync | screen | notices`.

- create: a watchlist owned by our agency, shared with agencies and/or groups.
- publish: the next version from a JSON WatchlistUpdate (protobuf JSON mapping).
- sync: bring a local replica file up to date (optionally keep following).
- screen: screen a CSV or PAXLST-like JSON manifest against a replica, offline; print hits as JSON lines.
- notices: the broker's notices of our watchlists' entries falling due for review, as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf import json_format

from broker.api.v1 import envelope_pb2, payload_pb2
from clients.cli.agency_cmd import add_connection_arguments, agency_client
from clients.cli.options import add_justification_arguments
from clients.cli.output import ERROR_PREFIX
from clients.errors import ClientError

if TYPE_CHECKING:
    from clients.watchlist import WatchlistReplica

# The watchlist SDK (ICU, numpy, rapidfuzz) is imported by the commands that use it, not when
# `isb` starts: `isb serve` would otherwise pay for it on every start.

__all__ = ["register"]

_TLP = {
    "CLEAR": envelope_pb2.TLP_CLEAR,
    "GREEN": envelope_pb2.TLP_GREEN,
    "AMBER": envelope_pb2.TLP_AMBER,
    "AMBER+STRICT": envelope_pb2.TLP_AMBER_STRICT,
    "RED": envelope_pb2.TLP_RED,
}
_TYPES = {
    "person": payload_pb2.ENTITY_PERSON,
    "document": payload_pb2.ENTITY_DOCUMENT,
    "vehicle": payload_pb2.ENTITY_VEHICLE,
    "container": payload_pb2.ENTITY_CONTAINER,
    "object": payload_pb2.ENTITY_OBJECT,
}


def _replica_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--id", required=True, dest="watchlist_id", help="watchlist id, e.g. FR-CUSTOMS/wanted")
    parser.add_argument("--owner", required=True, help="the owner agency, pinned in the replica file")
    parser.add_argument("--replica", type=Path, required=True, help="the local replica file (SQLite)")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `isb watchlist ...`."""
    watchlist = subparsers.add_parser("watchlist", help="create, publish, sync and screen watchlists")
    commands = watchlist.add_subparsers(dest="watchlist_command", required=True, metavar="COMMAND")

    create = commands.add_parser("create", help="create a watchlist owned by our agency")
    add_connection_arguments(create)
    create.add_argument("--id", required=True, dest="watchlist_id", help="<AGENCY>/<name>, e.g. FR-CUSTOMS/wanted")
    create.add_argument("--subscriber", required=True, action="append", help="agency or group (repeatable)")
    create.add_argument("--title", default="")
    create.add_argument("--type", action="append", default=[], choices=sorted(_TYPES), help="entry type (repeatable)")
    create.add_argument("--tlp", default="AMBER", choices=list(_TLP))
    create.set_defaults(func=_create)

    publish = commands.add_parser("publish", help="publish the next version from a JSON WatchlistUpdate")
    add_connection_arguments(publish)
    publish.add_argument("--id", required=True, dest="watchlist_id")
    publish.add_argument("--file", type=Path, required=True, help="WatchlistUpdate in protobuf JSON ('-': stdin)")
    publish.add_argument("--snapshot", action="store_true", help="the file is the whole list")
    add_justification_arguments(publish, what="this publication")
    publish.set_defaults(func=_publish)

    sync = commands.add_parser("sync", help="bring a local replica up to date")
    add_connection_arguments(sync)
    _replica_args(sync)
    sync.add_argument("--follow", action="store_true", help="keep applying new versions as they are published")
    sync.add_argument("--idle", type=float, default=None, help="with --follow: stop after this many idle seconds")
    sync.set_defaults(func=_sync)

    screen = commands.add_parser(
        "screen",
        help="screen a CSV or PAXLST-like JSON manifest against a replica",
        description="Screen a manifest against a synced replica, offline. Column names "
        "and formats: clients/watchlist/manifest.py and the README.",
    )
    _replica_args(screen)
    screen.add_argument("manifest", type=Path, help="a .csv with a header row, or a .json manifest")
    screen.add_argument(
        "--columns",
        type=lambda v: [c.strip() for c in v.split(",")],
        default=None,
        help="the columns of a CSV without a header row, in order, e.g. family_name,given_names,dob",
    )
    screen.add_argument(
        "--min-score",
        type=float,
        default=None,
        help="report hits scoring at least this (0..1; default: the screening default, 0.4)",
    )
    screen.set_defaults(func=_screen)

    notices = commands.add_parser("notices", help="entries of our watchlists falling due for review (broker notices)")
    add_connection_arguments(notices)
    notices.add_argument("--id", default="", dest="watchlist_id", help="one watchlist (default: all we own)")
    notices.set_defaults(func=_notices)


def _fail(exc: Exception) -> int:
    print(f"{ERROR_PREFIX}{exc}", file=sys.stderr)  # the one error style (clients/cli/output.py)
    return 1


def _create(args: argparse.Namespace) -> int:
    from clients.watchlist import create_watchlist  # noqa: PLC0415 (see the module imports)

    try:
        with agency_client(args) as client:
            created = create_watchlist(
                client,
                args.watchlist_id,
                subscribers=args.subscriber,
                title=args.title,
                entry_types=[_TYPES[t] for t in args.type],
                tlp=_TLP[args.tlp],
            )
    except ClientError as exc:
        return _fail(exc)
    print(
        json.dumps(
            {
                "watchlist_id": created.watchlist_id,
                "owner": created.owner,
                "subscribers": list(created.subscribers),
                "version": created.version,
            }
        )
    )
    return 0


def _publish(args: argparse.Namespace) -> int:
    from clients.watchlist import get_watchlist, publish_update  # noqa: PLC0415 (see the module imports)

    text = sys.stdin.read() if str(args.file) == "-" else args.file.read_text(encoding="utf-8")
    try:
        update = json_format.Parse(text, payload_pb2.WatchlistUpdate())
    except json_format.ParseError as exc:
        return _fail(ClientError(f"{args.file} is not a WatchlistUpdate in protobuf JSON: {exc}"))
    update.watchlist_id = update.watchlist_id or args.watchlist_id
    update.snapshot = update.snapshot or args.snapshot
    try:
        with agency_client(args) as client:
            watchlist = get_watchlist(client, args.watchlist_id)
            update.version = update.version or watchlist.version + 1
            reply = publish_update(
                client,
                update,
                watchlist=watchlist,
                legal_basis=args.legal_basis,
                case_reference=args.case_ref,
                operator=args.operator or None,
            )
    except ClientError as exc:
        return _fail(exc)
    print(
        json.dumps(
            {
                "watchlist_id": reply.watchlist_id,
                "version": reply.version,
                "audit_index": reply.audit_index,
                "duplicate": reply.duplicate,
            }
        )
    )
    return 0


def _sync(args: argparse.Namespace) -> int:
    from clients.watchlist import WatchlistReplica  # noqa: PLC0415 (see the module imports)

    try:
        with (
            agency_client(args) as client,
            WatchlistReplica(args.replica, watchlist_id=args.watchlist_id, owner=args.owner) as replica,
        ):
            result = replica.sync(client, follow=args.follow, idle=args.idle)
            print(
                json.dumps(
                    {
                        "watchlist_id": args.watchlist_id,
                        "applied": result.applied,
                        "version": result.version,
                        "entries": len(replica),
                    }
                )
            )
    except ClientError as exc:
        return _fail(exc)
    return 0


def _notices(args: argparse.Namespace) -> int:
    from clients.watchlist import review_notices  # noqa: PLC0415 (see the module imports)

    try:
        with agency_client(args) as client:
            found = review_notices(client, args.watchlist_id)
    except ClientError as exc:
        return _fail(exc)
    for notice in found:
        print(
            json.dumps(
                {
                    "watchlist_id": notice.watchlist_id,
                    "notice_period": notice.notice_period,
                    "audit_index": notice.audit_index,
                    "created": notice.created.ToJsonString(),
                    "due": {f"{d.date.year:04}-{d.date.month:02}-{d.date.day:02}": d.entries for d in notice.due},
                }
            )
        )
    return 0


def _require_synced(replica: WatchlistReplica, args: argparse.Namespace) -> None:
    if replica.version == 0:
        raise ClientError(
            f"the replica {args.replica} holds no version of {args.watchlist_id} yet: run "
            f"`isb watchlist sync --id {args.watchlist_id} --owner {args.owner} --replica {args.replica}`"
            " first"
        )


def _screen(args: argparse.Namespace) -> int:
    from clients.watchlist import DEFAULT_MIN_SCORE, WatchlistReplica  # noqa: PLC0415 (see the module imports)
    from clients.watchlist.manifest import read_manifest  # noqa: PLC0415

    try:
        manifest = read_manifest(args.manifest, columns=args.columns)
        with WatchlistReplica(args.replica, watchlist_id=args.watchlist_id, owner=args.owner, create=False) as replica:
            _require_synced(replica, args)
            hits = replica.screen(
                manifest.records, min_score=DEFAULT_MIN_SCORE if args.min_score is None else args.min_score
            )
    except ClientError as exc:
        return _fail(exc)
    for problem in manifest.problems:
        print(f"{args.manifest}: {problem}", file=sys.stderr)
    for hit in hits:
        print(
            json.dumps(
                {
                    "record_id": hit.record.record_id,
                    "entry_id": hit.entry_id,
                    "score": hit.score,
                    "matched_fields": list(hit.matched_fields),
                    "explanation": list(hit.explanation),
                    "watchlist_id": hit.watchlist_id,
                    "version": hit.watchlist_version,
                    "action_on_hit": payload_pb2.ActionOnHit.Name(hit.entry.action_on_hit) if hit.entry else "",
                }
            )
        )
    print(
        json.dumps({"records": len(manifest.records), "hits": len(hits), "row_problems": len(manifest.problems)}),
        file=sys.stderr,
    )
    return 0
