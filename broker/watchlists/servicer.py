"""The gRPC `WatchlistService`: translation between protobuf and the watchlist desk, nothing more."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Final

import structlog

from broker.api.v1 import envelope_pb2, payload_pb2, watchlist_pb2, watchlist_pb2_grpc
from broker.errors import InvalidRequest
from broker.identity import Role
from broker.protocol import validation
from broker.transport.auth import Authenticator
from broker.transport.rpc import Context
from broker.transport.timestamps import timestamp
from broker.watchlists.desk import WatchlistDesk
from broker.watchlists.records import WatchlistRecord

__all__ = ["SERVICE_NAME", "WatchlistServicer"]

log = structlog.get_logger(__name__)

SERVICE_NAME: Final = watchlist_pb2.DESCRIPTOR.services_by_name["WatchlistService"].full_name
# A Sync stream re-checks its caller's certificate this often (revocation closes it within a second,
# DESIGN.md section 2) ...
REAUTH_SECONDS: Final = 0.25
# ... and looks at the database at least this often even without a local notification, so that
# versions published through another broker replica sharing the database reach it too.
POLL_SECONDS: Final = 1.0
PAGE: Final = 64


def _watchlist(record: WatchlistRecord) -> watchlist_pb2.Watchlist:
    return watchlist_pb2.Watchlist(
        watchlist_id=record.watchlist_id,
        owner=record.owner,
        title=record.title,
        entry_types=[payload_pb2.EntityType.Value(t) for t in record.entry_types],
        subscribers=record.subscribers,
        tlp=record.tlp,  # type: ignore[arg-type]
        version=record.version,
        snapshot_version=record.snapshot_version,
        created=timestamp(record.created_us),
        updated=timestamp(record.updated_us),
    )


class WatchlistServicer(watchlist_pb2_grpc.WatchlistServiceServicer):
    """WatchlistService over the desk; every call authenticates its caller first."""

    def __init__(self, auth: Authenticator, desk: WatchlistDesk) -> None:
        self._auth = auth
        self._desk = desk

    async def CreateWatchlist(
        self, request: watchlist_pb2.CreateWatchlistRequest, context: Context
    ) -> watchlist_pb2.Watchlist:
        caller = self._auth.require(context, Role.AGENCY)
        validation.check_watchlist_request(request)
        record = await self._desk.create(
            caller,
            request.watchlist_id,
            request.title,
            list(request.entry_types),
            list(request.subscribers),
            request.tlp,
        )
        log.info("watchlist.created", watchlist_id=record.watchlist_id, owner=record.owner)
        return _watchlist(record)

    async def PublishUpdate(
        self, request: watchlist_pb2.PublishUpdateRequest, context: Context
    ) -> watchlist_pb2.PublishUpdateResponse:
        caller = self._auth.require(context, Role.AGENCY)
        published = await self._desk.publish(
            caller, request.envelope, request.snapshot, request.review if request.HasField("review") else None
        )
        log.info(
            "watchlist.published",
            watchlist_id=published.watchlist_id,
            version=published.version,
            duplicate=published.duplicate,
        )
        return watchlist_pb2.PublishUpdateResponse(
            watchlist_id=published.watchlist_id,
            version=published.version,
            audit_index=published.audit_index,
            accepted_at=timestamp(published.accepted_us),
            duplicate=published.duplicate,
            wrapped_for=published.wrapped_for,
        )

    async def GetWatchlist(
        self, request: watchlist_pb2.GetWatchlistRequest, context: Context
    ) -> watchlist_pb2.Watchlist:
        caller = self._auth.require(context, Role.AGENCY)
        validation.check_watchlist_request(request)
        return _watchlist(await self._desk.get(caller, request.watchlist_id))

    async def ListWatchlists(
        self, request: watchlist_pb2.ListWatchlistsRequest, context: Context
    ) -> watchlist_pb2.ListWatchlistsResponse:
        caller = self._auth.require(context, Role.AGENCY)
        records = await self._desk.visible(caller)
        return watchlist_pb2.ListWatchlistsResponse(watchlists=[_watchlist(r) for r in records])

    async def GetReviewNotices(
        self, request: watchlist_pb2.GetReviewNoticesRequest, context: Context
    ) -> watchlist_pb2.ReviewNotices:
        caller = self._auth.require(context, Role.AGENCY)
        validation.check_watchlist_request(request)
        found = await self._desk.review_notices(caller, request.watchlist_id)
        return watchlist_pb2.ReviewNotices(
            notices=[
                watchlist_pb2.ReviewNotice(
                    watchlist_id=n.watchlist_id,
                    due=[_review_due(day, entries) for day, entries in n.due],
                    created=timestamp(n.created_us),
                    audit_index=n.audit_index,
                    notice_period=n.notice_period,
                )
                for n in found
            ]
        )

    async def Sync(
        self, request: watchlist_pb2.SyncRequest, context: Context
    ) -> AsyncIterator[watchlist_pb2.WatchlistVersion]:
        caller = self._auth.require(context, Role.AGENCY)
        if not request.watchlist_id:
            raise InvalidRequest("Sync needs a watchlist_id")
        validation.check_watchlist_request(request)
        record = await self._desk.open_sync(caller, request.watchlist_id, request.have_version)
        watchlist_id = record.watchlist_id
        changed = self._desk.watch(watchlist_id)  # before the first read, so no commit is missed
        try:
            position = request.have_version
            # 1. Behind the latest snapshot: the snapshot replaces everything before it.
            snapshot = await self._desk.latest_snapshot(watchlist_id)
            after = snapshot - 1 if position < snapshot else position
            last_poll = 0.0
            while True:
                changed.clear()
                # 2. Every version after the one sent last, in order, one page at a time.
                page = await self._desk.versions_after(watchlist_id, after, PAGE)
                last_poll = time.monotonic()
                for item in page:
                    yield watchlist_pb2.WatchlistVersion(
                        watchlist_id=watchlist_id,
                        version=item.version,
                        snapshot=item.snapshot,
                        envelope=envelope_pb2.Envelope.FromString(item.envelope),
                        sender_certificate=item.sender_certificate,
                        accepted_at=timestamp(item.accepted_us),
                    )
                if page:
                    self._desk.served(caller, watchlist_id, page[0].version, page[-1].version)
                    after = page[-1].version
                    if len(page) == PAGE:
                        continue
                if not request.follow:
                    return
                # 3. Live: wait for a commit here, or poll for one made through another replica.
                while not changed.is_set() and time.monotonic() - last_poll < POLL_SECONDS:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(REAUTH_SECONDS):
                            await changed.wait()
                    self._auth.authenticate(context)  # revocation closes an open stream
                    self._desk.still_allowed(caller, record)
        finally:
            self._desk.unwatch(watchlist_id, changed)


def _review_due(day: str, entries: int) -> watchlist_pb2.ReviewDue:
    date = dt.date.fromisoformat(day)
    return watchlist_pb2.ReviewDue(
        date=payload_pb2.Date(year=date.year, month=date.month, day=date.day), entries=entries
    )
