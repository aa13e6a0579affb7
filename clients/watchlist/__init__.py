"""The watchlist SDK (DESIGN.md section 7): create and publish watchlists, keep a verified local
replica, screen records against it, and report hits to the owner.

    replica = WatchlistReplica(Path("stolen-docs.db"), watchlist_id="FR-CUSTOMS/stolen-documents",
                               owner="FR-CUSTOMS")
    replica.sync(client)
    for hit in replica.screen(passengers):
        report_hit(client, hit, location="CDG")
"""

from clients.watchlist.hits import hit_report_of, read_hit_report, report_hit
from clients.watchlist.payloads import (
    ALERT_CONTENT_TYPE,
    HIT_REPORT_CONTENT_TYPE,
    WATCHLIST_UPDATE_CONTENT_TYPE,
    date_of,
)
from clients.watchlist.replica import SyncResult, VerifiedUpdate, VersionGap, VersionOpener, WatchlistReplica
from clients.watchlist.screening import DEFAULT_MIN_SCORE, Hit, ScreeningIndex, ScreeningRecord
from clients.watchlist.service import (
    create_watchlist,
    get_watchlist,
    list_watchlists,
    publish_envelope,
    publish_update,
    review_notices,
    review_schedule,
    seal_update,
    watchlist_stub,
)

__all__ = [
    "ALERT_CONTENT_TYPE",
    "DEFAULT_MIN_SCORE",
    "HIT_REPORT_CONTENT_TYPE",
    "WATCHLIST_UPDATE_CONTENT_TYPE",
    "Hit",
    "ScreeningIndex",
    "ScreeningRecord",
    "SyncResult",
    "VerifiedUpdate",
    "VersionGap",
    "VersionOpener",
    "WatchlistReplica",
    "create_watchlist",
    "date_of",
    "get_watchlist",
    "hit_report_of",
    "list_watchlists",
    "publish_envelope",
    "publish_update",
    "read_hit_report",
    "report_hit",
    "review_notices",
    "review_schedule",
    "seal_update",
    "watchlist_stub",
]
