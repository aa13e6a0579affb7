"""The attachment streaming AEAD: round trips, resumption, and every chunk tampering it must refuse."""

from __future__ import annotations

import io
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.api.v1 import envelope_pb2
from broker.protocol import _pae, _stream
from broker.protocol.attachments import (
    MIN_CHUNK_SIZE,
    AttachmentEncryptor,
    AttachmentReader,
    check_attachment_ref,
)
from broker.protocol.envelope import new_content_key, open_envelope, seal, uuid7, verify_outer
from broker.protocol.errors import ProtocolError, VerificationError
from tests.unit.protocol.protocol_testpki import Agency, Pki

CHUNK = MIN_CHUNK_SIZE


def _encrypt(
    data: bytes, *, chunk_size: int = CHUNK, key: bytes | None = None, media_type: str = "image/jpeg"
) -> tuple[bytes, list[bytes], envelope_pb2.AttachmentRef]:
    key = key if key is not None else os.urandom(32)
    encryptor = AttachmentEncryptor(key, io.BytesIO(data), len(data), chunk_size=chunk_size, media_type=media_type)
    chunks = [c for _, c in encryptor.encrypted_chunks()]
    return key, chunks, encryptor.reference()


def _read(key: bytes, ref: envelope_pb2.AttachmentRef, chunks: list[bytes]) -> bytes:
    return AttachmentReader(key, ref, chunks).read()


@settings(max_examples=60, deadline=None)
@given(size=st.integers(0, 5 * CHUNK + 3), chunk_size=st.sampled_from([CHUNK, 2 * CHUNK, 3 * CHUNK + 7]))
def test_any_size_round_trips(size: int, chunk_size: int) -> None:
    """Every size, including empty and exact multiples of the chunk size, decrypts to itself."""
    data = os.urandom(size)
    key, chunks, ref = _encrypt(data, chunk_size=chunk_size)
    assert len(chunks) == _stream.chunk_count(size, chunk_size)
    assert [len(c) for c in chunks] == [_stream.ciphertext_length(size, chunk_size, i) for i in range(len(chunks))]
    assert _read(key, ref, chunks) == data


def test_reader_reads_in_small_pieces_and_copies() -> None:
    """Reading a few bytes at a time and copying to a file give the same plaintext."""
    data = os.urandom(3 * CHUNK + 11)
    key, chunks, ref = _encrypt(data)
    reader = AttachmentReader(key, ref, chunks)
    pieces = []
    while piece := reader.read(1000):
        pieces.append(piece)
    assert b"".join(pieces) == data
    out = io.BytesIO()
    assert AttachmentReader(key, ref, chunks).copy_to(out) == len(data)
    assert out.getvalue() == data


def test_resumed_encryption_yields_the_same_chunks() -> None:
    """Encrypting again from chunk 2, by a fresh encryptor, gives the same ciphertext and digest."""
    data = os.urandom(4 * CHUNK + 5)
    key, chunks, ref = _encrypt(data)
    fresh = AttachmentEncryptor(key, io.BytesIO(data), len(data), chunk_size=CHUNK, media_type="image/jpeg")
    resumed = list(fresh.encrypted_chunks(2))
    assert [i for i, _ in resumed] == [2, 3, 4]
    assert [c for _, c in resumed] == chunks[2:]
    assert fresh.reference() == ref


def test_truncated_stream_is_refused() -> None:
    """A stream missing its last chunk is refused, though every chunk it has is genuine."""
    key, chunks, ref = _encrypt(os.urandom(3 * CHUNK))
    with pytest.raises(VerificationError, match="truncated"):
        _read(key, ref, chunks[:-1])


def test_stream_cut_at_a_chunk_boundary_under_a_forged_size_is_refused() -> None:
    """Declaring fewer chunks than were encrypted fails: the new last chunk lacks the last flag."""
    key, chunks, ref = _encrypt(os.urandom(3 * CHUNK))
    short = envelope_pb2.AttachmentRef(
        sha256=_stream.attachment_digest([]), size=2 * CHUNK, chunk_size=CHUNK, media_type=ref.media_type
    )
    with pytest.raises(VerificationError, match="last chunk 1"):
        _read(key, short, chunks[:2])


