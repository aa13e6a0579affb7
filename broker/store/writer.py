"""The single writer: every state change of the broker, and its audit entry, commits here.

Operations queue up while the previous batch commits, and the next batch takes all of them in one
transaction ("group commit"): one fsync serves many senders, which is what lets a durable broker
keep up with a surge. One writer also makes the audit log's sequencing trivial: entries get their
indices in commit order, and the entry and the state change it records commit together.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection, Engine

from broker.audit import AuditEvent, AuditLog
from broker.errors import REFUSALS, StorageUnavailable
from broker.metrics import AUDIT_ENTRIES, WRITER_BATCH, WRITER_COMMIT
from broker.store.db import bulk_insert, now_us

log = structlog.get_logger(__name__)

T = TypeVar("T")
MAX_BATCH = 512


@dataclass
class Batch:
    """What one transaction writes: staged rows, audit events, and work to do after commit."""

    conn: Connection
    now_us: int
    first_index: int
    events: list[AuditEvent] = field(default_factory=list)
    inserts: dict[sa.Table, list[dict[str, Any]]] = field(default_factory=dict)
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    # Agencies with new deliveries: other replicas are told at commit (PostgreSQL NOTIFY).
    notify: set[str] = field(default_factory=set)
    # Every operation of this batch, so that one of them can prefetch for all of its kind with
    # one query (see AcceptEnvelope), and a per-batch scratch space for what they share.
    ops: Sequence[Any] = ()
    scratch: dict[str, Any] = field(default_factory=dict)

    @property
    def now(self) -> datetime:
        """The batch's timestamp as an aware datetime, for audit entries."""
        return datetime.fromtimestamp(self.now_us / 1_000_000, UTC)

    def audit(self, event: AuditEvent) -> int:
        """Stage an audit entry; return the index it will have once the batch commits."""
        self.events.append(event)
        return self.first_index + len(self.events) - 1

    def insert(self, table: sa.Table, row: dict[str, Any]) -> None:
        """Stage a row; rows of one table are inserted together with executemany."""
        self.inserts.setdefault(table, []).append(row)


class Operation(Protocol[T]):  # type: ignore[misc]
    """A state change. `stage` runs in the writer thread inside the open transaction; it returns
    the caller's result or raises `BrokerError` after staging whatever must be recorded anyway
    (a rejection's audit entry)."""

    def stage(self, batch: Batch) -> T: ...


@dataclass
class _Pending:
    op: Operation[Any]
    future: asyncio.Future[Any]
    outcome: Any = None
    error: BaseException | None = None


