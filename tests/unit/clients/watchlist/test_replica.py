"""The local replica: verified versions applied in order, gaps refused, owner pinned, restarts survived."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from broker.api.v1 import envelope_pb2, payload_pb2, watchlist_pb2
from broker.errors import VerificationError
from broker.protocol.envelope import seal
from clients.errors import ClientError
from clients.watchlist import ScreeningRecord, VersionGap, VersionOpener, WatchlistReplica
from clients.watchlist.payloads import WATCHLIST_UPDATE_CONTENT_TYPE
from tests.unit.protocol.protocol_testpki import TRUST_DOMAIN, Agency, Pki, make_ca

LIST_ID = "FR-CUSTOMS/wanted"


@pytest.fixture(scope="module")
def pki() -> Pki:
    """A throwaway CA for this module."""
    return Pki(*make_ca())


def _version(
    owner: Agency, reader: Agency, update: payload_pb2.WatchlistUpdate, *, served_as_snapshot: bool | None = None
) -> watchlist_pb2.WatchlistVersion:
    """`update` sealed by `owner` for `reader`, framed as the broker serves it."""
    envelope = seal(
        sender=owner.name,
        identity_key=owner.identity_key,
        certificate=owner.certificate,
        recipients=[reader.name],
        recipient_keys={reader.name: reader.bundle},
        kind=envelope_pb2.WATCHLIST_UPDATE,
        body=update.SerializeToString(),
        content_type=WATCHLIST_UPDATE_CONTENT_TYPE,
        handling=envelope_pb2.Handling(tlp=envelope_pb2.TLP_AMBER),
        watchlist_id=update.watchlist_id,
        watchlist_version=update.version,
    )
    snapshot = update.snapshot if served_as_snapshot is None else served_as_snapshot
    return watchlist_pb2.WatchlistVersion(
        watchlist_id=update.watchlist_id,
        version=update.version,
        snapshot=snapshot,
        envelope=envelope,
        sender_certificate=owner.certificate.public_bytes(Encoding.DER),
    )


def _update(
    version: int, *ids: str, snapshot: bool = False, removed: tuple[str, ...] = (), review: dt.date | None = None
) -> payload_pb2.WatchlistUpdate:
    entries = []
    for i in ids:
        e = payload_pb2.WatchlistEntry(entry_id=i, family_name=f"Family{i}", given_names="Given")
        if review is not None:
            e.review_date.CopyFrom(payload_pb2.Date(year=review.year, month=review.month, day=review.day))
        entries.append(e)
    return payload_pb2.WatchlistUpdate(
        watchlist_id=LIST_ID, version=version, snapshot=snapshot, upserts=entries, removed_entry_ids=removed
    )


@pytest.fixture
def parties(pki: Pki) -> tuple[Agency, Agency, VersionOpener]:
    """Owner FR-CUSTOMS, reader DE-BKA and the reader's opener."""
    owner, reader = pki.agency("FR-CUSTOMS"), pki.agency("DE-BKA")
    return owner, reader, VersionOpener(reader.name, reader.keys, [pki.ca_certificate], TRUST_DOMAIN)


def _replica(tmp_path: Path, **kwargs: object) -> WatchlistReplica:
    return WatchlistReplica(tmp_path / "replica.db", watchlist_id=LIST_ID, owner="FR-CUSTOMS", **kwargs)  # type: ignore[arg-type]


def test_versions_apply_in_order(tmp_path: Path, parties: tuple[Agency, Agency, VersionOpener]) -> None:
    """A snapshot then two deltas (add, remove) leave exactly the expected entries."""
    owner, reader, opener = parties
    replica = _replica(tmp_path)
    for update in (_update(1, "a", "b", snapshot=True), _update(2, "c"), _update(3, removed=("a",))):
        assert replica.apply_served(_version(owner, reader, update), opener)
    assert replica.version == 3
    assert sorted(replica.entries()) == ["b", "c"]


def test_gap_is_refused_and_nothing_changes(tmp_path: Path, parties: tuple[Agency, Agency, VersionOpener]) -> None:
    """A delta for v3 on a replica at v1 raises VersionGap and leaves the replica at v1."""
    owner, reader, opener = parties
    replica = _replica(tmp_path)
    replica.apply_served(_version(owner, reader, _update(1, "a", snapshot=True)), opener)
    with pytest.raises(VersionGap, match="needs version 2 first"):
        replica.apply_served(_version(owner, reader, _update(3, "z")), opener)
    assert (replica.version, sorted(replica.entries())) == (1, ["a"])


def test_version_already_held_is_skipped(tmp_path: Path, parties: tuple[Agency, Agency, VersionOpener]) -> None:
    """Serving v1 again changes nothing and reports False."""
    owner, reader, opener = parties
    replica = _replica(tmp_path)
    item = _version(owner, reader, _update(1, "a", snapshot=True))
    assert replica.apply_served(item, opener)
    assert not replica.apply_served(_version(owner, reader, _update(1, "x", snapshot=True)), opener)
    assert sorted(replica.entries()) == ["a"]


def test_snapshot_jumps_ahead_and_replaces_everything(
    tmp_path: Path, parties: tuple[Agency, Agency, VersionOpener]
) -> None:
    """A snapshot at v5 on a replica at v1 is applied and drops the old entries."""
    owner, reader, opener = parties
    replica = _replica(tmp_path)
    replica.apply_served(_version(owner, reader, _update(1, "a", snapshot=True)), opener)
    replica.apply_served(_version(owner, reader, _update(5, "s", snapshot=True)), opener)
    assert (replica.version, sorted(replica.entries())) == (5, ["s"])


