"""Sealing, outer verification and opening of envelopes, and every tampering they must detect."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid
from collections.abc import Mapping, Sequence

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.api.v1 import envelope_pb2
from broker.errors import VerificationError
from broker.protocol import _pae
from broker.protocol.envelope import envelope_sha256, open_envelope, seal, uuid7, verify_outer
from broker.protocol.errors import ProtocolError
from broker.protocol.keys import HYBRID_SUITE, EncryptionKey, hpke_suite, make_key_bundle, public_key_of
from tests.unit.protocol.protocol_testpki import NOW, Agency, Pki, issue_certificate, spiffe

BODY = b'{"alert": "container MSCU1234567 flagged"}'


def _seal(
    sender: Agency, recipients: Sequence[Agency], *, addressed: Sequence[str] | None = None, **kwargs: object
) -> envelope_pb2.Envelope:
    return seal(
        sender=sender.name,
        identity_key=sender.identity_key,
        certificate=sender.certificate,
        recipients=list(addressed) if addressed is not None else [r.name for r in recipients],
        recipient_keys={r.name: r.bundle for r in recipients},
        kind=envelope_pb2.ALERT,
        body=BODY,
        content_type="application/json",
        handling=envelope_pb2.Handling(tlp=envelope_pb2.TLP_AMBER, source_reliability=envelope_pb2.SOURCE_B),
        **kwargs,  # type: ignore[arg-type]
    )


def _open(envelope: envelope_pb2.Envelope, recipient: Agency, sender: Agency) -> bytes:
    return open_envelope(
        envelope, recipient=recipient.name, keys=recipient.keys, sender_certificate=sender.certificate
    ).body


def _copy(envelope: envelope_pb2.Envelope) -> envelope_pb2.Envelope:
    copy = envelope_pb2.Envelope()
    copy.CopyFrom(envelope)
    return copy


def _flip(data: bytes, bit: int = 0) -> bytes:
    index = (bit // 8) % len(data)
    return data[:index] + bytes([data[index] ^ (1 << (bit % 8))]) + data[index + 1 :]


def _reseal(
    header: envelope_pb2.Header,
    content: envelope_pb2.Content,
    signer: ec.EllipticCurvePrivateKey,
    recipient_keys: Mapping[str, envelope_pb2.KeyBundle],
) -> envelope_pb2.Envelope:
    """Build an envelope by hand from a header and content, as an attacker holding `signer` could."""
    header = envelope_pb2.Header.FromString(header.SerializeToString())
    header.ClearField("ciphertext_sha256")
    header.ClearField("wrapped_keys_sha256")
    content_key = AESGCM.generate_key(bit_length=256)
    nonce = b"\x00" * 12
    ciphertext = nonce + AESGCM(content_key).encrypt(nonce, content.SerializeToString(), _pae.content_aad(header))
    wrapped = [
        envelope_pb2.WrappedKey(
            recipient=name,
            key_id=bundle.key_id,
            enc=hpke_suite(bundle.suite).encrypt(
                content_key, public_key_of(bundle), info=_pae.key_wrap_info(1, header.message_id, name)
            ),
        )
        for name, bundle in recipient_keys.items()
    ]
    header.ciphertext_sha256 = hashlib.sha256(ciphertext).digest()
    header.wrapped_keys_sha256 = _pae.wrapped_keys_sha256(wrapped)
    header_bytes = header.SerializeToString()
    signature = signer.sign(_pae.header_signing_input(header_bytes), ec.ECDSA(hashes.SHA256()))
    return envelope_pb2.Envelope(
        header=header_bytes, header_signature=signature, ciphertext=ciphertext, wrapped_keys=wrapped
    )


def _decrypt_content(envelope: envelope_pb2.Envelope, recipient: Agency) -> envelope_pb2.Content:
    """What a legitimate recipient sees after decrypting: the content with the sender's inner signature."""
    header = envelope_pb2.Header.FromString(envelope.header)
    wrapped = next(k for k in envelope.wrapped_keys if k.recipient == recipient.name)
    content_key = hpke_suite(recipient.encryption_key.suite).decrypt(
        wrapped.enc,
        recipient.encryption_key.private_key,
        info=_pae.key_wrap_info(1, header.message_id, recipient.name),
    )
    plaintext = AESGCM(content_key).decrypt(
        envelope.ciphertext[:12], envelope.ciphertext[12:], _pae.content_aad(header)
    )
    return envelope_pb2.Content.FromString(plaintext)


