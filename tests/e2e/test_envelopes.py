"""Issue 3 over real mTLS: triple-wrapped envelopes that the broker routes but cannot read, and that
nobody can forge, alter or re-address unnoticed."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.api.v1 import envelope_pb2
from broker.pki.dev import DevPki
from broker.protocol import _pae
from broker.protocol.envelope import open_envelope, seal
from broker.protocol.errors import VerificationError
from broker.protocol.keys import EncryptionKey, make_key_bundle, sign_identity
from clients import MLKEM768_X25519, AgencyClient, InvalidDelivery, RemoteError
from tests.e2e.broker_support import Database, RunningBroker
from tests.e2e.pki_support import extended_pki

MARKER = b"PLAINTEXT-MARKER-7f3a9c Mr John SMITH born 1970-01-01"


@pytest.fixture
def five(broker_factory: Any, pki: DevPki, tmp_path: Path) -> tuple[RunningBroker, dict[str, AgencyClient]]:
    """A broker with five agencies (the three dev ones, IT-GDF and ES-AEAT), each with a published key."""
    directory, policy = extended_pki(pki, tmp_path, {"IT-GDF": "IT", "ES-AEAT": "ES"})
    broker = broker_factory(cert_dir=directory, policy_file=policy)
    clients = {}
    for agency in ("FR-CUSTOMS", "DE-BKA", "NL-FIOD", "IT-GDF", "ES-AEAT"):
        clients[agency] = AgencyClient.from_dir(broker.target, directory, agency, keystore=tmp_path / "k" / agency)
        clients[agency].publish_key()
    return broker, clients


def _first(client: AgencyClient, timeout: float = 5, **kwargs: Any) -> Any:
    for message in client.deliveries(timeout=timeout, **kwargs):
        client.ack(message)
        return message
    return None


def test_three_recipients_read_it_a_fourth_agency_cannot_and_the_database_holds_no_plaintext(
    five: tuple[RunningBroker, dict[str, AgencyClient]],
    database: Database,
    tmp_path: Path,
) -> None:
    """Each of three recipients opens the message; a fourth agency given the stored envelope cannot."""
    _, clients = five
    sent = clients["FR-CUSTOMS"].send(["DE-BKA", "NL-FIOD", "IT-GDF"], MARKER, tlp="AMBER")
    for agency in ("DE-BKA", "NL-FIOD", "IT-GDF"):
        message = _first(clients[agency])
        assert message.body == MARKER
        assert message.sender == "FR-CUSTOMS"
    stored = database.scalar("SELECT envelope FROM messages WHERE message_id = :m", m=sent.message_id)
    envelope = envelope_pb2.Envelope.FromString(bytes(stored))
    outsider = clients["ES-AEAT"]
    with pytest.raises(VerificationError, match="not addressed to ES-AEAT"):
        open_envelope(
            envelope,
            recipient="ES-AEAT",
            keys=outsider._keyring.keys,
            sender_certificate=clients["FR-CUSTOMS"].identity.certificate,
        )
    if database.kind == "sqlite":
        raw = b"".join(p.read_bytes() for p in database.path.parent.glob("broker.db*"))
    else:
        raw = b"".join(bytes(r[0]) for r in database.rows("SELECT envelope FROM messages"))
        raw += b"".join(bytes(r[0]) for r in database.rows("SELECT entry FROM audit_entries"))
    assert b"PLAINTEXT-MARKER" not in raw
    assert b"SMITH" not in raw


def test_hybrid_post_quantum_and_classical_recipients_both_open_one_message(
    agencies: dict[str, AgencyClient],
) -> None:
    """A recipient with an ML-KEM-768+X25519 key and one with an X25519 key both open the same message."""
    police, partner = agencies["DE-BKA"], agencies["NL-FIOD"]
    police.publish_key(MLKEM768_X25519)
    customs = agencies["FR-CUSTOMS"]
    customs.recipient_keys(["DE-BKA"], refresh=True)
    sent = customs.send(["DE-BKA", "NL-FIOD"], b"hybrid and classical")
    assert customs.recipient_keys(["DE-BKA"])["DE-BKA"].suite == MLKEM768_X25519
    for client in (police, partner):
        message = _first(client)
        assert message.message_id == sent.message_id
        assert message.body == b"hybrid and classical"


def test_message_sealed_to_a_rotated_out_key_stays_readable(agencies: dict[str, AgencyClient]) -> None:
    """After the recipient publishes a new key, a message sealed to its old key still opens."""
    customs, police = agencies["FR-CUSTOMS"], agencies["DE-BKA"]
    old = customs.seal(["DE-BKA"], b"sealed to the old key")
    police.publish_key()
    customs.send_envelope(old)
    customs.recipient_keys(["DE-BKA"], refresh=True)
    customs.send(["DE-BKA"], b"sealed to the new key")
    bodies = {_first(police).body, _first(police).body}
    assert bodies == {b"sealed to the old key", b"sealed to the new key"}


@pytest.mark.parametrize("part", ["header", "ciphertext", "wrapped_key", "outer_signature"])
def test_flipped_bit_is_refused_by_the_broker(agencies: dict[str, AgencyClient], database: Database, part: str) -> None:
    """A flipped bit in header, ciphertext, wrapped key or outer signature is refused before storing."""
    customs = agencies["FR-CUSTOMS"]
    envelope = customs.seal(["DE-BKA"], b"alter me")
    if part == "header":
        envelope.header = _flip(envelope.header, 40)
    elif part == "ciphertext":
        envelope.ciphertext = _flip(envelope.ciphertext, 20)
    elif part == "wrapped_key":
        envelope.wrapped_keys[0].enc = _flip(envelope.wrapped_keys[0].enc, 5)
    else:
        envelope.header_signature = _flip(envelope.header_signature, 10)
    with pytest.raises(RemoteError) as refused:
        customs.send_envelope(envelope)
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert database.scalar("SELECT count(*) FROM messages") == 0
    assert database.scalar("SELECT count(*) FROM audit_entries WHERE event = 'request.rejected'") == 1


def _flip(data: bytes, at: int) -> bytes:
    changed = bytearray(data)
    changed[at % len(changed)] ^= 0x01
    return bytes(changed)


def test_header_signed_by_another_agency_is_refused(agencies: dict[str, AgencyClient]) -> None:
    """An envelope whose outer signature was made by another agency's key is refused by the broker."""
    customs, partner = agencies["FR-CUSTOMS"], agencies["NL-FIOD"]
    envelope = customs.seal(["DE-BKA"], b"x")
    envelope.header_signature = sign_identity(partner.identity.private_key, _pae.header_signing_input(envelope.header))
    with pytest.raises(RemoteError) as refused:
        customs.send_envelope(envelope)
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "signature" in refused.value.message


