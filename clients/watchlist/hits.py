"""Hit reports: telling a watchlist's owner that one of its entries was encountered.

A report names the entry by id only (the owner holds the entry), where and when, and what was
done; it is a HIT_REPORT envelope to the owner, sent and delivered like any message, so the audit
log records it ("envelope.accepted", kind HIT_REPORT, digests only) without personal data.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.protobuf.message import DecodeError

from broker.api.v1 import broker_pb2, envelope_pb2, payload_pb2
from clients.agency import AgencyClient, ReceivedMessage
from clients.errors import ClientError, VerificationError
from clients.watchlist.payloads import HIT_REPORT_CONTENT_TYPE
from clients.watchlist.screening import Hit

__all__ = ["hit_report_of", "read_hit_report", "report_hit"]


def hit_report_of(
    hit: Hit,
    *,
    location: str,
    action_taken: payload_pb2.HitAction.ValueType,
    encountered: dt.datetime | None = None,
    reporter_reference: str = "",
) -> payload_pb2.HitReport:
    """The HitReport payload of `hit`: list, entry id, version, score (0..100) and matched field names only.

    Nothing about the passenger travels: the owner already holds the entry, and the explanation
    (which could quote the passenger's spelling) stays with the screening agency.
    """
    if not hit.watchlist_id or not hit.owner:
        raise ClientError("the hit does not name its watchlist and owner; screen with a WatchlistReplica")
    report = payload_pb2.HitReport(
        watchlist_id=hit.watchlist_id,
        watchlist_version=hit.watchlist_version,
        entry_id=hit.entry_id,
        location=location,
        action_taken=action_taken,
        score=round(hit.score * 100),
        matched_fields=hit.matched_fields,
        reporter_reference=reporter_reference,
    )
    report.encountered.FromDatetime(encountered or dt.datetime.now(dt.UTC))
    return report


def report_hit(
    client: AgencyClient,
    hit: Hit,
    *,
    location: str,
    action_taken: payload_pb2.HitAction.ValueType = payload_pb2.HIT_NO_ACTION,
    encountered: dt.datetime | None = None,
    reporter_reference: str = "",
    tlp: str = "AMBER",
    **options: Any,
) -> broker_pb2.SendResponse:
    """Send a HIT_REPORT about `hit` to the watchlist's owner with the normal `AgencyClient.send`
    (`legal_basis=`, `case_reference=`, `operator=` among the `options` justify the report)."""
    report = hit_report_of(
        hit,
        location=location,
        action_taken=action_taken,
        encountered=encountered,
        reporter_reference=reporter_reference,
    )
    return client.send(
        [hit.owner],
        report.SerializeToString(),
        content_type=HIT_REPORT_CONTENT_TYPE,
        kind=envelope_pb2.HIT_REPORT,
        tlp=tlp,
        watchlist_id=hit.watchlist_id,
        watchlist_version=hit.watchlist_version,
        **options,
    )


def read_hit_report(message: ReceivedMessage) -> payload_pb2.HitReport:
    """The HitReport in a received (already verified) message; raise if it is not one."""
    if message.header.kind != envelope_pb2.HIT_REPORT or message.content_type != HIT_REPORT_CONTENT_TYPE:
        raise VerificationError(f"message {message.message_id} is not a hit report")
    try:
        report = payload_pb2.HitReport.FromString(message.body)
    except DecodeError as exc:
        raise VerificationError(f"hit report {message.message_id} does not parse") from exc
    if report.watchlist_id != message.header.watchlist_id:
        raise VerificationError(f"hit report {message.message_id} names another watchlist than its header")
    return report