@pytest.fixture
def parties(pki: Pki) -> tuple[Agency, list[Agency], Agency]:
    """A sender, three recipients and an outsider."""
    recipients = [pki.agency("DE-BKA"), pki.agency("NL-FIOD"), pki.agency("INT-INTERPOL")]
    return pki.agency("FR-CUSTOMS"), recipients, pki.agency("ES-AEAT")


# --- round trips ----------------------------------------------------------------------------------


def test_each_of_three_recipients_opens_the_message(parties: tuple[Agency, list[Agency], Agency]) -> None:
    """Every recipient of a three-recipient envelope reads the same plaintext."""
    sender, recipients, _ = parties
    envelope = _seal(sender, recipients)
    assert [_open(envelope, r, sender) for r in recipients] == [BODY] * 3


def test_opened_message_carries_verified_sender_and_handling(
    parties: tuple[Agency, list[Agency], Agency],
) -> None:
    """The opened message reports the sender, content type, handling code and message id of the header."""
    sender, recipients, _ = parties
    envelope = _seal(sender, recipients, message_id="0190a000-0000-7000-8000-000000000001")
    opened = open_envelope(envelope, recipient="DE-BKA", keys=recipients[0].keys, sender_certificate=sender.certificate)
    assert (opened.sender, opened.content_type, opened.message_id) == (
        "FR-CUSTOMS",
        "application/json",
        "0190a000-0000-7000-8000-000000000001",
    )
    assert opened.handling.tlp == envelope_pb2.TLP_AMBER
    assert opened.header.recipients == ["DE-BKA", "NL-FIOD", "INT-INTERPOL"]


def test_fourth_agency_cannot_open(parties: tuple[Agency, list[Agency], Agency]) -> None:
    """An agency that was not a recipient finds no wrapped key for itself."""
    sender, recipients, outsider = parties
    envelope = _seal(sender, recipients)
    with pytest.raises(VerificationError, match="not addressed to ES-AEAT"):
        _open(envelope, outsider, sender)


def test_fourth_agency_posing_as_recipient_cannot_unwrap(
    parties: tuple[Agency, list[Agency], Agency],
) -> None:
    """An outsider that claims a recipient's name still cannot unwrap that recipient's key."""
    sender, recipients, outsider = parties
    envelope = _seal(sender, recipients)
    stolen_id = {recipients[0].encryption_key.key_id: outsider.encryption_key}
    with pytest.raises(VerificationError, match="does not decrypt"):
        open_envelope(envelope, recipient="DE-BKA", keys=stolen_id, sender_certificate=sender.certificate)


def test_ciphertext_does_not_contain_plaintext(parties: tuple[Agency, list[Agency], Agency]) -> None:
    """The serialized envelope, which is all the broker stores, holds no plaintext."""
    sender, recipients, _ = parties
    assert b"MSCU1234567" not in _seal(sender, recipients).SerializeToString()


def test_group_addressed_envelope_opens_for_expanded_members(pki: Pki) -> None:
    """Recipients as addressed may be a group; keys go to the expanded agencies, who can open."""
    sender, members = pki.agency("FR-CUSTOMS"), [pki.agency("DE-BKA"), pki.agency("NL-FIOD")]
    envelope = _seal(sender, members, addressed=["EU-CUSTOMS"])
    assert verify_outer(envelope, sender.certificate).recipients == ["EU-CUSTOMS"]
    assert _open(envelope, members[1], sender) == BODY


def test_hybrid_and_classical_recipients_both_open(pki: Pki) -> None:
    """One message to an ML-KEM-768+X25519 recipient and an X25519 recipient opens for both."""
    sender = pki.agency("FR-CUSTOMS")
    hybrid, classical = pki.agency("US-CBP", HYBRID_SUITE), pki.agency("DE-BKA")
    envelope = _seal(sender, [hybrid, classical])
    suites = {k.recipient: len(k.enc) for k in envelope.wrapped_keys}
    assert suites["US-CBP"] > 1000 > suites["DE-BKA"]  # ML-KEM ciphertext vs X25519 share
    assert _open(envelope, hybrid, sender) == _open(envelope, classical, sender) == BODY