def test_reordered_chunks_are_refused() -> None:
    """Two chunks exchanged fail at the first one out of place."""
    key, chunks, ref = _encrypt(os.urandom(3 * CHUNK))
    with pytest.raises(VerificationError, match="chunk 0"):
        _read(key, ref, [chunks[1], chunks[0], chunks[2]])


def test_chunk_swapped_from_another_attachment_is_refused() -> None:
    """A chunk of another attachment (another key) at the same index is refused."""
    key, chunks, ref = _encrypt(os.urandom(3 * CHUNK))
    _, other, _ = _encrypt(os.urandom(3 * CHUNK))
    with pytest.raises(VerificationError, match="chunk 1"):
        _read(key, ref, [chunks[0], other[1], chunks[2]])


@settings(max_examples=40, deadline=None)
@given(bit=st.integers(0, 8 * (2 * CHUNK + 32) - 1))
def test_any_flipped_bit_is_refused(bit: int) -> None:
    """A single flipped bit anywhere in the ciphertext is refused."""
    key, chunks, ref = _encrypt(b"\x5a" * (2 * CHUNK))
    stream = bytearray(b"".join(chunks))
    stream[bit // 8] ^= 1 << (bit % 8)
    tampered = [bytes(stream[: CHUNK + 16]), bytes(stream[CHUNK + 16 :])]
    with pytest.raises(VerificationError):
        _read(key, ref, tampered)


def test_extended_stream_is_refused() -> None:
    """A chunk after the last one is refused, even a copy of a genuine chunk."""
    key, chunks, ref = _encrypt(os.urandom(2 * CHUNK))
    with pytest.raises(VerificationError, match="runs on"):
        _read(key, ref, [*chunks, chunks[-1]])


def test_wrong_length_chunk_is_refused_before_decryption() -> None:
    """A chunk of the wrong length is refused by its length alone."""
    key, chunks, ref = _encrypt(os.urandom(2 * CHUNK))
    with pytest.raises(VerificationError, match="bytes, expected"):
        _read(key, ref, [chunks[0] + b"x", chunks[1]])


def test_digest_other_than_the_signed_one_is_refused() -> None:
    """Authentic chunks under a reference with another digest are refused at the end."""
    key, chunks, ref = _encrypt(os.urandom(2 * CHUNK))
    forged = envelope_pb2.AttachmentRef()
    forged.CopyFrom(ref)
    forged.sha256 = bytes(32)
    with pytest.raises(VerificationError, match="digest"):
        _read(key, forged, chunks)


def test_failed_reader_stays_failed() -> None:
    """After a refused chunk, every later read raises too."""
    key, chunks, ref = _encrypt(os.urandom(2 * CHUNK))
    reader = AttachmentReader(key, ref, [chunks[1], chunks[0]])
    with pytest.raises(VerificationError):
        reader.read(10)
    with pytest.raises(VerificationError):
        reader.read(10)


def test_keys_differ_per_message_and_index() -> None:
    """Each attachment of each message has its own key, derived from the content key."""
    content_key = new_content_key()
    m1, m2 = uuid7(), uuid7()
    keys = {_stream.attachment_key(content_key, 1, m, i) for m in (m1, m2) for i in (0, 1)}
    assert len(keys) == 4
    assert content_key not in keys


def test_nonce_layout_is_counter_then_last_flag() -> None:
    """The nonce is an 11-byte big-endian counter and one flag byte, as in age's STREAM."""
    assert _stream.nonce(0, last=False) == bytes(12)
    assert _stream.nonce(258, last=True) == bytes(9) + b"\x01\x02\x01"


@given(
    sha=st.binary(max_size=40),
    size=st.integers(0, 1 << 41),
    chunk_size=st.integers(0, 1 << 21),
    media_type=st.text(max_size=300),
)
def test_reference_checks_never_raise_anything_but_protocol_error(
    sha: bytes, size: int, chunk_size: int, media_type: str
) -> None:
    """Whatever a header claims, checking the reference either passes or raises ProtocolError naming the field."""
    ref = envelope_pb2.AttachmentRef(sha256=sha, size=size, chunk_size=chunk_size, media_type=media_type)
    field = ""
    try:
        check_attachment_ref(ref, "header.attachments[0]")
    except ProtocolError as exc:
        field = exc.field or ""
    if field:
        assert field.startswith("header.attachments[0].")
        return
    assert len(sha) == 32
    assert MIN_CHUNK_SIZE <= chunk_size <= _stream.MAX_CHUNK_SIZE
    assert "/" in media_type


def _sealed_with(
    pki: Pki, refs: list[envelope_pb2.AttachmentRef], content_key: bytes, message_id: str
) -> tuple[envelope_pb2.Envelope, Agency, Agency]:
    sender, recipient = pki.agency("FR-CUSTOMS"), pki.agency("DE-BKA")
    envelope = seal(
        sender=sender.name,
        identity_key=sender.identity_key,
        certificate=sender.certificate,
        recipients=[recipient.name],
        recipient_keys={recipient.name: recipient.bundle},
        kind=envelope_pb2.ALERT,
        body=b"see photo",
        content_type="text/plain",
        message_id=message_id,
        content_key=content_key,
        attachments=refs,
    )
    return envelope, sender, recipient


def test_recipient_opens_the_attachment_with_the_key_from_the_envelope(pki: Pki) -> None:
    """The opened message derives the same attachment key the sender encrypted under."""
    content_key, message_id = new_content_key(), uuid7()
    data = os.urandom(CHUNK + 1)
    _, chunks, ref = _encrypt(data, key=_stream.attachment_key(content_key, 1, message_id, 0))
    envelope, sender, recipient = _sealed_with(pki, [ref], content_key, message_id)
    opened = open_envelope(
        envelope, recipient=recipient.name, keys=recipient.keys, sender_certificate=sender.certificate
    )
    assert list(opened.attachments) == [ref]
    assert AttachmentReader(opened.attachment_key(0), ref, chunks).read() == data
    assert "content_key" not in repr(opened)


def test_attachment_references_are_bound_in_aad_and_inner_signature(pki: Pki) -> None:
    """Changing a reference changes the content AAD and the inner signature input."""
    content_key, message_id = new_content_key(), uuid7()
    _, _, ref = _encrypt(b"x", key=_stream.attachment_key(content_key, 1, message_id, 0))
    envelope, _, _ = _sealed_with(pki, [ref], content_key, message_id)
    header = envelope_pb2.Header.FromString(envelope.header)
    altered = envelope_pb2.Header()
    altered.CopyFrom(header)
    altered.attachments[0].size = 2
    assert _pae.content_aad(altered) != _pae.content_aad(header)
    csi = _pae.content_signing_input
    assert csi(altered, "text/plain", b"") != csi(header, "text/plain", b"")


def test_header_with_a_malformed_reference_is_refused(pki: Pki) -> None:
    """A signed header whose reference is out of bounds fails outer verification."""
    content_key, message_id = new_content_key(), uuid7()
    bad = envelope_pb2.AttachmentRef(sha256=bytes(31), size=1, chunk_size=CHUNK, media_type="image/jpeg")
    envelope, sender, _ = _sealed_with(pki, [bad], content_key, message_id)
    with pytest.raises(ProtocolError, match=r"header.attachments\[0\].sha256 is not a SHA-256 digest"):
        verify_outer(envelope, sender.certificate)


def test_seal_needs_the_content_key_of_its_attachments(pki: Pki) -> None:
    """Attachments without the content key they were encrypted under are a caller error."""
    sender, recipient = pki.agency("FR-CUSTOMS"), pki.agency("DE-BKA")
    _, _, ref = _encrypt(b"x")
    with pytest.raises(ValueError, match="content_key"):
        seal(
            sender=sender.name,
            identity_key=sender.identity_key,
            certificate=sender.certificate,
            recipients=[recipient.name],
            recipient_keys={recipient.name: recipient.bundle},
            kind=envelope_pb2.ALERT,
            body=b"",
            content_type="text/plain",
            attachments=[ref],
        )


@settings(max_examples=80, deadline=None)
@given(chunks=st.lists(st.binary(max_size=CHUNK + 40), max_size=5), size=st.integers(0, 3 * CHUNK))
def test_any_chunk_stream_is_read_or_refused_with_verification_error(chunks: list[bytes], size: int) -> None:
    """Whatever bytes a broker serves, the reader returns nothing unverified and raises only VerificationError."""
    ref = envelope_pb2.AttachmentRef(sha256=bytes(32), size=size, chunk_size=CHUNK, media_type="image/png")
    with pytest.raises(VerificationError):
        AttachmentReader(os.urandom(32), ref, chunks).read()
