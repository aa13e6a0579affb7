"""Attachments in the SDK: encrypted uploads that resume, and verified downloads that resume.

`AgencyClient.send(..., attachments=[Path | file | Attachment])` uploads each attachment before
the envelope that references it; `ReceivedMessage.attachments` lists `ReceivedAttachment`s whose
`open()` is a readable binary stream, decrypted and verified chunk by chunk as it is read
(docs/protocol.md "Attachments"). Neither side ever holds a whole attachment in memory. A dropped
connection is retried with a growing pause, from the first chunk the broker does not hold (upload)
or the first chunk not yet received (download).
"""

from __future__ import annotations

import mimetypes
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, Generic, TypeVar

import grpc
import structlog

from broker.api.v1 import broker_pb2, broker_pb2_grpc, envelope_pb2
from broker.protocol import _stream
from broker.protocol.attachments import DEFAULT_CHUNK_SIZE, AttachmentEncryptor, AttachmentReader
from clients.errors import ClientError, VerificationError, protocol_errors

log = structlog.get_logger(__name__)

# Progress of one transfer: (bytes done, bytes in all).
Progress = Callable[[int, int], None]
RETRYABLE: Final = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
_PAUSE_FIRST, _PAUSE_MAX = 0.2, 5.0
# Encrypted chunks prepared ahead of the network: the next chunks are read, encrypted and hashed
# while gRPC sends this one (it waits for each message to be sent before asking for the next).
READ_AHEAD: Final = 2
T = TypeVar("T")


@dataclass(frozen=True)
class Attachment:
    """A file to attach: a path or a seekable binary file, and its media type (guessed from the name if None)."""

    source: Path | BinaryIO
    media_type: str | None = None

    def media(self) -> str:
        """The media type to declare."""
        if self.media_type:
            return self.media_type
        name = self.source if isinstance(self.source, Path) else Path(getattr(self.source, "name", "") or "x")
        guessed, _ = mimetypes.guess_type(str(name))
        return guessed or "application/octet-stream"


def as_attachment(item: Path | BinaryIO | Attachment | str) -> Attachment:
    """Accept a path, a file or an `Attachment`."""
    if isinstance(item, Attachment):
        return item
    if isinstance(item, str):
        return Attachment(Path(item))
    return Attachment(item)


class _Retry:
    """A bounded number of retries with a growing pause, reset by progress."""

    def __init__(self, attempts: int) -> None:
        self.attempts = attempts
        self.failures = 0
        self.pause = _PAUSE_FIRST

    def progressed(self) -> None:
        self.failures, self.pause = 0, _PAUSE_FIRST

    def wait_or_raise(self, exc: grpc.RpcError, translate: Callable[[grpc.RpcError], ClientError]) -> None:
        if exc.code() not in RETRYABLE or self.failures >= self.attempts:
            raise translate(exc) from exc
        self.failures += 1
        log.warning("attachment.retrying", pause=self.pause, code=exc.code().name)
        time.sleep(self.pause)
        self.pause = min(self.pause * 2, _PAUSE_MAX)


class _ReadAhead(Generic[T]):
    """Runs an iterator in a thread, at most `depth` items ahead of its consumer.

    `close()` stops the thread and waits for it, so that the iterator's source (a file, an
    encryptor) is never used by two threads: a retry starts a new one only after the old one closed.
    """

    _END: Final = object()

    def __init__(self, items: Iterator[T], depth: int = READ_AHEAD) -> None:
        self._items = items
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="isb-attachment-read-ahead")
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
            except queue.Full:
                continue
            return True
        return False

    def _run(self) -> None:
        try:
            for item in self._items:
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it  # noqa: BLE001
            self._put(exc)
        else:
            self._put(self._END)

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]

    def close(self) -> None:
        """Stop reading ahead and wait for the thread to end."""
        self._stop.set()
        self._thread.join()


def upload(
    stub: broker_pb2_grpc.BrokerServiceStub,
    translate: Callable[[grpc.RpcError], ClientError],
    *,
    key: bytes,
    message_id: str,
    index: int,
    attachment: Attachment,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Progress | None = None,
    retries: int = 8,
    timeout: float | None = None,
) -> envelope_pb2.AttachmentRef:
    """Encrypt and upload one attachment; resume after a dropped connection; return its reference."""
    source = attachment.source
    if isinstance(source, Path):
        with source.open("rb") as file:
            return upload(
                stub,
                translate,
                key=key,
                message_id=message_id,
                index=index,
                attachment=Attachment(file, attachment.media()),
                chunk_size=chunk_size,
                progress=progress,
                retries=retries,
                timeout=timeout,
            )
    if not source.seekable():
        raise ClientError("an attachment must be a seekable file (a resumed upload reads it again)")
    size = source.seek(0, os.SEEK_END)
    encryptor = AttachmentEncryptor(key, source, size, chunk_size=chunk_size, media_type=attachment.media())
    upload_key = broker_pb2.UploadKey(message_id=message_id, attachment=index)
    retry = _Retry(retries)
    first = 0
    while True:
        ahead = _ReadAhead(encryptor.encrypted_chunks(first))

        def requests(
            first: int = first,
            ahead: _ReadAhead[tuple[int, bytes]] = ahead,
        ) -> Iterator[broker_pb2.UploadRequest]:
            yield broker_pb2.UploadRequest(
                start=broker_pb2.UploadStart(
                    key=upload_key, size=size, chunk_size=chunk_size, media_type=encryptor.media_type, first_chunk=first
                )
            )
            for i, data in ahead:
                yield broker_pb2.UploadRequest(chunk=broker_pb2.AttachmentChunk(index=i, data=data))
                if progress is not None:
                    progress(min(size, (i + 1) * chunk_size), size)

        try:
            response = stub.UploadAttachment(requests(), timeout=timeout)
            break
        except grpc.RpcError as exc:
            retry.wait_or_raise(exc, translate)
        finally:
            ahead.close()
        status = _upload_status(stub, translate, upload_key, retry)
        if status.complete:
            response = broker_pb2.UploadResponse(sha256=status.sha256)
            list(encryptor.encrypted_chunks(encryptor.chunks))  # hashes of any chunk not encrypted yet
            break
        if status.next_chunk > first:
            retry.progressed()
        first = status.next_chunk
    reference = encryptor.reference()
    if response.sha256 != reference.sha256:
        raise VerificationError("the broker's digest of the upload differs from ours: it did not store what we sent")
    return reference


