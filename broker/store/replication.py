"""Replicas: several brokers sharing one PostgreSQL database (DESIGN.md section 9).

Everything replicas need from each other lives here:
- one sequencer at a time: the writer takes an advisory lock per transaction (`take_sequencer_lock`)
  and, if another replica wrote in between, catches up (the writer's `on_foreign_writes` hooks; the
  arrival counter's is `resync_arrivals`);
- commits are announced with PostgreSQL NOTIFY (`replica_notes`, `notify`), delivered only if and
  when the transaction commits;
- `ReplicaListener` hears the other replicas' notes and wakes this broker's subscribers, or releases
  the leases of deliveries whose receipts another replica took.
SQLite has a single writer and none of this runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

import psycopg
import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection, Engine

from broker.errors import STORAGE_FAULTS
from broker.store import tables
from broker.store.db import pipelined

log = structlog.get_logger(__name__)

NOTIFY_CHANNEL = "isb_deliveries"
_NOTIFY = "SELECT pg_notify(%s, note) FROM unnest(%s::text[]) AS note"  # every note of a commit in one statement
# PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; settled ids are split below that.
_NOTE_BYTES = 7000
_SEQUENCER_LOCK = 0x15B0_0001  # pg_advisory_xact_lock key of the audit log's single sequencer
_LOCK = sa.text("SELECT pg_advisory_xact_lock(:key)")
_STORED_SIZE = sa.text("SELECT coalesce(max(leaf_index) + 1, 0) FROM audit_entries")


def take_sequencer_lock(conn: Connection) -> int:
    """Wait for the sequencer lock of this transaction; return the audit log's stored size."""
    # Two statements, not one: under READ COMMITTED each statement reads a snapshot taken when it
    # starts, so the size must be read by a statement that starts once the lock is held. The
    # transaction's BEGIN, the lock and the read share one round trip (pipelined).
    with pipelined(conn):
        conn.execute(_LOCK, {"key": _SEQUENCER_LOCK})
    stored: int = conn.execute(_STORED_SIZE).scalar_one()
    return stored


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


class ArrivalSequence(Protocol):
    """The arrival counter of accepted messages (`broker.delivery.operations.ArrivalCounter`)."""

    next: int


def next_arrival(conn: Connection) -> int:
    """The arrival sequence number after the last stored message."""
    last = conn.execute(sa.select(sa.func.max(tables.messages.c.seq))).scalar()
    return int(last or 0) + 1


def resync_arrivals(counter: ArrivalSequence) -> Callable[[Connection], None]:
    """A writer `on_foreign_writes` hook: continue `counter` after messages another replica accepted."""

    def resync(conn: Connection) -> None:
        counter.next = max(counter.next, next_arrival(conn))

    return resync


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
    "ArrivalSequence",
    "ReplicaListener",
    "Subscribers",
    "next_arrival",
    "notify",
    "parse_replica_note",
    "replica_notes",
    "resync_arrivals",
    "take_sequencer_lock",
]
