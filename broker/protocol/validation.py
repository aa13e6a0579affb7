"""The shared validation layer: the range or format of every field the protocol carries.

The broker runs these checks before it stores anything; the SDK runs them before it opens
anything. They raise `ProtocolError` (`OutOfRange` for a time outside the window the broker
accepts), whose message names the field, and they never quote a value longer than an
identifier: an oversized field is described by its length only, so a refusal cannot be used to
bloat the audit log or the caller's error. The limits are specified in docs/protocol.md,
section "Limits and refusals".

Nothing here verifies a signature; see `envelope.verify_outer` and friends, which call these
checks on what they have verified.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Sequence
from types import TracebackType
from typing import Final

from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from broker.api.v1 import broker_pb2, envelope_pb2, watchlist_pb2
from broker.identity import AGENCY_ID, GROUP_NAME
from broker.protocol._stream import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE
from broker.protocol.errors import OutOfRange, ProtocolError, VerificationError

__all__ = [
    "DEFAULT_MAX_CLOCK_SKEW",
    "LEGAL_BASIS",
    "MAX_ATTACHMENTS",
    "MAX_ATTACHMENT_SIZE",
    "MAX_BATCH_SIZE",
    "MAX_CASE_REFERENCE",
    "MAX_CLASSIFICATION",
    "MAX_HEADER_BYTES",
    "MAX_OPERATOR",
    "MAX_RECIPIENTS",
    "MAX_TIMESTAMP_SECONDS",
    "MEDIA_TYPE",
    "MIN_TIMESTAMP_SECONDS",
    "check_agency_id",
    "check_attachment_ref",
    "check_batch_signature",
    "check_created_skew",
    "check_directory_request",
    "check_envelope",
    "check_forward_consent",
    "check_header",
    "check_justification",
    "check_key_bundle",
    "check_message_id",
    "check_receipt",
    "check_signed",
    "check_text",
    "check_timestamp",
    "check_watchlist_request",
    "parse_header",
    "require_aware",
    "verifying",
]

# google.protobuf.Timestamp's documented range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
MIN_TIMESTAMP_SECONDS: Final = -62_135_596_800
MAX_TIMESTAMP_SECONDS: Final = 253_402_300_799
DEFAULT_MAX_CLOCK_SKEW: Final = dt.timedelta(minutes=10)
MAX_HEADER_BYTES: Final = 64 * 1024
MAX_RECIPIENTS: Final = 256  # the broker's default `max_recipients`; a deployment may lower it
MAX_WRAPPED_KEYS: Final = 4096  # recipients after group expansion
MAX_KEY_ID: Final = 128
MAX_WRAPPED_KEY_BYTES: Final = 4096  # ML-KEM-768+X25519 encapsulation and sealed key: about 1,200
MAX_SIGNATURE_BYTES: Final = 256  # ECDSA P-256 DER: at most 72
MAX_BATCH_SIZE: Final = 4096  # leaves of one batch signature (section 21): a path of at most 12 hashes
MAX_BATCH_PATH: Final = (MAX_BATCH_SIZE - 1).bit_length()
MAX_CLASSIFICATION: Final = 64
# Attachments (docs/protocol.md "Attachments"); brokers configure lower size limits (default 2 GiB).
MAX_ATTACHMENTS: Final = 16
MAX_ATTACHMENT_SIZE: Final = 1 << 40  # 1 TiB
# RFC 6838 section 4.2 restricted names, type/subtype, at most 127 characters each.
MEDIA_TYPE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")
MAX_WATCHLIST_ID: Final = 120
MAX_TITLE: Final = 200
MAX_REASON: Final = 1024
MAX_PUBLIC_KEY_BYTES: Final = 2048  # ML-KEM-768 encapsulation key and X25519: 1,216
MAX_COUNTER: Final = 2**63 - 1  # versions and counters are stored as signed 64-bit integers
MAX_LIST: Final = 1000  # agencies of one directory query, receipts of one Ack
MAX_ENTRY_TYPES: Final = 32
MAX_SUBSCRIBERS: Final = 200
# Justification (docs/protocol.md section 22, Justification): a short code, and two opaque
# references that are never personal data; printable text only, so that an audit entry shows
# what was asserted.
LEGAL_BASIS: Final = re.compile(r"[A-Z0-9][A-Z0-9._-]{0,31}")
MAX_CASE_REFERENCE: Final = 128
MAX_OPERATOR: Final = 128
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SHA256: Final = 32

# Canonical lowercase text form only: the id is an idempotency key, so one UUID has one spelling.
_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_UUID7: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
# As broker.identity (DESIGN.md section 2), repeated so that this module needs nothing of the broker's.
_ADDRESS_MAX: Final = 40


# The numbers of each enum, once: protobuf's `EnumTypeWrapper.values()` builds a new list per call,
# and a header checks five enums (issue 19: a fifth of the header check's time).
_ENUM_NUMBERS: dict[object, frozenset[int]] = {}


def _numbers(enum: object) -> frozenset[int]:
    numbers = _ENUM_NUMBERS.get(enum)
    if numbers is None:
        numbers = frozenset(enum.values())  # type: ignore[attr-defined]
        _ENUM_NUMBERS[enum] = numbers
    return numbers


def _known(enum: object, value: int, name: str, *, unspecified_ok: bool) -> None:
    values = _numbers(enum)
    if value not in values or (value == 0 and not unspecified_ok):
        what = "unknown" if value not in values else "unspecified"
        raise ProtocolError(f"{name} is {what} ({value})", field=name)


class _Verifying:
    """`verifying()`'s context manager: a class, not a generator, since it wraps every check of every
    envelope and receipt (a generator-based one costs a generator and its frames per use)."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if isinstance(exc, ProtocolError) and not isinstance(exc, VerificationError):
            raise VerificationError(str(exc), field=exc.field) from None


