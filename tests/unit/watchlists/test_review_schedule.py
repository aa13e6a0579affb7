"""The owner's review schedule (PublishUpdateRequest.review): checked field by field, never a crash."""

from __future__ import annotations

import datetime as dt
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.api.v1 import payload_pb2, watchlist_pb2
from broker.errors import InvalidRequest
from broker.watchlists.review import MAX_DAYS, MAX_REASON, ReviewSchedule, schedule_of

TODAY = dt.date(2026, 12, 1)


def _due(year: int, month: int, day: int, entries: int = 1) -> watchlist_pb2.ReviewDue:
    return watchlist_pb2.ReviewDue(date=payload_pb2.Date(year=year, month=month, day=day), entries=entries)


def test_schedule_is_sorted_by_day_and_keeps_the_renewal() -> None:
    """Days come out as ISO dates in order, with their counts and the renewal's reason."""
    schedule = schedule_of(
        watchlist_pb2.ReviewSchedule(
            due=[_due(2027, 3, 1, 2), _due(2026, 12, 31)], renewal_reason=" still needed ", renewed_entries=1
        ),
        TODAY,
    )
    assert schedule == ReviewSchedule((("2026-12-31", 1), ("2027-03-01", 2)), "still needed", 1)


@pytest.mark.parametrize(
    ("review", "expected"),
    [
        (watchlist_pb2.ReviewSchedule(due=[_due(2026, 2, 30)]), "review.due[0].date is not a date"),
        (watchlist_pb2.ReviewSchedule(due=[_due(2026, 1, 1), _due(2026, 1, 1)]), "review.due[1].date 2026-01-01 is"),
        (watchlist_pb2.ReviewSchedule(due=[_due(2026, 1, 1, 0)]), "review.due[0].entries must be at least 1"),
        (watchlist_pb2.ReviewSchedule(renewed_entries=3), "review.renewal_reason is required"),
        (watchlist_pb2.ReviewSchedule(renewal_reason="x" * (MAX_REASON + 1)), "review.renewal_reason is longer"),
        (
            watchlist_pb2.ReviewSchedule(due=[_due(9999, 12, 31)]),
            "review.due[0].date 9999-12-31 is more than 3660 days",
        ),
        (watchlist_pb2.ReviewSchedule(due=[_due(2026, 12, 2), _due(1, 1, 1)]), "review.due[1].date 0001-01-01 is more"),
        (watchlist_pb2.ReviewSchedule(renewal_reason="ok\u202eevil", renewed_entries=1), "review.renewal_reason holds"),
        (watchlist_pb2.ReviewSchedule(renewal_reason="line\nbreak"), "review.renewal_reason holds a control"),
    ],
)
def test_a_bad_schedule_is_refused_naming_the_field(review: watchlist_pb2.ReviewSchedule, expected: str) -> None:
    """Each mistake is INVALID_ARGUMENT whose message names the field."""
    with pytest.raises(InvalidRequest, match=expected.replace("[", r"\[").replace("]", r"\]")):
        schedule_of(review, TODAY)


def test_a_review_day_may_lie_up_to_the_window_either_side_of_today() -> None:
    """The window's two ends are accepted (an overdue entry still in the list, a ten-year review)."""
    ends = [TODAY - dt.timedelta(days=MAX_DAYS), TODAY + dt.timedelta(days=MAX_DAYS)]
    schedule = schedule_of(watchlist_pb2.ReviewSchedule(due=[_due(d.year, d.month, d.day) for d in ends]), TODAY)
    assert [day for day, _ in schedule.due] == [d.isoformat() for d in ends]


_dates = st.one_of(
    st.builds(_due, st.integers(0, 10000), st.integers(0, 13), st.integers(0, 32), st.integers(0, 3)),
    st.builds(
        lambda d, n: _due(d.year, d.month, d.day, n),
        st.dates(dt.date(2005, 1, 1), dt.date(2045, 1, 1)),
        st.integers(0, 3),
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_dates, max_size=6),
    st.text(max_size=210),
    st.integers(0, 2**32 - 1),
    st.dates(dt.date(2020, 1, 1), dt.date(2030, 1, 1)),
)
def test_any_schedule_is_a_schedule_or_an_invalid_request(
    due: list[watchlist_pb2.ReviewDue], reason: str, renewed: int, today: dt.date
) -> None:
    """Whatever the owner sends, the answer is a checked schedule or InvalidRequest, nothing else."""
    review = watchlist_pb2.ReviewSchedule(due=due, renewal_reason=reason, renewed_entries=renewed)
    try:
        schedule = schedule_of(review, today)
    except InvalidRequest as exc:
        refusal = str(exc)
    else:
        refusal = ""
    if refusal:
        assert refusal.startswith("review.")
        return
    assert len(schedule.due) == len(due)
    assert [day for day, _ in schedule.due] == sorted(day for day, _ in schedule.due)
    assert all(n >= 1 for _, n in schedule.due)
    assert all(abs(dt.date.fromisoformat(day) - today).days <= MAX_DAYS for day, _ in schedule.due)
    assert len(schedule.renewal_reason) <= MAX_REASON
    assert not any(
        unicodedata.category(c)[0] == "C" or unicodedata.category(c) in ("Zl", "Zp") for c in schedule.renewal_reason
    )
