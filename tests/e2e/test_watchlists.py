"""Issue 6: watchlists published by their owner, replicated by subscribers, screened, hits reported."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.api.v1 import envelope_pb2, payload_pb2, watchlist_pb2
from broker.errors import VerificationError
from broker.protocol import _pae
from broker.protocol.envelope import seal
from broker.protocol.keys import sign_identity
from clients import AgencyClient, RemoteError
from clients.watchlist import (
    ScreeningRecord,
    WatchlistReplica,
    create_watchlist,
    get_watchlist,
    publish_envelope,
    publish_update,
    read_hit_report,
    report_hit,
    seal_update,
    watchlist_stub,
)
from clients.watchlist.payloads import WATCHLIST_UPDATE_CONTENT_TYPE
from tests.e2e.broker_support import Database

OWNER, SUBSCRIBER, OTHER = "FR-CUSTOMS", "DE-BKA", "NL-FIOD"
LIST_ID = "FR-CUSTOMS/wanted"
YESTERDAY = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)


def _person(
    entry_id: str, family: str, given: str, dob: str = "", doc: str = "", review: dt.date | None = None
) -> payload_pb2.WatchlistEntry:
    entry = payload_pb2.WatchlistEntry(
        entry_id=entry_id,
        entity_type=payload_pb2.ENTITY_PERSON,
        family_name=family,
        given_names=given,
        document_number=doc,
        reason="wanted",
        issuing_country="POL" if doc else "",
        action_on_hit=payload_pb2.DISCREET_CHECK_AND_REPORT,
    )
    if dob:
        y, m, d = (int(x) for x in dob.split("-"))
        entry.date_of_birth.CopyFrom(payload_pb2.Date(year=y, month=m, day=d))
    if review is not None:
        entry.review_date.CopyFrom(payload_pb2.Date(year=review.year, month=review.month, day=review.day))
    return entry


def _update(
    version: int,
    *,
    snapshot: bool = False,
    upserts: tuple[payload_pb2.WatchlistEntry, ...] = (),
    removed: tuple[str, ...] = (),
) -> payload_pb2.WatchlistUpdate:
    return payload_pb2.WatchlistUpdate(
        watchlist_id=LIST_ID, version=version, snapshot=snapshot, upserts=upserts, removed_entry_ids=removed
    )


UPDATES = [
    _update(
        1,
        snapshot=True,
        upserts=(
            _person("p1", "Müller", "Hans", "1970-03-04"),
            _person("p2", "Dupont", "Jean", "1980-01-02"),
            _person("p3", "García Márquez", "José", "1965-07-08"),
        ),
    ),
    _update(2, upserts=(_person("p4", "Nowak", "Łukasz", "1990-05-06", doc="X1234567"),), removed=("p2",)),
    _update(
        3,
        upserts=(
            _person("p5", "Expired", "Eve", "1991-01-01", review=YESTERDAY),
            _person("p1", "Müller", "Hans Peter", "1970-03-04"),
        ),
    ),
    _update(4, upserts=(_person("p6", "Østergaard", "Søren", "1975-09-10"),), removed=("p3",)),
    _update(5, upserts=(_person("p7", "Schröder", "Grete", "1988-12-24"),)),
]


def owner_view() -> dict[str, payload_pb2.WatchlistEntry]:
    """The entries the owner's own updates leave, without expired ones."""
    view: dict[str, payload_pb2.WatchlistEntry] = {}
    for u in UPDATES:
        if u.snapshot:
            view.clear()
        view.update({e.entry_id: e for e in u.upserts})
        for r in u.removed_entry_ids:
            view.pop(r, None)
    return {k: v for k, v in view.items() if not v.HasField("review_date")}


def _last_audit(db: Database) -> dict[str, Any]:
    entry = db.scalar(
        "SELECT entry FROM audit_entries WHERE event != 'watchlist.delivered' ORDER BY leaf_index DESC LIMIT 1"
    )
    return dict(json.loads(bytes(entry)))