_VERIFYING: Final = _Verifying()


def verifying() -> contextlib.AbstractContextManager[None]:
    """In a `verify_*` function: a field out of its range makes the signed object fail verification."""
    return _VERIFYING


def require_aware(value: dt.datetime, name: str) -> None:
    """Raise `ValueError` for a naive datetime: a caller's bug (no time zone), not data off the wire."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")


def check_text(value: str, name: str, limit: int) -> None:
    """At most `limit` characters."""
    if len(value) > limit:
        raise ProtocolError(f"{name} is {len(value)} characters long, over the limit of {limit}", field=name)


def _check_bytes(value: bytes, name: str, limit: int) -> None:
    if len(value) > limit:
        raise ProtocolError(f"{name} is {len(value)} bytes, over the limit of {limit}", field=name)


def _check_count(items: Sequence[object], name: str, limit: int) -> None:
    if len(items) > limit:
        raise ProtocolError(f"{name} has {len(items)} entries, over the limit of {limit}", field=name)


def check_message_id(value: str, name: str = "message_id", *, uuid7: bool = True) -> None:
    """A canonical lowercase UUID; version 7 (RFC 9562) when `uuid7` (new messages), any version otherwise."""
    if not value:
        raise ProtocolError(f"{name} is empty", field=name)
    if len(value) != 36:
        raise ProtocolError(f"{name} is {len(value)} characters long; a UUID has 36", field=name)
    if not _UUID.fullmatch(value):
        raise ProtocolError(f"{name} {value!r} is not a lowercase canonical UUID", field=name)
    if uuid7 and not _UUID7.fullmatch(value):
        raise ProtocolError(f"{name} {value!r} is not a UUIDv7 (RFC 9562); generate ids with uuid7()", field=name)


def check_agency_id(value: str, name: str) -> None:
    """An agency id such as FR-CUSTOMS."""
    if len(value) > _ADDRESS_MAX:
        check_text(value, name, _ADDRESS_MAX)
    if not AGENCY_ID.fullmatch(value):
        raise ProtocolError(f"{name} {value!r} is not an agency id", field=name)


def check_timestamp(ts: Timestamp, name: str) -> None:
    """Within google.protobuf.Timestamp's range, with nanos in [0, 1e9)."""
    if not MIN_TIMESTAMP_SECONDS <= ts.seconds <= MAX_TIMESTAMP_SECONDS:
        raise ProtocolError(f"{name} is outside the range of a protobuf Timestamp (years 1 to 9999)", field=name)
    if not 0 <= ts.nanos <= 999_999_999:
        raise ProtocolError(f"{name} has nanos {ts.nanos}, outside 0..999999999", field=name)


def _check_addresses(addresses: Sequence[str], name: str, limit: int) -> None:
    if len(addresses) > limit:
        raise ProtocolError(f"{name} has {len(addresses)} entries, over the limit of {limit}", field=name)
    for i, address in enumerate(addresses):
        if len(address) > _ADDRESS_MAX:
            check_text(address, f"{name}[{i}]", _ADDRESS_MAX)
        if not (AGENCY_ID.fullmatch(address) or GROUP_NAME.fullmatch(address)):
            raise ProtocolError(f"{name}[{i}] {address!r} is neither an agency id nor a group name", field=name)
    if len(set(addresses)) != len(addresses):
        raise ProtocolError(f"{name} names a recipient twice", field=name)


