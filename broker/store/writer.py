"""The single writer: every state change of the broker, and its audit entry, commits here.

Operations queue up while the previous batch commits, and the next batch takes all of them in one
transaction ("group commit"): one fsync serves many senders, which is what lets a durable broker
keep up with a surge. Each entry is written with the state change it records, at an index the
writer reserves (docs/protocol.md section 24): on SQLite the single writer counts them and integrates
them into the Merkle tree in the same transaction; replicas sharing a PostgreSQL database reserve
them from the database's sequence, with no lock, and any replica folds the committed entries into
the tree in rounds that hash with no lock and publish with one compare-and-set of the tree's size.
Only that compare-and-set is serialised across replicas.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol, TypeVar

import psycopg
import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection, Engine

from broker.audit import AuditEvent, AuditLog
from broker.audit.log import Integration, read_staged, stored_tree_size
from broker.errors import REFUSALS, STORAGE_FAULTS, StorageFull, StorageUnavailable
from broker.metrics import (
    AUDIT_ENTRIES,
    AUDIT_WRITE_FAILURES,
    SEQUENCER_HELD,
    STORE_FAULTS,
    WRITER_BATCH,
    WRITER_COMMIT,
    WRITER_HEALTHY,
    WRITER_HELD,
)
from broker.store import replication
from broker.store.db import bulk_insert, now_us, pipelined, storage_fault

log = structlog.get_logger(__name__)

T = TypeVar("T")
MAX_BATCH = 512
# SQLite: the WAL is checkpointed into the database file by a thread of its own, at most this often
# while batches commit, so that no commit waits for a checkpoint's copy and its two fsyncs. The
# writer's own connection checkpoints only once the WAL holds this many pages (4 KiB each), should
# the background checkpoints never catch up; SQLite's default is 1,000, on every commit past it.
CHECKPOINT_INTERVAL = 0.2
WRITER_AUTOCHECKPOINT_PAGES = 8192
Fault = StorageUnavailable | StorageFull


class IndexSource(Protocol):
    """Where a batch's audit entries get their indices (docs/protocol.md section 24.2)."""

    def reserve(self, conn: Connection, count: int) -> list[int]:
        """`count` fresh indices, ascending."""
        ...


@dataclass
class _Counted:
    """The single writer of an SQLite database counts indices on from the tree's size."""

    next: int

    def reserve(self, conn: Connection, count: int) -> list[int]:
        del conn
        first, self.next = self.next, self.next + count
        return list(range(first, self.next))

    def release(self, unused: list[int]) -> bool:
        """Give back the tail of what was reserved; True if it was the tail (nothing is lost)."""
        if unused and unused == list(range(self.next - len(unused), self.next)):
            self.next -= len(unused)
            return True
        return not unused


class _Sequence:
    """Replicas reserve indices from the PostgreSQL sequence: atomic, and not rolled back."""

    def reserve(self, conn: Connection, count: int) -> list[int]:
        # On the driver's cursor: it reads the answer inside a pipeline too (the batch's first
        # reservation shares the round trip of its BEGIN).
        raw = conn.connection.dbapi_connection
        if not isinstance(raw, psycopg.Connection):
            raise TypeError(f"index reservation needs a psycopg connection, not {type(raw).__name__}")
        cursor = raw.cursor()
        cursor.execute(_NEXTVAL, (count,))
        return sorted(int(row[0]) for row in cursor.fetchall())


_NEXTVAL = "SELECT nextval('audit_index_seq') FROM generate_series(1, %s)"