def _versions(db: Database) -> int:
    return int(db.scalar("SELECT count(*) FROM watchlist_versions"))


def _refused(db: Database, fn: Any, code: grpc.StatusCode, text: str) -> None:
    before = _versions(db)
    with pytest.raises(RemoteError) as refused:
        fn()
    assert refused.value.code is code, refused.value.message
    assert text in refused.value.message
    assert _versions(db) == before
    entry = _last_audit(db)
    assert entry["event"] == "request.rejected"
    assert text in entry["fields"]["reason"]


@pytest.fixture
def watchlist(agencies: dict[str, AgencyClient]) -> watchlist_pb2.Watchlist:
    """FR-CUSTOMS/wanted, shared with DE-BKA only."""
    return create_watchlist(
        agencies[OWNER],
        LIST_ID,
        subscribers=[SUBSCRIBER],
        title="Wanted persons",
        entry_types=[payload_pb2.ENTITY_PERSON],
    )


def _replica(tmp_path: Path, name: str) -> WatchlistReplica:
    return WatchlistReplica(tmp_path / f"{name}.db", watchlist_id=LIST_ID, owner=OWNER)


def test_late_and_offline_subscribers_converge_on_the_owners_view(
    agencies: dict[str, AgencyClient],
    watchlist: watchlist_pb2.Watchlist,
    database: Database,
    tmp_path: Path,
) -> None:
    """Subscribers joining at v3 or offline since v2 end with the owner's entries; removals, expiries gone."""
    owner, subscriber = agencies[OWNER], agencies[SUBSCRIBER]
    offline = _replica(tmp_path, "offline")
    for update in UPDATES[:2]:
        publish_update(owner, update, watchlist=watchlist)
    assert offline.sync(subscriber).version == 2
    offline.close()
    for update in UPDATES[2:]:
        publish_update(owner, update, watchlist=watchlist)
    late = _replica(tmp_path, "late")  # joins after v3: served the v1 snapshot, then v2..v5
    assert late.sync(subscriber).version == 5
    offline = _replica(tmp_path, "offline")  # reopened from its file: resumes at v2
    assert offline.version == 2
    result = offline.sync(subscriber)
    assert (result.applied, result.version) == (3, 5)
    own = _replica(tmp_path, "owner")
    own.sync(owner)
    expected = owner_view()
    for replica in (late, offline, own):
        assert replica.entries() == expected
        assert "p2" not in replica.entries()
        assert "p3" not in replica.entries()
        assert "p5" not in replica.entries()
    assert get_watchlist(owner, LIST_ID).version == 5
    published = database.rows("SELECT entry FROM audit_entries WHERE event = 'watchlist.published'")
    fields = [json.loads(bytes(r[0]))["fields"] for r in published]
    assert [f["version"] for f in fields] == [1, 2, 3, 4, 5]
    assert all(set(f) >= {"envelope_sha256", "watchlist_id"} and "entries" not in f for f in fields)


def test_a_later_snapshot_replaces_everything_for_a_subscriber_behind_it(
    agencies: dict[str, AgencyClient],
    watchlist: watchlist_pb2.Watchlist,
    tmp_path: Path,
) -> None:
    """A subscriber behind the latest snapshot gets that snapshot, not the deltas before it."""
    owner, subscriber = agencies[OWNER], agencies[SUBSCRIBER]
    publish_update(owner, UPDATES[0], watchlist=watchlist)
    publish_update(owner, UPDATES[1], watchlist=watchlist)
    publish_update(owner, _update(3, snapshot=True, upserts=(_person("s1", "Only", "One"),)), watchlist=watchlist)
    replica = _replica(tmp_path, "sub")
    assert replica.sync(subscriber).applied == 1
    assert list(replica.entries()) == ["s1"]