def check_header(header: envelope_pb2.Header, *, max_recipients: int = MAX_RECIPIENTS) -> None:
    """Every field of a header in its range or format (not its signature, not the caller's identity)."""
    check_message_id(header.message_id, "header.message_id")
    check_agency_id(header.sender, "header.sender")
    if len(header.sender_cert_sha256) != _SHA256:
        raise ProtocolError("header.sender_cert_sha256 is not a SHA-256 digest", field="header.sender_cert_sha256")
    if not header.recipients:
        raise ProtocolError("header.recipients: header has an empty recipient list", field="header.recipients")
    _check_addresses(header.recipients, "header.recipients", max_recipients)
    _known(envelope_pb2.Kind, header.kind, "header.kind", unspecified_ok=False)
    handling = header.handling
    _known(envelope_pb2.Tlp, handling.tlp, "header.handling.tlp", unspecified_ok=True)
    check_text(handling.classification, "header.handling.classification", MAX_CLASSIFICATION)
    _known(
        envelope_pb2.SourceReliability,
        handling.source_reliability,
        "header.handling.source_reliability",
        unspecified_ok=True,
    )
    _known(
        envelope_pb2.InformationAccuracy,
        handling.information_accuracy,
        "header.handling.information_accuracy",
        unspecified_ok=True,
    )
    _known(envelope_pb2.Priority, header.priority, "header.priority", unspecified_ok=True)
    if not header.HasField("created"):
        raise ProtocolError("header.created is missing", field="header.created")
    check_timestamp(header.created, "header.created")
    if header.HasField("expires"):
        check_timestamp(header.expires, "header.expires")
        if (header.expires.seconds, header.expires.nanos) <= (header.created.seconds, header.created.nanos):
            raise ProtocolError("header.expires is not later than header.created", field="header.expires")
    for name in ("in_reply_to", "references"):
        value = getattr(header, name)
        if value:
            check_message_id(value, f"header.{name}", uuid7=False)
    check_text(header.watchlist_id, "header.watchlist_id", MAX_WATCHLIST_ID)
    if header.watchlist_version > MAX_COUNTER:
        raise ProtocolError(f"header.watchlist_version is over {MAX_COUNTER}", field="header.watchlist_version")
    for name in ("ciphertext_sha256", "wrapped_keys_sha256"):
        if len(getattr(header, name)) != _SHA256:
            raise ProtocolError(f"header.{name} is not a SHA-256 digest", field=f"header.{name}")
    _check_count(header.attachments, "header.attachments", MAX_ATTACHMENTS)
    for i, ref in enumerate(header.attachments):
        check_attachment_ref(ref, f"header.attachments[{i}]")
    check_justification(header.legal_basis, header.case_reference, header.operator, "header.")


def check_justification(legal_basis: str, case_reference: str, operator: str, prefix: str = "") -> None:
    """A justification's three fields in format: each may be empty (the policy says which are required)."""
    if legal_basis and not LEGAL_BASIS.fullmatch(legal_basis):
        name = f"{prefix}legal_basis"
        if len(legal_basis) > 32:
            check_text(legal_basis, name, 32)
        raise ProtocolError(
            f"{name} {legal_basis!r} is not a legal-basis code (1 to 32 of A-Z 0-9 . _ -, "
            "starting with a letter or digit)",
            field=name,
        )
    for name, value, limit in (
        ("case_reference", case_reference, MAX_CASE_REFERENCE),
        ("operator", operator, MAX_OPERATOR),
    ):
        check_text(value, f"{prefix}{name}", limit)
        if _CONTROL.search(value):
            raise ProtocolError(f"{prefix}{name} contains a control character", field=f"{prefix}{name}")


