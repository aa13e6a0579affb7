"""The watchlist tables. Like `broker.store.tables`: SQLModel declarations for the schema and the
migration, SQLAlchemy Core statements on `__table__` at run time; times in integer microseconds."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from broker.store.tables import table_of


class WatchlistRow(SQLModel, table=True):
    """A watchlist: its owner, who may subscribe, and the latest version published."""

    __tablename__ = "watchlist_lists"

    watchlist_id: str = Field(primary_key=True, max_length=128)
    owner: str = Field(index=True, max_length=40)
    title: str = Field(default="", max_length=200)
    entry_types: str = Field(default="", max_length=200)  # comma-separated EntityType names
    subscribers: str = Field(max_length=4000)  # comma-separated agency ids and group names, sorted
    tlp: int
    version: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    snapshot_version: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    created_us: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    updated_us: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))


class WatchlistVersionRow(SQLModel, table=True):
    """One published version: the WATCHLIST_UPDATE envelope exactly as received."""

    __tablename__ = "watchlist_versions"

    watchlist_id: str = Field(primary_key=True, max_length=128)
    version: int = Field(sa_column=sa.Column(sa.BigInteger, primary_key=True, autoincrement=False))
    message_id: str = Field(max_length=36, unique=True)
    snapshot: bool
    envelope: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    envelope_sha256: bytes = Field(sa_column=sa.Column(sa.LargeBinary(32), nullable=False))
    sender_cert: bytes = Field(sa_column=sa.Column(sa.LargeBinary(32), nullable=False))  # peer_certificates key
    accepted_us: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    audit_index: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))


class WatchlistReviewRow(SQLModel, table=True):
    """The owner's account of how many entries fall due for review on one day (docs/protocol.md section 22)."""

    __tablename__ = "watchlist_reviews"

    watchlist_id: str = Field(primary_key=True, max_length=128)
    review_date: str = Field(primary_key=True, max_length=10)  # YYYY-MM-DD, UTC
    entries: int
    # The audit index of the notice that told the owner about this day; NULL until it is sent.
    notice_index: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))


class WatchlistNoticeRow(SQLModel, table=True):
    """One review notice to a watchlist's owner, as GetReviewNotices serves it."""

    __tablename__ = "watchlist_review_notices"

    audit_index: int = Field(sa_column=sa.Column(sa.BigInteger, primary_key=True, autoincrement=False))
    watchlist_id: str = Field(index=True, max_length=128)
    owner: str = Field(index=True, max_length=40)
    due: str = Field(max_length=4000)  # comma-separated YYYY-MM-DD=entries, sorted
    notice_period: str = Field(max_length=16)
    created_us: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))


watchlist_lists = table_of(WatchlistRow)
watchlist_versions = table_of(WatchlistVersionRow)
watchlist_reviews = table_of(WatchlistReviewRow)
watchlist_review_notices = table_of(WatchlistNoticeRow)

__all__ = [
    "WatchlistNoticeRow",
    "WatchlistReviewRow",
    "WatchlistRow",
    "WatchlistVersionRow",
    "watchlist_lists",
    "watchlist_review_notices",
    "watchlist_reviews",
    "watchlist_versions",
]
