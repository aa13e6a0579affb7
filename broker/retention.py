"""The retention purge (docs/protocol.md section 22 "Retention"): what the policy's periods say must go.

Envelopes, attachments, receipts and the key bundles of revoked certificates are purged once their
period (`broker.policy.retention`) has run out. A purge removes the payload and keeps a digest-only
tombstone: a purged message's row keeps its id, sender, digest and audit index with an empty
`envelope`; an attachment row keeps its digest and size without its blob; a receipt's bytes are
cleared. The audit log never held any of these bytes, only their digests, so every inclusion and
consistency proof stays valid after a purge.

Each purge run is one writer operation and one `retention.purged` audit entry: how many items of each
kind, under which rule, and the ids of the purged messages. A run takes at most `limit` items of each
kind (the entry stays bounded); the job runs again at once while a run was full. `plan` counts the
same selection without changing anything (`isb admin retention --dry-run`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa
import structlog
from cryptography import x509
from sqlalchemy.engine import Connection, Engine

from broker.api.v1 import broker_pb2, envelope_pb2
from broker.attachments import tables as attachment_tables
from broker.attachments.blobs import BlobStore
from broker.attachments.operations import release_blob
from broker.audit import AuditEvent
from broker.pki.revocation import RevocationList
from broker.policy import RunningPolicy
from broker.policy.codes import KINDS, TLP_CODES
from broker.policy.retention import Retention
from broker.store import tables
from broker.store.writer import Batch, Writer
from broker.watchlists import tables as watchlist_tables

log = structlog.get_logger(__name__)

PURGED: Final = broker_pb2.PURGED
EVENT: Final = "retention.purged"
#: The purged message ids one `RetentionJob.run` returns (an admin's RetentionReport.message_ids) at most.
MAX_REPORTED_IDS: Final = 1000
WHAT: Final = ("envelopes", "watchlist_versions", "attachments", "receipts", "revoked_key_bundles")
WATCHLIST_UPDATE: Final = envelope_pb2.WATCHLIST_UPDATE
M, D, A, K = tables.messages.c, tables.deliveries.c, attachment_tables.attachments.c, tables.key_bundles.c
V, W = watchlist_tables.watchlist_versions.c, watchlist_tables.watchlist_lists.c


@dataclass(frozen=True, slots=True)
class RuleCount:
    """How many items of one kind of data one rule purges (or would purge)."""

    what: str
    rule: str
    period: str
    count: int


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """The outcome of a run (or of a dry run, with `audit_index` None)."""

    counts: tuple[RuleCount, ...]
    message_ids: tuple[str, ...] = ()
    undelivered_dropped: int = 0
    audit_index: int | None = None
    full: bool = False  # some kind of data reached the run's limit: more may be due


def _combinations() -> list[tuple[int, str, int, str | None]]:
    # (Kind value, kind name, Tlp value, TLP code or None for unspecified): every stored pair.
    return [
        (k + 1, kind, t, TLP_CODES[t - 1] if t else None)
        for k, kind in enumerate(KINDS)
        for t in range(len(TLP_CODES) + 1)
    ]


@dataclass(frozen=True, slots=True)
class _Group:
    """The messages one rule covers for one kind of data: their (kind, tlp) pairs and cutoff."""

    rule: str
    period: str
    cutoff_us: int
    pairs: tuple[tuple[int, int], ...]

    def matches(self, kind: sa.ColumnElement[Any], tlp: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
        """The condition on a table's kind and TLP columns."""
        return sa.or_(*(sa.and_(kind == k, tlp == t) for k, t in self.pairs))

    @property
    def where(self) -> sa.ColumnElement[bool]:
        """The condition on the messages table."""
        return self.matches(M.kind, M.tlp)


