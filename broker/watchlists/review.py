"""Watchlist review (docs/protocol.md section 22 "Watchlist review"; SIS Reg. 2018/1861 Art. 39,
ETIAS Reg. 2018/1240 Art. 35): entries carry an owner-signed review date and drop out of every
replica after it, unless the owner renews them; the owner is told in advance.

Who enforces what:
- The review date is inside the owner-signed, encrypted entry (`WatchlistEntry.review_date`). Every
  replica drops an entry past it by itself (`clients.watchlist.replica`), so expiry needs no signed
  delta from anyone and cannot be forged or withheld by the broker: the broker holds no agency key
  and cannot read the entries.
- The broker cannot read review dates, so the owner tells it, with each version it publishes, how
  many entries fall due on which day (`ReviewSchedule`, unsigned, authenticated by the call). The
  broker uses that only to notify the owner `review_notice` (default 4 months) ahead. A wrong
  schedule can only cost its owner a reminder; replicas never look at it.
- A renewal is a version that upserts the entries with a later review date (owner-signed like any
  version) and says why (`renewal_reason`): a `watchlist.review_renewed` audit entry.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection, Engine

from broker.api.v1 import payload_pb2, watchlist_pb2
from broker.audit import AuditEvent
from broker.errors import ConfigurationError, InvalidRequest
from broker.policy.retention import Period, PeriodError
from broker.store.writer import Batch, Writer
from broker.watchlists import tables

log = structlog.get_logger(__name__)

MAX_DAYS: Final = 3660  # ten years of distinct review days
MAX_REASON: Final = 200
#: How far from the day of the call a review day may lie, either way: beyond it a date is a slip.
WINDOW: Final = dt.timedelta(days=MAX_DAYS)
R, N, L = tables.watchlist_reviews.c, tables.watchlist_review_notices.c, tables.watchlist_lists.c


@dataclass(frozen=True, slots=True)
class ReviewSchedule:
    """How many entries fall due on which day (YYYY-MM-DD, sorted), and a renewal's reason."""

    due: tuple[tuple[str, int], ...]
    renewal_reason: str = ""
    renewed_entries: int = 0


def _day(date: payload_pb2.Date, where: str, today: dt.date) -> str:
    try:
        day = dt.date(date.year, date.month, date.day)
    except ValueError as exc:
        raise InvalidRequest(f"{where} is not a date ({date.year}-{date.month}-{date.day})") from exc
    if abs(day - today) > WINDOW:
        raise InvalidRequest(f"{where} {day.isoformat()} is more than {MAX_DAYS} days from today ({today.isoformat()})")
    return day.isoformat()


def schedule_of(review: watchlist_pb2.ReviewSchedule, today: dt.date | None = None) -> ReviewSchedule:
    """Check a PublishUpdateRequest's `review` on `today` (UTC; default: now); `InvalidRequest` names the
    field that is wrong."""
    today = today or dt.datetime.now(dt.UTC).date()
    if len(review.due) > MAX_DAYS:
        raise InvalidRequest(f"review.due lists {len(review.due)} days, over the limit of {MAX_DAYS}")
    due: dict[str, int] = {}
    for i, item in enumerate(review.due):
        day = _day(item.date, f"review.due[{i}].date", today)
        if day in due:
            raise InvalidRequest(f"review.due[{i}].date {day} is listed twice")
        if item.entries == 0:
            raise InvalidRequest(f"review.due[{i}].entries must be at least 1")
        due[day] = item.entries
    if len(review.renewal_reason) > MAX_REASON:
        raise InvalidRequest(f"review.renewal_reason is longer than {MAX_REASON} characters")
    if any(unicodedata.category(c)[0] == "C" or unicodedata.category(c) in ("Zl", "Zp") for c in review.renewal_reason):
        raise InvalidRequest(
            "review.renewal_reason holds a control, format or line-break character: write one line of plain text"
        )
    if review.renewed_entries and not review.renewal_reason.strip():
        raise InvalidRequest(
            "review.renewal_reason is required when review.renewed_entries is set: a renewal "
            "records why the entries are still needed"
        )
    return ReviewSchedule(tuple(sorted(due.items())), review.renewal_reason.strip(), review.renewed_entries)


def store_schedule(
    batch: Batch, watchlist_id: str, version: int, owner: str, actor: str, schedule: ReviewSchedule
) -> None:
    """Replace the watchlist's schedule (inside its PublishVersion); audit a renewal.

    A day already notified keeps its notice, so a re-published schedule does not notify twice.
    """
    conn = batch.conn
    notified = {
        row.review_date: row.notice_index
        for row in conn.execute(sa.select(R.review_date, R.notice_index).where(R.watchlist_id == watchlist_id))
    }
    conn.execute(tables.watchlist_reviews.delete().where(R.watchlist_id == watchlist_id))
    for day, entries in schedule.due:
        conn.execute(
            tables.watchlist_reviews.insert().values(
                watchlist_id=watchlist_id, review_date=day, entries=entries, notice_index=notified.get(day)
            )
        )
    if schedule.renewal_reason:
        batch.audit(
            AuditEvent(
                event="watchlist.review_renewed",
                actor=actor,
                time=batch.now,
                agency=owner,
                fields={
                    "watchlist_id": watchlist_id,
                    "version": version,
                    "reason": schedule.renewal_reason,
                    "renewed_entries": schedule.renewed_entries,
                    "next_review": schedule.due[0][0] if schedule.due else "",
                },
            )
        )