def test_old_and_new_keys_both_open_during_rotation(pki: Pki) -> None:
    """A recipient holding an old and a new key opens messages sealed to either."""
    sender, recipient = pki.agency("FR-CUSTOMS"), pki.agency("DE-BKA")
    new_key = EncryptionKey.generate(HYBRID_SUITE)
    new_bundle = pki.verify(
        make_key_bundle(
            "DE-BKA",
            new_key,
            identity_key=recipient.identity_key,
            certificate=recipient.certificate,
            not_before=NOW - dt.timedelta(hours=1),
            not_after=NOW + dt.timedelta(days=60),
        ),
        "DE-BKA",
    )
    keyring = {**recipient.keys, new_key.key_id: new_key}
    old_envelope = _seal(sender, [recipient])
    new_envelope = seal(
        sender=sender.name,
        identity_key=sender.identity_key,
        certificate=sender.certificate,
        recipients=["DE-BKA"],
        recipient_keys={"DE-BKA": new_bundle},
        kind=envelope_pb2.REQUEST,
        body=b"new",
        content_type="text/plain",
    )
    for envelope, body in ((old_envelope, BODY), (new_envelope, b"new")):
        opened = open_envelope(envelope, recipient="DE-BKA", keys=keyring, sender_certificate=sender.certificate)
        assert opened.body == body


def test_missing_private_key_is_named(parties: tuple[Agency, list[Agency], Agency]) -> None:
    """A recipient without the key id the sender used is told which key it lacks."""
    sender, recipients, _ = parties
    envelope = _seal(sender, recipients)
    with pytest.raises(VerificationError, match=re.escape(recipients[0].encryption_key.key_id)):
        open_envelope(envelope, recipient="DE-BKA", keys={}, sender_certificate=sender.certificate)


def test_every_header_field_is_carried(parties: tuple[Agency, list[Agency], Agency]) -> None:
    """Optional header fields given to seal appear in the verified header."""
    sender, recipients, _ = parties
    created = NOW - dt.timedelta(minutes=1)
    envelope = _seal(
        sender,
        recipients,
        priority=envelope_pb2.FLASH,
        expires=NOW + dt.timedelta(days=2),
        in_reply_to="0190a000-0000-7000-8000-000000000002",
        references="0190a000-0000-7000-8000-000000000003",
        watchlist_id="stolen-art",
        watchlist_version=7,
        created=created,
    )
    header = verify_outer(envelope, sender.certificate)
    assert header.priority == envelope_pb2.FLASH
    assert header.expires.ToDatetime(dt.UTC) == NOW + dt.timedelta(days=2)
    assert header.created.ToDatetime(dt.UTC) == created
    assert (header.in_reply_to, header.references) == (
        "0190a000-0000-7000-8000-000000000002",
        "0190a000-0000-7000-8000-000000000003",
    )
    assert (header.watchlist_id, header.watchlist_version) == ("stolen-art", 7)
    assert header.sender_cert_sha256 == sender.certificate.fingerprint(hashes.SHA256())


# --- tampering detected by the broker (verify_outer) ------------------------------------------------


@pytest.mark.parametrize("bit", [0, 77, 200, 1000])
def test_flipped_header_bit_is_refused(parties: tuple[Agency, list[Agency], Agency], bit: int) -> None:
    """A bit flipped anywhere in the header breaks the outer signature."""
    sender, recipients, _ = parties
    envelope = _copy(_seal(sender, recipients))
    envelope.header = _flip(envelope.header, bit)
    with pytest.raises(VerificationError, match="envelope header signature does not verify"):
        verify_outer(envelope, sender.certificate)


def test_flipped_ciphertext_bit_is_refused(parties: tuple[Agency, list[Agency], Agency]) -> None:
    """A bit flipped in the ciphertext no longer matches the signed ciphertext digest."""
    sender, recipients, _ = parties
    envelope = _copy(_seal(sender, recipients))
    envelope.ciphertext = _flip(envelope.ciphertext, 100)
    with pytest.raises(VerificationError, match="ciphertext_sha256"):
        verify_outer(envelope, sender.certificate)


