"""The attachment tables (docs/protocol.md "Attachments"). Like `broker.store.tables`: SQLModel
declarations for the schema and the migration, SQLAlchemy Core at run time; times in microseconds."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from broker.store.tables import table_of

UPLOADING = 1  # chunks arriving; resumable
COMPLETE = 2  # every chunk stored, digest known; waiting for the envelope that references it
ATTACHED = 3  # referenced by an accepted envelope: downloadable by its recipients
PURGED = 4  # its retention period ended: the blob is gone, the digest and size stay (a tombstone)


class AttachmentRow(SQLModel, table=True):
    """One attachment, named by its uploader, the message that references it and its position there."""

    __tablename__ = "attachments"

    uploader: str = Field(primary_key=True, max_length=40)
    message_id: str = Field(primary_key=True, max_length=36, index=True)
    idx: int = Field(primary_key=True)
    size: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    chunk_size: int
    media_type: str = Field(max_length=255)
    state: int
    sha256: bytes | None = Field(default=None, sa_column=sa.Column(sa.LargeBinary(32), nullable=True))
    blob: str = Field(max_length=80)  # the blob store's key: the upload's name, then the hex digest
    created_us: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    # An upload not referenced by then is deleted; NULL once attached (the message's expiry rules).
    expires_us: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    purge_rule: str | None = Field(default=None, max_length=80, nullable=True)  # set with state PURGED


class BlobChunkRow(SQLModel, table=True):
    """One encrypted chunk of a blob in the database backend (PostgreSQL: every replica sees it)."""

    __tablename__ = "blob_chunks"

    blob: str = Field(primary_key=True, max_length=80)
    idx: int = Field(sa_column=sa.Column(sa.BigInteger, primary_key=True))
    sha256: bytes = Field(sa_column=sa.Column(sa.LargeBinary(32), nullable=False))
    data: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))


attachments = table_of(AttachmentRow)
blob_chunks = table_of(BlobChunkRow)