def check_attachment_ref(ref: envelope_pb2.AttachmentRef, name: str) -> None:
    """An attachment reference within the protocol's bounds: digest, size, chunk size, media type."""
    if len(ref.sha256) != _SHA256:
        raise ProtocolError(f"{name}.sha256 is not a SHA-256 digest", field=f"{name}.sha256")
    if ref.size > MAX_ATTACHMENT_SIZE:
        raise ProtocolError(f"{name}.size is over {MAX_ATTACHMENT_SIZE}", field=f"{name}.size")
    if not MIN_CHUNK_SIZE <= ref.chunk_size <= MAX_CHUNK_SIZE:
        raise ProtocolError(
            f"{name}.chunk_size {ref.chunk_size} is outside {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}",
            field=f"{name}.chunk_size",
        )
    if len(ref.media_type) > 255 or not MEDIA_TYPE.fullmatch(ref.media_type):
        raise ProtocolError(f"{name}.media_type is not type/subtype (RFC 6838)", field=f"{name}.media_type")


def check_created_skew(
    header: envelope_pb2.Header, now: dt.datetime, skew: dt.timedelta = DEFAULT_MAX_CLOCK_SKEW
) -> None:
    """`header.created` within `skew` of `now` (the broker's clock); raise `OutOfRange` if not."""
    created = header.created.seconds + header.created.nanos / 1e9
    offset = created - now.timestamp()
    if abs(offset) > skew.total_seconds():
        side = "ahead of" if offset > 0 else "behind"
        raise OutOfRange(
            f"header.created is {abs(offset):.0f} s {side} the broker's clock, outside the allowed skew of "
            f"{skew.total_seconds():.0f} s (check the sender's clock)",
            field="header.created",
        )


def check_envelope(envelope: envelope_pb2.Envelope) -> None:
    """The envelope's own fields within their limits (the header is checked once parsed)."""
    if not envelope.header:
        raise ProtocolError("envelope has no header", field="envelope.header")
    _check_bytes(envelope.header, "envelope.header", MAX_HEADER_BYTES)
    _check_bytes(envelope.header_signature, "envelope.header_signature", MAX_SIGNATURE_BYTES)
    if envelope.HasField("batch_signature"):
        check_batch_signature(envelope.batch_signature, "envelope.batch_signature")
    _check_count(envelope.wrapped_keys, "envelope.wrapped_keys", MAX_WRAPPED_KEYS)
    for i, key in enumerate(envelope.wrapped_keys):
        check_agency_id(key.recipient, f"envelope.wrapped_keys[{i}].recipient")
        check_text(key.key_id, f"envelope.wrapped_keys[{i}].key_id", MAX_KEY_ID)
        _check_bytes(key.enc, f"envelope.wrapped_keys[{i}].enc", MAX_WRAPPED_KEY_BYTES)


def parse_header(envelope: envelope_pb2.Envelope, *, max_recipients: int = MAX_RECIPIENTS) -> envelope_pb2.Header:
    """The envelope's header, parsed and checked field by field, but not verified: the broker peeks
    at it before the signature check to refuse early and to name the message in its refusal."""
    check_envelope(envelope)
    try:
        header = envelope_pb2.Header.FromString(envelope.header)
    except DecodeError:
        raise ProtocolError("envelope header does not parse", field="envelope.header") from None
    check_header(header, max_recipients=max_recipients)
    return header


def check_signed(blob: bytes, signature: bytes, what: str, limit: int) -> None:
    """A signed structure's bytes and signature within their limits."""
    _check_bytes(blob, what, limit)
    _check_bytes(signature, f"{what} signature", MAX_SIGNATURE_BYTES)


def check_batch_signature(batch: envelope_pb2.BatchSignature, name: str) -> None:
    """A batch signature's fields in range (docs/protocol.md section 21): a signature, a tree of 2 to
    `MAX_BATCH_SIZE` leaves, an index in it and at most `MAX_BATCH_PATH` hashes of 32 bytes."""
    if not batch.signature:
        raise ProtocolError(f"{name} has no signature", field=f"{name}.signature")
    _check_bytes(batch.signature, f"{name}.signature", MAX_SIGNATURE_BYTES)
    if not 2 <= batch.tree_size <= MAX_BATCH_SIZE:
        raise ProtocolError(
            f"{name}.tree_size {batch.tree_size} is outside 2..{MAX_BATCH_SIZE}", field=f"{name}.tree_size"
        )
    if batch.leaf_index >= batch.tree_size:
        raise ProtocolError(
            f"{name}.leaf_index {batch.leaf_index} is not in a tree of {batch.tree_size}", field=f"{name}.leaf_index"
        )
    _check_count(batch.path, f"{name}.path", MAX_BATCH_PATH)
    for i, h in enumerate(batch.path):
        if len(h) != _SHA256:
            raise ProtocolError(f"{name}.path[{i}] is not a SHA-256 hash", field=f"{name}.path")