@dataclass
class Batch:
    """What one transaction writes: staged rows, audit events, and work to do after commit."""

    conn: Connection
    now_us: int
    indices: IndexSource
    events: list[AuditEvent] = field(default_factory=list)
    entry_indices: list[int] = field(default_factory=list)
    inserts: dict[sa.Table, list[dict[str, Any]]] = field(default_factory=dict)
    after_commit: list[Callable[[], None]] = field(default_factory=list)
    # Agencies with new deliveries: other replicas are told at commit (PostgreSQL NOTIFY).
    notify: set[str] = field(default_factory=set)
    # Deliveries settled (receipts) by agency: the replica holding their lease is told at commit,
    # so it takes them off its queue instead of redelivering them when the lease runs out.
    settled: dict[str, list[str]] = field(default_factory=dict)
    # Every operation of this batch, so that one of them can prefetch for all of its kind with
    # one query (see AcceptEnvelope).
    ops: Sequence[Any] = ()
    # What the batch's operations share. The message ids it sends that are stored already, with
    # digest, audit index and acceptance time (fetched by the first send, for all of them) ...
    known_messages: dict[str, tuple[bytes, int, int]] | None = None
    # ... and the fingerprints of the peer certificates it stores, so each is stored once.
    staged_certificates: set[bytes] = field(default_factory=set)
    # Operations not staged yet, this one included: how many indices to reserve at once.
    remaining: int = 1
    reserved: list[int] = field(default_factory=list)
    _free: collections.deque[int] = field(default_factory=collections.deque)

    @functools.cached_property
    def now(self) -> datetime:
        """The batch's timestamp as an aware datetime, for audit entries (made once per batch)."""
        return datetime.fromtimestamp(self.now_us / 1_000_000, UTC)

    def expect_entries(self, count: int) -> None:
        """Reserve indices for `count` entries about to be staged, in one round trip."""
        if count > len(self._free):
            self._reserve(count - len(self._free))

    def audit(self, event: AuditEvent) -> int:
        """Stage an audit entry; return its index, which is final once the batch commits."""
        if not self._free:
            self._reserve(max(1, self.remaining))
        index = self._free.popleft()
        self.events.append(event)
        self.entry_indices.append(index)
        return index

    def unused(self) -> list[int]:
        """Indices reserved and not given to an entry."""
        return list(self._free)

    def _reserve(self, count: int) -> None:
        fresh = self.indices.reserve(self.conn, count)
        self.reserved.extend(fresh)
        self._free.extend(fresh)

    def insert(self, table: sa.Table, row: dict[str, Any]) -> None:
        """Stage a row; rows of one table are inserted together (`bulk_insert`)."""
        self.inserts.setdefault(table, []).append(row)


class Operation(Protocol[T]):  # type: ignore[misc]
    """A state change. `stage` runs in the writer thread inside the open transaction; it returns
    the caller's result or raises `BrokerError` after staging whatever must be recorded anyway
    (a rejection's audit entry)."""

    def stage(self, batch: Batch) -> T: ...


@dataclass
class RecordEvent:
    """Audit an event that changes no other table (a refusal, an auditor query, a certificate issued...)."""

    replica_safe: ClassVar[bool] = True  # row-level writes only: runs beside other replicas' batches

    event: AuditEvent

    def stage(self, batch: Batch) -> int:
        return batch.audit(self.event)


@dataclass
class _Pending:
    op: Operation[Any]
    future: asyncio.Future[Any]
    outcome: Any = None
    error: BaseException | None = None
    # A record nobody waits for (a delivery, an auditor's query, a refusal whose entry could not be
    # written at once): while the store cannot commit it is held, not failed, and committed later.
    deferred: bool = False
    held: bool = False


# Records held while the store cannot commit; past this many the oldest are dropped (and counted),
# so that an outage cannot exhaust the broker's memory.
MAX_DEFERRED = 100_000