def _groups(retention: Retention, what: str, now: datetime) -> list[_Group]:
    found: dict[tuple[str, str], list[tuple[int, int]]] = {}
    cutoffs: dict[tuple[str, str], int] = {}
    for kind_value, kind, tlp_value, tlp in _combinations():
        period, rule = retention.period_for(what, kind, tlp)
        key = (rule, str(period))
        found.setdefault(key, []).append((kind_value, tlp_value))
        cutoffs[key] = _us(period.cutoff(now))
    return [_Group(rule, period, cutoffs[(rule, period)], tuple(pairs)) for (rule, period), pairs in found.items()]


def _us(when: datetime) -> int:
    return int(when.timestamp() * 1_000_000) if when.year > 1 else -(2**62)


def _envelopes(group: _Group) -> sa.Select[Any]:
    return (
        sa.select(M.message_id)
        .where(group.where, M.accepted_us <= group.cutoff_us, M.purged_us.is_(None))
        .order_by(M.seq)
    )


def _attachments(group: _Group) -> sa.Select[Any]:
    return (
        sa.select(A.uploader, A.message_id, A.idx, A.blob)
        .join(tables.messages, (M.message_id == A.message_id) & (M.sender == A.uploader))
        .where(group.where, M.accepted_us <= group.cutoff_us, A.state == attachment_tables.ATTACHED)
        .order_by(M.seq, A.idx)
    )


def _receipts(group: _Group) -> sa.Select[Any]:
    return (
        sa.select(D.message_id, D.recipient)
        .join(tables.messages, M.message_id == D.message_id)
        .where(group.where, D.receipt.is_not(None), D.updated_us <= group.cutoff_us)
        .order_by(D.seq, D.recipient)
    )


def _watchlist_versions(group: _Group) -> sa.Select[Any]:
    # Versions before the latest snapshot are never served again (Sync starts at that snapshot).
    return (
        sa.select(V.message_id, V.watchlist_id, V.version)
        .join(watchlist_tables.watchlist_lists, W.watchlist_id == V.watchlist_id)
        .where(
            group.matches(sa.literal(WATCHLIST_UPDATE), W.tlp),
            V.version < W.snapshot_version,
            V.accepted_us <= group.cutoff_us,
            sa.func.length(V.envelope) > 0,
        )
        .order_by(V.watchlist_id, V.version)
    )


# What a run purges, in order: (the name in reports, the policy key whose period applies, the selection).
_SELECT: Final[tuple[tuple[str, str, Callable[[_Group], sa.Select[Any]]], ...]] = (
    ("envelopes", "envelopes", _envelopes),
    ("watchlist_versions", "envelopes", _watchlist_versions),
    ("attachments", "attachments", _attachments),
    ("receipts", "receipts", _receipts),
)


def _revoked_bundles(
    conn: Connection, retention: Retention, now: datetime, revoked: Mapping[int, datetime]
) -> tuple[str, str, list[tuple[str, str]]]:
    """The key bundles whose certificate was revoked at least the period ago: (rule, period, keys)."""
    period, rule = retention.period_for("revoked_key_bundles")
    cutoff = period.cutoff(now)
    due = []
    for row in conn.execute(sa.select(K.agency, K.key_id, K.certificate).order_by(K.agency, K.key_id)):
        try:
            serial = x509.load_der_x509_certificate(bytes(row.certificate)).serial_number
        except ValueError:
            continue  # stored only after the broker verified it; an unreadable one is never purged blindly
        when = revoked.get(serial)
        if when is not None and when <= cutoff:
            due.append((row.agency, row.key_id))
    return rule, str(period), due


def plan(conn: Connection, retention: Retention, now: datetime, revoked: Mapping[int, datetime]) -> PurgeReport:
    """What a purge run at `now` would remove, counted per kind of data and rule; changes nothing."""
    counts = []
    for what, key, select in _SELECT:
        for group in _groups(retention, key, now):
            n = conn.execute(sa.select(sa.func.count()).select_from(select(group).order_by(None).subquery())).scalar()
            if n:
                counts.append(RuleCount(what, group.rule, group.period, int(n)))
    rule, period, bundles = _revoked_bundles(conn, retention, now, revoked)
    if bundles:
        counts.append(RuleCount("revoked_key_bundles", rule, period, len(bundles)))
    return PurgeReport(tuple(counts))


