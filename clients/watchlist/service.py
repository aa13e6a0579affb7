"""Calling `WatchlistService` with an `AgencyClient`: create a watchlist, seal and publish versions.

The stub rides on the client's own mutual-TLS channel (`watchlist_stub`), so a watchlist call
authenticates exactly as the client's other calls do.
"""

from __future__ import annotations

import collections
import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import grpc

from broker.api.v1 import envelope_pb2, payload_pb2, watchlist_pb2, watchlist_pb2_grpc
from broker.protocol.envelope import seal
from clients.agency import AgencyClient
from clients.errors import ClientError
from clients.watchlist.payloads import WATCHLIST_UPDATE_CONTENT_TYPE

__all__ = [
    "call",
    "create_watchlist",
    "get_watchlist",
    "list_watchlists",
    "publish_envelope",
    "publish_update",
    "review_notices",
    "review_schedule",
    "seal_update",
    "watchlist_stub",
]

T = TypeVar("T")


def watchlist_stub(client: AgencyClient) -> watchlist_pb2_grpc.WatchlistServiceStub:
    """A `WatchlistService` stub over `client`'s mutual-TLS channel.

    AgencyClient has no public accessor for its channel; this is the one place in the SDK that
    reaches for it, so a future accessor changes one line.
    """
    return watchlist_pb2_grpc.WatchlistServiceStub(client.channel)


def call(client: AgencyClient, fn: Callable[..., T], request: Any, timeout: float | None = None) -> T:
    """Call `fn` with the client's timeout, turning gRPC errors into the SDK's `ClientError`s."""
    try:
        return fn(request, timeout=timeout or client._timeout)
    except grpc.RpcError as exc:
        raise client.translate_error(exc) from exc


def create_watchlist(
    client: AgencyClient,
    watchlist_id: str,
    *,
    subscribers: Sequence[str],
    title: str = "",
    entry_types: Sequence[payload_pb2.EntityType.ValueType] = (),
    tlp: envelope_pb2.Tlp.ValueType = envelope_pb2.TLP_AMBER,
) -> watchlist_pb2.Watchlist:
    """Create a watchlist owned by `client`'s agency (`<AGENCY>/<name>`), shared with `subscribers`."""
    request = watchlist_pb2.CreateWatchlistRequest(
        watchlist_id=watchlist_id, title=title, entry_types=entry_types, subscribers=subscribers, tlp=tlp
    )
    reply: watchlist_pb2.Watchlist = call(client, watchlist_stub(client).CreateWatchlist, request)
    return reply


def get_watchlist(client: AgencyClient, watchlist_id: str) -> watchlist_pb2.Watchlist:
    """One watchlist's definition and latest version, as the broker reports it."""
    reply: watchlist_pb2.Watchlist = call(
        client, watchlist_stub(client).GetWatchlist, watchlist_pb2.GetWatchlistRequest(watchlist_id=watchlist_id)
    )
    return reply


def list_watchlists(client: AgencyClient) -> list[watchlist_pb2.Watchlist]:
    """The watchlists `client`'s agency owns or may subscribe to."""
    reply = call(client, watchlist_stub(client).ListWatchlists, watchlist_pb2.ListWatchlistsRequest())
    return list(reply.watchlists)