def check_key_bundle(bundle: envelope_pb2.KeyBundle) -> None:
    """A parsed key bundle's fields in range: agency, key id, suite, key size, validity window."""
    check_agency_id(bundle.agency, "key_bundle.agency")
    if not bundle.key_id:
        raise ProtocolError("key_bundle.key_id is empty", field="key_bundle.key_id")
    check_text(bundle.key_id, "key_bundle.key_id", MAX_KEY_ID)
    _known(envelope_pb2.KeySuite, bundle.suite, "key_bundle.suite", unspecified_ok=False)
    _check_bytes(bundle.public_key, "key_bundle.public_key", MAX_PUBLIC_KEY_BYTES)
    for name in ("not_before", "not_after"):
        if not bundle.HasField(name):
            raise ProtocolError(f"key_bundle.{name} is missing", field=f"key_bundle.{name}")
        check_timestamp(getattr(bundle, name), f"key_bundle.{name}")
    if (bundle.not_after.seconds, bundle.not_after.nanos) <= (bundle.not_before.seconds, bundle.not_before.nanos):
        raise ProtocolError("key_bundle.not_after is not later than not_before", field="key_bundle.not_after")


def check_receipt(receipt: envelope_pb2.Receipt) -> None:
    """A parsed receipt's fields in range."""
    check_message_id(receipt.message_id, "receipt.message_id", uuid7=False)
    check_agency_id(receipt.recipient, "receipt.recipient")
    if len(receipt.envelope_sha256) != _SHA256:
        raise ProtocolError("receipt.envelope_sha256 is not a SHA-256 digest", field="receipt.envelope_sha256")
    _known(envelope_pb2.ReceiptStatus, receipt.status, "receipt.status", unspecified_ok=False)
    if not receipt.HasField("time"):
        raise ProtocolError("receipt.time is missing", field="receipt.time")
    check_timestamp(receipt.time, "receipt.time")
    check_text(receipt.reason, "receipt.reason", MAX_REASON)


def check_forward_consent(consent: envelope_pb2.ForwardConsent) -> None:
    """A parsed forward consent's fields in range."""
    check_message_id(consent.message_id, "forward_consent.message_id", uuid7=False)
    check_agency_id(consent.forwarder, "forward_consent.forwarder")
    if not consent.recipients:
        raise ProtocolError("forward_consent.recipients is empty", field="forward_consent.recipients")
    _check_count(consent.recipients, "forward_consent.recipients", MAX_RECIPIENTS)
    for i, recipient in enumerate(consent.recipients):
        check_agency_id(recipient, f"forward_consent.recipients[{i}]")
    if len(set(consent.recipients)) != len(consent.recipients):
        raise ProtocolError("forward_consent.recipients names an agency twice", field="forward_consent.recipients")
    if not consent.HasField("not_after"):
        raise ProtocolError("forward_consent.not_after is missing", field="forward_consent.not_after")
    check_timestamp(consent.not_after, "forward_consent.not_after")


def check_directory_request(request: broker_pb2.GetDirectoryRequest) -> None:
    """At most `MAX_LIST` agency ids, each well formed."""
    _check_count(request.agencies, "agencies", MAX_LIST)
    for i, agency in enumerate(request.agencies):
        check_agency_id(agency, f"agencies[{i}]")


def check_watchlist_request(
    request: watchlist_pb2.CreateWatchlistRequest
    | watchlist_pb2.GetWatchlistRequest
    | watchlist_pb2.SyncRequest
    | watchlist_pb2.GetReviewNoticesRequest,
) -> None:
    """Watchlist request fields within their limits (formats are the desk's business)."""
    check_text(request.watchlist_id, "watchlist_id", MAX_WATCHLIST_ID)
    if isinstance(request, watchlist_pb2.CreateWatchlistRequest):
        check_text(request.title, "title", MAX_TITLE)
        _check_count(request.entry_types, "entry_types", MAX_ENTRY_TYPES)
        _check_count(request.subscribers, "subscribers", MAX_SUBSCRIBERS)
        for i, subscriber in enumerate(request.subscribers):
            check_text(subscriber, f"subscribers[{i}]", _ADDRESS_MAX)
    if isinstance(request, watchlist_pb2.SyncRequest) and request.have_version > MAX_COUNTER:
        raise ProtocolError(f"have_version is over {MAX_COUNTER}", field="have_version")