@pytest.mark.parametrize("field", ["enc", "key_id", "recipient"])
def test_flipped_wrapped_key_bit_is_refused(parties: tuple[Agency, list[Agency], Agency], field: str) -> None:
    """A bit flipped in any part of a wrapped key no longer matches the signed wrapped-keys digest."""
    sender, recipients, _ = parties
    envelope = _copy(_seal(sender, recipients))
    wrapped = envelope.wrapped_keys[1]
    if field == "enc":
        wrapped.enc = _flip(wrapped.enc, 3)
    else:
        setattr(wrapped, field, _flip(getattr(wrapped, field).encode(), 1).decode())
    with pytest.raises(VerificationError, match="wrapped_keys_sha256"):
        verify_outer(envelope, sender.certificate)


@pytest.mark.parametrize("tamper", ["header", "signature", "ciphertext", "wrapped key"])
def test_a_prechecked_envelope_still_has_its_signature_and_digests_verified(
    parties: tuple[Agency, list[Agency], Agency], tamper: str
) -> None:
    """`checked=True` (the broker already ran parse_header) skips only the field checks: a tampered
    header, signature, ciphertext or wrapped key is refused as without it."""
    sender, recipients, _ = parties
    genuine = _copy(_seal(sender, recipients))
    assert verify_outer(genuine, sender.certificate, checked=True) == verify_outer(genuine, sender.certificate)
    envelope = _copy(genuine)
    if tamper == "header":
        envelope.header = _flip(envelope.header, 77)
    elif tamper == "signature":
        envelope.header_signature = _flip(envelope.header_signature, 300)
    elif tamper == "ciphertext":
        envelope.ciphertext = _flip(envelope.ciphertext, 100)
    else:
        envelope.wrapped_keys[0].enc = _flip(envelope.wrapped_keys[0].enc, 3)
    with pytest.raises(VerificationError, match=r"signature does not verify|ciphertext_sha256|wrapped_keys_sha256"):
        verify_outer(envelope, sender.certificate, checked=True)


def test_flipped_outer_signature_bit_is_refused(parties: tuple[Agency, list[Agency], Agency]) -> None:
    """A bit flipped in the outer signature makes it fail."""
    sender, recipients, _ = parties
    envelope = _copy(_seal(sender, recipients))
    envelope.header_signature = _flip(envelope.header_signature, 300)
    with pytest.raises(VerificationError, match="envelope header signature does not verify"):
        verify_outer(envelope, sender.certificate)


def test_header_signed_by_another_agency_is_refused(pki: Pki, parties: tuple[Agency, list[Agency], Agency]) -> None:
    """A header re-signed by another agency's key fails against the claimed sender's certificate."""
    sender, recipients, outsider = parties
    envelope = _copy(_seal(sender, recipients))
    envelope.header_signature = outsider.identity_key.sign(
        _pae.header_signing_input(envelope.header), ec.ECDSA(hashes.SHA256())
    )
    with pytest.raises(VerificationError, match="envelope header signature does not verify"):
        verify_outer(envelope, sender.certificate)


def test_envelope_checked_against_the_wrong_certificate_is_refused(
    parties: tuple[Agency, list[Agency], Agency],
) -> None:
    """The broker calling verify_outer with another caller's certificate refuses the envelope."""
    sender, recipients, outsider = parties
    with pytest.raises(VerificationError, match="signature does not verify"):
        verify_outer(_seal(sender, recipients), outsider.certificate)


def test_sender_field_must_name_the_certificate_agency(pki: Pki, parties: tuple[Agency, list[Agency], Agency]) -> None:
    """An envelope claiming another sender than its certificate's agency is refused, even if well signed."""
    sender, recipients, _ = parties
    envelope = seal(
        sender="DE-BKA",
        identity_key=sender.identity_key,
        certificate=sender.certificate,
        recipients=["NL-FIOD"],
        recipient_keys={"NL-FIOD": recipients[1].bundle},
        kind=envelope_pb2.ALERT,
        body=BODY,
        content_type="text/plain",
    )
    with pytest.raises(VerificationError, match="not the certificate's agency 'FR-CUSTOMS'"):
        verify_outer(envelope, sender.certificate)