def seal_update(
    client: AgencyClient,
    watchlist: watchlist_pb2.Watchlist,
    update: payload_pb2.WatchlistUpdate,
    *,
    legal_basis: str = "",
    case_reference: str = "",
    operator: str | None = None,
) -> envelope_pb2.Envelope:
    """Seal `update` as a WATCHLIST_UPDATE envelope of `watchlist`, owned by `client`'s agency.

    The content key is wrapped for every agency the subscribers expand to and for the owner, which
    the broker requires (see broker.watchlists.desk): every subscriber can open every version, and
    the owner can rebuild its own list from the broker. Keys come from the directory, each bundle
    verified against its agency's certificate here. `legal_basis`, `case_reference` and `operator`
    (default: the client's) justify the disclosure, as for a send.
    """
    if watchlist.owner != client.agency:
        raise ClientError(f"{client.agency} does not own watchlist {watchlist.watchlist_id} ({watchlist.owner} does)")
    if update.watchlist_id != watchlist.watchlist_id or update.version == 0:
        raise ClientError("the update must name this watchlist and a version >= 1")
    if not update.HasField("published"):
        update.published.FromDatetime(dt.datetime.now(dt.UTC))
    agencies = sorted(set(client.expand(list(watchlist.subscribers))) | {client.agency})
    keys = client.recipient_keys(agencies)
    return seal(
        sender=client.agency,
        identity_key=client.identity.private_key,
        certificate=client.identity.certificate,
        recipients=sorted(watchlist.subscribers),
        recipient_keys=keys,
        kind=envelope_pb2.WATCHLIST_UPDATE,
        body=update.SerializeToString(),
        content_type=WATCHLIST_UPDATE_CONTENT_TYPE,
        handling=envelope_pb2.Handling(tlp=watchlist.tlp),
        watchlist_id=watchlist.watchlist_id,
        watchlist_version=update.version,
        legal_basis=legal_basis,
        case_reference=case_reference,
        operator=client.operator if operator is None else operator,
    )


def review_schedule(
    entries: Iterable[payload_pb2.WatchlistEntry], *, renewal_reason: str = "", renewed_entries: int = 0
) -> watchlist_pb2.ReviewSchedule:
    """How many of `entries` (the whole list after a version) fall due on which day: what the broker
    needs to notify the owner ahead of review dates it cannot read (docs/protocol.md section 22)."""
    days = collections.Counter(
        (e.review_date.year, e.review_date.month, e.review_date.day) for e in entries if e.HasField("review_date")
    )
    return watchlist_pb2.ReviewSchedule(
        due=[
            watchlist_pb2.ReviewDue(date=payload_pb2.Date(year=y, month=m, day=d), entries=n)
            for (y, m, d), n in sorted(days.items())
        ],
        renewal_reason=renewal_reason,
        renewed_entries=renewed_entries,
    )


def publish_update(
    client: AgencyClient,
    update: payload_pb2.WatchlistUpdate,
    *,
    watchlist: watchlist_pb2.Watchlist | None = None,
    review: watchlist_pb2.ReviewSchedule | None = None,
    legal_basis: str = "",
    case_reference: str = "",
    operator: str | None = None,
) -> watchlist_pb2.PublishUpdateResponse:
    """Seal `update` and publish it; the broker refuses any version but the next one.

    A snapshot tells the broker its review schedule by itself; for a delta, pass the schedule of the
    whole list after it (`review_schedule`), with a `renewal_reason` when it renews entries.
    `legal_basis`, `case_reference` and `operator` justify the publication (`seal_update`).
    """
    watchlist = watchlist or get_watchlist(client, update.watchlist_id)
    envelope = seal_update(
        client, watchlist, update, legal_basis=legal_basis, case_reference=case_reference, operator=operator
    )
    if review is None and update.snapshot:
        review = review_schedule(update.upserts)
    return publish_envelope(client, envelope, snapshot=update.snapshot, review=review)


def publish_envelope(
    client: AgencyClient,
    envelope: envelope_pb2.Envelope,
    *,
    snapshot: bool,
    review: watchlist_pb2.ReviewSchedule | None = None,
) -> watchlist_pb2.PublishUpdateResponse:
    """Publish an already sealed WATCHLIST_UPDATE envelope (publishing the same one again is idempotent)."""
    request = watchlist_pb2.PublishUpdateRequest(envelope=envelope, snapshot=snapshot)
    if review is not None:
        request.review.CopyFrom(review)
    reply: watchlist_pb2.PublishUpdateResponse = call(client, watchlist_stub(client).PublishUpdate, request)
    return reply


def review_notices(client: AgencyClient, watchlist_id: str = "") -> list[watchlist_pb2.ReviewNotice]:
    """The broker's notices to `client`'s agency of its entries falling due for review (oldest first)."""
    reply = call(
        client,
        watchlist_stub(client).GetReviewNotices,
        watchlist_pb2.GetReviewNoticesRequest(watchlist_id=watchlist_id),
    )
    return list(reply.notices)
