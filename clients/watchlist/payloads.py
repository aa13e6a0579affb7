"""Content types of the typed payloads (proto/broker/api/v1/payload.proto) and small builders."""

from __future__ import annotations

import datetime as dt
from typing import Final

from broker.api.v1 import payload_pb2

__all__ = [
    "ALERT_CONTENT_TYPE",
    "HIT_REPORT_CONTENT_TYPE",
    "WATCHLIST_UPDATE_CONTENT_TYPE",
    "date_of",
]

ALERT_CONTENT_TYPE: Final = "application/vnd.isb.alert+protobuf"
WATCHLIST_UPDATE_CONTENT_TYPE: Final = "application/vnd.isb.watchlist-update+protobuf"
HIT_REPORT_CONTENT_TYPE: Final = "application/vnd.isb.hit-report+protobuf"


def date_of(value: dt.date | str) -> payload_pb2.Date:
    """A `Date` from a date or from `YYYY-MM-DD` / `YYYY-MM` / `YYYY` text."""
    if isinstance(value, dt.date):
        return payload_pb2.Date(year=value.year, month=value.month, day=value.day)
    parts = [int(p) for p in value.split("-")] if value else []
    if len(parts) > 3:
        raise ValueError(f"{value!r} is not YYYY-MM-DD")
    parts += [0] * (3 - len(parts))
    return payload_pb2.Date(year=parts[0], month=parts[1], day=parts[2])
