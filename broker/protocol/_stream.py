"""The attachment streaming AEAD: STREAM (Hoang, Reyhanitabar, Rogaway, Vizár 2015) as age uses it,
on AES-256-GCM. Normative description: docs/protocol.md, section "Attachments".

- key: `HKDF-SHA256(ikm=content key of the message, salt="", info=PAE("isb.v1.attachment-key",
  version, message_id, index), L=32)`, so every attachment of every message has its own key, and
  only those who can unwrap the message's content key can derive it;
- chunk i of n: `AES-256-GCM(key, nonce = uint88_be(i) || last, plaintext chunk, aad = "")`, where
  `last` is 0x01 for chunk n-1 and 0x00 otherwise. The counter defeats reordering and swapping, the
  flag defeats truncation and extension (a stream that ends on a chunk without the flag, or
  continues after one with it, fails);
- the attachment digest: `SHA-256(SHA-256(c_0) || ... || SHA-256(c_{n-1}))` over the encrypted
  chunks, so the broker can resume an upload and re-verify stored chunks from per-chunk hashes
  without re-reading the whole blob.

These are sharp tools: the same key and counter must never encrypt two different plaintexts, which
holds because keys are derived per message and attachment, and messages have fresh content keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from broker.protocol import _pae
from broker.protocol.errors import VerificationError

TAG_LEN: Final = 16
KEY_LEN: Final = 32
# Chunk sizes a header may declare: small enough that a chunk is one gRPC message under the default
# limit with room to spare, large enough that a 2 GiB file is a few thousand chunks.
MIN_CHUNK_SIZE: Final = 16 * 1024
MAX_CHUNK_SIZE: Final = 1024 * 1024
DEFAULT_CHUNK_SIZE: Final = 1024 * 1024
_COUNTER_LIMIT: Final = 1 << 88


def attachment_key(content_key: bytes, version: int, message_id: str, index: int) -> bytes:
    """The AES-256-GCM key of attachment `index` of message `message_id`."""
    if len(content_key) != KEY_LEN:
        raise ValueError("the content key is 32 bytes")
    return HKDF(
        algorithm=hashes.SHA256(), length=KEY_LEN, salt=None, info=_pae.attachment_key_info(version, message_id, index)
    ).derive(content_key)


def chunk_count(size: int, chunk_size: int) -> int:
    """How many chunks a `size`-byte attachment has: at least one (an empty file is one empty chunk)."""
    if size < 0 or chunk_size <= 0:
        raise ValueError("size must be non-negative and chunk_size positive")
    return max(1, -(-size // chunk_size))


def plaintext_length(size: int, chunk_size: int, index: int) -> int:
    """The plaintext length of chunk `index`."""
    n = chunk_count(size, chunk_size)
    if not 0 <= index < n:
        raise ValueError(f"chunk {index} out of range 0..{n - 1}")
    return chunk_size if index < n - 1 else size - (n - 1) * chunk_size


def ciphertext_length(size: int, chunk_size: int, index: int) -> int:
    """The length of encrypted chunk `index`: its plaintext length plus the 16-byte tag."""
    return plaintext_length(size, chunk_size, index) + TAG_LEN


def ciphertext_offset(chunk_size: int, index: int) -> int:
    """Where encrypted chunk `index` starts in the concatenated ciphertext."""
    return index * (chunk_size + TAG_LEN)


def nonce(index: int, *, last: bool) -> bytes:
    """The 12-byte nonce of chunk `index`: 11-byte big-endian counter, then the last-chunk flag."""
    if not 0 <= index < _COUNTER_LIMIT:
        raise ValueError("chunk counter out of range")
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def encrypt_chunk(aead: AESGCM, index: int, plaintext: bytes, *, last: bool) -> bytes:
    """Encrypt one chunk (`aead` holds the attachment key)."""
    return aead.encrypt(nonce(index, last=last), plaintext, None)


def decrypt_chunk(aead: AESGCM, index: int, ciphertext: bytes, *, last: bool) -> bytes:
    """Decrypt and authenticate one chunk; raise `VerificationError` if it is not chunk `index`
    of this attachment (altered, moved, swapped, or its last-chunk flag does not match)."""
    try:
        return aead.decrypt(nonce(index, last=last), ciphertext, None)
    except InvalidTag:
        position = "last chunk" if last else "chunk"
        raise VerificationError(
            f"attachment chunk {index} does not authenticate as {position} {index}: "
            "altered, reordered, swapped or truncated"
        ) from None


def attachment_digest(chunk_hashes: Iterable[bytes]) -> bytes:
    """The attachment digest from the SHA-256 of each encrypted chunk, in order."""
    digest = hashlib.sha256()
    for h in chunk_hashes:
        digest.update(h)
    return digest.digest()
