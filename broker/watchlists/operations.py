"""Writer operations for watchlists. Each runs in the writer's transaction (see
`broker.store.writer`), so a version and its "watchlist.published" audit entry commit together.

The version check lives here, in the single writer, not before it: two owners' calls racing for
the same version are ordered by the writer, and the loser gets FAILED_PRECONDITION. Across broker
replicas sharing PostgreSQL the update of `watchlist_lists` is a compare-and-set on the previous
version, and the (watchlist, version) primary key backs it up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

import sqlalchemy as sa

from broker.api.v1 import envelope_pb2
from broker.audit import AuditEvent, justification_fields
from broker.errors import AlreadyExists, BrokerError, FailedPrecondition, NotFound, PermissionDenied
from broker.store import tables as store_tables
from broker.store.writer import Batch
from broker.watchlists import tables
from broker.watchlists.records import WatchlistRecord, record_of_row
from broker.watchlists.review import ReviewSchedule, store_schedule

__all__ = ["CreateWatchlist", "PublishVersion", "Published"]


@dataclass
class CreateWatchlist:
    """Create a watchlist at version 0; creating the same one again is idempotent."""

    record: WatchlistRecord
    actor: str

    def stage(self, batch: Batch) -> WatchlistRecord:
        r = self.record
        row = batch.conn.execute(
            sa.select(tables.watchlist_lists).where(tables.watchlist_lists.c.watchlist_id == r.watchlist_id)
        ).first()
        if row is not None:
            existing = record_of_row(row)
            if existing.same_definition(r):
                return existing
            self._refuse(
                batch,
                AlreadyExists(f"watchlist {r.watchlist_id} already exists with another definition; choose another id"),
            )
        # Executed now rather than staged, so that a second create of this id in the same batch sees it.
        batch.conn.execute(
            tables.watchlist_lists.insert().values(
                watchlist_id=r.watchlist_id,
                owner=r.owner,
                title=r.title,
                entry_types=",".join(r.entry_types),
                subscribers=",".join(r.subscribers),
                tlp=r.tlp,
                version=0,
                snapshot_version=0,
                created_us=batch.now_us,
                updated_us=batch.now_us,
            )
        )
        batch.audit(
            AuditEvent(
                event="watchlist.created",
                actor=self.actor,
                time=batch.now,
                agency=r.owner,
                fields={
                    "watchlist_id": r.watchlist_id,
                    "subscribers": list(r.subscribers),
                    "tlp": envelope_pb2.Tlp.Name(r.tlp),  # type: ignore[arg-type]
                    "entry_types": list(r.entry_types),
                },
            )
        )
        return WatchlistRecord(
            r.watchlist_id, r.owner, r.title, r.entry_types, r.subscribers, r.tlp, 0, 0, batch.now_us, batch.now_us
        )

    def _refuse(self, batch: Batch, error: BrokerError) -> NoReturn:
        # Audited once by the caller's refusal scope (broker.audit.refusals), not staged here.
        raise error


@dataclass(frozen=True, slots=True)
class Published:
    """The outcome of a published (or idempotently repeated) version."""

    watchlist_id: str
    version: int
    accepted_us: int
    audit_index: int
    duplicate: bool
    wrapped_for: tuple[str, ...]


@dataclass
class PublishVersion:
    """Store one WATCHLIST_UPDATE envelope as the next version of its watchlist."""

    header: envelope_pb2.Header
    snapshot: bool
    envelope: bytes
    envelope_sha256: bytes
    sender_cert_fingerprint: bytes
    sender_cert_der: bytes
    caller: str
    wrapped_for: tuple[str, ...]
    on_commit: Callable[[str, int], None]
    review: ReviewSchedule | None = None  # the owner's review schedule after this version, if it sent one

    def stage(self, batch: Batch) -> Published:
        h = self.header
        lists, versions = tables.watchlist_lists, tables.watchlist_versions
        row = batch.conn.execute(sa.select(lists).where(lists.c.watchlist_id == h.watchlist_id)).first()
        # 1. The watchlist exists and the caller owns it (checked before too; this is authoritative).
        if row is None:
            self._refuse(batch, NotFound(f"no watchlist {h.watchlist_id!r}"))
        if row.owner != h.sender:
            self._refuse(
                batch,
                PermissionDenied(
                    f"watchlist {h.watchlist_id} is owned by {row.owner}; only its owner may publish updates"
                ),
            )
        # 2. Exactly the next version. The same envelope again for the latest version is a retry.
        current = int(row.version)
        expected = current + 1
        if h.watchlist_version != expected:
            if h.watchlist_version == current and current > 0:
                stored = batch.conn.execute(
                    sa.select(versions.c.envelope_sha256, versions.c.accepted_us, versions.c.audit_index).where(
                        versions.c.watchlist_id == h.watchlist_id, versions.c.version == current
                    )
                ).one()
                if bytes(stored.envelope_sha256) == self.envelope_sha256:
                    return Published(
                        h.watchlist_id,
                        current,
                        int(stored.accepted_us),
                        int(stored.audit_index),
                        True,
                        self.wrapped_for,
                    )
            self._refuse(
                batch,
                FailedPrecondition(
                    f"watchlist {h.watchlist_id} is at version {current}: expected version {expected}, "
                    f"got {h.watchlist_version}"
                    + (
                        " (an old version cannot be published again)"
                        if h.watchlist_version <= current
                        else " (versions may not skip)"
                    )
                ),
            )
        # 3. Message ids stay unique: a version is an envelope like any other.
        if batch.conn.execute(sa.select(versions.c.version).where(versions.c.message_id == h.message_id)).first():
            self._refuse(
                batch, AlreadyExists(f"message id {h.message_id} was already used for another watchlist version")
            )
        updated = batch.conn.execute(
            lists.update()
            .where(lists.c.watchlist_id == h.watchlist_id, lists.c.version == current)
            .values(
                version=expected, updated_us=batch.now_us, **({"snapshot_version": expected} if self.snapshot else {})
            )
        ).rowcount
        if updated != 1:  # another broker replica published this version in the meantime
            self._refuse(
                batch,
                FailedPrecondition(
                    f"watchlist {h.watchlist_id} moved past version {current} meanwhile; fetch it and retry"
                ),
            )
        self._store_certificate(batch)
        index = batch.audit(
            AuditEvent(
                event="watchlist.published",
                actor=self.caller,
                time=batch.now,
                message_id=h.message_id,
                agency=h.sender,
                fields={
                    "watchlist_id": h.watchlist_id,
                    "version": expected,
                    "snapshot": int(self.snapshot),
                    "envelope_sha256": self.envelope_sha256.hex(),
                    "size": len(self.envelope),
                    "tlp": envelope_pb2.Tlp.Name(h.handling.tlp),
                    "wrapped_for": list(self.wrapped_for),
                    **justification_fields(h.legal_basis, h.case_reference, h.operator, h.sender),
                },
            )
        )
        batch.conn.execute(
            versions.insert().values(
                watchlist_id=h.watchlist_id,
                version=expected,
                message_id=h.message_id,
                snapshot=self.snapshot,
                envelope=self.envelope,
                envelope_sha256=self.envelope_sha256,
                sender_cert=self.sender_cert_fingerprint,
                accepted_us=batch.now_us,
                audit_index=index,
            )
        )
        if self.review is not None:
            store_schedule(batch, h.watchlist_id, expected, h.sender, self.caller, self.review)
        watchlist_id = h.watchlist_id
        batch.after_commit.append(lambda: self.on_commit(watchlist_id, expected))
        return Published(watchlist_id, expected, batch.now_us, index, False, self.wrapped_for)

    def _store_certificate(self, batch: Batch) -> None:
        # Shared with the delivery path: insert now (not staged) after checking both the table and
        # rows other operations staged in this batch, so neither side inserts the key twice.
        certs = store_tables.peer_certificates
        staged = {row["fingerprint"] for row in batch.inserts.get(certs, [])}
        if self.sender_cert_fingerprint in staged:
            return
        exists = batch.conn.execute(
            sa.select(certs.c.fingerprint).where(certs.c.fingerprint == self.sender_cert_fingerprint)
        ).first()
        if exists is None:
            batch.conn.execute(
                certs.insert().values(fingerprint=self.sender_cert_fingerprint, der=self.sender_cert_der)
            )

    def _refuse(self, batch: Batch, error: BrokerError) -> NoReturn:
        # Audited once by the caller's refusal scope (broker.audit.refusals), not staged here.
        raise error