def test_version_signed_by_another_agency_is_refused(
    tmp_path: Path, pki: Pki, parties: tuple[Agency, Agency, VersionOpener]
) -> None:
    """A version signed by NL-FIOD (a valid agency, not the pinned owner) does not verify."""
    _, reader, opener = parties
    replica = _replica(tmp_path)
    with pytest.raises(VerificationError, match="FR-CUSTOMS"):
        replica.apply_served(_version(pki.agency("NL-FIOD"), reader, _update(1, "a", snapshot=True)), opener)
    assert replica.version == 0


def test_broker_mislabelling_a_delta_as_snapshot_is_refused(
    tmp_path: Path,
    parties: tuple[Agency, Agency, VersionOpener],
) -> None:
    """The broker's snapshot flag must match the signed payload."""
    owner, reader, opener = parties
    replica = _replica(tmp_path)
    with pytest.raises(VerificationError, match="the owner signed a delta"):
        replica.apply_served(_version(owner, reader, _update(1, "a"), served_as_snapshot=True), opener)


def test_version_number_must_match_the_signed_header(
    tmp_path: Path, parties: tuple[Agency, Agency, VersionOpener]
) -> None:
    """An envelope of v1 served as v2 is refused."""
    owner, reader, opener = parties
    replica = _replica(tmp_path)
    item = _version(owner, reader, _update(1, "a", snapshot=True))
    item.version = 2
    with pytest.raises(VerificationError, match="served it as"):
        replica.apply_served(item, opener)


def test_replica_survives_a_restart(tmp_path: Path, parties: tuple[Agency, Agency, VersionOpener]) -> None:
    """Reopening the file gives back the version and entries, and a gap is still a gap."""
    owner, reader, opener = parties
    with _replica(tmp_path) as replica:
        replica.apply_served(_version(owner, reader, _update(1, "a", snapshot=True)), opener)
        replica.apply_served(_version(owner, reader, _update(2, "b")), opener)
    with _replica(tmp_path) as again:
        assert (again.version, sorted(again.entries())) == (2, ["a", "b"])
        with pytest.raises(VersionGap):
            again.apply_served(_version(owner, reader, _update(4, "d")), opener)


def test_file_is_pinned_to_its_watchlist_and_owner(tmp_path: Path) -> None:
    """Reopening a replica file for another owner is refused."""
    _replica(tmp_path).close()
    with pytest.raises(ClientError, match="owned by FR-CUSTOMS"):
        WatchlistReplica(tmp_path / "replica.db", watchlist_id=LIST_ID, owner="DE-BKA")


def test_file_is_private(tmp_path: Path) -> None:
    """The replica file, which holds decrypted entries, is readable by its owner only."""
    _replica(tmp_path).close()
    assert stat.S_IMODE((tmp_path / "replica.db").stat().st_mode) == 0o600


def test_entries_past_review_date_drop_out(tmp_path: Path, parties: tuple[Agency, Agency, VersionOpener]) -> None:
    """An entry whose review date passes disappears from entries and screening, without a new version."""
    owner, reader, opener = parties
    today = [dt.date(2030, 1, 1)]
    replica = _replica(tmp_path, today=lambda: today[0])
    replica.apply_served(_version(owner, reader, _update(1, "a", snapshot=True, review=dt.date(2030, 1, 10))), opener)
    replica.apply_served(_version(owner, reader, _update(2, "b")), opener)
    record = ScreeningRecord("r", name="Given Familya")
    assert [h.entry_id for h in replica.screen([record])] == ["a"]
    today[0] = dt.date(2030, 1, 11)
    assert replica.screen([record]) == []
    assert sorted(replica.entries()) == ["b"]


def test_screen_fills_in_watchlist_owner_and_entry(
    tmp_path: Path, parties: tuple[Agency, Agency, VersionOpener]
) -> None:
    """Hits from a replica name the list, version, owner and carry the entry."""
    owner, reader, opener = parties
    replica = _replica(tmp_path)
    replica.apply_served(_version(owner, reader, _update(1, "a", snapshot=True)), opener)
    [hit] = replica.screen([{"record_id": "r", "name": "FAMILYA GIVEN"}])
    assert (hit.watchlist_id, hit.watchlist_version, hit.owner) == (LIST_ID, 1, "FR-CUSTOMS")
    assert hit.entry is not None
    assert hit.entry.entry_id == "a"


def test_delta_after_screening_updates_the_index(tmp_path: Path, parties: tuple[Agency, Agency, VersionOpener]) -> None:
    """An index built by one screening follows later deltas (additions and removals)."""
    owner, reader, opener = parties
    replica = _replica(tmp_path)
    replica.apply_served(_version(owner, reader, _update(1, "a", snapshot=True)), opener)
    assert len(replica.screen([ScreeningRecord("r", name="Given Familya")])) == 1
    replica.apply_served(_version(owner, reader, _update(2, "b", removed=("a",))), opener)
    hits = replica.screen([ScreeningRecord("r", name="Given Familya"), ScreeningRecord("s", name="Given Familyb")])
    assert [h.entry_id for h in hits] == ["b"]
