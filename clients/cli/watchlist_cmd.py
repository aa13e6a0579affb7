"""Watchlist commands: `isb watchlist create | publish | sync | screen`.

- create: a watchlist owned by our agency, shared with agencies and/or groups.
- publish: the next version from a JSON WatchlistUpdate (protobuf JSON mapping).
- sync: bring a local replica file up to date (optionally keep following).
- screen: screen a CSV or PAXLST-like JSON manifest against a replica, offline; print hits as JSON lines.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from broker.api.v1 import envelope_pb2, payload_pb2
from clients.cli.agency_cmd import add_connection_arguments, agency_client
from clients.errors import ClientError
from clients.watchlist import (
    DEFAULT_MIN_SCORE,
    ScreeningRecord,
    WatchlistReplica,
    create_watchlist,
    get_watchlist,
    publish_update,
)

__all__ = ["manifest_records", "register"]

_TLP = {"CLEAR": envelope_pb2.TLP_CLEAR, "GREEN": envelope_pb2.TLP_GREEN, "AMBER": envelope_pb2.TLP_AMBER,
        "AMBER+STRICT": envelope_pb2.TLP_AMBER_STRICT, "RED": envelope_pb2.TLP_RED}
_TYPES = {"person": payload_pb2.ENTITY_PERSON, "document": payload_pb2.ENTITY_DOCUMENT,
          "vehicle": payload_pb2.ENTITY_VEHICLE, "container": payload_pb2.ENTITY_CONTAINER,
          "object": payload_pb2.ENTITY_OBJECT}
# PAXLST-like JSON keys (UN/EDIFACT PAXLST segment names in words) onto screening record fields.
_PAX_KEYS = {
    "record_id": ("record_id", "id", "sequence", "passenger_id"),
    "family_name": ("family_name", "surname", "last_name"),
    "given_names": ("given_names", "given_name", "first_name", "forenames"),
    "name": ("name", "full_name"),
    "date_of_birth": ("date_of_birth", "dob", "birth_date"),
    "nationality": ("nationality",),
    "document_number": ("document_number", "doc_number", "passport_number"),
    "vehicle_plate": ("vehicle_plate", "plate"),
    "container_number": ("container_number", "container"),
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
    publish.set_defaults(func=_publish)

    sync = commands.add_parser("sync", help="bring a local replica up to date")
    add_connection_arguments(sync)
    _replica_args(sync)
    sync.add_argument("--follow", action="store_true", help="keep applying new versions as they are published")
    sync.add_argument("--idle", type=float, default=None, help="with --follow: stop after this many idle seconds")
    sync.set_defaults(func=_sync)

    screen = commands.add_parser("screen", help="screen a CSV or PAXLST-like JSON manifest against a replica")
    _replica_args(screen)
    screen.add_argument("manifest", type=Path, help="a .csv with a header row, or a .json manifest")
    screen.add_argument("--min-score", type=int, default=DEFAULT_MIN_SCORE)
    screen.set_defaults(func=_screen)


def _fail(exc: Exception) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 1


def _create(args: argparse.Namespace) -> int:
    try:
        with agency_client(args) as client:
            created = create_watchlist(client, args.watchlist_id, subscribers=args.subscriber, title=args.title,
                                       entry_types=[_TYPES[t] for t in args.type], tlp=_TLP[args.tlp])
    except ClientError as exc:
        return _fail(exc)
    print(json.dumps({"watchlist_id": created.watchlist_id, "owner": created.owner,
                      "subscribers": list(created.subscribers), "version": created.version}))
    return 0


def _publish(args: argparse.Namespace) -> int:
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
            reply = publish_update(client, update, watchlist=watchlist)
    except ClientError as exc:
        return _fail(exc)
    print(json.dumps({"watchlist_id": reply.watchlist_id, "version": reply.version, "audit_index": reply.audit_index,
                      "duplicate": reply.duplicate}))
    return 0


def _sync(args: argparse.Namespace) -> int:
    try:
        with agency_client(args) as client, WatchlistReplica(args.replica, watchlist_id=args.watchlist_id,
                                                       owner=args.owner) as replica:
            result = replica.sync(client, follow=args.follow, idle=args.idle)
            print(json.dumps({"watchlist_id": args.watchlist_id, "applied": result.applied,
                              "version": result.version, "entries": len(replica)}))
    except ClientError as exc:
        return _fail(exc)
    return 0


def _screen(args: argparse.Namespace) -> int:
    try:
        records = list(manifest_records(args.manifest))
        with WatchlistReplica(args.replica, watchlist_id=args.watchlist_id, owner=args.owner) as replica:
            hits = replica.screen(records, min_score=args.min_score)
    except (ClientError, ValueError, OSError) as exc:  # ValueError: JSON that does not parse
        return _fail(exc)
    for hit in hits:
        print(json.dumps({"record_id": hit.record.record_id, "entry_id": hit.entry_id, "score": hit.score,
                          "matched_fields": list(hit.matched_fields), "watchlist_id": hit.watchlist_id,
                          "version": hit.watchlist_version,
                          "action_on_hit": payload_pb2.ActionOnHit.Name(hit.entry.action_on_hit) if hit.entry else ""}))
    print(json.dumps({"records": len(records), "hits": len(hits)}), file=sys.stderr)
    return 0


def _pax_record(item: Mapping[str, Any], position: int) -> ScreeningRecord:
    flat: dict[str, Any] = dict(item)
    document = item.get("document")
    if isinstance(document, Mapping):
        flat.setdefault("document_number", document.get("number", ""))
    values: dict[str, str] = {}
    for field, keys in _PAX_KEYS.items():
        for key in keys:
            if flat.get(key):
                values[field] = str(flat[key])
                break
    values.setdefault("record_id", str(position))
    return ScreeningRecord.from_mapping(values)


def manifest_records(path: Path) -> Iterator[ScreeningRecord]:
    """Records of a CSV manifest (header row with record fields) or a PAXLST-like JSON manifest
    (a list of passengers, or an object with "passengers"/"travellers"/"crew" lists)."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            for position, row in enumerate(csv.DictReader(handle), 1):
                yield _pax_record(row, position)
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    people: list[Any] = data if isinstance(data, list) else [
        p for key in ("passengers", "travellers", "crew") for p in data.get(key, [])]
    for position, item in enumerate(people, 1):
        if not isinstance(item, Mapping):
            raise ClientError(f"manifest item {position} is not an object")
        yield _pax_record(item, position)