@dataclass
class Purge:
    """One purge run through the writer: remove what is due (at most `limit` of each kind), one audit entry."""

    retention: Retention
    revoked: Mapping[int, datetime]
    blobs: BlobStore | None
    actor: str
    trigger: str  # "schedule" or "admin"
    policy_digest: str
    limit: int = 500
    on_commit: Callable[[list[tuple[str, str]]], None] = field(default=lambda _dropped: None)

    def stage(self, batch: Batch) -> PurgeReport:
        now = batch.now
        counts: list[RuleCount] = []
        message_ids: list[str] = []
        dropped: list[tuple[str, str]] = []
        full = False
        for what, key, select in _SELECT:
            room = self.limit
            for group in _groups(self.retention, key, now):
                if room <= 0:
                    full = True
                    break
                rows = batch.conn.execute(select(group).limit(room)).all()
                if not rows:
                    continue
                room -= len(rows)
                counts.append(RuleCount(what, group.rule, group.period, len(rows)))
                if what == "envelopes":
                    ids = [r.message_id for r in rows]
                    message_ids += ids
                    dropped += self._purge_envelopes(batch, ids, group.rule)
                elif what == "watchlist_versions":
                    ids = [r.message_id for r in rows]
                    message_ids += ids
                    batch.conn.execute(
                        watchlist_tables.watchlist_versions.update().where(V.message_id.in_(ids)).values(envelope=b"")
                    )
                elif what == "attachments":
                    self._purge_attachments(batch, rows, group.rule)
                else:
                    self._purge_receipts(batch, rows)
            full = full or room <= 0
        rule, period, bundles = _revoked_bundles(batch.conn, self.retention, now, self.revoked)
        if bundles:
            full = full or len(bundles) > self.limit
            bundles = bundles[: self.limit]
            for agency, key_id in bundles:
                batch.conn.execute(tables.key_bundles.delete().where(K.agency == agency, K.key_id == key_id))
            counts.append(RuleCount("revoked_key_bundles", rule, period, len(bundles)))
        if not counts:
            return PurgeReport(())
        index = batch.audit(
            AuditEvent(event=EVENT, actor=self.actor, time=now, fields=_fields(counts, message_ids, len(dropped), self))
        )
        for message_id, recipient in dropped:
            batch.settled.setdefault(recipient, []).append(message_id)  # other replicas drop them too
        batch.after_commit.append(lambda: self.on_commit(dropped))
        return PurgeReport(tuple(counts), tuple(sorted(message_ids)), len(dropped), index, full)

    @staticmethod
    def _purge_envelopes(batch: Batch, ids: list[str], rule: str) -> list[tuple[str, str]]:
        conn = batch.conn
        dropped = [
            (r.message_id, r.recipient)
            for r in conn.execute(
                sa.select(D.message_id, D.recipient).where(D.message_id.in_(ids), D.state <= broker_pb2.IN_FLIGHT)
            )
        ]
        conn.execute(
            tables.deliveries.update()
            .where(D.message_id.in_(ids), D.state <= broker_pb2.IN_FLIGHT)
            .values(state=PURGED, updated_us=batch.now_us)
        )
        conn.execute(
            tables.messages.update()
            .where(M.message_id.in_(ids))
            .values(envelope=b"", purged_us=batch.now_us, purge_rule=rule)
        )
        return dropped

    def _purge_attachments(self, batch: Batch, rows: Iterable[Any], rule: str) -> None:
        for row in rows:
            batch.conn.execute(
                attachment_tables.attachments.update()
                .where(A.uploader == row.uploader, A.message_id == row.message_id, A.idx == row.idx)
                .values(state=attachment_tables.PURGED, blob="", purge_rule=rule)
            )
            if self.blobs is not None:
                release_blob(batch, self.blobs, row.blob)

    @staticmethod
    def _purge_receipts(batch: Batch, rows: Iterable[Any]) -> None:
        for row in rows:
            batch.conn.execute(
                tables.deliveries.update()
                .where(D.message_id == row.message_id, D.recipient == row.recipient)
                .values(receipt=None, receipt_signature=None)
            )


