"""Watchlists (DESIGN.md section 7): versioned, signed, encrypted lists an owner agency publishes
and subscribers replicate. The broker stores each version exactly as the owner sealed it and
serves it to allowed subscribers; it cannot read the entries.

- `tables`: the `watchlist_*` tables.
- `operations`: writer operations (create a watchlist, publish a version), each with its audit entry.
- `desk`: the domain logic (`WatchlistDesk`): who may publish and subscribe, what a version must be.
- `servicer`: the gRPC `WatchlistService` (the broker's composition root, `broker.server`, adds it).
"""

from broker.watchlists.desk import WatchlistDesk
from broker.watchlists.records import StoredVersion, WatchlistRecord

__all__ = ["StoredVersion", "WatchlistDesk", "WatchlistRecord"]
