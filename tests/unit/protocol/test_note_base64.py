"""Signed notes and vkeys carry canonical base64 only (docs/protocol.md section 12)."""

from __future__ import annotations

import base64
import binascii

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from broker.protocol import _note
from broker.protocol.errors import VerificationError

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _non_canonical(encoded: str) -> str | None:
    """The same bytes with a different last data character (unused bits set), or None if none are unused."""
    stripped = encoded.rstrip("=")
    unused = {0: 0, 1: 0, 2: 4, 3: 2}[len(stripped) % 4] if encoded.endswith("=") else 0
    if not unused:
        return None
    last = _ALPHABET.index(stripped[-1])
    return stripped[:-1] + _ALPHABET[last | 1] + encoded[len(stripped) :]


@given(st.binary(min_size=1, max_size=80))
def test_decode_base64_accepts_exactly_the_canonical_encoding(data: bytes) -> None:
    encoded = base64.b64encode(data).decode()
    assert _note.decode_base64(encoded) == data
    other = _non_canonical(encoded)
    if other is not None:
        assert base64.b64decode(other) == data  # what the plain decoder would have let through
        with pytest.raises(binascii.Error, match="not canonical"):
            _note.decode_base64(other)


def test_a_signature_line_with_set_unused_bits_is_refused() -> None:
    key = Ed25519PrivateKey.generate()
    note = _note.sign_note("isb.dev/audit\n1\n" + base64.b64encode(bytes(32)).decode() + "\n", "isb.dev/audit", key)
    text, line = note.decode().rstrip("\n").rsplit("\n", 1)
    name_and_blob = line.rsplit(" ", 1)
    tampered = _non_canonical(name_and_blob[1])
    assert tampered is not None  # key id (4) + signature (64) = 68 bytes: two unused bits
    forged = f"{text}\n{name_and_blob[0]} {tampered}\n".encode()
    assert _note.verify_checkpoint(note, "isb.dev/audit", key.public_key()).size == 1
    with pytest.raises(VerificationError, match=r"not base64 \(standard, padded, canonical\)"):
        _note.verify_checkpoint(forged, "isb.dev/audit", key.public_key())


def test_a_checkpoint_root_with_set_unused_bits_or_of_the_wrong_length_is_refused() -> None:
    """The root line goes through the same canonical decoder as signatures and keys: a root with its
    unused low bits set decodes to the same hash with a plain decoder, and is refused here."""
    key = Ed25519PrivateKey.generate()
    root = bytes(range(32))
    encoded = base64.b64encode(root).decode()
    tampered = _non_canonical(encoded)
    assert tampered is not None  # 32 bytes: two unused bits in the last character
    for text, refusal in (
        (tampered, r"root hash is not base64 \(standard, padded, canonical\)"),
        (base64.b64encode(root[:31]).decode(), r"root hash is 31 bytes, not a SHA-256 hash \(32\)"),
    ):
        # Signed by the log's own key: only the root line is wrong.
        note = _note.sign_note(f"isb.dev/audit\n1\n{text}\n", "isb.dev/audit", key)
        with pytest.raises(VerificationError, match=refusal):
            _note.verify_checkpoint(note, "isb.dev/audit", key.public_key())
    honest = _note.sign_note(f"isb.dev/audit\n1\n{encoded}\n", "isb.dev/audit", key)
    assert _note.verify_checkpoint(honest, "isb.dev/audit", key.public_key()).root == root