class Writer:
    """Runs operations in batches on one dedicated thread and one connection at a time."""

    def __init__(self, engine: Engine, audit_log: AuditLog, node: str = "node-1") -> None:
        self._engine = engine
        self._node = node
        self._audit = audit_log
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="isb-writer")
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.operations = 0
        # Replicas sharing one PostgreSQL database serialise their batches with an advisory lock, so
        # the audit log stays one tree (DESIGN.md section 9). Whoever else wrote in between is
        # caught up with here: the log reloads its right edge, and `on_foreign_writes` hooks resync
        # their own counters.
        self._shared = engine.dialect.name == "postgresql"
        self._conn: Connection | None = None
        self.on_foreign_writes: list[Callable[[Connection], None]] = []

    @property
    def audit_log(self) -> AuditLog:
        """The audit log this writer appends to (read it only from the writer thread or a snapshot)."""
        return self._audit

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="isb-writer")

    async def stop(self) -> None:
        """Finish the queued operations, then stop."""
        await self._queue.join()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._thread.submit(self._close).result()
        self._thread.shutdown(wait=True)
        log.info("writer.stopped", batches=self.batches, operations=self.operations)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def submit(self, op: Operation[T]) -> T:
        """Queue `op` and wait until its batch has committed (or failed)."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(op, future))
        return await future

    def submit_nowait(self, op: Operation[Any]) -> None:
        """Queue `op` without waiting (for records whose caller does not need the outcome)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_log_failure)
        self._queue.put_nowait(_Pending(op, future))

    async def run_in_thread(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` on the writer thread in a transaction of its own, between batches."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._transaction, fn)

    def _transaction(self, fn: Callable[[Connection], T]) -> T:
        conn = self._connection()
        with conn.begin():
            return fn(conn)

    def _connection(self) -> Connection:
        # The writer keeps one connection (only its thread uses it): no pool checkout per batch.
        # A connection the driver reported broken is replaced on the next batch.
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._conn = self._engine.connect()
        return self._conn

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            pending = [await self._queue.get()]
            while len(pending) < MAX_BATCH and not self._queue.empty():
                pending.append(self._queue.get_nowait())
            after = await loop.run_in_executor(self._thread, self._commit, pending)
            for callback in after:
                try:
                    callback()
                except Exception:  # a post-commit notification must not stop the writer
                    log.exception("writer.after_commit_failed")
            for item in pending:
                self._queue.task_done()
                if item.future.done():
                    continue
                if item.error is not None:
                    item.future.set_exception(item.error)
                else:
                    item.future.set_result(item.outcome)

    def _take_sequencer(self, conn: Connection) -> None:
        stored = _take_sequencer_lock(conn)
        if stored != self._audit.size:
            log.info("writer.caught_up", local_size=self._audit.size, stored_size=stored)
            self._audit = AuditLog.open(conn)
            for hook in self.on_foreign_writes:
                hook(conn)

    def _commit(self, pending: list[_Pending]) -> list[Callable[[], None]]:
        self.batches += 1
        self.operations += len(pending)
        started = time.perf_counter()
        try:
            committed = self._commit_batch(pending)
        except Exception:
            self._audit.rollback()
            log.exception("writer.batch_failed", operations=len(pending))
        else:
            WRITER_COMMIT.observe(time.perf_counter() - started)
            WRITER_BATCH.observe(len(pending))
            AUDIT_ENTRIES.set(self._audit.size)
            return committed
        if len(pending) == 1:
            pending[0].error = StorageUnavailable("the broker could not store this; retry")
            return []
        # One operation's failure must not fail its neighbours: commit each alone, so that only
        # the culprit is refused (sends are idempotent, so a retried send is answered the same).
        after: list[Callable[[], None]] = []
        for item in pending:
            item.outcome, item.error = None, None
            try:
                after += self._commit_batch([item])
            except Exception as exc:
                self._audit.rollback()
                log.exception("writer.operation_failed", operation=type(item.op).__name__)
                item.error = StorageUnavailable(f"the broker could not store this ({type(exc).__name__}); retry")
        return after

    def _commit_batch(self, pending: list[_Pending]) -> list[Callable[[], None]]:
        conn = self._connection()
        with conn.begin():
            if self._shared:
                self._take_sequencer(conn)
            batch = Batch(conn=conn, now_us=now_us(), first_index=self._audit.size, ops=[item.op for item in pending])
            for item in pending:
                try:
                    item.outcome = item.op.stage(batch)
                except REFUSALS as exc:
                    item.error = exc
            for table, rows in batch.inserts.items():
                columns = tuple(rows[0])
                bulk_insert(conn, table, columns, [tuple(row[c] for c in columns) for row in rows])
            if batch.events:
                _check_indices(self._audit.append(conn, batch.events), batch.first_index)
            if self._shared and batch.notify:
                # Delivered by PostgreSQL only if and when this transaction commits.
                conn.execute(sa.text("SELECT pg_notify(:channel, :payload)"),
                             [{"channel": NOTIFY_CHANNEL, "payload": f"{self._node}|{agency}"}
                              for agency in sorted(batch.notify)])
        self._audit.commit()
        return batch.after_commit


NOTIFY_CHANNEL = "isb_deliveries"
_SEQUENCER_LOCK = 0x15B0_0001  # pg_advisory_xact_lock key of the audit log's single sequencer


def _take_sequencer_lock(conn: Connection) -> int:
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SEQUENCER_LOCK})
    stored: int = conn.execute(sa.text("SELECT coalesce(max(leaf_index) + 1, 0) FROM audit_entries")).scalar_one()
    return stored


def _check_indices(indices: list[int], expected_first: int) -> None:
    # Operations were told their entries' indices while staging; the log must agree.
    if indices and indices[0] != expected_first:
        raise RuntimeError("audit log index drifted from the writer's count")


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("writer.background_operation_failed", error=str(future.exception()))
