"""The servicers' one conversion to protobuf Timestamps (broker/transport/timestamps.py)."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from broker.transport.timestamps import timestamp

# The store keeps microseconds since the epoch; protobuf Timestamps span years 1 to 9999.
MICROSECONDS = st.integers(min_value=-62_135_596_800_000_000, max_value=253_402_300_799_999_999)


@given(us=MICROSECONDS)
def test_microseconds_and_the_same_instant_as_a_datetime_give_one_timestamp(us: int) -> None:
    """An instant in the store's microseconds and as an aware datetime convert to the same Timestamp."""
    when = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)
    assert timestamp(us) == timestamp(when)
    assert timestamp(us).ToMicroseconds() == us


def test_an_aware_datetime_in_another_zone_is_converted_to_utc() -> None:
    """A datetime with a UTC offset names the same instant as its UTC equivalent."""
    paris = dt.datetime(2026, 5, 1, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert timestamp(paris) == timestamp(dt.datetime(2026, 5, 1, 8, 0, tzinfo=dt.UTC))
    assert timestamp(paris).seconds == 1_777_622_400