class Writer:
    """Runs operations in batches on one dedicated thread and one connection at a time.

    The writer also knows whether its store can commit. A batch that fails because of the store
    (no connection, disk full: see `storage_fault`) puts the writer in a fault state: from then on
    operations fail at once with the fault (UNAVAILABLE with a retry pushback, or RESOURCE_EXHAUSTED),
    records are held, and a probe (a one-row write) runs with a growing pause until a commit
    succeeds again. `on_health` hooks hear of both changes (the broker's health service follows
    them). While healthy and idle, the same probe runs every `idle_probe_seconds`, so a store lost
    between calls is noticed too.

    On PostgreSQL the writer also runs integration rounds: at most every `integrate_interval` after it
    committed entries (and every second regardless, for entries a crashed replica left), it folds
    every committed entry that continues the tree into it (`_integrate`); a gap still open after
    `void_grace_seconds` is filled with a void entry.
    """

    def __init__(
        self,
        engine: Engine,
        audit_log: AuditLog,
        node: str = "node-1",
        *,
        probe_interval: float = 0.25,
        probe_max_interval: float = 2.0,
        idle_probe_seconds: float = 5.0,
        integrate_interval: float = 0.1,
        void_grace_seconds: float = 5.0,
    ) -> None:
        self._engine = engine
        self._node = node
        self._audit = audit_log
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="isb-writer")
        self._task: asyncio.Task[None] | None = None
        self._prober: asyncio.Task[None] | None = None
        self.batches = 0
        self.operations = 0
        # Replicas sharing one PostgreSQL database reserve entry indices from the database and leave
        # the tree to one integrator at a time (docs/protocol.md section 24); the integrator that
        # finds the tree grown by another replica reloads its right edge.
        self._shared = engine.dialect.name == "postgresql"
        self._actor = f"broker:{node}"
        self._conn: Connection | None = None
        self.on_health: list[Callable[[bool], None]] = []
        self._integrator: asyncio.Task[None] | None = None
        self._staged = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._integrate_interval = integrate_interval
        self._void_grace = void_grace_seconds
        self._gap: tuple[int, float] | None = None  # (tree size it stopped at, monotonic time first seen)
        self._in_flight: list[int] = []  # indices reserved by the transaction being written
        self._fault: Fault | None = None
        self._fault_since = 0.0
        self._lost = asyncio.Event()
        self._deferred: collections.deque[_Pending] = collections.deque()
        self._probe_interval = probe_interval
        self._probe_max = probe_max_interval
        self._idle_probe = idle_probe_seconds
        self._last_commit = time.monotonic()
        self._sqlite = engine.dialect.name == "sqlite"
        self._checkpointer: asyncio.Task[None] | None = None
        self._checkpoint_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="isb-wal-checkpoint")
        self._checkpoint_conn: Connection | None = None
        self._committed = asyncio.Event()

    @property
    def audit_log(self) -> AuditLog:
        """The audit log this writer appends to (read it only from the writer thread or a snapshot)."""
        return self._audit

    @property
    def healthy(self) -> bool:
        """True while the store commits (False from a failed commit until a probe succeeds)."""
        return self._fault is None

    def start(self) -> None:
        """Start the batching loop and the store probe on the running event loop."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._lost = asyncio.Event()
        self._staged = asyncio.Event()
        self._committed = asyncio.Event()
        self._task = loop.create_task(self._run(), name="isb-writer")
        self._prober = loop.create_task(self._probe_loop(), name="isb-writer-probe")
        if self._shared:
            self._integrator = loop.create_task(self._integrate_loop(), name="isb-writer-integrator")
        if self._sqlite:
            self._checkpointer = loop.create_task(self._checkpoint_loop(), name="isb-wal-checkpoint")
        WRITER_HEALTHY.set(1)

    async def stop(self) -> None:
        """Finish the queued operations, then stop."""
        await self._queue.join()
        for task in (self._checkpointer, self._integrator, self._prober, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._deferred:
            AUDIT_WRITE_FAILURES.labels("dropped").inc(len(self._deferred))
            log.error("writer.held_records_lost", operations=len(self._deferred))
            self._deferred.clear()
        # Not `.result()`: that would block the event loop until the thread's current round ends.
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=True)
        await asyncio.get_running_loop().run_in_executor(self._checkpoint_thread, self._close_checkpointer)
        self._checkpoint_thread.shutdown(wait=True)
        log.info("writer.stopped", batches=self.batches, operations=self.operations)

    def _close(self) -> None:
        _close_quietly(self._conn)
        self._conn = None

    async def submit(self, op: Operation[T]) -> T:
        """Queue `op` and wait until its batch has committed (or failed)."""
        return await self.enqueue(op)

    def enqueue(self, op: Operation[T]) -> asyncio.Future[T]:
        """Queue `op`; the future is done when its batch has committed (or failed)."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(op, future))
        return future

    def submit_nowait(self, op: Operation[Any]) -> None:
        """Queue a record without waiting; while the store cannot commit it is held, then committed."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_log_failure)
        self._queue.put_nowait(_Pending(op, future, deferred=True))

    async def record(self, op: Operation[Any]) -> None:
        """Commit a record now if the store can; if it cannot, hold it (`submit_nowait`) and return.

        For audit entries that must not stand between a caller and its answer (an auditor's query,
        a refusal): they are written as soon as the store commits again.
        """
        if self._fault is None:
            try:
                await self.submit(op)
            except STORAGE_FAULTS:
                pass
            else:
                return
        self.submit_nowait(op)

    async def run_in_thread(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` on the writer thread in a transaction of its own, between batches."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._thread, self._transaction, fn)
        except sa.exc.SQLAlchemyError as exc:
            fault = storage_fault(exc)
            if fault is None:
                raise
            self._enter_fault(fault)
            raise fault from exc

    def _transaction(self, fn: Callable[[Connection], T]) -> T:
        if self._shared:
            # Integrate what is committed first, so that a checkpoint signed here covers every entry
            # committed before it was asked for; then look at the tree as stored (another replica
            # may have integrated further): its subtrees never change, so no lock is needed.
            self._integrate()
        conn = self._connection()
        try:
            with conn.begin():
                if self._shared:
                    stored = stored_tree_size(conn)
                    if stored != self._audit.size:
                        self._audit = AuditLog.open(conn, stored)
                return fn(conn)
        except sa.exc.SQLAlchemyError:
            self._close()
            raise

    def _connection(self) -> Connection:
        # The writer keeps one connection (only its thread uses it): no pool checkout per batch.
        # A connection the driver reported broken is replaced on the next batch.
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._conn = self._engine.connect()
            if self._sqlite:
                self._conn.exec_driver_sql(f"PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT_PAGES}")
                self._conn.commit()  # end the statement's implicit transaction before the first batch's
        return self._conn

    # -- WAL checkpoints (SQLite) ------------------------------------------------------------------

    async def _checkpoint_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._committed.wait()
            self._committed.clear()
            await loop.run_in_executor(self._checkpoint_thread, self._checkpoint)
            await asyncio.sleep(CHECKPOINT_INTERVAL)

    def _checkpoint(self) -> None:
        """Copy the committed WAL into the database file, beside the writer (a PASSIVE checkpoint
        takes no lock a commit waits for; commits are durable in the WAL before it runs)."""
        try:
            if self._checkpoint_conn is None or self._checkpoint_conn.invalidated:
                self._checkpoint_conn = self._engine.connect()
            self._checkpoint_conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self._checkpoint_conn.rollback()  # end the statement's implicit transaction: no read mark held
        except (sa.exc.SQLAlchemyError, OSError, sqlite3.Error) as exc:  # the writer's batches report a lost store
            self._close_checkpointer()
            log.debug("writer.checkpoint_failed", error=type(exc).__name__)

    def _close_checkpointer(self) -> None:
        _close_quietly(self._checkpoint_conn)
        self._checkpoint_conn = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            pending = [await self._queue.get()]
            while len(pending) < MAX_BATCH and not self._queue.empty():
                pending.append(self._queue.get_nowait())
            fault = self._fault
            if fault is not None:
                # Fail at once while the store is lost: the probe, not every caller, finds out when it is back.
                _hold_or_fail(pending, fault)
                after: list[Callable[[], None]] = []
            else:
                after, fault = await loop.run_in_executor(self._thread, self._commit, pending)
                if fault is None:
                    self._last_commit = time.monotonic()
                    self._committed.set()
                else:
                    self._enter_fault(fault)
            for callback in after:
                try:
                    callback()
                except Exception:  # a post-commit notification must not stop the writer
                    log.exception("writer.after_commit_failed")
            self._settle(pending)

    def _settle(self, pending: list[_Pending]) -> None:
        for item in pending:
            self._queue.task_done()
            if item.held:
                item.held = False
                self._hold(item)
            elif item.future.done():
                continue
            elif item.error is not None:
                item.future.set_exception(item.error)
            else:
                item.future.set_result(item.outcome)

    def _hold(self, item: _Pending) -> None:
        if len(self._deferred) >= MAX_DEFERRED:
            self._deferred.popleft()
            AUDIT_WRITE_FAILURES.labels("dropped").inc()
            log.error("writer.held_record_dropped", held=len(self._deferred))
        self._deferred.append(item)
        WRITER_HELD.set(len(self._deferred))

    def _enter_fault(self, fault: Fault) -> None:
        STORE_FAULTS.labels(fault.status.name).inc()
        first = self._fault is None
        self._fault = fault
        if not first:
            return
        self._fault_since = time.monotonic()
        self._lost.set()
        WRITER_HEALTHY.set(0)
        log.error("writer.store_lost", status=fault.status.name, reason=str(fault))
        self._tell_health(False)

    def _recover(self) -> None:
        lost_for = time.monotonic() - self._fault_since
        self._fault = None
        self._lost.clear()
        self._last_commit = time.monotonic()
        WRITER_HEALTHY.set(1)
        log.info("writer.store_recovered", lost_seconds=round(lost_for, 3), held=len(self._deferred))
        while self._deferred:
            self._queue.put_nowait(self._deferred.popleft())
        WRITER_HELD.set(0)
        self._tell_health(True)

    def _tell_health(self, healthy: bool) -> None:
        for hook in self.on_health:
            try:
                hook(healthy)
            except Exception:  # a health listener must not stop the writer
                log.exception("writer.health_hook_failed")

    async def _probe_loop(self) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            if self._fault is None:
                attempt = 0
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._idle_probe):
                        await self._lost.wait()
                if self._fault is None:
                    if time.monotonic() - self._last_commit >= self._idle_probe:
                        fault = await loop.run_in_executor(self._thread, self._probe)
                        if fault is None:
                            self._last_commit = time.monotonic()
                        else:
                            self._enter_fault(fault)
                    continue
            pause = min(self._probe_interval * 2**attempt, self._probe_max)
            await asyncio.sleep(pause)
            attempt += 1
            fault = await loop.run_in_executor(self._thread, self._probe)
            if fault is None:
                self._recover()
            else:
                self._fault = fault
                log.info(
                    "writer.probe_failed",
                    attempt=attempt,
                    status=fault.status.name,
                    retry_in=min(self._probe_interval * 2**attempt, self._probe_max),
                )

    def _probe(self) -> Fault | None:
        # A real one-row write: a full disk fails it like any batch, while a SELECT would pass.
        try:
            conn = self._connection()
            with conn.begin():
                conn.execute(_HEARTBEAT, {"node": self._node, "beat": now_us()})
        except (sa.exc.SQLAlchemyError, OSError, sqlite3.Error) as exc:  # every one is a verdict on the store
            self._close()
            fault = storage_fault(exc)
            if fault is None:
                log.warning("writer.probe_error", error=type(exc).__name__)
                return StorageUnavailable(f"the broker's database cannot be written ({type(exc).__name__}); retry")
            return fault
        return None

    # -- integration (PostgreSQL replicas; docs/protocol.md section 24.3) -----------------------

    async def _integrate_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._staged.wait()
            self._staged.clear()
            if self._fault is None:
                try:
                    await loop.run_in_executor(self._thread, self._integrate)
                except Exception:  # a failed round must not stop integration: the next one retries
                    log.exception("writer.integration_failed")
            await asyncio.sleep(self._integrate_interval)

    def _integrate(self) -> None:
        """One integration round (docs/protocol.md section 24.3) on the writer thread.

        Read the tree size and the committed entries after it, hash them into the tree, with no
        lock; then, in one pipeline, write the completed subtrees (identical whoever writes them,
        so a duplicate is skipped) and move the size on with a compare-and-set of the tree's row.
        Only that row's lock, from the update to the commit, is serialised; a replica that lost the
        race to another integrator drops its round and reads again at the next.
        """
        conn = self._connection()
        try:
            with conn.begin():
                stored, leaves = read_staged(conn)
                if stored != self._audit.staged_size:  # another replica integrated since our last round
                    self._audit = AuditLog.open(conn, stored)
            step = self._audit.prepare(leaves)
            held = None if step is None else _publish(conn, step)
        except (sa.exc.SQLAlchemyError, OSError, psycopg.Error) as exc:
            # The next round retries; a lost store is for the batches and the probe to report.
            self._close()
            log.warning("writer.integration_failed", error=type(exc).__name__)
            return
        if step is not None and held is not None:
            self._audit.adopt(step)
            SEQUENCER_HELD.inc(held)
            AUDIT_ENTRIES.set(self._audit.size)
        size = self._audit.size
        self._watch_gap(size if step is None and leaves and leaves[0][0] != size else None, leaves)

    def _wake_integrator(self) -> None:
        """Wake the integration loop from the writer thread (an asyncio.Event is not thread-safe:
        its `set` from another thread may leave the loop asleep until its next timer)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._staged.set)

    def _watch_gap(self, gap: int | None, leaves: Sequence[tuple[int, bytes]]) -> None:
        """Fill a gap open for the void grace (an index reserved by a transaction that never
        committed: its broker died) with `abandoned` void entries, in a transaction of its own."""
        if gap is None:
            self._gap = None
            return
        if self._gap is None or self._gap[0] != gap:
            self._gap = (gap, time.monotonic())
            return
        if time.monotonic() - self._gap[1] < self._void_grace:
            return
        self._gap = None
        missing = range(gap, leaves[0][0])
        conn = self._connection()
        try:
            with conn.begin():
                # A transaction still holding an index makes this wait, briefly; then the next round
                # retries, and whichever commits first holds the index (primary key).
                conn.execute(_VOID_LOCK_TIMEOUT)
                self._audit.void(conn, missing, self._actor, "abandoned", datetime.now(UTC))
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            self._close()
            log.info("writer.void_deferred", first=gap, error=type(exc).__name__)
            return
        log.warning("writer.voided_abandoned_indices", first=gap, count=len(missing))
        self._wake_integrator()

    def _void_in_flight(self, fault: Fault | None) -> None:
        """The batch's transaction rolled back: fill the indices it had reserved at once, so that
        integration does not wait for the grace. Not when the store failed it (the void would wait
        for the same store): then the integrator fills them after the grace."""
        indices, self._in_flight = self._in_flight, []
        if not (self._shared and indices) or fault is not None:
            return
        try:
            conn = self._connection()
            with conn.begin():
                self._audit.void(conn, indices, self._actor, "rolled_back", datetime.now(UTC))
        except (sa.exc.SQLAlchemyError, OSError) as exc:  # the store may be what failed the batch
            self._close()
            log.warning("writer.void_failed", indices=len(indices), error=type(exc).__name__)

    def _commit(self, pending: list[_Pending]) -> tuple[list[Callable[[], None]], Fault | None]:
        self.batches += 1
        self.operations += len(pending)
        started = time.perf_counter()
        try:
            committed = self._commit_batch(pending)
        except Exception as exc:
            self._audit.rollback()
            fault = storage_fault(exc)
            self._void_in_flight(fault)
            if fault is not None:
                # The store's failure, not this batch's: one line, no traceback per batch of an outage.
                log.error(  # noqa: TRY400
                    "writer.batch_failed",
                    operations=len(pending),
                    status=fault.status.name,
                    error=type(exc).__name__,
                )
                self._close()
                _hold_or_fail(pending, fault)
                return [], fault
            log.exception("writer.batch_failed", operations=len(pending))
        else:
            WRITER_COMMIT.observe(time.perf_counter() - started)
            WRITER_BATCH.observe(len(pending))
            AUDIT_ENTRIES.set(self._audit.size)
            return committed, None
        if len(pending) == 1:
            pending[0].error = StorageUnavailable("the broker could not store this; retry")
            return [], None
        # One operation's failure must not fail its neighbours: commit each alone, so that only
        # the culprit is refused (sends are idempotent, so a retried send is answered the same).
        after: list[Callable[[], None]] = []
        for position, item in enumerate(pending):
            item.outcome, item.error = None, None
            try:
                after += self._commit_batch([item])
            except Exception as exc:
                self._audit.rollback()
                fault = storage_fault(exc)
                self._void_in_flight(fault)
                if fault is not None:
                    self._close()
                    _hold_or_fail(pending[position:], fault)
                    return after, fault
                log.exception("writer.operation_failed", operation=type(item.op).__name__)
                item.error = StorageUnavailable(f"the broker could not store this ({type(exc).__name__}); retry")
        return after, None

    def _commit_batch(self, pending: list[_Pending]) -> list[Callable[[], None]]:
        conn = self._connection()
        with conn.begin():
            started = time.perf_counter()
            counted = None if self._shared else _Counted(self._audit.staged_size)
            indices: IndexSource = _Sequence() if counted is None else counted
            batch = Batch(conn=conn, now_us=now_us(), indices=indices, ops=[item.op for item in pending])
            self._in_flight = batch.reserved
            if counted is None:
                # The indices the batch will most likely need, in the round trip of its BEGIN.
                with pipelined(conn):
                    if not all(getattr(item.op, "replica_safe", False) for item in pending):
                        # Operations not shown safe to run beside another replica's keep a lock of
                        # their own (their reads decide their writes); the audit log needs none.
                        replication.take_state_lock(conn)
                    batch.expect_entries(sum(getattr(item.op, "expected_entries", 1) for item in pending))
            for position, item in enumerate(pending):
                batch.remaining = len(pending) - position
                try:
                    item.outcome = item.op.stage(batch)
                except REFUSALS as exc:
                    item.error = exc
            unused = batch.unused()
            if counted is not None and not counted.release(unused):
                raise RuntimeError("audit indices reserved out of order")
            # Nothing below reads a result: one round trip for every insert and note of the batch.
            with pipelined(conn):
                for table, rows in batch.inserts.items():
                    columns = tuple(rows[0])
                    bulk_insert(conn, table, columns, [tuple(row[c] for c in columns) for row in rows])
                leaves = self._audit.stage(conn, batch.events, batch.entry_indices)
                if counted is None:
                    if unused:  # reserved for operations that logged nothing (a repeated send)
                        self._audit.void(conn, unused, self._actor, "unused", batch.now)
                elif self._audit.integrate(conn, leaves) != len(leaves):
                    raise RuntimeError("audit log index drifted from the writer's count")
                if self._shared and (batch.notify or batch.settled):
                    # Delivered by PostgreSQL only if and when this transaction commits.
                    replication.notify(conn, self._node, batch.notify, batch.settled)
        self._in_flight = []
        if counted is not None:
            # SQLite: one writer, and its whole transaction is the serialised section.
            SEQUENCER_HELD.inc(time.perf_counter() - started)
            self._audit.commit()
        elif batch.events:
            self._wake_integrator()
        return batch.after_commit