def test_sender_certificate_fingerprint_must_match(pki: Pki, parties: tuple[Agency, list[Agency], Agency]) -> None:
    """A second certificate for the same key and agency is not the certificate the header names."""
    sender, recipients, _ = parties
    reissued = issue_certificate(pki.ca_key, pki.ca_certificate, sender.identity_key, [spiffe("FR-CUSTOMS")])
    with pytest.raises(VerificationError, match="sender_cert_sha256"):
        verify_outer(_seal(sender, recipients), reissued)


def test_duplicate_wrapped_key_recipient_is_refused(parties: tuple[Agency, list[Agency], Agency]) -> None:
    """Two wrapped keys for one recipient make the envelope ambiguous and are refused."""
    sender, recipients, _ = parties
    envelope = _copy(_seal(sender, recipients))
    envelope.wrapped_keys.add().CopyFrom(envelope.wrapped_keys[0])
    with pytest.raises(VerificationError, match="two wrapped keys"):
        verify_outer(envelope, sender.certificate)


def test_oversized_envelope_is_refused_before_verification(
    parties: tuple[Agency, list[Agency], Agency],
) -> None:
    """An envelope over max_bytes is refused as an invalid request."""
    sender, recipients, _ = parties
    envelope = _seal(sender, recipients)
    assert verify_outer(envelope, sender.certificate, max_bytes=envelope.ByteSize())
    with pytest.raises(ProtocolError, match="over the limit"):
        verify_outer(envelope, sender.certificate, max_bytes=envelope.ByteSize() - 1)


def test_unparseable_signed_header_is_a_verification_error(
    parties: tuple[Agency, list[Agency], Agency],
) -> None:
    """A validly signed header that is not a Header surfaces as VerificationError, not DecodeError."""
    sender, _, _ = parties
    garbage = b"\xff\xff\xff"
    envelope = envelope_pb2.Envelope(
        header=garbage,
        header_signature=sender.identity_key.sign(_pae.header_signing_input(garbage), ec.ECDSA(hashes.SHA256())),
    )
    with pytest.raises(VerificationError, match="does not parse"):
        verify_outer(envelope, sender.certificate)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 2}, "protocol version"),
        ({"message_id": "0190A000-0000-7000-8000-000000000001"}, "canonical UUID"),
        ({"kind": envelope_pb2.KIND_UNSPECIFIED}, "kind"),
    ],
)
def test_malformed_signed_header_is_refused(
    parties: tuple[Agency, list[Agency], Agency], change: dict[str, object], message: str
) -> None:
    """Headers the sender signed but that break the format rules are refused."""
    sender, recipients, _ = parties
    header = verify_outer(_seal(sender, recipients), sender.certificate)
    for name, value in change.items():
        setattr(header, name, value)
    content = envelope_pb2.Content(content_type="text/plain", body=b"x")
    envelope = _reseal(header, content, sender.identity_key, {r.name: r.bundle for r in recipients})
    with pytest.raises(VerificationError, match=message):
        verify_outer(envelope, sender.certificate)


# --- tampering only a recipient can detect --------------------------------------------------------


def test_flipped_inner_signature_bit_is_refused(parties: tuple[Agency, list[Agency], Agency]) -> None:
    """A corrupted inner signature, sealed under a valid outer layer, fails when opened."""
    sender, recipients, _ = parties
    envelope = _seal(sender, recipients)
    content = _decrypt_content(envelope, recipients[0])
    content.inner_signature = _flip(content.inner_signature, 200)
    header = envelope_pb2.Header.FromString(envelope.header)
    forged = _reseal(header, content, sender.identity_key, {r.name: r.bundle for r in recipients})
    verify_outer(forged, sender.certificate)  # the broker cannot tell
    with pytest.raises(VerificationError, match="inner content signature does not verify"):
        _open(forged, recipients[0], sender)


