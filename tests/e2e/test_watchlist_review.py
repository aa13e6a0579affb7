"""Issue 16, watchlist review: the owner is notified ahead of its entries' review dates, an entry past
its review date drops out of a subscriber's replica, and a renewal (with its reason) brings it back."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from broker.api.v1 import payload_pb2, watchlist_pb2
from broker.pki.dev import DevPki
from clients import AgencyClient, RemoteError
from clients.cli import main as isb
from clients.watchlist import (
    WatchlistReplica,
    create_watchlist,
    publish_update,
    review_notices,
    review_schedule,
)
from tests.e2e.broker_support import Database

OWNER, SUBSCRIBER = "FR-CUSTOMS", "DE-BKA"
LIST_ID = "FR-CUSTOMS/reviewed"
TODAY = dt.datetime.now(dt.UTC).date()
SOON, LATER, RENEWED = TODAY + dt.timedelta(days=10), TODAY + dt.timedelta(days=730), TODAY + dt.timedelta(days=365)


def _entry(entry_id: str, family: str, review: dt.date) -> payload_pb2.WatchlistEntry:
    return payload_pb2.WatchlistEntry(
        entry_id=entry_id,
        entity_type=payload_pb2.ENTITY_PERSON,
        family_name=family,
        given_names="A",
        reason="wanted",
        action_on_hit=payload_pb2.REPORT_ONLY,
        review_date=payload_pb2.Date(year=review.year, month=review.month, day=review.day),
    )


def _entries(database: Database, event: str) -> list[dict[str, Any]]:
    rows = database.rows("SELECT entry FROM audit_entries WHERE event = :e ORDER BY leaf_index", e=event)
    return [json.loads(bytes(r[0])) for r in rows]


def _owner_and_subscriber(
    broker: Any, pki: DevPki, tmp_path: Path
) -> tuple[AgencyClient, AgencyClient, watchlist_pb2.Watchlist]:
    """Both agencies with published keys, and the owner's watchlist shared with the subscriber."""
    owner = AgencyClient.from_dir(broker.target, pki.directory, OWNER, keystore=tmp_path / "owner")
    subscriber = AgencyClient.from_dir(broker.target, pki.directory, SUBSCRIBER, keystore=tmp_path / "sub")
    owner.publish_key()
    subscriber.publish_key()
    return owner, subscriber, create_watchlist(owner, LIST_ID, subscribers=[SUBSCRIBER])


def _notices(owner: AgencyClient, wanted: int) -> list[watchlist_pb2.ReviewNotice]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the notifier runs every 0.2 s; no timing is asserted
        found = review_notices(owner, LIST_ID)
        if len(found) >= wanted:
            return found
        time.sleep(0.1)
    return review_notices(owner, LIST_ID)


def test_owner_is_notified_ahead_and_the_entry_drops_out_after_its_review_date(
    broker_factory: Any,
    pki: DevPki,
    database: Database,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An entry due in 10 days is notified now (notice 4 months); one due in 2 years is not. A replica whose
    clock is past the first date no longer holds it; the owner's renewal, with its reason, brings it back."""
    broker = broker_factory(review_notice_interval_seconds=0.2)
    owner, subscriber, watchlist = _owner_and_subscriber(broker, pki, tmp_path)
    soon, later = _entry("e-soon", "Soon", SOON), _entry("e-later", "Later", LATER)
    publish_update(
        owner,
        payload_pb2.WatchlistUpdate(watchlist_id=LIST_ID, version=1, snapshot=True, upserts=[soon, later]),
        watchlist=watchlist,
    )

    [notice] = _notices(owner, 1)
    assert [(d.date.year, d.date.month, d.date.day, d.entries) for d in notice.due] == [
        (SOON.year, SOON.month, SOON.day, 1)
    ]
    assert notice.notice_period == "4mo"
    [entry] = _entries(database, "watchlist.review_notice")
    assert entry["index"] == notice.audit_index
    assert (entry["agency"], entry["fields"]["due"], entry["fields"]["entries"]) == (OWNER, [f"{SOON}=1"], 1)
    assert notice.created.ToDatetime(dt.UTC).date() < SOON  # told beforehand
    assert review_notices(subscriber) == []  # only the owner's own notices
    capsys.readouterr()
    assert (
        isb(["watchlist", "notices", "--broker", broker.target, "--certs", str(pki.directory), "--agency", OWNER]) == 0
    )
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line)["due"] == {str(SOON): 1}

    # The subscriber's replica: today both entries; once past the review date, the first drops out.
    clock = [TODAY]
    replica = WatchlistReplica(tmp_path / "replica.db", watchlist_id=LIST_ID, owner=OWNER, today=lambda: clock[0])
    replica.sync(subscriber)
    assert sorted(replica.entries()) == ["e-later", "e-soon"]
    clock[0] = SOON + dt.timedelta(days=1)
    assert sorted(replica.entries()) == ["e-later"]

    # Renewal: the owner upserts the entry with a later, signed review date and says why.
    renewed = _entry("e-soon", "Soon", RENEWED)
    publish_update(
        owner,
        payload_pb2.WatchlistUpdate(watchlist_id=LIST_ID, version=2, upserts=[renewed]),
        watchlist=watchlist,
        review=review_schedule([renewed, later], renewal_reason="case 2026/17 still open", renewed_entries=1),
    )
    [renewal] = _entries(database, "watchlist.review_renewed")
    assert renewal["fields"] == {
        "watchlist_id": LIST_ID,
        "version": 2,
        "reason": "case 2026/17 still open",
        "renewed_entries": 1,
        "next_review": str(RENEWED),
    }
    assert replica.sync(subscriber).version == 2
    assert sorted(replica.entries()) == ["e-later", "e-soon"]
    assert _notices(owner, 1) == [notice]  # the renewed day is a year off: no new notice
    replica.close()
    owner.close()
    subscriber.close()


