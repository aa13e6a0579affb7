"""DSSE-style pre-authentication encoding (PAE) for every signature and binding in the protocol.

Every byte string that is signed, used as AEAD associated data or as HPKE `info` is built here, so
that each use has its own type string (domain separation: a signature made for one purpose can never
be replayed as another) and the encoding is injective (no two different field lists encode to the
same bytes, because every field is length-prefixed). The format follows DSSE v1
(https://github.com/secure-systems-lab/dsse/blob/master/protocol.md) with our own prefix::

    PAE(type, f1, ..., fn) = "ISBv1" SP LEN(type) SP type (SP LEN(fi) SP fi)*

where SP is one space (0x20) and LEN is the byte length in ASCII decimal without leading zeros.
The number of fields is fixed for each type string, so the encoding stays unambiguous.

Structured values become single fields before they enter a PAE:

- strings: UTF-8; integers and enum values: ASCII decimal (`encode_int`);
- lists (recipients, handling): `encode_list`, which length-prefixes each item the same way,
  `LEN(item) SP item SP` for each item, so no separator character is reserved in names;
- timestamps: `"<seconds>.<nanos as 9 digits>"`, and the empty string when unset.

The functions at the end build every protocol input from these rules; `tests/vectors/` records
their output so that other implementations can check theirs byte for byte.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Final

from google.protobuf import timestamp_pb2

from broker.api.v1 import envelope_pb2

PREFIX: Final = b"ISBv1"

# The type strings of the protocol, one per purpose. Never reuse one for another purpose.
HEADER: Final = "isb.v1.header"  # outer signature over the serialized header
CONTENT: Final = "isb.v1.content"  # inner signature over plaintext and its context
CONTENT_AAD: Final = "isb.v1.content-aad"  # AES-GCM associated data (header routing fields)
KEY_WRAP: Final = "isb.v1.key-wrap"  # HPKE info for one recipient's wrapped content key
WRAPPED_KEY: Final = "isb.v1.wrapped-key"  # one wrapped key inside the wrapped-keys digest
KEY_BUNDLE: Final = "isb.v1.key-bundle"  # signature over a serialized key bundle
RECEIPT: Final = "isb.v1.receipt"  # signature over a serialized receipt
FORWARD_CONSENT: Final = "isb.v1.forward-consent"  # the original sender's consent to a forward
ATTACHMENT_KEY: Final = "isb.v1.attachment-key"  # HKDF info deriving one attachment's key


def _len(data: bytes) -> bytes:
    return b"%d" % len(data)


def pae(type_: str, *fields: bytes) -> bytes:
    """Encode `type_` and `fields` as `"ISBv1" SP LEN(type) SP type (SP LEN(field) SP field)*`."""
    type_bytes = type_.encode("utf-8")
    parts = [PREFIX, b" ", _len(type_bytes), b" ", type_bytes]
    for field in fields:
        parts += (b" ", _len(field), b" ", field)
    return b"".join(parts)


def encode_list(items: Iterable[bytes]) -> bytes:
    """Encode a list of byte strings as one field: `LEN(item) SP item SP` for each item, in order."""
    return b"".join(b"".join((_len(item), b" ", item, b" ")) for item in items)


def encode_int(value: int) -> bytes:
    """Encode a non-negative integer as ASCII decimal, as PAE lengths are."""
    if value < 0:
        raise ValueError(f"PAE integers are non-negative, got {value}")
    return b"%d" % value


def encode_timestamp(value: timestamp_pb2.Timestamp, *, present: bool = True) -> bytes:
    """Encode a timestamp as `<seconds>.<nanos:09d>`, or as empty bytes when the field is unset."""
    if not present:
        return b""
    return f"{value.seconds}.{value.nanos:09d}".encode("ascii")


def encode_handling(handling: envelope_pb2.Handling) -> bytes:
    """Encode a handling code as the list (tlp, classification, source reliability, accuracy)."""
    return encode_list(
        (
            encode_int(handling.tlp),
            handling.classification.encode("utf-8"),
            encode_int(handling.source_reliability),
            encode_int(handling.information_accuracy),
        )
    )


def encode_recipients(recipients: Iterable[str], *, sort: bool) -> bytes:
    """Encode a recipient list; sorted (by UTF-8 bytes) where only the set matters."""
    encoded = [recipient.encode("utf-8") for recipient in recipients]
    return encode_list(sorted(encoded) if sort else encoded)


def encode_attachments(attachments: Iterable[envelope_pb2.AttachmentRef]) -> bytes:
    """Encode the attachment references as one list field, in header order; each item is itself the
    list (sha256, size, chunk_size, media_type). No attachments: the empty string."""
    return encode_list(
        encode_list((a.sha256, encode_int(a.size), encode_int(a.chunk_size), a.media_type.encode("utf-8")))
        for a in attachments
    )


def header_signing_input(header_bytes: bytes) -> bytes:
    """What the outer signature covers: the exact serialized header bytes."""
    return pae(HEADER, header_bytes)


def content_signing_input(header: envelope_pb2.Header, content_type: str, body: bytes) -> bytes:
    """What the inner signature covers: the plaintext with its context taken from the header.

    Binding the sorted recipient list defeats surreptitious forwarding (RFC 2634 triple wrap): a
    recipient who re-sends the content to a third agency under a new header changes the context, and
    the sender's inner signature no longer verifies.
    """
    return pae(
        CONTENT,
        header.message_id.encode("utf-8"),
        header.sender.encode("utf-8"),
        encode_recipients(header.recipients, sort=True),
        encode_int(header.kind),
        encode_handling(header.handling),
        encode_timestamp(header.created, present=header.HasField("created")),
        encode_attachments(header.attachments),
        content_type.encode("utf-8"),
        body,
    )


def content_aad(header: envelope_pb2.Header) -> bytes:
    """The AES-GCM associated data: every header field except the two digests.

    The header carries the SHA-256 of the ciphertext, so the ciphertext cannot be computed with the
    final header bytes as associated data (circular). Instead the associated data is this canonical
    encoding of all other header fields, which the recipient recomputes from the signed header it
    received: a ciphertext moved under any other header (another id, sender, recipient list, kind,
    handling, time...) fails to decrypt, and the digests are bound by the outer signature instead.
    Recipients are encoded in header order here, binding the header exactly. The attachment
    references are bound too: their digests are what the attachments' integrity rests on.
    """
    return pae(
        CONTENT_AAD,
        encode_int(header.version),
        header.message_id.encode("utf-8"),
        header.sender.encode("utf-8"),
        header.sender_cert_sha256,
        encode_recipients(header.recipients, sort=False),
        encode_int(header.kind),
        encode_handling(header.handling),
        encode_int(header.priority),
        encode_timestamp(header.created, present=header.HasField("created")),
        encode_timestamp(header.expires, present=header.HasField("expires")),
        header.in_reply_to.encode("utf-8"),
        header.watchlist_id.encode("utf-8"),
        encode_int(header.watchlist_version),
        header.references.encode("utf-8"),
        encode_attachments(header.attachments),
    )


def attachment_key_info(version: int, message_id: str, index: int) -> bytes:
    """The HKDF `info` deriving attachment `index`'s key from the content key of message `message_id`."""
    return pae(ATTACHMENT_KEY, encode_int(version), message_id.encode("utf-8"), encode_int(index))


