"""Encrypting and opening attachments (docs/protocol.md "Attachments"; construction in `_stream`).

- `AttachmentEncryptor` (sender): reads a plaintext file chunk by chunk and yields encrypted chunks
  from any chunk index, so an interrupted upload resumes without re-sending what the broker holds.
  It computes the attachment digest itself: the sender signs its own digest, never the broker's.
- `AttachmentReader` (recipient): a readable binary stream over encrypted chunks that decrypts and
  verifies each chunk as it is read and, at the end, the digest the signed header names. A reader
  that raised `VerificationError` stays failed: nothing read after a bad chunk is trusted.

Memory stays at a few chunks whatever the size: nothing here holds a whole attachment.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.api.v1 import envelope_pb2
from broker.protocol import _stream
from broker.protocol._stream import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, attachment_key
from broker.protocol.errors import VerificationError
from broker.protocol.validation import MAX_ATTACHMENT_SIZE, MAX_ATTACHMENTS, MEDIA_TYPE, check_attachment_ref

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_ATTACHMENTS",
    "MAX_ATTACHMENT_SIZE",
    "MAX_CHUNK_SIZE",
    "MEDIA_TYPE",
    "MIN_CHUNK_SIZE",
    "AttachmentEncryptor",
    "AttachmentReader",
    "attachment_key",
    "check_attachment_ref",
]


class AttachmentEncryptor:
    """Encrypt one plaintext file as attachment `index` of a message, chunk by chunk."""

    def __init__(
        self,
        key: bytes,
        source: BinaryIO,
        size: int,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        media_type: str = "application/octet-stream",
    ) -> None:
        if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be within {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}")
        if not MEDIA_TYPE.fullmatch(media_type):
            raise ValueError(f"media type {media_type!r} is not type/subtype")
        self._aead = AESGCM(key)
        self._source = source
        self.size = size
        self.chunk_size = chunk_size
        self.media_type = media_type
        self.chunks = _stream.chunk_count(size, chunk_size)
        self._hashes: list[bytes] = []  # SHA-256 of each encrypted chunk produced so far, 32 bytes each

    def encrypted_chunks(self, first: int = 0) -> Iterator[tuple[int, bytes]]:
        """Yield `(index, encrypted chunk)` from chunk `first` to the last, reading the file from there.

        Chunks before `first` whose hash is not known yet are encrypted (not yielded) for the digest.
        """
        if not 0 <= first <= self.chunks:
            raise ValueError(f"first chunk {first} out of range 0..{self.chunks}")
        start = min(first, len(self._hashes))
        self._source.seek(start * self.chunk_size)
        for index in range(start, self.chunks):
            length = _stream.plaintext_length(self.size, self.chunk_size, index)
            plaintext = self._source.read(length)
            if len(plaintext) != length:
                raise ValueError(f"the file ended at chunk {index}: it is shorter than the {self.size} bytes declared")
            ciphertext = _stream.encrypt_chunk(self._aead, index, plaintext, last=index == self.chunks - 1)
            if index == len(self._hashes):
                self._hashes.append(hashlib.sha256(ciphertext).digest())
            if index >= first:
                yield index, ciphertext

    def reference(self) -> envelope_pb2.AttachmentRef:
        """The header's reference to this attachment; every chunk must have been encrypted once."""
        if len(self._hashes) != self.chunks:
            raise ValueError("the attachment is not fully encrypted yet")
        return envelope_pb2.AttachmentRef(
            sha256=_stream.attachment_digest(self._hashes),
            size=self.size,
            chunk_size=self.chunk_size,
            media_type=self.media_type,
        )


class AttachmentReader(io.RawIOBase):
    """The plaintext of one attachment, decrypted and verified chunk by chunk as it is read.

    `chunks` yields the encrypted chunks in order from chunk 0 (it may resume a broken download
    behind the scenes). A chunk that does not authenticate, a stream that ends early or runs on,
    and a digest that is not the signed one all raise `VerificationError` from `read`.
    """

    def __init__(self, key: bytes, ref: envelope_pb2.AttachmentRef, chunks: Iterable[bytes]) -> None:
        super().__init__()
        check_attachment_ref(ref, "attachment")
        self._aead = AESGCM(key)
        self._ref = ref
        self._n = _stream.chunk_count(ref.size, ref.chunk_size)
        self._chunks = iter(chunks)
        self._next = 0
        self._digest = hashlib.sha256()
        self._buffer = memoryview(b"")
        self._failed: VerificationError | None = None

    @property
    def size(self) -> int:
        """The plaintext size the signed header declares."""
        return self._ref.size

    @property
    def media_type(self) -> str:
        """The media type the signed header declares."""
        return self._ref.media_type

    def readable(self) -> bool:
        """Always readable."""
        return True

    def _fill(self) -> bool:
        """Decrypt the next chunk into the buffer; False at the verified end."""
        if self._failed is not None:
            raise self._failed
        if self._next == self._n:
            self._verify_end()
            return False
        try:
            ciphertext = next(self._chunks)
        except StopIteration:
            raise self._fail(f"attachment ended after {self._next} of {self._n} chunks: truncated") from None
        index = self._next
        expected = _stream.ciphertext_length(self._ref.size, self._ref.chunk_size, index)
        if len(ciphertext) != expected:
            raise self._fail(f"attachment chunk {index} is {len(ciphertext)} bytes, expected {expected}")
        try:
            plaintext = _stream.decrypt_chunk(self._aead, index, ciphertext, last=index == self._n - 1)
        except VerificationError as exc:
            raise self._fail(str(exc)) from None
        self._digest.update(hashlib.sha256(ciphertext).digest())
        self._next += 1
        if self._next == self._n:
            self._verify_end()
        self._buffer = memoryview(plaintext)
        return True

    def _verify_end(self) -> None:
        if self._digest.digest() != self._ref.sha256:
            raise self._fail("attachment digest does not match the signed header")
        extra = next(self._chunks, None)
        if extra is not None:
            raise self._fail(f"attachment runs on past its last chunk {self._n - 1}")

    def _fail(self, message: str) -> VerificationError:
        self._failed = VerificationError(message)
        return self._failed

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        """Fill `buffer` with verified plaintext; 0 at the end."""
        while not self._buffer:
            if not self._fill():
                return 0
        n = min(len(buffer), len(self._buffer))
        buffer[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n

    def readall(self) -> bytes:
        """The rest of the plaintext (holds it whole: for small attachments only)."""
        parts = [bytes(self._buffer)]
        self._buffer = memoryview(b"")
        while self._fill():
            parts.append(bytes(self._buffer))
            self._buffer = memoryview(b"")
        return b"".join(parts)

    def copy_to(self, destination: BinaryIO) -> int:
        """Write the whole verified plaintext to `destination`, chunk by chunk; return its size."""
        total = 0
        while self._buffer or self._fill():
            destination.write(self._buffer)
            total += len(self._buffer)
            self._buffer = memoryview(b"")
        return total
