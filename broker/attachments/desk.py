"""The attachment desk: uploads in, downloads out, expiry (docs/protocol.md "Attachments").

The broker never sees an attachment's plaintext or key, and never holds a whole attachment: each
chunk is checked (position and length) as it arrives, hashed, appended to the blob store and
dropped; committed chunks survive a dropped connection, so the sender resumes from the first chunk
the broker does not have. Downloads re-verify each stored chunk's hash before sending it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection, Engine

from broker.api.v1 import broker_pb2
from broker.attachments import tables
from broker.attachments.blobs import BlobStore, BlobWriter
from broker.attachments.operations import (
    BeginUpload,
    CompleteUpload,
    DeleteAttachments,
    RecordDownload,
    Upload,
)
from broker.config import BrokerConfig
from broker.errors import FailedPrecondition, InvalidRequest, NotFound, StorageCorrupt
from broker.identity import AGENCY_ID, Principal
from broker.protocol import _stream
from broker.protocol.attachments import MAX_ATTACHMENTS, MEDIA_TYPE
from broker.store import tables as store_tables
from broker.store.db import now_us
from broker.store.writer import Writer

log = structlog.get_logger(__name__)

T = TypeVar("T")
# Chunks are made durable in groups of about this many bytes (one fsync or one commit per group):
# a resumed upload repeats at most this much.
COMMIT_BYTES: Final = 8 * 1024 * 1024
# A resumed upload waits this long for the stream it replaces (the broken connection) to let go.
LOCK_WAIT_SECONDS: Final = 10.0
_UUID: Final = "0123456789abcdef-"
A = tables.attachments.c


@dataclass(frozen=True, slots=True)
class Uploaded:
    """A complete upload: its digest, chunk count, and the audit entry of its completion."""

    sha256: bytes
    chunks: int
    audit_index: int


@dataclass(frozen=True, slots=True)
class UploadProgress:
    """How far an upload got."""

    next_chunk: int
    complete: bool
    sha256: bytes


@dataclass(frozen=True, slots=True)
class Download:
    """An authorised download: what to stream."""

    blob: str
    size: int
    chunk_size: int
    first_chunk: int


class _Sink:
    """Hashes and appends chunks to a blob, committing every `COMMIT_BYTES` (called from one thread at a time)."""

    def __init__(self, writer: BlobWriter) -> None:
        self._writer = writer
        self._pending = 0

    def store(self, data: bytes) -> bytes:
        sha256 = hashlib.sha256(data).digest()
        self._writer.append(data, sha256)
        self._pending += len(data)
        if self._pending >= COMMIT_BYTES:
            self._writer.commit()
            self._pending = 0
        return sha256


def _commit_and_close(writer: BlobWriter) -> None:
    try:
        writer.commit()
    finally:
        writer.close()


class AttachmentDesk:
    """Uploads, upload status, downloads and expiry of attachments."""

    def __init__(self, config: BrokerConfig, engine: Engine, writer: Writer, blobs: BlobStore) -> None:
        self._config = config
        self._engine = engine
        self._writer = writer
        self.blobs = blobs
        self._locks: dict[str, asyncio.Lock] = {}

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._start(fn, *args)

    def _start(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def _run_after(self, first: asyncio.Future[Any] | None, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` once `first` (if any) has finished, whatever its outcome."""
        if first is not None:
            await asyncio.wait([first])
            if not first.cancelled():
                first.exception()  # retrieved: the caller has already failed for its own reason, or will not look
        return await self._run(fn, *args)

    async def _read(self, fn: Callable[[Connection], T]) -> T:
        def run() -> T:
            with self._engine.connect() as conn:
                return fn(conn)

        return await self._run(run)

    def check_name(self, message_id: str, index: int) -> None:
        """Refuse a message id or attachment index that cannot name an attachment."""
        if len(message_id) != 36 or not set(message_id) <= set(_UUID):
            raise InvalidRequest(f"message id {message_id[:40]!r} is not a lowercase canonical UUID")
        if not 0 <= index < MAX_ATTACHMENTS:
            raise InvalidRequest(f"attachment index {index} is outside 0..{MAX_ATTACHMENTS - 1}")

    def check_start(self, upload: Upload, first_chunk: int) -> None:
        """Refuse an upload that could never be referenced or is over the configured size limit."""
        self.check_name(upload.message_id, upload.index)
        if not AGENCY_ID.fullmatch(upload.uploader):
            raise InvalidRequest("only agencies upload attachments")
        if upload.size > self._config.max_attachment_bytes:
            raise InvalidRequest(
                f"attachment is {upload.size} bytes, over the limit of {self._config.max_attachment_bytes} bytes"
            )
        if not _stream.MIN_CHUNK_SIZE <= upload.chunk_size <= _stream.MAX_CHUNK_SIZE:
            raise InvalidRequest(
                f"chunk_size {upload.chunk_size} is outside {_stream.MIN_CHUNK_SIZE}..{_stream.MAX_CHUNK_SIZE}"
            )
        if not MEDIA_TYPE.fullmatch(upload.media_type):
            raise InvalidRequest(f"media type {upload.media_type[:40]!r} is not type/subtype (RFC 6838)")
        n = _stream.chunk_count(upload.size, upload.chunk_size)
        if not 0 <= first_chunk < n:
            raise InvalidRequest(f"first_chunk {first_chunk} is outside 0..{n - 1}")

    async def upload(
        self, caller: Principal, upload: Upload, first_chunk: int, chunks: AsyncIterator[tuple[int, bytes]]
    ) -> Uploaded:
        """Store the chunks of one upload from `first_chunk`; answer once the last one is stored."""
        self.check_start(upload, first_chunk)
        lock = self._locks.setdefault(upload.blob, asyncio.Lock())
        try:
            async with asyncio.timeout(LOCK_WAIT_SECONDS):
                await lock.acquire()
        except TimeoutError:
            raise FailedPrecondition(
                f"attachment {upload.index} of message {upload.message_id} is being uploaded on another stream"
            ) from None
        try:
            return await self._upload(caller, upload, first_chunk, chunks)
        finally:
            lock.release()
            if not lock.locked() and self._locks.get(upload.blob) is lock:
                del self._locks[upload.blob]

    async def _upload(
        self, caller: Principal, upload: Upload, first_chunk: int, chunks: AsyncIterator[tuple[int, bytes]]
    ) -> Uploaded:
        n = _stream.chunk_count(upload.size, upload.chunk_size)
        state = await self._writer.submit(
            BeginUpload(upload, self._config.attachment_quota_bytes, int(self._config.upload_ttl_seconds * 1_000_000))
        )
        if state.state != tables.UPLOADING:
            if state.sha256 is None:
                raise RuntimeError(f"stored attachment {upload.blob} is {state.state} but has no digest")
            return Uploaded(state.sha256, n, 0)
        committed = (await self._run(self.blobs.committed, state.blob))[:n]
        if first_chunk > len(committed):
            raise FailedPrecondition(
                f"the broker holds {len(committed)} chunks of this upload: resume from chunk {len(committed)}"
            )
        # Resuming from an earlier chunk than committed is fine (the sender asked before a broken
        # stream's last chunks were committed): chunks are deterministic, the later ones are rewritten.
        hashes = committed[:first_chunk]
        blob_writer = await self._run(self.blobs.writer, state.blob, upload.chunk_size, first_chunk)
        sink = _Sink(blob_writer)
        expected = len(hashes)
        # Chunk i is hashed and stored in a worker thread while chunk i+1 arrives: one chunk in flight.
        # It is awaited through a shield: a cancelled stream (connection cut) still lets it finish
        # before the commit, so the writer is never used by two threads at once.
        storing: asyncio.Future[bytes] | None = None
        try:
            async for index, data in chunks:
                if expected == n:
                    raise InvalidRequest(f"chunk {index} after the last chunk {n - 1}")
                if index != expected:
                    raise InvalidRequest(f"chunk {index} out of sequence: expected chunk {expected}")
                length = _stream.ciphertext_length(upload.size, upload.chunk_size, index)
                if len(data) != length:
                    raise InvalidRequest(f"chunk {index} is {len(data)} bytes; it must be {length}")
                if storing is not None:
                    hashes.append(await asyncio.shield(storing))
                storing = self._start(sink.store, data)
                expected += 1
            if storing is not None:
                hashes.append(await asyncio.shield(storing))
                storing = None
        finally:
            # Whatever arrived before the stream ended, broke or was refused stays, for a resume. The
            # writer is used by one thread at a time: the chunk in flight is stored before the commit.
            await asyncio.shield(self._run_after(storing, _commit_and_close, blob_writer))
        if expected < n:
            raise InvalidRequest(
                f"the upload stream ended before chunk {expected} of {n}: resume from chunk {expected}"
            )
        digest = _stream.attachment_digest(hashes)
        await self._run(self.blobs.rename, state.blob, digest.hex())
        index = await self._writer.submit(CompleteUpload(upload, digest, n, first_chunk, str(caller.spiffe_id)))
        log.info(
            "attachment.uploaded",
            message_id=upload.message_id,
            attachment=upload.index,
            uploader=upload.uploader,
            size=upload.size,
            chunks=n,
        )
        return Uploaded(digest, n, index)

    async def progress(self, caller: Principal, message_id: str, index: int) -> UploadProgress:
        """How many chunks of the caller's upload are committed, and whether it is complete."""
        self.check_name(message_id, index)
        row = await self._read(
            lambda conn: conn.execute(
                sa.select(A.state, A.sha256, A.blob, A.size, A.chunk_size).where(
                    A.uploader == caller.name, A.message_id == message_id, A.idx == index
                )
            ).first()
        )
        if row is None:
            raise NotFound(f"{caller.name} has no upload of attachment {index} of message {message_id}")
        n = _stream.chunk_count(row.size, row.chunk_size)
        if row.state != tables.UPLOADING:
            return UploadProgress(n, True, bytes(row.sha256))
        committed = len(await self._run(self.blobs.committed, row.blob))
        return UploadProgress(min(committed, n), False, b"")

    async def authorise_download(self, caller: Principal, message_id: str, index: int, first_chunk: int) -> Download:
        """Check that the caller is a recipient of the message, not recalled or expired; audit the download."""
        self.check_name(message_id, index)
        d = store_tables.deliveries.c
        row = await self._read(
            lambda conn: conn.execute(
                sa.select(A.blob, A.size, A.chunk_size, A.sha256)
                .join(store_tables.deliveries, (d.message_id == A.message_id) & (d.recipient == caller.name))
                .where(
                    A.message_id == message_id,
                    A.idx == index,
                    A.state == tables.ATTACHED,
                    d.state <= broker_pb2.ACKNOWLEDGED,
                )
            ).first()
        )
        if row is None:
            purged = await self._read(
                lambda conn: conn.execute(
                    sa.select(A.purge_rule)
                    .join(store_tables.deliveries, (d.message_id == A.message_id) & (d.recipient == caller.name))
                    .where(A.message_id == message_id, A.idx == index, A.state == tables.PURGED)
                ).scalar()
            )
            if purged is not None:  # a recipient of the message: it may know why
                raise NotFound(f"attachment {index} of message {message_id} was purged under retention rule '{purged}'")
            raise NotFound(f"no attachment {index} of message {message_id} for {caller.name}")
        n = _stream.chunk_count(row.size, row.chunk_size)
        if not 0 <= first_chunk < n:
            raise InvalidRequest(f"first_chunk {first_chunk} is outside 0..{n - 1}")
        await self._writer.submit(
            RecordDownload(message_id, index, caller.name, bytes(row.sha256), first_chunk, str(caller.spiffe_id))
        )
        return Download(row.blob, row.size, row.chunk_size, first_chunk)

    async def chunks(self, download: Download) -> AsyncIterator[tuple[int, bytes]]:
        """The stored chunks from the first one asked for, each checked against its recorded hash.

        The next chunk is read and checked in a worker thread while this one is sent: two chunks in
        memory. As for uploads, the read in flight finishes before the source is closed.
        """
        source = self.blobs.read(download.blob, download.size, download.chunk_size, download.first_chunk)
        n = _stream.chunk_count(download.size, download.chunk_size)
        reading: asyncio.Future[bytes] | None = None
        try:
            for index in range(download.first_chunk, n):
                if reading is None:
                    reading = self._start(_next_verified, source, index)
                data = await asyncio.shield(reading)
                reading = self._start(_next_verified, source, index + 1) if index + 1 < n else None
                yield index, data
        finally:
            await asyncio.shield(self._run_after(reading, _close, source))

    async def sweep(self) -> int:
        """Delete expired uploads and the attachments of expired messages; return how many."""
        now = now_us()
        m = store_tables.messages.c
        expired_uploads = (A.state != tables.ATTACHED) & (A.expires_us <= now)
        expired_messages = (A.state == tables.ATTACHED) & A.message_id.in_(
            sa.select(m.message_id).where(m.expires_us <= now)
        )
        deleted = 0
        for where, reason in ((expired_uploads, "upload expired unreferenced"), (expired_messages, "message expired")):
            found = await self._count(where)
            if found:
                deleted += await self._writer.submit(
                    DeleteAttachments(self.blobs, where, reason, f"broker:{self._config.node}")
                )
        return deleted

    async def _count(self, where: sa.ColumnElement[bool]) -> int:
        query = sa.select(sa.func.count()).select_from(tables.attachments).where(where)

        def count(conn: Connection) -> int:
            found: int = conn.execute(query).scalar_one()
            return found

        return await self._read(count)

    async def sweep_forever(self) -> None:
        """Sweep every `attachment_sweep_seconds` until cancelled."""
        while True:
            await asyncio.sleep(self._config.attachment_sweep_seconds)
            try:
                await self.sweep()
            except Exception:  # keep sweeping later; the failure is logged with its cause
                log.exception("attachment.sweep_failed")


def _next_verified(source: Iterator[tuple[bytes, bytes]], index: int) -> bytes:
    item = next(source, None)
    if item is None:
        raise StorageCorrupt(f"stored attachment is missing chunk {index}")
    data, sha256 = item
    if hashlib.sha256(data).digest() != sha256:
        log.error("attachment.chunk_corrupt", chunk=index)
        raise StorageCorrupt(f"stored chunk {index} does not match its recorded hash")
    return data


def _close(source: Iterator[tuple[bytes, bytes]]) -> None:
    close = getattr(source, "close", None)
    if close is not None:
        close()
