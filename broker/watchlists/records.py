"""The broker's view of a watchlist and of a stored version (protobuf-free domain values)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["StoredVersion", "WatchlistRecord", "record_of_row"]


@dataclass(frozen=True, slots=True)
class WatchlistRecord:
    """A watchlist's definition and its latest version."""

    watchlist_id: str
    owner: str
    title: str
    entry_types: tuple[str, ...]  # EntityType names
    subscribers: tuple[str, ...]  # sorted agency ids and group names
    tlp: int  # isb.v1.Tlp
    version: int
    snapshot_version: int
    created_us: int
    updated_us: int

    def same_definition(self, other: WatchlistRecord) -> bool:
        """Whether `other` defines the same watchlist (for an idempotent repeated create)."""
        return (self.owner, self.title, self.entry_types, self.subscribers, self.tlp) == (
            other.owner,
            other.title,
            other.entry_types,
            other.subscribers,
            other.tlp,
        )


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """One version as the broker stored it, with the owner certificate it verified."""

    watchlist_id: str
    version: int
    snapshot: bool
    envelope: bytes
    sender_certificate: bytes
    accepted_us: int


def _split(value: str) -> tuple[str, ...]:
    return tuple(v for v in value.split(",") if v)


def record_of_row(row: Any) -> WatchlistRecord:
    """A record from a `watchlist_lists` row."""
    return WatchlistRecord(
        watchlist_id=row.watchlist_id,
        owner=row.owner,
        title=row.title,
        entry_types=_split(row.entry_types),
        subscribers=_split(row.subscribers),
        tlp=int(row.tlp),
        version=int(row.version),
        snapshot_version=int(row.snapshot_version),
        created_us=int(row.created_us),
        updated_us=int(row.updated_us),
    )