def _fields(
    counts: list[RuleCount], message_ids: list[str], dropped: int, run: Purge
) -> dict[str, str | int | list[str]]:
    fields: dict[str, str | int | list[str]] = {
        what if what != "revoked_key_bundles" else "key_bundles": sum(c.count for c in counts if c.what == what)
        for what in WHAT
    }
    fields.update(
        {
            "rules": [f"{c.what}:{c.rule}:{c.period}:{c.count}" for c in counts],
            "message_ids": sorted(message_ids),
            "undelivered_dropped": dropped,
            "trigger": run.trigger,
            "policy_sha256": run.policy_digest,
        }
    )
    return fields


class RetentionJob:
    """Runs purges for the running policy: every `retention_interval_seconds`, and on an admin's request."""

    def __init__(
        self,
        engine: Engine,
        writer: Writer,
        policy: RunningPolicy,
        revocations: RevocationList,
        blobs: Callable[[], BlobStore | None],
        dropped: Callable[[list[tuple[str, str]]], None],
        *,
        node: str,
        interval_seconds: float,
        limit: int = 500,
    ) -> None:
        self._engine = engine
        self._writer = writer
        self._policy = policy
        self._revocations = revocations
        self._blobs = blobs
        self._dropped = dropped
        self._node = node
        self._interval = interval_seconds
        self._limit = limit

    async def dry_run(self) -> PurgeReport:
        """What a run now would purge, per kind of data and rule."""
        retention, revoked = self._policy.current.retention, self._revocations.revocation_dates
        now = datetime.now(UTC)

        def count() -> PurgeReport:
            with self._engine.connect() as conn:
                return plan(conn, retention, now, revoked)

        return await asyncio.to_thread(count)

    async def run(self, actor: str, trigger: str) -> list[PurgeReport]:
        """Purge what is due, in bounded runs until nothing more is; one audit entry per run that purged."""
        reports: list[PurgeReport] = []
        while True:
            policy = self._policy.current
            report: PurgeReport = await self._writer.submit(
                Purge(
                    policy.retention,
                    self._revocations.revocation_dates,
                    self._blobs(),
                    actor,
                    trigger,
                    policy.digest,
                    self._limit,
                    self._dropped,
                )
            )
            if report.counts:
                log.info(
                    "retention.purged",
                    audit_index=report.audit_index,
                    messages=len(report.message_ids),
                    undelivered_dropped=report.undelivered_dropped,
                    trigger=trigger,
                )
                # A first purge of years of traffic runs thousands of times: keep the ids bounded (every id is
                # in its run's audit entry), so the call's memory and an admin's reply stay small.
                room = max(MAX_REPORTED_IDS - sum(len(r.message_ids) for r in reports), 0)
                reports.append(replace(report, message_ids=report.message_ids[:room]))
            if not report.full:
                return reports

    async def run_forever(self) -> None:
        """Purge every `interval_seconds` until cancelled; a failed run is logged and retried next time."""
        while True:
            await asyncio.sleep(self._interval)
            if not self._writer.healthy:
                continue  # the writer's probe reports the outage
            try:
                await self.run(f"broker:{self._node}", "schedule")
            except Exception:  # keep purging later; the failure is logged with its cause
                log.exception("retention.purge_failed")


__all__ = ["EVENT", "Purge", "PurgeReport", "RetentionJob", "RuleCount", "plan"]
