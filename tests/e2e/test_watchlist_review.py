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
from tests.e2e.conftest import Database

OWNER, SUBSCRIBER = "FR-CUSTOMS", "DE-BKA"
LIST_ID = "FR-CUSTOMS/reviewed"
TODAY = dt.datetime.now(dt.UTC).date()
SOON, LATER, RENEWED = TODAY + dt.timedelta(days=10), TODAY + dt.timedelta(days=730), TODAY + dt.timedelta(days=365)


def _entry(entry_id: str, family: str, review: dt.date) -> payload_pb2.WatchlistEntry:
    return payload_pb2.WatchlistEntry(
        entry_id=entry_id, entity_type=payload_pb2.ENTITY_PERSON, family_name=family, given_names="A",
        reason="wanted", action_on_hit=payload_pb2.REPORT_ONLY,
        review_date=payload_pb2.Date(year=review.year, month=review.month, day=review.day))


def _entries(database: Database, event: str) -> list[dict[str, Any]]:
    rows = database.rows("SELECT entry FROM audit_entries WHERE event = :e ORDER BY leaf_index", e=event)
    return [json.loads(bytes(r[0])) for r in rows]


def _notices(owner: AgencyClient, wanted: int) -> list[watchlist_pb2.ReviewNotice]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the notifier runs every 0.2 s; no timing is asserted
        found = review_notices(owner, LIST_ID)
        if len(found) >= wanted:
            return found
        time.sleep(0.1)
    return review_notices(owner, LIST_ID)


def test_owner_is_notified_ahead_and_the_entry_drops_out_after_its_review_date(
    broker_factory: Any, pki: DevPki, database: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """An entry due in 10 days is notified now (notice 4 months); one due in 2 years is not. A replica whose
    clock is past the first date no longer holds it; the owner's renewal, with its reason, brings it back."""
    broker = broker_factory(review_notice_interval_seconds=0.2)
    owner = AgencyClient.from_dir(broker.target, pki.directory, OWNER, keystore=tmp_path / "owner")
    subscriber = AgencyClient.from_dir(broker.target, pki.directory, SUBSCRIBER, keystore=tmp_path / "sub")
    owner.publish_key()
    subscriber.publish_key()
    watchlist = create_watchlist(owner, LIST_ID, subscribers=[SUBSCRIBER])
    soon, later = _entry("e-soon", "Soon", SOON), _entry("e-later", "Later", LATER)
    publish_update(owner, payload_pb2.WatchlistUpdate(watchlist_id=LIST_ID, version=1, snapshot=True,
                                                      upserts=[soon, later]), watchlist=watchlist)

    [notice] = _notices(owner, 1)
    assert [(d.date.year, d.date.month, d.date.day, d.entries) for d in notice.due] == [
        (SOON.year, SOON.month, SOON.day, 1)]
    assert notice.notice_period == "4mo"
    [entry] = _entries(database, "watchlist.review_notice")
    assert entry["index"] == notice.audit_index
    assert (entry["agency"], entry["fields"]["due"], entry["fields"]["entries"]) == (OWNER, [f"{SOON}=1"], 1)
    assert notice.created.ToDatetime(dt.UTC).date() < SOON  # told beforehand
    assert review_notices(subscriber) == []  # only the owner's own notices
    capsys.readouterr()
    assert isb(["watchlist", "notices", "--broker", broker.target, "--certs", str(pki.directory),
                "--agency", OWNER]) == 0
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
    publish_update(owner, payload_pb2.WatchlistUpdate(watchlist_id=LIST_ID, version=2, upserts=[renewed]),
                   watchlist=watchlist,
                   review=review_schedule([renewed, later], renewal_reason="case 2026/17 still open",
                                          renewed_entries=1))
    [renewal] = _entries(database, "watchlist.review_renewed")
    assert renewal["fields"] == {"watchlist_id": LIST_ID, "version": 2, "reason": "case 2026/17 still open",
                                 "renewed_entries": 1, "next_review": str(RENEWED)}
    assert replica.sync(subscriber).version == 2
    assert sorted(replica.entries()) == ["e-later", "e-soon"]
    assert _notices(owner, 1) == [notice]  # the renewed day is a year off: no new notice
    replica.close()
    owner.close()
    subscriber.close()


def test_a_renewal_without_a_reason_is_refused(
    broker_factory: Any, pki: DevPki, database: Database, tmp_path: Path,
) -> None:
    """`renewed_entries` without `renewal_reason` is INVALID_ARGUMENT naming the field; nothing is stored."""
    broker = broker_factory()
    owner = AgencyClient.from_dir(broker.target, pki.directory, OWNER, keystore=tmp_path / "owner")
    owner.publish_key()
    watchlist = create_watchlist(owner, LIST_ID, subscribers=[SUBSCRIBER])
    with AgencyClient.from_dir(broker.target, pki.directory, SUBSCRIBER, keystore=tmp_path / "sub") as subscriber:
        subscriber.publish_key()
    update = payload_pb2.WatchlistUpdate(watchlist_id=LIST_ID, version=1, snapshot=True,
                                         upserts=[_entry("e1", "X", SOON)])
    with pytest.raises(RemoteError) as refused:
        publish_update(owner, update, watchlist=watchlist, review=review_schedule(update.upserts, renewed_entries=1))
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "review.renewal_reason is required" in refused.value.message
    assert database.scalar("SELECT count(*) FROM watchlist_versions") == 0
    [rejected] = _entries(database, "request.rejected")
    assert "review.renewal_reason is required" in rejected["fields"]["reason"]
    owner.close()