def test_ciphertext_moved_under_another_header_does_not_decrypt(
    parties: tuple[Agency, list[Agency], Agency],
) -> None:
    """A ciphertext and its wrapped keys moved under another signed header fail AES-GCM authentication."""
    sender, recipients, _ = parties
    # Same id and time, only the priority differs: the associated data alone must tell them apart.
    message_id = uuid7()
    original = _seal(sender, recipients, message_id=message_id, created=NOW)
    other = _seal(sender, recipients, message_id=message_id, created=NOW, priority=envelope_pb2.LOW)
    header = envelope_pb2.Header.FromString(other.header)
    header_bytes = header.SerializeToString()
    moved = envelope_pb2.Envelope(
        header=header_bytes,
        header_signature=sender.identity_key.sign(_pae.header_signing_input(header_bytes), ec.ECDSA(hashes.SHA256())),
        ciphertext=original.ciphertext,
        wrapped_keys=original.wrapped_keys,
    )
    with pytest.raises(VerificationError, match=r"ciphertext_sha256|wrapped_keys_sha256"):
        verify_outer(moved, sender.certificate)
    header.ciphertext_sha256 = hashlib.sha256(original.ciphertext).digest()
    header.wrapped_keys_sha256 = _pae.wrapped_keys_sha256(original.wrapped_keys)
    header_bytes = header.SerializeToString()
    moved.header = header_bytes
    moved.header_signature = sender.identity_key.sign(
        _pae.header_signing_input(header_bytes), ec.ECDSA(hashes.SHA256())
    )
    verify_outer(moved, sender.certificate)
    with pytest.raises(VerificationError, match="ciphertext does not decrypt under this header"):
        _open(moved, recipients[0], sender)


def test_recipient_forwarding_as_itself_is_detected(pki: Pki, parties: tuple[Agency, list[Agency], Agency]) -> None:
    """A recipient re-sending the sender's signed content to a third agency under its own header is caught."""
    sender, recipients, outsider = parties
    forwarder = recipients[0]
    content = _decrypt_content(_seal(sender, recipients), forwarder)
    header = envelope_pb2.Header.FromString(_seal(forwarder, [outsider]).header)
    forwarded = _reseal(header, content, forwarder.identity_key, {outsider.name: outsider.bundle})
    # The broker accepts it (it is the forwarder's own valid envelope), but the content is not theirs.
    verify_outer(forwarded, forwarder.certificate)
    with pytest.raises(VerificationError, match="inner content signature does not verify"):
        _open(forwarded, outsider, forwarder)


def test_readdressed_content_fails_inner_signature(parties: tuple[Agency, list[Agency], Agency]) -> None:
    """Content signed for one recipient list fails under a header that lists other recipients.

    The outer layer is rebuilt with the sender's own key here, to show the inner signature alone
    binds the recipients (surreptitious forwarding, RFC 2634 section 1.1).
    """
    sender, recipients, outsider = parties
    envelope = _seal(sender, recipients)
    content = _decrypt_content(envelope, recipients[0])
    header = envelope_pb2.Header.FromString(envelope.header)
    header.recipients[:] = [outsider.name]
    readdressed = _reseal(header, content, sender.identity_key, {outsider.name: outsider.bundle})
    with pytest.raises(VerificationError, match="inner content signature does not verify"):
        _open(readdressed, outsider, sender)


def test_readdressed_original_envelope_is_refused_by_broker(
    parties: tuple[Agency, list[Agency], Agency],
) -> None:
    """Adding a wrapped key for a third agency to the original envelope breaks the signed digest."""
    sender, recipients, outsider = parties
    envelope = _copy(_seal(sender, recipients))
    header = envelope_pb2.Header.FromString(envelope.header)
    content_key_holder = recipients[0]
    wrapped = next(k for k in envelope.wrapped_keys if k.recipient == content_key_holder.name)
    content_key = hpke_suite(content_key_holder.encryption_key.suite).decrypt(
        wrapped.enc,
        content_key_holder.encryption_key.private_key,
        info=_pae.key_wrap_info(1, header.message_id, content_key_holder.name),
    )
    envelope.wrapped_keys.add(
        recipient=outsider.name,
        key_id=outsider.bundle.key_id,
        enc=hpke_suite(outsider.bundle.suite).encrypt(
            content_key,
            public_key_of(outsider.bundle),
            info=_pae.key_wrap_info(1, header.message_id, outsider.name),
        ),
    )
    with pytest.raises(VerificationError, match="wrapped_keys_sha256"):
        verify_outer(envelope, sender.certificate)