def _due_text(due: Iterable[tuple[str, int]]) -> str:
    return ",".join(f"{day}={entries}" for day, entries in due)


@dataclass
class RecordReviewNotice:
    """Notify a watchlist's owner of the days falling due: the notice row and its audit entry, together."""

    watchlist_id: str
    owner: str
    due: Sequence[tuple[str, int]]
    notice_period: str
    actor: str

    def stage(self, batch: Batch) -> int | None:
        days = [day for day, _ in self.due]
        # Only days not yet notified (another replica may have just done it).
        pending = {
            row.review_date
            for row in batch.conn.execute(
                sa.select(R.review_date).where(
                    R.watchlist_id == self.watchlist_id, R.review_date.in_(days), R.notice_index.is_(None)
                )
            )
        }
        due = [(day, n) for day, n in self.due if day in pending]
        if not due:
            return None
        index = batch.audit(
            AuditEvent(
                event="watchlist.review_notice",
                actor=self.actor,
                time=batch.now,
                agency=self.owner,
                fields={
                    "watchlist_id": self.watchlist_id,
                    "due": [f"{d}={n}" for d, n in due],
                    "entries": sum(n for _, n in due),
                    "notice_period": self.notice_period,
                },
            )
        )
        batch.conn.execute(
            tables.watchlist_reviews.update()
            .where(R.watchlist_id == self.watchlist_id, R.review_date.in_([d for d, _ in due]))
            .values(notice_index=index)
        )
        batch.conn.execute(
            tables.watchlist_review_notices.insert().values(
                audit_index=index,
                watchlist_id=self.watchlist_id,
                owner=self.owner,
                due=_due_text(due),
                notice_period=self.notice_period,
                created_us=batch.now_us,
            )
        )
        return index


@dataclass(frozen=True, slots=True)
class Notice:
    """A review notice as stored: what GetReviewNotices serves."""

    watchlist_id: str
    due: tuple[tuple[str, int], ...]
    created_us: int
    audit_index: int
    notice_period: str


def notices(conn: Connection, owner: str, watchlist_id: str = "") -> list[Notice]:
    """The notices sent to `owner` (for one watchlist, or all), oldest first."""
    query = sa.select(tables.watchlist_review_notices).where(N.owner == owner).order_by(N.audit_index)
    if watchlist_id:
        query = query.where(N.watchlist_id == watchlist_id)
    return [
        Notice(
            row.watchlist_id,
            tuple((day, int(n)) for day, n in (item.split("=") for item in row.due.split(",") if item)),
            int(row.created_us),
            int(row.audit_index),
            row.notice_period,
        )
        for row in conn.execute(query)
    ]


def notice_period(text: str) -> Period:
    """The configured `review_notice` as a Period; `ConfigurationError` if it is not one."""
    try:
        return Period.parse(text)
    except PeriodError as exc:
        raise ConfigurationError(f"configuration review_notice: {exc}") from exc


class ReviewNotifier:
    """Every `interval_seconds`, notifies owners of review days within the notice period."""

    def __init__(self, engine: Engine, writer: Writer, *, notice: Period, interval_seconds: float, node: str) -> None:
        self._engine = engine
        self._writer = writer
        self._notice = notice
        self._interval = interval_seconds
        self._actor = f"broker:{node}"

    def _due(self, now: dt.datetime) -> dict[tuple[str, str], list[tuple[str, int]]]:
        # A day is due for notice once it lies within the notice period: day - notice <= now.
        query = (
            sa.select(R.watchlist_id, L.owner, R.review_date, R.entries)
            .join(tables.watchlist_lists, L.watchlist_id == R.watchlist_id)
            .where(R.notice_index.is_(None))
            .order_by(R.watchlist_id, R.review_date)
        )
        due: dict[tuple[str, str], list[tuple[str, int]]] = {}
        with self._engine.connect() as conn:
            for row in conn.execute(query):
                day = dt.datetime.fromisoformat(row.review_date).replace(tzinfo=dt.UTC)
                if self._notice.cutoff(day) <= now:
                    due.setdefault((row.watchlist_id, row.owner), []).append((row.review_date, int(row.entries)))
        return due

    async def notify(self) -> list[int]:
        """Send the notices due now; return their audit indexes."""
        due = await asyncio.to_thread(self._due, dt.datetime.now(dt.UTC))
        sent = []
        for (watchlist_id, owner), days in due.items():
            index = await self._writer.submit(
                RecordReviewNotice(watchlist_id, owner, days, str(self._notice), self._actor)
            )
            if index is not None:
                sent.append(index)
                log.info(
                    "watchlist.review_notice", watchlist_id=watchlist_id, owner=owner, days=len(days), audit_index=index
                )
        return sent

    async def run_forever(self) -> None:
        """Notify every `interval_seconds` until cancelled; a failed round is logged and retried."""
        while True:
            await asyncio.sleep(self._interval)
            if not self._writer.healthy:
                continue
            try:
                await self.notify()
            except Exception:  # keep notifying later; the failure is logged with its cause
                log.exception("watchlist.review_notice_failed")


__all__ = [
    "Notice",
    "RecordReviewNotice",
    "ReviewNotifier",
    "ReviewSchedule",
    "notice_period",
    "notices",
    "schedule_of",
    "store_schedule",
]
