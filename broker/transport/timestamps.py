"""The one conversion from the broker's times to protobuf `Timestamp`s, for every servicer."""

from __future__ import annotations

import datetime as dt

from google.protobuf.timestamp_pb2 import Timestamp

__all__ = ["timestamp"]


def timestamp(when: int | dt.datetime) -> Timestamp:
    """A `Timestamp` of `when`: microseconds since the Unix epoch (the store's unit), or an aware datetime."""
    ts = Timestamp()
    if isinstance(when, dt.datetime):
        ts.FromDatetime(when)
    else:
        ts.FromMicroseconds(when)
    return ts