def _upload_status(
    stub: broker_pb2_grpc.BrokerServiceStub,
    translate: Callable[[grpc.RpcError], ClientError],
    key: broker_pb2.UploadKey,
    retry: _Retry,
) -> broker_pb2.UploadStatus:
    while True:
        try:
            status: broker_pb2.UploadStatus = stub.GetUpload(key, timeout=10)
        except grpc.RpcError as exc:
            if exc.code() is grpc.StatusCode.NOT_FOUND:  # the broken stream never got as far as its start
                return broker_pb2.UploadStatus(next_chunk=0)
            retry.wait_or_raise(exc, translate)
            continue
        return status


class _VerifiedStream(AttachmentReader):
    """`AttachmentReader` raising the SDK's errors (`clients.errors.VerificationError`)."""

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        """Fill `buffer` with verified plaintext; 0 at the end."""
        with protocol_errors():
            return super().readinto(buffer)

    def readall(self) -> bytes:
        """The rest of the plaintext (holds it whole: for small attachments only)."""
        with protocol_errors():
            return super().readall()

    def copy_to(self, destination: BinaryIO) -> int:
        """Write the whole verified plaintext to `destination`; return its size."""
        with protocol_errors():
            return super().copy_to(destination)


class ReceivedAttachment:
    """One attachment of a received message, as its verified header describes it."""

    def __init__(
        self,
        stub: broker_pb2_grpc.BrokerServiceStub,
        translate: Callable[[grpc.RpcError], ClientError],
        message_id: str,
        index: int,
        ref: envelope_pb2.AttachmentRef,
        key: bytes,
    ) -> None:
        self._stub = stub
        self._translate = translate
        self.message_id = message_id
        self.index = index
        self.ref = ref
        self._key = key

    @property
    def size(self) -> int:
        """Plaintext size, as signed by the sender."""
        return self.ref.size

    @property
    def media_type(self) -> str:
        """Media type, as signed by the sender."""
        return self.ref.media_type

    @property
    def sha256(self) -> bytes:
        """The attachment digest (over the encrypted chunks), as signed by the sender."""
        return self.ref.sha256

    def __repr__(self) -> str:
        return (
            f"ReceivedAttachment(message_id={self.message_id!r}, index={self.index}, size={self.size}, "
            f"media_type={self.media_type!r})"
        )

    def open(self, *, progress: Progress | None = None, retries: int = 8) -> AttachmentReader:
        """A readable stream of the plaintext; `read` raises `VerificationError` at the first bad chunk."""
        with protocol_errors():
            return _VerifiedStream(self._key, self.ref, self._chunks(progress, retries))

    def save(self, path: Path, *, progress: Progress | None = None) -> int:
        """Download, verify and write the plaintext to `path` (0600); return its size.

        The file is written under a temporary name and renamed only once every chunk and the digest
        verified, so a refused attachment leaves no file behind.
        """
        partial = path.with_name(path.name + ".part")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                size = self.open(progress=progress).copy_to(out)
            partial.replace(path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return size

    def _chunks(self, progress: Progress | None, retries: int) -> Iterator[bytes]:
        n = _stream.chunk_count(self.ref.size, self.ref.chunk_size)
        retry = _Retry(retries)
        received = 0
        while received < n:
            call = self._stub.DownloadAttachment(
                broker_pb2.DownloadRequest(message_id=self.message_id, attachment=self.index, first_chunk=received)
            )
            try:
                for chunk in call:
                    yield chunk.data
                    received += 1
                    retry.progressed()
                    if progress is not None:
                        progress(min(self.ref.size, received * self.ref.chunk_size), self.ref.size)
            except grpc.RpcError as exc:
                retry.wait_or_raise(exc, self._translate)
            else:
                return  # the broker ended the stream: the reader checks that nothing is missing
            finally:
                call.cancel()


__all__ = ["Attachment", "Progress", "ReceivedAttachment", "as_attachment", "upload"]
