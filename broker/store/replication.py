"""Replicas: several brokers sharing one PostgreSQL database (DESIGN.md section 9).

What replicas need from each other, besides the audit log's integration (the writer's, docs/protocol.md
section 24.3), lives here:
- batches with an operation not marked `replica_safe` (its reads decide its writes) take one advisory
  lock per transaction (`take_state_lock`);
- commits are announced with PostgreSQL NOTIFY (`replica_notes`, `notify`), delivered only if and
  when the transaction commits;
- `ReplicaListener` hears the other replicas' notes and wakes this broker's subscribers, or releases
  the leases of deliveries whose receipts another replica took.
SQLite has a single writer and none of this runs.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import psycopg
import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection, Engine

from broker.errors import STORAGE_FAULTS

log = structlog.get_logger(__name__)

NOTIFY_CHANNEL = "isb_deliveries"
_NOTIFY = "SELECT pg_notify(%s, note) FROM unnest(%s::text[]) AS note"  # every note of a commit in one statement
# PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; settled ids are split below that.
_NOTE_BYTES = 7000
_STATE_LOCK = 0x15B0_0002  # pg_advisory_xact_lock key for batches with operations not marked `replica_safe`
_LOCK = sa.text("SELECT pg_advisory_xact_lock(:key)")


def take_state_lock(conn: Connection) -> None:
    """Wait for the lock that batches with operations not safe beside another replica's hold, to the commit."""
    conn.execute(_LOCK, {"key": _STATE_LOCK})


def replica_notes(node: str, fresh: set[str], settled: dict[str, list[str]]) -> list[str]:
    """The NOTIFY payloads of one commit: `node|agency` for new deliveries of an agency, and
    `node|agency|settled|id,id,...` for deliveries of an agency that receipts settled."""
    notes = [f"{node}|{agency}" for agency in sorted(fresh)]
    for agency in sorted(settled):
        prefix = f"{node}|{agency}|settled|"
        chunk: list[str] = []
        size = len(prefix)
        for message_id in settled[agency]:
            if chunk and size + len(message_id) + 1 > _NOTE_BYTES:
                notes.append(prefix + ",".join(chunk))
                chunk, size = [], len(prefix)
            chunk.append(message_id)
            size += len(message_id) + 1
        if chunk:
            notes.append(prefix + ",".join(chunk))
    return notes


def parse_replica_note(payload: str) -> tuple[str, str, list[str] | None]:
    """(node, agency, settled message ids or None for new deliveries) of a NOTIFY payload."""
    node, _, rest = payload.partition("|")
    agency, _, settled = rest.partition("|settled|")
    return node, agency, (settled.split(",") if settled else None)


def notify(conn: Connection, node: str, fresh: set[str], settled: dict[str, list[str]]) -> None:
    """Announce a batch's new and settled deliveries to the other replicas, at its commit."""
    conn.exec_driver_sql(_NOTIFY, (NOTIFY_CHANNEL, replica_notes(node, fresh, settled)))


class Subscribers(Protocol):
    """What the listener wakes: the dispatcher's queues (`broker.delivery.dispatcher.Dispatcher`)."""

    def agencies(self) -> list[str]: ...

    async def refresh(self, agency: str) -> None: ...

    def acknowledged(self, done: list[tuple[str, str]]) -> None: ...


class ReplicaListener:
    """Wakes subscribers connected here for sends accepted on another replica (PostgreSQL LISTEN)."""

    def __init__(self, engine: Engine, node: str, subscribers: Subscribers) -> None:
        self._url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._node = node
        self._subscribers = subscribers

    async def run_forever(self) -> None:
        """Listen until cancelled; reconnect each second while the database is down."""
        subscribers = self._subscribers
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    # Whatever other replicas committed while we were not listening.
                    for agency in subscribers.agencies():
                        await subscribers.refresh(agency)
                    async for note in conn.notifies():
                        node, agency, settled = parse_replica_note(note.payload)
                        if node == self._node:
                            continue
                        if settled is None:
                            await subscribers.refresh(agency)
                        else:  # receipts committed elsewhere release the leases held here
                            subscribers.acknowledged([(m, agency) for m in settled])
            except (psycopg.Error, *STORAGE_FAULTS) as exc:  # the database is down: the writer reports it
                log.warning("replicas.listen_failed", error=type(exc).__name__)
                await asyncio.sleep(1.0)


__all__ = [
    "NOTIFY_CHANNEL",
    "ReplicaListener",
    "Subscribers",
    "notify",
    "parse_replica_note",
    "replica_notes",
    "take_state_lock",
]
