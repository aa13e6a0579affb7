"""Writer operations of the attachment lifecycle; each commits with its audit entry (`broker.store.writer`).

Audit entries are bounded: one per completed upload, one per download stream, one per deletion,
never one per chunk, and never a key or plaintext.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from broker.attachments import tables
from broker.attachments.blobs import BlobStore
from broker.audit import AuditEvent
from broker.errors import AlreadyExists, FailedPrecondition, QuotaExceeded
from broker.store.writer import Batch

A = tables.attachments.c


@dataclass(frozen=True, slots=True)
class Upload:
    """What an upload's start declares, and its name."""

    uploader: str
    message_id: str
    index: int
    size: int
    chunk_size: int
    media_type: str

    @property
    def blob(self) -> str:
        """The blob's name while its chunks arrive."""
        return f"upload.{self.uploader}.{self.message_id}.{self.index}"


@dataclass(frozen=True, slots=True)
class UploadState:
    """An upload row as stored."""

    state: int
    sha256: bytes | None
    blob: str


def _row(batch: Batch, upload: Upload) -> Any:  # a result row
    return batch.conn.execute(
        sa.select(A.size, A.chunk_size, A.state, A.media_type, A.sha256, A.blob).where(
            A.uploader == upload.uploader, A.message_id == upload.message_id, A.idx == upload.index
        )
    ).first()


@dataclass
class BeginUpload:
    """Record a new upload (or find the one being resumed); refuse one over the agency's quota."""

    upload: Upload
    quota: int
    ttl_us: int

    def stage(self, batch: Batch) -> UploadState:
        u = self.upload
        row = _row(batch, u)
        if row is not None:
            if (row.size, row.chunk_size, row.media_type) != (u.size, u.chunk_size, u.media_type):
                raise AlreadyExists(
                    f"attachment {u.index} of message {u.message_id} is already being uploaded with another "
                    f"size, chunk size or media type ({row.size} bytes, chunks of {row.chunk_size}, {row.media_type})"
                )
            return UploadState(row.state, row.sha256, row.blob)
        used = batch.conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(A.size), 0)).where(
                A.uploader == u.uploader, A.state != tables.PURGED
            )
        ).scalar_one()
        if used + u.size > self.quota:
            raise QuotaExceeded(
                f"{u.uploader} stores {used} bytes of attachments; {u.size} more would exceed its quota of "
                f"{self.quota} bytes"
            )
        batch.insert(
            tables.attachments,
            {
                "uploader": u.uploader,
                "message_id": u.message_id,
                "idx": u.index,
                "size": u.size,
                "chunk_size": u.chunk_size,
                "media_type": u.media_type,
                "state": tables.UPLOADING,
                "sha256": None,
                "blob": u.blob,
                "created_us": batch.now_us,
                "expires_us": batch.now_us + self.ttl_us,
            },
        )
        return UploadState(tables.UPLOADING, None, u.blob)


@dataclass
class CompleteUpload:
    """Mark an upload complete under its content address, with its audit entry."""

    upload: Upload
    sha256: bytes
    chunks: int
    resumed_from: int
    actor: str

    def stage(self, batch: Batch) -> int:
        u = self.upload
        updated = batch.conn.execute(
            tables.attachments.update()
            .where(
                A.uploader == u.uploader, A.message_id == u.message_id, A.idx == u.index, A.state == tables.UPLOADING
            )
            .values(state=tables.COMPLETE, sha256=self.sha256, blob=self.sha256.hex())
        ).rowcount
        if not updated:
            raise FailedPrecondition(f"attachment {u.index} of message {u.message_id} is no longer being uploaded")
        return batch.audit(
            AuditEvent(
                event="attachment.uploaded",
                actor=self.actor,
                time=batch.now,
                message_id=u.message_id,
                agency=u.uploader,
                fields={
                    "attachment": u.index,
                    "sha256": self.sha256.hex(),
                    "size": u.size,
                    "chunks": self.chunks,
                    "media_type": u.media_type,
                    "resumed_from_chunk": self.resumed_from,
                },
            )
        )