def test_live_sync_pushes_a_new_version(
    agencies: dict[str, AgencyClient],
    watchlist: watchlist_pb2.Watchlist,
    broker: Any,
    tmp_path: Path,
) -> None:
    """A following subscriber receives a version published after it connected."""
    owner, subscriber = agencies[OWNER], agencies[SUBSCRIBER]
    publish_update(owner, UPDATES[0], watchlist=watchlist)
    replica = _replica(tmp_path, "live")
    outcome: list[Any] = []
    thread = threading.Thread(
        target=lambda: outcome.append(replica.sync(subscriber, follow=True, idle=10, until_version=2))
    )
    thread.start()
    publish_update(owner, UPDATES[1], watchlist=watchlist)
    thread.join(15)
    assert outcome
    assert outcome[0].version == 2
    assert "p4" in replica.entries()


def test_version_gap_is_refused_naming_the_expected_version(
    agencies: dict[str, AgencyClient],
    watchlist: watchlist_pb2.Watchlist,
    database: Database,
) -> None:
    """Publishing v3 on a list at v1 is FAILED_PRECONDITION naming version 2, audited, not stored."""
    owner = agencies[OWNER]
    publish_update(owner, UPDATES[0], watchlist=watchlist)
    _refused(
        database,
        lambda: publish_update(owner, _update(3), watchlist=watchlist),
        grpc.StatusCode.FAILED_PRECONDITION,
        "expected version 2, got 3",
    )


def test_replayed_old_version_is_refused(
    agencies: dict[str, AgencyClient],
    watchlist: watchlist_pb2.Watchlist,
    database: Database,
) -> None:
    """Re-publishing the v1 envelope when the list is at v2 is FAILED_PRECONDITION, audited, not stored."""
    owner = agencies[OWNER]
    first = seal_update(owner, watchlist, UPDATES[0])
    publish_envelope(owner, first, snapshot=True)
    assert publish_envelope(owner, first, snapshot=True).duplicate  # a retry of the latest is idempotent
    publish_update(owner, UPDATES[1], watchlist=watchlist)
    _refused(
        database,
        lambda: publish_envelope(owner, first, snapshot=True),
        grpc.StatusCode.FAILED_PRECONDITION,
        "expected version 3, got 1",
    )


def test_update_from_a_non_owner_is_refused(
    agencies: dict[str, AgencyClient],
    watchlist: watchlist_pb2.Watchlist,
    database: Database,
) -> None:
    """A subscriber publishing a version of the owner's list is PERMISSION_DENIED, audited, not stored."""
    intruder = agencies[SUBSCRIBER]
    keys = intruder.recipient_keys([OWNER, SUBSCRIBER])
    envelope = seal(
        sender=SUBSCRIBER,
        identity_key=intruder.identity.private_key,
        certificate=intruder.identity.certificate,
        recipients=[SUBSCRIBER],
        recipient_keys=keys,
        kind=envelope_pb2.WATCHLIST_UPDATE,
        body=UPDATES[0].SerializeToString(),
        content_type=WATCHLIST_UPDATE_CONTENT_TYPE,
        handling=envelope_pb2.Handling(tlp=envelope_pb2.TLP_AMBER),
        watchlist_id=LIST_ID,
        watchlist_version=1,
    )
    _refused(
        database,
        lambda: publish_envelope(intruder, envelope, snapshot=True),
        grpc.StatusCode.PERMISSION_DENIED,
        "only its owner may publish updates",
    )


def test_subscription_by_an_agency_not_allowed_is_refused(
    agencies: dict[str, AgencyClient],
    watchlist: watchlist_pb2.Watchlist,
    database: Database,
    tmp_path: Path,
) -> None:
    """NL-FIOD, not named by the watchlist, gets PERMISSION_DENIED on Sync, and the refusal is audited."""
    publish_update(agencies[OWNER], UPDATES[0], watchlist=watchlist)
    replica = _replica(tmp_path, "nl")
    with pytest.raises(RemoteError) as refused:
        replica.sync(agencies[OTHER])
    assert refused.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert "NL-FIOD may not subscribe to watchlist FR-CUSTOMS/wanted" in refused.value.message
    assert replica.version == 0
    assert replica.entries() == {}
    entry = _last_audit(database)
    assert (entry["event"], entry["fields"]["rpc"]) == ("request.rejected", "Sync")