def test_another_agencys_review_notices_are_refused(
    broker_factory: Any,
    pki: DevPki,
    database: Database,
    tmp_path: Path,
) -> None:
    """A subscriber (or anyone) naming the owner's watchlist in GetReviewNotices: PERMISSION_DENIED, audited
    once; an unknown id: NOT_FOUND; the owner's notices are untouched."""
    broker = broker_factory(review_notice_interval_seconds=0.2)
    owner, subscriber, watchlist = _owner_and_subscriber(broker, pki, tmp_path)
    update = payload_pb2.WatchlistUpdate(
        watchlist_id=LIST_ID, version=1, snapshot=True, upserts=[_entry("e1", "X", SOON)]
    )
    publish_update(owner, update, watchlist=watchlist)
    assert len(_notices(owner, 1)) == 1
    before = len(_entries(database, "request.rejected"))
    with pytest.raises(RemoteError) as refused:
        review_notices(subscriber, LIST_ID)
    assert refused.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert f"{SUBSCRIBER} does not own watchlist {LIST_ID}" in refused.value.message
    with pytest.raises(RemoteError) as unknown:
        review_notices(subscriber, "FR-CUSTOMS/none")
    assert unknown.value.code is grpc.StatusCode.NOT_FOUND
    rejected = _entries(database, "request.rejected")[before:]
    assert [(e["agency"], e["fields"]["rpc"]) for e in rejected] == [(SUBSCRIBER, "GetReviewNotices")] * 2
    assert f"does not own watchlist {LIST_ID}" in rejected[0]["fields"]["reason"]
    assert review_notices(subscriber) == []
    assert len(review_notices(owner, LIST_ID)) == 1
    owner.close()
    subscriber.close()


@pytest.mark.parametrize(
    ("review", "field"),
    [
        (
            watchlist_pb2.ReviewSchedule(
                due=[watchlist_pb2.ReviewDue(date=payload_pb2.Date(year=9999, month=12, day=31), entries=1)]
            ),
            "review.due[0].date 9999-12-31",
        ),
        (
            watchlist_pb2.ReviewSchedule(
                due=[watchlist_pb2.ReviewDue(date=payload_pb2.Date(year=1, month=1, day=1), entries=1)]
            ),
            "review.due[0].date 0001-01-01",
        ),
        (
            watchlist_pb2.ReviewSchedule(renewal_reason="renewed\n[forged] line", renewed_entries=1),
            "review.renewal_reason holds a control",
        ),
        (watchlist_pb2.ReviewSchedule(renewed_entries=1), "review.renewal_reason is required"),
    ],
)
def test_an_absurd_review_schedule_is_refused_naming_the_field(
    broker_factory: Any,
    pki: DevPki,
    database: Database,
    tmp_path: Path,
    review: watchlist_pb2.ReviewSchedule,
    field: str,
) -> None:
    """A review day thousands of years off, a reason with a line break, a renewal without a reason:
    INVALID_ARGUMENT naming the field, no version and no schedule stored, one bounded `request.rejected` entry."""
    broker = broker_factory()
    owner, subscriber, watchlist = _owner_and_subscriber(broker, pki, tmp_path)
    subscriber.close()
    update = payload_pb2.WatchlistUpdate(
        watchlist_id=LIST_ID, version=1, snapshot=True, upserts=[_entry("e1", "X", SOON)]
    )
    with pytest.raises(RemoteError) as refused:
        publish_update(owner, update, watchlist=watchlist, review=review)
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert field in refused.value.message
    assert database.scalar("SELECT count(*) FROM watchlist_versions") == 0
    assert database.scalar("SELECT count(*) FROM watchlist_reviews") == 0
    [rejected] = _entries(database, "request.rejected")
    assert field in rejected["fields"]["reason"]
    assert len(json.dumps(rejected)) < 2000
    owner.close()
