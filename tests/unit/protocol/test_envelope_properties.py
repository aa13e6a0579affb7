"""Property tests: seal/open round trips and detection of any single-bit corruption."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.api.v1 import envelope_pb2
from broker.errors import VerificationError
from broker.protocol.envelope import open_envelope, seal
from broker.protocol.keys import HYBRID_SUITE, X25519_SUITE
from tests.unit.protocol.protocol_testpki import Agency, Pki

POOL = [
    ("DE-BKA", X25519_SUITE),
    ("NL-FIOD", X25519_SUITE),
    ("US-CBP", HYBRID_SUITE),
    ("INT-INTERPOL", X25519_SUITE),
    ("JP-NPA", HYBRID_SUITE),
]
# Modest example counts keep the file to a few seconds; deadline off because CI timing varies.
PROPERTY_SETTINGS = settings(max_examples=50, deadline=None)


@pytest.fixture(scope="module")
def pool(pki: Pki) -> list[Agency]:
    """Five potential recipients, two of them post-quantum hybrid."""
    return [pki.agency(name, suite) for name, suite in POOL]


def _seal_for(
    sender: Agency, chosen: list[Agency], groups: list[str], body: bytes, **kwargs: object
) -> envelope_pb2.Envelope:
    return seal(
        sender=sender.name,
        identity_key=sender.identity_key,
        certificate=sender.certificate,
        recipients=[a.name for a in chosen] + groups,
        recipient_keys={a.name: a.bundle for a in chosen},
        body=body,
        **kwargs,  # type: ignore[arg-type]
    )


@PROPERTY_SETTINGS
@given(
    chosen=st.sets(st.integers(0, len(POOL) - 1), min_size=1),
    groups=st.lists(st.sampled_from(["G7-CT", "EU-CUSTOMS"]), unique=True),
    body=st.binary(max_size=4096),
    content_type=st.text(max_size=40),
    kind=st.sampled_from([envelope_pb2.ALERT, envelope_pb2.REQUEST, envelope_pb2.HIT_REPORT]),
    tlp=st.sampled_from(list(envelope_pb2.Tlp.values())),
    classification=st.text(max_size=20),
)
def test_every_recipient_and_nobody_else_opens(
    pki: Pki,
    pool: list[Agency],
    chosen: set[int],
    groups: list[str],
    body: bytes,
    content_type: str,
    kind: envelope_pb2.Kind.ValueType,
    tlp: envelope_pb2.Tlp.ValueType,
    classification: str,
) -> None:
    """For random payloads and recipient sets, each recipient reads the body and others cannot open."""
    sender = pki.agency("FR-CUSTOMS")
    recipients = [pool[i] for i in sorted(chosen)]
    handling = envelope_pb2.Handling(tlp=tlp, classification=classification)
    envelope = _seal_for(sender, recipients, groups, body, kind=kind, content_type=content_type, handling=handling)
    for index, agency in enumerate(pool):
        if index in chosen:
            opened = open_envelope(
                envelope, recipient=agency.name, keys=agency.keys, sender_certificate=sender.certificate
            )
            assert (opened.body, opened.content_type, opened.handling) == (body, content_type, handling)
        else:
            with pytest.raises(VerificationError, match="not addressed"):
                open_envelope(envelope, recipient=agency.name, keys=agency.keys, sender_certificate=sender.certificate)


@st.composite
def corruptions(draw: st.DrawFn) -> tuple[str, int, int]:
    """A field of the envelope, a wrapped-key index and a bit position inside that field."""
    field = draw(st.sampled_from(["header", "header_signature", "ciphertext", "enc", "key_id", "recipient", "drop"]))
    return field, draw(st.integers(0, 10)), draw(st.integers(0, 1 << 20))


def _flip_bytes(data: bytes, bit: int) -> bytes:
    index = (bit // 8) % len(data)
    return data[:index] + bytes([data[index] ^ (1 << (bit % 8))]) + data[index + 1 :]


def _flip_ascii(text: str, bit: int) -> str:
    # Stay within ASCII so the field remains valid UTF-8 (protobuf refuses anything else).
    return _flip_bytes(text.encode(), (bit // 8) * 8 + bit % 7).decode()


@PROPERTY_SETTINGS
@given(
    corruption=corruptions(),
    chosen=st.sets(st.integers(0, len(POOL) - 1), min_size=1),
    body=st.binary(max_size=512),
)
def test_any_single_bit_corruption_is_detected(
    pki: Pki, pool: list[Agency], corruption: tuple[str, int, int], chosen: set[int], body: bytes
) -> None:
    """One flipped bit in any envelope field, or a dropped wrapped key, is refused for every recipient."""
    sender = pki.agency("FR-CUSTOMS")
    recipients = [pool[i] for i in sorted(chosen)]
    envelope = _seal_for(sender, recipients, [], body, kind=envelope_pb2.ALERT, content_type="application/octet-stream")
    field, index, bit = corruption
    wrapped = envelope.wrapped_keys[index % len(envelope.wrapped_keys)]
    if field in ("header", "header_signature", "ciphertext"):
        setattr(envelope, field, _flip_bytes(getattr(envelope, field), bit))
    elif field == "enc":
        wrapped.enc = _flip_bytes(wrapped.enc, bit)
    elif field == "drop":
        envelope.wrapped_keys.remove(wrapped)
    else:
        setattr(wrapped, field, _flip_ascii(getattr(wrapped, field), bit))
    for agency in recipients:
        with pytest.raises(VerificationError):
            open_envelope(envelope, recipient=agency.name, keys=agency.keys, sender_certificate=sender.certificate)
