"""The durable, verifiable audit log: an RFC 9162 Merkle tree kept in the broker's database.

Entries are written in two steps (docs/protocol.md section 24, as in Trillian Tessera):

- `stage` writes complete entries at indices the caller reserved, inside the caller's transaction,
  so that an entry and the state change it records commit together (issue 4: no accepted message
  without its entry, no entry for something that did not happen);
- `integrate` folds the committed entries that follow the tree, in index order, into the tree:
  every complete subtree is written as it appears (so a proof reads O(log n) rows in one query and
  nothing is ever rehashed) and the tree's size (`audit_tree`) moves on.

    with engine.begin() as conn:           # one writer transaction
        ... state changes ...
        log.append(conn, events)           # stage at the next indices and integrate at once
    log.commit()                           # or log.rollback() if the transaction failed

`append` is both at once, for the single writer of an SQLite database. Across PostgreSQL replicas
each writer stages with indices from the database's sequence, and integration rounds (any replica)
`prepare` the tree's growth with no lock and publish it with a compare-and-set of the stored size
(`broker.store.writer`). The tree's right edge (`Frontier`) lives in memory; an integrator that
finds the stored size moved on (another one integrated) opens the log again at that size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, and_, func, literal, or_, select, union_all
from sqlalchemy.dialects import postgresql, sqlite

from broker.audit.events import VOID_EVENT, AuditEvent
from broker.audit.signer import CheckpointSigner
from broker.audit.tables import checkpoints_table, entries_table, nodes_table, tree_table
from broker.errors import BrokerError, InvalidRequest, NotFound
from broker.protocol import _cosignature, _merkle
from broker.store.db import bulk_insert

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_PAGE_SIZE = 1000
_EXPORT_PAGE = 5000
MAX_INTEGRATE = 65_536  # entries one integration reads at most (docs/protocol.md section 24.3)


def _from_us(time_us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=time_us)


def _to_us(when: datetime) -> int:
    if when.tzinfo is None:
        raise InvalidRequest("audit query times must be timezone-aware")
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """A stored entry: its position, indexed metadata, canonical bytes and leaf hash."""

    index: int
    time: datetime
    event: str
    actor: str
    agency: str | None
    message_id: str | None
    entry: bytes
    leaf_hash: bytes


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    """A stored signed checkpoint over the first `tree_size` entries."""

    tree_size: int
    root_hash: bytes
    time: datetime
    note: bytes


@dataclass(frozen=True, slots=True)
class QueryPage:
    """One page of query results; pass `next_index` as `start_index` for the next (None: no more)."""

    records: list[AuditRecord]
    next_index: int | None


def _record(row: Sequence[Any]) -> AuditRecord:
    index, time_us, event, actor, agency, message_id, entry, leaf = row
    return AuditRecord(index, _from_us(time_us), event, actor, agency, message_id, bytes(entry), bytes(leaf))


_ENTRY_COLUMNS = (
    entries_table.c.leaf_index,
    entries_table.c.time_us,
    entries_table.c.event,
    entries_table.c.actor,
    entries_table.c.agency,
    entries_table.c.message_id,
    entries_table.c.entry,
    entries_table.c.leaf_hash,
)


_ENTRY_INSERT_COLUMNS = ("leaf_index", "time_us", "event", "actor", "agency", "message_id", "entry", "leaf_hash")
_NODE_INSERT_COLUMNS = ("level", "node_index", "hash")


def _node_key(start: int, end: int) -> tuple[int, int]:
    """`(level, node_index)` of the perfect subtree `[start, end)`."""
    return (end - start).bit_length() - 1, start // (end - start)


def _stored_size(conn: Connection) -> int:
    last = conn.execute(select(func.max(entries_table.c.leaf_index))).scalar_one()
    return 0 if last is None else int(last) + 1


def stored_tree_size(conn: Connection) -> int:
    """The stored size of the tree (entries integrated); a database without the row predates staging,
    so every entry it holds is integrated."""
    stored = conn.execute(_TREE_SIZE).scalar()
    return _stored_size(conn) if stored is None else int(stored)


_TREE_SIZE = select(tree_table.c.tree_size).where(tree_table.c.id == 1)
_SET_TREE_SIZE = sa.text(
    "INSERT INTO audit_tree (id, tree_size) VALUES (1, :size) "
    "ON CONFLICT (id) DO UPDATE SET tree_size = excluded.tree_size"
)
_STAGED_LEAVES = (
    select(entries_table.c.leaf_index, entries_table.c.leaf_hash)
    .where(entries_table.c.leaf_index >= sa.bindparam("start"))
    .order_by(entries_table.c.leaf_index)
    .limit(sa.bindparam("limit"))
)
# The stored tree size and the committed entries from it on, in one round trip (the integrator's read).
STAGED_SQL = (
    "SELECT t.tree_size, e.leaf_index, e.leaf_hash FROM audit_tree AS t LEFT JOIN LATERAL ("
    "SELECT leaf_index, leaf_hash FROM audit_entries WHERE leaf_index >= t.tree_size "
    "ORDER BY leaf_index LIMIT %(limit)s) AS e ON true WHERE t.id = 1"
)
_TREE_AND_STAGED = sa.text(STAGED_SQL.replace("%(limit)s", ":limit"))


def read_staged(conn: Connection, limit: int = MAX_INTEGRATE) -> tuple[int, list[tuple[int, bytes]]]:
    """The stored tree size and `(index, leaf hash)` of up to `limit` committed entries from it on,
    in index order (gaps included as they are): what an integrator reads, in one round trip."""
    rows = conn.execute(_TREE_AND_STAGED, {"limit": limit}).all()
    if not rows:  # a database without the row predates staging: every entry is integrated
        return stored_tree_size(conn), []
    return int(rows[0][0]), [(int(index), bytes(leaf)) for _, index, leaf in rows if index is not None]


def _read_nodes(conn: Connection, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """The hashes of the given `(level, index)` subtrees, in one round trip; missing ones are absent."""
    leaves = [index for level, index in keys if level == 0]
    inner: dict[int, list[int]] = {}
    for level, index in keys:
        if level > 0:
            inner.setdefault(level, []).append(index)
    parts = []
    if leaves:
        parts.append(
            select(literal(0).label("level"), entries_table.c.leaf_index, entries_table.c.leaf_hash).where(
                entries_table.c.leaf_index.in_(leaves)
            )
        )
    if inner:
        parts.append(
            # One `level = ? AND node_index IN (...)` per level: SQLite searches the primary key for
            # each, whereas a row-value `(level, node_index) IN (...)` makes it scan the whole table.
            select(nodes_table.c.level, nodes_table.c.node_index, nodes_table.c.hash).where(
                or_(
                    *(
                        and_(nodes_table.c.level == level, nodes_table.c.node_index.in_(indices))
                        for level, indices in inner.items()
                    )
                )
            )
        )
    if not parts:
        return {}
    statement = parts[0] if len(parts) == 1 else union_all(*parts)
    return {(int(level), int(index)): bytes(h) for level, index, h in conn.execute(statement)}


def _entry_rows(events: Sequence[AuditEvent], indices: Sequence[int]) -> list[tuple[Any, ...]]:
    if len(events) != len(indices):
        raise ValueError(f"{len(events)} audit events for {len(indices)} indices")
    rows: list[tuple[Any, ...]] = []
    for index, event in zip(indices, events, strict=True):
        entry = event.to_entry_bytes(index)
        rows.append(
            (
                index,
                event.time_us,
                event.event,
                event.actor,
                event.agency,
                event.message_id,
                entry,
                _merkle.leaf_hash(entry),
            )
        )
    return rows


@dataclass(frozen=True, slots=True)
class Integration:
    """One integration prepared by `AuditLog.prepare`: the tree grows from `old_size` to `new_size`,
    completing `nodes` (`(level, node_index, hash)`)."""

    old_size: int
    new_size: int
    nodes: list[tuple[int, int, bytes]]
    frontier: _merkle.Frontier


class AuditLog:
    """The audit log of one database. Create with `AuditLog.open`."""

    def __init__(self, frontier: _merkle.Frontier) -> None:
        """Wrap a frontier read from the database (use `open`)."""
        self._frontier = frontier
        self._pending: _merkle.Frontier | None = None

    @classmethod
    def open(cls, conn: Connection, size: int | None = None) -> AuditLog:
        """Load the log's size and right edge from the database (O(log n) rows); `size`: the tree
        at that size instead (its subtrees never change once stored)."""
        size = stored_tree_size(conn) if size is None else size
        keys = _merkle.frontier_ranges(size)
        found = _read_nodes(conn, keys)
        missing = [key for key in keys if key not in found]
        if missing:
            raise BrokerError(f"audit log of {size} entries is missing stored subtrees {missing}")
        return cls(_merkle.Frontier(size, [found[key] for key in keys]))

    # -- appending ------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """The number of committed entries."""
        return self._frontier.size

    @property
    def staged_size(self) -> int:
        """The number of entries including those staged in the open transaction."""
        return (self._pending or self._frontier).size

    def root(self) -> bytes:
        """The root hash of the committed entries."""
        return self._frontier.root()

    def append(self, conn: Connection, events: Sequence[AuditEvent]) -> list[int]:
        """Stage `events` at the next indices and integrate them at once, inside the caller's
        transaction (the single writer of a database); return their indices.

        Call `commit()` after the transaction commits, `rollback()` if it does not.
        """
        if not events:
            return []
        first = self.staged_size
        indices = list(range(first, first + len(events)))
        leaves = self.stage(conn, events, indices)
        if self.integrate(conn, leaves) != len(events):
            raise BrokerError("audit log: entries staged at the tree's end did not integrate")
        return indices

    def stage(self, conn: Connection, events: Sequence[AuditEvent], indices: Sequence[int]) -> list[tuple[int, bytes]]:
        """Write `events` as complete entries at `indices` (reserved by the caller) on `conn`, inside
        the caller's transaction; return `(index, leaf hash)` of each, for `integrate`.

        Nothing of the tree changes: entries at or above the tree size wait for `integrate`.
        """
        rows = _entry_rows(events, indices)
        if rows:
            bulk_insert(conn, entries_table, _ENTRY_INSERT_COLUMNS, rows)
        return [(row[0], row[7]) for row in rows]

    def integrate(
        self, conn: Connection, leaves: Sequence[tuple[int, bytes]] | None = None, limit: int = MAX_INTEGRATE
    ) -> int:
        """Fold the entries that continue the tree into it, on `conn`; return how many.

        `leaves`: `(index, leaf hash)` in index order, as `stage` returned them; None reads the
        committed entries at and after the tree size (at most `limit`). Only the contiguous run that
        starts at the tree size is integrated: a gap stops it (docs/protocol.md section 24.3).
        Call `commit()` after the transaction commits, `rollback()` if it does not.
        """
        if leaves is None:
            start = (self._pending or self._frontier).size
            leaves = [
                (int(index), bytes(leaf))
                for index, leaf in conn.execute(_STAGED_LEAVES, {"start": start, "limit": limit})
            ]
        step = self.prepare(leaves)
        if step is None:
            return 0
        if step.nodes:
            bulk_insert(conn, nodes_table, _NODE_INSERT_COLUMNS, step.nodes)
        conn.execute(_SET_TREE_SIZE, {"size": step.new_size})
        self._pending = step.frontier
        return step.new_size - step.old_size

    def prepare(self, leaves: Sequence[tuple[int, bytes]]) -> Integration | None:
        """The tree after the contiguous run of `leaves` that starts at its size (None: no such run):
        the hashing of an integration, which needs no database and no lock."""
        frontier = (self._pending or self._frontier).copy()
        old_size = frontier.size
        nodes: list[tuple[int, int, bytes]] = []
        for index, leaf in leaves:
            if index != frontier.size:
                break
            nodes.extend(frontier.append(leaf))
        if frontier.size == old_size:
            return None
        return Integration(old_size, frontier.size, nodes, frontier)

    def adopt(self, step: Integration) -> None:
        """`step`'s nodes and size were committed (by the caller, from `prepare`)."""
        self._frontier = step.frontier
        self._pending = None

    def void(self, conn: Connection, indices: Sequence[int], actor: str, reason: str, when: datetime) -> None:
        """Fill `indices`, reserved by transactions that did not use or did not commit them, with
        `audit.void` entries (docs/protocol.md section 24.3), unless an entry committed there first."""
        event = AuditEvent(event=VOID_EVENT, actor=actor, time=when, fields={"reason": reason})
        rows = _entry_rows([event] * len(indices), indices)
        if not rows:
            return
        insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(entries_table)
        conn.execute(
            insert.on_conflict_do_nothing(index_elements=["leaf_index"]),
            [dict(zip(_ENTRY_INSERT_COLUMNS, row, strict=True)) for row in rows],
        )

    def commit(self) -> None:
        """The caller's transaction committed: the staged entries are now part of the log."""
        if self._pending is not None:
            self._frontier = self._pending
            self._pending = None

    def rollback(self) -> None:
        """The caller's transaction rolled back: forget the staged entries."""
        self._pending = None

    # -- checkpoints ----------------------------------------------------------------------------

    def sign_checkpoint(
        self, conn: Connection, signer: CheckpointSigner, when: datetime | None = None
    ) -> CheckpointRecord:
        """Sign and store a checkpoint of the log as staged on `conn` (the latest one if unchanged)."""
        frontier = self._pending or self._frontier
        latest = self.latest_checkpoint(conn)
        if latest is not None and latest.tree_size == frontier.size:
            return latest
        if latest is not None and latest.tree_size > frontier.size:
            # Another replica integrated and signed since this one last looked: its checkpoint covers
            # everything this one would (section 24.3).
            return latest
        when = datetime.now(UTC) if when is None else when
        root = frontier.root()
        note = signer.sign(frontier.size, root, when)
        time_us = _to_us(when)
        conn.execute(
            checkpoints_table.insert().values(tree_size=frontier.size, time_us=time_us, root_hash=root, note=note)
        )
        return CheckpointRecord(frontier.size, root, _from_us(time_us), note)

    def attach_cosignatures(self, conn: Connection, tree_size: int, lines: Sequence[str]) -> bytes:
        """Append witness cosignature lines to the stored checkpoint of `tree_size`; return the new note."""
        record = self.checkpoint(conn, tree_size)
        note = _cosignature.attach(record.note, list(lines))
        if note != record.note:
            conn.execute(checkpoints_table.update().where(checkpoints_table.c.tree_size == tree_size).values(note=note))
        return note

    def latest_checkpoint(self, conn: Connection) -> CheckpointRecord | None:
        """The checkpoint of the largest tree, if any was signed."""
        latest = self.checkpoints_above(conn, -1, 1)
        return latest[0] if latest else None

    def checkpoints_above(self, conn: Connection, tree_size: int, limit: int) -> list[CheckpointRecord]:
        """Up to `limit` checkpoints larger than `tree_size`, the largest first."""
        rows = conn.execute(
            select(
                checkpoints_table.c.tree_size,
                checkpoints_table.c.root_hash,
                checkpoints_table.c.time_us,
                checkpoints_table.c.note,
            )
            .where(checkpoints_table.c.tree_size > tree_size)
            .order_by(checkpoints_table.c.tree_size.desc())
            .limit(limit)
        )
        return [
            CheckpointRecord(int(size), bytes(root), _from_us(time_us), bytes(note))
            for size, root, time_us, note in rows
        ]

    def checkpoint(self, conn: Connection, tree_size: int) -> CheckpointRecord:
        """The checkpoint signed at exactly `tree_size`."""
        columns = (checkpoints_table.c.root_hash, checkpoints_table.c.time_us, checkpoints_table.c.note)
        row = conn.execute(select(*columns).where(checkpoints_table.c.tree_size == tree_size)).first()
        if row is None:
            raise NotFound(f"no checkpoint of tree size {tree_size}")
        return CheckpointRecord(tree_size, bytes(row[0]), _from_us(row[1]), bytes(row[2]))

    # -- proofs ---------------------------------------------------------------------------------

    def _materialise(self, conn: Connection, plan: _merkle.ProofPlan, tree_size: int) -> list[bytes]:
        keys = sorted({_node_key(start, end) for element in plan for start, end in element})
        found = _read_nodes(conn, keys)
        if len(found) != len(keys):
            stored = stored_tree_size(conn)
            if tree_size > stored:
                raise InvalidRequest(f"tree size {tree_size} is larger than the log ({stored} entries)")
            raise BrokerError(f"audit log storage is missing subtrees for a tree of size {tree_size}")

        def subtree(start: int, end: int) -> bytes:
            return found[_node_key(start, end)]

        return _merkle.proof_from_plan(plan, subtree)

    def inclusion_proof(self, conn: Connection, index: int, tree_size: int) -> list[bytes]:
        """The inclusion proof of entry `index` in the tree of `tree_size` entries (RFC 9162 2.1.3)."""
        if not 0 <= index < tree_size:
            raise InvalidRequest(f"entry {index} is not in a tree of size {tree_size}")
        return self._materialise(conn, _merkle.inclusion_plan(index, tree_size), tree_size)

    def consistency_proof(self, conn: Connection, first: int, second: int) -> list[bytes]:
        """The consistency proof from the tree of `first` entries to that of `second` (RFC 9162 2.1.4)."""
        if not 0 <= first <= second:
            raise InvalidRequest(f"no consistency proof from size {first} to the smaller size {second}")
        return self._materialise(conn, _merkle.consistency_plan(first, second), second)

    # -- reading --------------------------------------------------------------------------------

    def entry(self, conn: Connection, index: int) -> AuditRecord:
        """The entry at `index`."""
        row = conn.execute(select(*_ENTRY_COLUMNS).where(entries_table.c.leaf_index == index)).first()
        if row is None:
            raise NotFound(f"no audit entry {index}")
        return _record(row)

    def query(
        self,
        conn: Connection,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        agency: str | None = None,
        message_id: str | None = None,
        event: str | None = None,
        start_index: int = 0,
        limit: int = 100,
    ) -> QueryPage:
        """Entries matching every given filter (`since` inclusive, `until` exclusive), in log order."""
        limit = max(1, min(limit, MAX_PAGE_SIZE))
        statement = select(*_ENTRY_COLUMNS).where(entries_table.c.leaf_index >= start_index)
        if since is not None:
            statement = statement.where(entries_table.c.time_us >= _to_us(since))
        if until is not None:
            statement = statement.where(entries_table.c.time_us < _to_us(until))
        if agency:
            statement = statement.where(entries_table.c.agency == agency)
        if message_id:
            statement = statement.where(entries_table.c.message_id == message_id)
        if event:
            statement = statement.where(entries_table.c.event == event)
        rows = conn.execute(statement.order_by(entries_table.c.leaf_index).limit(limit + 1)).all()
        records = [_record(row) for row in rows[:limit]]
        next_index = int(rows[limit][0]) if len(rows) > limit else None
        return QueryPage(records, next_index)

    def export(
        self, conn: Connection, start_index: int = 0, end_index: int | None = None
    ) -> Iterator[AuditRecord | CheckpointRecord]:
        """Entries `[start_index, end_index)` and the checkpoints over them, each right after its last entry.

        `end_index` defaults to the latest checkpoint's size: entries no checkpoint covers cannot be
        verified yet. Reads in pages, so it streams logs of any size.
        """
        if end_index is None:
            latest = self.latest_checkpoint(conn)
            end_index = 0 if latest is None else latest.tree_size
        position = start_index
        while position < end_index:
            page_end = min(position + _EXPORT_PAGE, end_index)
            rows = conn.execute(
                select(*_ENTRY_COLUMNS)
                .where(entries_table.c.leaf_index >= position, entries_table.c.leaf_index < page_end)
                .order_by(entries_table.c.leaf_index)
            ).all()
            checkpoints = [
                CheckpointRecord(int(size), bytes(root), _from_us(time_us), bytes(note))
                for size, root, time_us, note in conn.execute(
                    select(
                        checkpoints_table.c.tree_size,
                        checkpoints_table.c.root_hash,
                        checkpoints_table.c.time_us,
                        checkpoints_table.c.note,
                    )
                    .where(
                        checkpoints_table.c.tree_size > position,
                        checkpoints_table.c.tree_size <= page_end,
                    )
                    .order_by(checkpoints_table.c.tree_size)
                )
            ]
            # Merge by tree size, not by looking up the entry a checkpoint follows: a checkpoint is
            # exported even when rows before it are missing, so the verifier sees the gap.
            pending = iter(checkpoints)
            upcoming = next(pending, None)
            for row in rows:
                record = _record(row)
                while upcoming is not None and upcoming.tree_size <= record.index:
                    yield upcoming
                    upcoming = next(pending, None)
                yield record
            while upcoming is not None:
                yield upcoming
                upcoming = next(pending, None)
            position = page_end