def _forged_inner(
    owner: AgencyClient, forger: AgencyClient, watchlist: watchlist_pb2.Watchlist, update: payload_pb2.WatchlistUpdate
) -> envelope_pb2.Envelope:
    """The owner's envelope of `update`, re-sealed with an inner signature by `forger` (outer stays the owner's)."""
    genuine = seal_update(owner, watchlist, update)
    header = envelope_pb2.Header.FromString(genuine.header)
    keys = owner.recipient_keys([OWNER, SUBSCRIBER])
    # Seal the same header with a known content key, then swap in content whose inner signature is the
    # forger's, fix the ciphertext digest and re-sign the header as the owner: only the inner signature lies.
    body = update.SerializeToString()
    bad_inner = sign_identity(
        forger.identity.private_key, _pae.content_signing_input(header, WATCHLIST_UPDATE_CONTENT_TYPE, body)
    )
    content_key, nonce = AESGCM.generate_key(bit_length=256), os.urandom(12)
    content = envelope_pb2.Content(content_type=WATCHLIST_UPDATE_CONTENT_TYPE, body=body, inner_signature=bad_inner)
    base = seal(
        sender=OWNER,
        identity_key=owner.identity.private_key,
        certificate=owner.identity.certificate,
        recipients=list(header.recipients),
        recipient_keys=keys,
        kind=envelope_pb2.WATCHLIST_UPDATE,
        body=body,
        content_type=WATCHLIST_UPDATE_CONTENT_TYPE,
        handling=header.handling,
        watchlist_id=LIST_ID,
        watchlist_version=update.version,
        message_id=header.message_id,
        created=header.created.ToDatetime(dt.UTC),
        _content_key=content_key,
        _nonce=nonce,
    )
    forged_header = envelope_pb2.Header.FromString(base.header)
    ciphertext = nonce + AESGCM(content_key).encrypt(
        nonce, content.SerializeToString(), _pae.content_aad(forged_header)
    )
    forged_header.ciphertext_sha256 = hashlib.sha256(ciphertext).digest()
    header_bytes = forged_header.SerializeToString()
    return envelope_pb2.Envelope(
        header=header_bytes,
        ciphertext=ciphertext,
        wrapped_keys=base.wrapped_keys,
        header_signature=sign_identity(owner.identity.private_key, _pae.header_signing_input(header_bytes)),
    )


def test_delta_whose_inner_signature_is_not_the_owners_is_refused_by_the_replica(
    agencies: dict[str, AgencyClient],
    watchlist: watchlist_pb2.Watchlist,
    tmp_path: Path,
) -> None:
    """The broker cannot see an inner signature; the replica refuses the version and keeps the last good one."""
    owner, subscriber = agencies[OWNER], agencies[SUBSCRIBER]
    publish_update(owner, UPDATES[0], watchlist=watchlist)
    publish_envelope(owner, _forged_inner(owner, agencies[OTHER], watchlist, UPDATES[1]), snapshot=False)
    replica = _replica(tmp_path, "sub")
    with pytest.raises(VerificationError, match="inner content"):
        replica.sync(subscriber)
    assert replica.version == 1
    assert set(replica.entries()) == {"p1", "p2", "p3"}
    # The owner recovers every replica with a fresh snapshot.
    publish_update(owner, _update(3, snapshot=True, upserts=(_person("p9", "New", "Start"),)), watchlist=watchlist)
    assert replica.sync(subscriber).version == 3
    assert list(replica.entries()) == ["p9"]