def test_inner_signature_not_the_senders_is_detected_by_the_recipient(agencies: dict[str, AgencyClient]) -> None:
    """A valid outer signature over content signed inside by another key: the recipient rejects it."""
    customs, police, partner = agencies["FR-CUSTOMS"], agencies["DE-BKA"], agencies["NL-FIOD"]
    # The sender's own content key (test-only hook of `seal`) lets us re-encrypt the content with
    # another agency's inner signature, then give it a valid outer signature: only the recipient,
    # who decrypts, can notice.
    content_key, nonce = os.urandom(32), os.urandom(12)
    envelope = seal(
        sender="FR-CUSTOMS",
        identity_key=customs.identity.private_key,
        certificate=customs.identity.certificate,
        recipients=["DE-BKA"],
        recipient_keys=customs.recipient_keys(["DE-BKA"]),
        kind=envelope_pb2.ALERT,
        body=b"forged inside",
        content_type="text/plain",
        handling=envelope_pb2.Handling(tlp=envelope_pb2.TLP_AMBER),
        _content_key=content_key,
        _nonce=nonce,
    )
    header = envelope_pb2.Header.FromString(envelope.header)
    aad = _pae.content_aad(header)
    content = envelope_pb2.Content.FromString(AESGCM(content_key).decrypt(nonce, envelope.ciphertext[12:], aad))
    content.inner_signature = sign_identity(
        partner.identity.private_key, _pae.content_signing_input(header, content.content_type, content.body)
    )
    envelope.ciphertext = nonce + AESGCM(content_key).encrypt(nonce, content.SerializeToString(), aad)
    header.ciphertext_sha256 = hashlib.sha256(envelope.ciphertext).digest()
    envelope.header = header.SerializeToString()
    envelope.header_signature = sign_identity(customs.identity.private_key, _pae.header_signing_input(envelope.header))
    sent = customs.send_envelope(envelope)
    invalid: list[InvalidDelivery] = []
    assert _first(police, timeout=3, on_invalid=invalid.append) is None
    assert [i.message_id for i in invalid] == [sent.message_id]
    assert "signature" in str(invalid[0].error)
    [status] = customs.status(sent.message_id)
    assert status.receipt is not None
    assert status.receipt.status == envelope_pb2.REJECTED


def test_recipient_resending_an_envelope_as_its_own_is_refused(agencies: dict[str, AgencyClient]) -> None:
    """A recipient that re-sends the envelope it received to a third agency is refused (sender is not the caller)."""
    customs, police = agencies["FR-CUSTOMS"], agencies["DE-BKA"]
    customs.send(["DE-BKA"], b"for the police only")
    received = None
    for message in police.deliveries(timeout=5):
        received = message
        break
    assert received is not None
    envelope = customs.seal(["DE-BKA"], b"for the police only")
    with pytest.raises(RemoteError) as refused:
        police.send_envelope(envelope)
    assert refused.value.code is grpc.StatusCode.PERMISSION_DENIED


def test_key_bundle_signed_by_wrong_key_or_expired_is_refused(agencies: dict[str, AgencyClient]) -> None:
    """PublishKeyBundle refuses a bundle signed with another key, and one that has expired."""
    police, partner = agencies["DE-BKA"], agencies["NL-FIOD"]
    now = dt.datetime.now(dt.UTC)
    key = EncryptionKey.generate()
    forged = make_key_bundle(
        "DE-BKA",
        key,
        identity_key=partner.identity.private_key,
        certificate=police.identity.certificate,
        not_before=now,
        not_after=now + dt.timedelta(1),
    )
    expired = make_key_bundle(
        "DE-BKA",
        key,
        identity_key=police.identity.private_key,
        certificate=police.identity.certificate,
        not_before=now - dt.timedelta(days=3),
        not_after=now - dt.timedelta(days=1),
    )
    for bundle, reason in ((forged, "signature"), (expired, "expired")):
        with pytest.raises(RemoteError) as refused:
            police._call(police._stub.PublishKeyBundle, bundle)
        assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert reason in refused.value.message