def key_wrap_info(version: int, message_id: str, recipient: str) -> bytes:
    """The HPKE `info` for one recipient: binds protocol version, message id and recipient id."""
    return pae(KEY_WRAP, encode_int(version), message_id.encode("utf-8"), recipient.encode("utf-8"))


def wrapped_keys_sha256(wrapped_keys: Iterable[envelope_pb2.WrappedKey]) -> bytes:
    """SHA-256 over `PAE("isb.v1.wrapped-key", recipient, key_id, enc)` of each key, by recipient.

    Sorting makes the digest independent of the order on the wire; callers must have refused
    duplicate recipients, so the order is total. Each PAE has exactly three fields, so the
    concatenation is unambiguous.
    """
    digest = hashlib.sha256()
    for key in sorted(wrapped_keys, key=lambda key: key.recipient.encode("utf-8")):
        digest.update(pae(WRAPPED_KEY, key.recipient.encode("utf-8"), key.key_id.encode("utf-8"), key.enc))
    return digest.digest()


def key_bundle_signing_input(bundle_bytes: bytes) -> bytes:
    """What a key bundle signature covers: the exact serialized bundle bytes."""
    return pae(KEY_BUNDLE, bundle_bytes)


def forward_consent_signing_input(consent_bytes: bytes) -> bytes:
    """What a forward consent signature covers: the exact serialized consent bytes."""
    return pae(FORWARD_CONSENT, consent_bytes)


def receipt_signing_input(receipt_bytes: bytes) -> bytes:
    """What a receipt signature covers: the exact serialized receipt bytes."""
    return pae(RECEIPT, receipt_bytes)