def test_wrapped_key_swapped_between_recipients_does_not_unwrap(
    parties: tuple[Agency, list[Agency], Agency],
) -> None:
    """A wrapped key relabelled for another recipient fails because HPKE info binds the recipient."""
    sender, recipients, _ = parties
    first, second = recipients[0], recipients[1]
    envelope = _seal(sender, [first, second])
    header = envelope_pb2.Header.FromString(envelope.header)
    content = _decrypt_content(envelope, first)
    # Sender-built envelope where second's key is labelled with first's name: info mismatch.
    forged = _reseal(header, content, sender.identity_key, {first.name: first.bundle})
    forged.wrapped_keys[0].key_id = second.bundle.key_id
    forged.wrapped_keys[0].enc = hpke_suite(second.bundle.suite).encrypt(
        b"k" * 32, public_key_of(second.bundle), info=_pae.key_wrap_info(1, header.message_id, second.name)
    )
    header.wrapped_keys_sha256 = _pae.wrapped_keys_sha256(forged.wrapped_keys)
    header.ciphertext_sha256 = hashlib.sha256(forged.ciphertext).digest()
    forged.header = header.SerializeToString()
    forged.header_signature = sender.identity_key.sign(
        _pae.header_signing_input(forged.header), ec.ECDSA(hashes.SHA256())
    )
    with pytest.raises(VerificationError, match="wrapped key for DE-BKA does not decrypt"):
        open_envelope(forged, recipient=first.name, keys=second.keys, sender_certificate=sender.certificate)


# --- arguments and helpers ------------------------------------------------------------------------


def test_seal_refuses_key_bundle_filed_under_another_agency(
    parties: tuple[Agency, list[Agency], Agency],
) -> None:
    """A bundle given for the wrong agency name is a caller error, not a silent mis-encryption."""
    sender, recipients, _ = parties
    with pytest.raises(ValueError, match="belongs to 'NL-FIOD'"):
        seal(
            sender=sender.name,
            identity_key=sender.identity_key,
            certificate=sender.certificate,
            recipients=["DE-BKA"],
            recipient_keys={"DE-BKA": recipients[1].bundle},
            kind=envelope_pb2.ALERT,
            body=b"",
            content_type="text/plain",
        )


def test_seal_refuses_identity_key_of_another_certificate(
    parties: tuple[Agency, list[Agency], Agency],
) -> None:
    """Signing with a key that the given certificate does not certify is refused up front."""
    sender, recipients, outsider = parties
    with pytest.raises(ValueError, match="does not belong to certificate"):
        seal(
            sender=sender.name,
            identity_key=outsider.identity_key,
            certificate=sender.certificate,
            recipients=["DE-BKA"],
            recipient_keys={"DE-BKA": recipients[0].bundle},
            kind=envelope_pb2.ALERT,
            body=b"",
            content_type="text/plain",
        )


@pytest.mark.parametrize("recipients", [[], ["DE-BKA", "DE-BKA"]])
def test_seal_refuses_empty_or_duplicate_recipients(
    parties: tuple[Agency, list[Agency], Agency], recipients: list[str]
) -> None:
    """An envelope needs distinct recipients."""
    sender, agencies, _ = parties
    with pytest.raises(ValueError, match="recipient"):
        _seal(sender, agencies[:1], addressed=recipients)


def test_uuid7_is_a_version_7_uuid_in_time_order() -> None:
    """Generated message ids are canonical UUIDv7 strings whose prefix grows with time."""
    ids = [uuid7() for _ in range(50)]
    assert all(uuid.UUID(i).version == 7 and uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)
    assert all(str(uuid.UUID(i)) == i for i in ids)
    assert ids[0][:8] <= ids[-1][:8]
    assert len(set(ids)) == 50


def test_envelope_sha256_is_sha256_of_the_bytes() -> None:
    """The envelope digest is plain SHA-256 of the stored bytes."""
    assert envelope_sha256(b"abc").hex() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_opened_message_repr_hides_plaintext(parties: tuple[Agency, list[Agency], Agency]) -> None:
    """The repr of an opened message never shows the body."""
    sender, recipients, _ = parties
    opened = open_envelope(
        _seal(sender, recipients),
        recipient="DE-BKA",
        keys=recipients[0].keys,
        sender_certificate=sender.certificate,
    )
    assert "MSCU" not in repr(opened)
