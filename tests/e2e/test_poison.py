"""Issue 12: one bad delivery never stalls a recipient. A poison message queued before a good one is
answered with a signed REJECTED receipt naming why, reported to `on_invalid`, and the good one is
delivered next, over real mutual TLS."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.api.v1 import envelope_pb2
from broker.pki.dev import DevPki
from broker.protocol import _pae
from broker.protocol.keys import sign_identity
from clients import AgencyClient, InvalidDelivery
from tests.e2e.broker_support import Database, RunningBroker

KEY, NONCE = os.urandom(32), os.urandom(12)


def _resign(client: AgencyClient, envelope: envelope_pb2.Envelope, header: envelope_pb2.Header) -> None:
    header.ciphertext_sha256 = hashlib.sha256(envelope.ciphertext).digest()
    header.wrapped_keys_sha256 = _pae.wrapped_keys_sha256(envelope.wrapped_keys)
    envelope.header = header.SerializeToString()
    envelope.header_signature = sign_identity(client.identity.private_key, _pae.header_signing_input(envelope.header))


def _reencrypt(client: AgencyClient, envelope: envelope_pb2.Envelope, change: Callable[[bytes], bytes]) -> None:
    header = envelope_pb2.Header.FromString(envelope.header)
    aad = _pae.content_aad(header)
    plaintext = AESGCM(KEY).decrypt(NONCE, envelope.ciphertext[12:], aad)
    envelope.ciphertext = NONCE + AESGCM(KEY).encrypt(NONCE, change(plaintext), aad)
    _resign(client, envelope, header)


def _bad_inner_signature(client: AgencyClient, envelope: envelope_pb2.Envelope) -> None:
    def flip(plaintext: bytes) -> bytes:
        content = envelope_pb2.Content.FromString(plaintext)
        content.inner_signature = content.inner_signature[:-1] + bytes([content.inner_signature[-1] ^ 1])
        return content.SerializeToString()

    _reencrypt(client, envelope, flip)


def _garbage_content(client: AgencyClient, envelope: envelope_pb2.Envelope) -> None:
    _reencrypt(client, envelope, lambda _: b"\xff\xff\xff this is not a Content message")


def _undecryptable_key(client: AgencyClient, envelope: envelope_pb2.Envelope) -> None:
    key = envelope.wrapped_keys[0]
    key.enc = key.enc[:-1] + bytes([key.enc[-1] ^ 1])
    _resign(client, envelope, envelope_pb2.Header.FromString(envelope.header))


POISONS: list[tuple[str, Callable[[AgencyClient, envelope_pb2.Envelope], None], str]] = [
    ("bad-inner-signature", _bad_inner_signature, "inner content signature does not verify"),
    ("garbage-content", _garbage_content, "decrypted content does not parse"),
    ("undecryptable-key", _undecryptable_key, "wrapped key for DE-BKA does not decrypt"),
]


def _receive_one(police: AgencyClient) -> tuple[Any, list[InvalidDelivery]]:
    invalid: list[InvalidDelivery] = []
    stream = police.deliveries(timeout=10, on_invalid=invalid.append)
    message = next(stream)
    police.ack(message)
    return message, invalid


@pytest.mark.parametrize(("poison", "reason"), [p[1:] for p in POISONS], ids=[p[0] for p in POISONS])
def test_poison_queued_before_a_good_message_is_rejected_and_the_good_one_arrives(
    agencies: dict[str, AgencyClient],
    database: Database,
    poison: Callable[[AgencyClient, envelope_pb2.Envelope], None],
    reason: str,
) -> None:
    """Inner-layer poison the broker cannot see: REJECTED receipt with the reason, reported, stream moves on."""
    customs, police = agencies["FR-CUSTOMS"], agencies["DE-BKA"]
    bad = customs.seal(["DE-BKA"], b"poison", _content_key=KEY, _nonce=NONCE)
    poison(customs, bad)
    bad_id = customs.send_envelope(bad).message_id
    good_id = customs.send(["DE-BKA"], b"the good one").message_id
    message, invalid = _receive_one(police)
    assert (message.message_id, message.body) == (good_id, b"the good one")
    assert [(i.message_id, i.receipted) for i in invalid] == [(bad_id, True)]
    assert reason in invalid[0].reason
    [state] = customs.status(bad_id)
    assert state.state == "ACKNOWLEDGED"
    assert state.receipt is not None
    assert state.receipt.status == envelope_pb2.REJECTED
    assert reason in state.receipt.reason


def test_header_the_sdk_refuses_is_rejected_and_the_stream_moves_on(
    broker: RunningBroker,
    pki: DevPki,
    database: Database,
    tmp_path: Any,
) -> None:
    """A stored header with priority 99 (as a broker before validation stored it): REJECTED, then the next one."""
    customs = AgencyClient.from_dir(broker.target, pki.directory, "FR-CUSTOMS", keystore=tmp_path / "fr")
    police = AgencyClient.from_dir(broker.target, pki.directory, "DE-BKA", keystore=tmp_path / "de")
    police.publish_key()
    bad = customs.seal(["DE-BKA"], b"stored before validation")
    bad_id = customs.send_envelope(bad).message_id
    header = envelope_pb2.Header.FromString(bad.header)
    header.priority = 99  # type: ignore[assignment]
    _resign(customs, bad, header)
    stored = bad.SerializeToString()
    broker.stop()
    with database.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE messages SET envelope = %(e)s, envelope_sha256 = %(d)s WHERE message_id = %(m)s"
            if database.kind == "postgresql"
            else "UPDATE messages SET envelope = :e, envelope_sha256 = :d WHERE message_id = :m",
            {"e": stored, "d": hashlib.sha256(stored).digest(), "m": bad_id},
        )
    broker.loop = asyncio.new_event_loop()
    broker.start()
    customs = AgencyClient.from_dir(broker.target, pki.directory, "FR-CUSTOMS", keystore=tmp_path / "fr")
    police = AgencyClient.from_dir(broker.target, pki.directory, "DE-BKA", keystore=tmp_path / "de")
    good_id = customs.send(["DE-BKA"], b"the good one").message_id
    message, invalid = _receive_one(police)
    assert message.message_id == good_id
    assert [(i.message_id, i.receipted) for i in invalid] == [(bad_id, True)]
    assert "header.priority is unknown (99)" in invalid[0].reason
    assert database.scalar("SELECT state FROM deliveries WHERE message_id = :m", m=bad_id) == 3