def _close_quietly(conn: Connection | None) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):  # closing a connection to a lost store may fail too
            conn.close()


_VOID_LOCK_TIMEOUT = sa.text("SET LOCAL lock_timeout = '100ms'")
_PUBLISH_NODES = (
    "INSERT INTO audit_nodes (level, node_index, hash) "
    "SELECT * FROM unnest(%s::smallint[], %s::bigint[], %s::bytea[]) ON CONFLICT DO NOTHING"
)
# The compare-and-set that is the sequencer, sent as one message (simple query protocol), so that
# the server runs it from the row lock to the commit without waiting for this process. A hung
# integrator holding the row makes the update give up (lock_timeout) instead of stalling the writer.
# Losing a round's commit in a crash loses nothing: the entries are durable and integrate again to
# the same nodes, and a checkpoint's (synchronous) commit flushes the rounds committed before it.
_PUBLISH_SIZE = (
    "BEGIN; SET LOCAL synchronous_commit TO off; SET LOCAL lock_timeout TO '200ms'; "
    "UPDATE audit_tree SET tree_size = {new} WHERE id = 1 AND tree_size = {old} RETURNING clock_timestamp(); "
    "COMMIT; SELECT clock_timestamp()"
)


def _publish(conn: Connection, step: Integration) -> float | None:
    """Commit `step` on `conn`: its subtrees first (identical whoever writes them: a duplicate is
    skipped, and one not yet in the tree is harmless), then the size by compare-and-set. Return the
    seconds the tree's row was locked, measured by the database (from the update to just after the
    commit), or None if another integrator moved the tree first (the size is then unchanged)."""
    raw = conn.connection.dbapi_connection
    if not isinstance(raw, psycopg.Connection):
        raise TypeError(f"the integrator needs a psycopg connection, not {type(raw).__name__}")
    if step.nodes:
        levels, indices, hashes = (list(column) for column in zip(*step.nodes, strict=True))
        with raw.pipeline():
            raw.execute("SET LOCAL synchronous_commit = off")
            raw.execute(_PUBLISH_NODES, (levels, indices, hashes))
            raw.commit()
    raw.autocommit = True  # the message carries its own BEGIN and COMMIT
    try:
        cursor = raw.cursor()
        cursor.execute(_PUBLISH_SIZE.format(new=int(step.new_size), old=int(step.old_size)).encode())
        times = []
        while True:
            if cursor.description is not None:
                times.append(cursor.fetchall())
            if not cursor.nextset():
                break
        raw.autocommit = False
    except BaseException:
        # Left inside the message's block, or in autocommit: this connection must never serve a
        # batch again (a batch in autocommit would not be atomic), so it is discarded, not pooled.
        conn.invalidate()
        raise
    locked, released = times
    if not locked:
        return None
    return float((released[0][0] - locked[0][0]).total_seconds())


_HEARTBEAT = sa.text(
    "INSERT INTO writer_heartbeat (node, beat_us) VALUES (:node, :beat) "
    "ON CONFLICT (node) DO UPDATE SET beat_us = excluded.beat_us"
)


def _hold_or_fail(pending: Sequence[_Pending], fault: Fault) -> None:
    """A batch the store could not take: records are held for later, callers get the fault.

    A refusal raised by its operation keeps its own status (the caller's answer does not depend
    on the store); its audit entry is the caller's refusal scope's (broker.audit.refusals).
    """
    for item in pending:
        item.outcome = None
        if item.deferred:
            item.held = True
        elif isinstance(item.error, REFUSALS) and not isinstance(item.error, STORAGE_FAULTS):
            pass  # its audit entry is written (or held) by the caller's refusal scope, not by this batch
        else:
            item.error = type(fault)(str(fault))


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("writer.background_operation_failed", error=str(future.exception()))