@dataclass
class RecordDownload:
    """Audit one download stream: by whom, when, which attachment, from which chunk."""

    message_id: str
    index: int
    recipient: str
    sha256: bytes
    first_chunk: int
    actor: str

    def stage(self, batch: Batch) -> int:
        return batch.audit(
            AuditEvent(
                event="attachment.downloaded",
                actor=self.actor,
                time=batch.now,
                message_id=self.message_id,
                agency=self.recipient,
                fields={
                    "attachment": self.index,
                    "recipient": self.recipient,
                    "sha256": self.sha256.hex(),
                    "first_chunk": self.first_chunk,
                },
            )
        )


def attach_to_message(
    batch: Batch, uploader: str, message_id: str, refs: Sequence[tuple[bytes, int, int, str]]
) -> None:
    """Bind the complete uploads named by an accepted envelope's header to it (inside its AcceptEnvelope).

    Raise `FailedPrecondition` before changing anything if one is missing or differs.
    """
    rows = {
        row.idx: row
        for row in batch.conn.execute(
            sa.select(A.idx, A.state, A.sha256, A.size, A.chunk_size, A.media_type).where(
                A.uploader == uploader, A.message_id == message_id
            )
        )
    }
    for index, (sha256, size, chunk_size, media_type) in enumerate(refs):
        row = rows.get(index)
        if row is None or row.state != tables.COMPLETE:
            raise FailedPrecondition(
                f"attachment {index} of message {message_id} has not been uploaded completely; "
                "upload it before sending the envelope"
            )
        if (bytes(row.sha256), row.size, row.chunk_size, row.media_type) != (sha256, size, chunk_size, media_type):
            raise FailedPrecondition(
                f"attachment {index} of message {message_id} differs from the upload (digest, size, chunk size "
                "or media type)"
            )
    batch.conn.execute(
        tables.attachments.update()
        .where(A.uploader == uploader, A.message_id == message_id, A.idx < len(refs))
        .values(state=tables.ATTACHED, expires_us=None)
    )


def release_blob(batch: Batch, blobs: BlobStore, blob: str) -> None:
    """Delete a blob no attachment row names any more (identical attachments share one blob)."""
    if not blob:
        return  # a purged attachment's tombstone has no blob
    shared = batch.conn.execute(
        sa.select(sa.func.count()).select_from(tables.attachments).where(A.blob == blob)
    ).scalar_one()
    if not shared:
        blobs.delete_in(batch, blob)


def delete_attachments(batch: Batch, blobs: BlobStore, where: sa.ColumnElement[bool], reason: str, actor: str) -> int:
    """Delete the attachments matching `where` and their blobs, one audit entry each."""
    rows = list(
        batch.conn.execute(sa.select(A.uploader, A.message_id, A.idx, A.size, A.sha256, A.blob, A.state).where(where))
    )
    for row in rows:
        batch.conn.execute(
            tables.attachments.delete().where(
                A.uploader == row.uploader, A.message_id == row.message_id, A.idx == row.idx
            )
        )
        release_blob(batch, blobs, row.blob)
        batch.audit(
            AuditEvent(
                event="attachment.deleted",
                actor=actor,
                time=batch.now,
                message_id=row.message_id,
                agency=row.uploader,
                fields={
                    "attachment": row.idx,
                    "reason": reason,
                    "size": row.size,
                    "sha256": bytes(row.sha256).hex() if row.sha256 else "",
                    "complete": int(row.state != tables.UPLOADING),
                },
            )
        )
    return len(rows)


@dataclass
class DeleteAttachments:
    """Delete attachments (expired uploads, attachments of expired messages)."""

    blobs: BlobStore
    where: sa.ColumnElement[bool]
    reason: str
    actor: str

    def stage(self, batch: Batch) -> int:
        return delete_attachments(batch, self.blobs, self.where, self.reason, self.actor)