def test_screening_finds_planted_variants_and_a_hit_report_reaches_the_owner(
    agencies: dict[str, AgencyClient],
    watchlist: watchlist_pb2.Watchlist,
    database: Database,
    tmp_path: Path,
) -> None:
    """Accent, transliteration and word-order variants are hits, the others not; the owner gets the report."""
    owner, subscriber = agencies[OWNER], agencies[SUBSCRIBER]
    for update in UPDATES:
        publish_update(owner, update, watchlist=watchlist)
    replica = _replica(tmp_path, "sub")
    replica.sync(subscriber)
    manifest = [
        ScreeningRecord(
            record_id=f"pax{i}",
            family_name=f"Traveller{i}",
            given_names="Alex",
            date_of_birth=f"19{50 + i % 40}-01-15",
            document_number=f"P{i:08d}",
        )
        for i in range(300)
    ]
    manifest += [
        ScreeningRecord(record_id="plant-umlaut", name="HANS PETER MUELLER", date_of_birth="1970-03-04"),
        ScreeningRecord(
            record_id="plant-order", family_name="Grete", given_names="SCHRODER", date_of_birth="1988-12-24"
        ),
        ScreeningRecord(
            record_id="plant-doc", name="Somebody Else", document_number="x1234567", document_country="POL"
        ),
        ScreeningRecord(record_id="plant-nordic", name="SOEREN OESTERGAARD", date_of_birth="1975-09-10"),
        ScreeningRecord(record_id="removed", name="Jean Dupont", date_of_birth="1980-01-02"),
        ScreeningRecord(record_id="expired", name="Eve Expired", date_of_birth="1991-01-01"),
        ScreeningRecord(record_id="other-dob", name="Hans Peter Müller", date_of_birth="1999-09-09"),
    ]
    hits = replica.screen(manifest)
    assert {(h.record.record_id, h.entry_id) for h in hits} == {
        ("plant-umlaut", "p1"),
        ("plant-order", "p7"),
        ("plant-doc", "p4"),
        ("plant-nordic", "p6"),
    }
    umlaut = next(h for h in hits if h.record.record_id == "plant-umlaut")
    assert {"name", "date_of_birth"} <= set(umlaut.matched_fields)
    assert umlaut.score >= 0.8
    sent = report_hit(subscriber, umlaut, location="CDG", action_taken=payload_pb2.HIT_DISCREET_CHECK)
    [message] = list(_take(owner, 1))
    report = read_hit_report(message)
    assert (message.sender, report.entry_id, report.watchlist_id, report.location) == (SUBSCRIBER, "p1", LIST_ID, "CDG")
    audited = json.loads(
        bytes(
            database.scalar(
                "SELECT entry FROM audit_entries WHERE message_id = :m AND event = 'envelope.accepted'",
                m=sent.message_id,
            )
        )
    )
    assert audited["fields"]["kind"] == "HIT_REPORT"
    assert "MUELLER" not in json.dumps(audited).upper()
    assert "MÜLLER" not in json.dumps(audited).upper()


def _take(client: AgencyClient, count: int) -> list[Any]:
    out = []
    for message in client.deliveries(timeout=5):
        out.append(message)
        if len(out) == count:
            break
    return out


def test_watchlist_id_must_carry_the_owners_prefix(agencies: dict[str, AgencyClient], database: Database) -> None:
    """An agency cannot create a list under another agency's id prefix."""
    with pytest.raises(RemoteError) as refused:
        create_watchlist(agencies[SUBSCRIBER], "FR-CUSTOMS/squatted", subscribers=[OWNER])
    assert refused.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert _last_audit(database)["fields"]["rpc"] == "CreateWatchlist"


def test_list_watchlists_shows_only_what_the_caller_may_see(
    agencies: dict[str, AgencyClient],
    watchlist: watchlist_pb2.Watchlist,
) -> None:
    """The subscriber sees the list, the agency not named does not."""
    seen = {
        a: [
            w.watchlist_id
            for w in watchlist_stub(agencies[a])
            .ListWatchlists(watchlist_pb2.ListWatchlistsRequest(), timeout=5)
            .watchlists
        ]
        for a in (OWNER, SUBSCRIBER, OTHER)
    }
    assert seen == {OWNER: [LIST_ID], SUBSCRIBER: [LIST_ID], OTHER: []}
