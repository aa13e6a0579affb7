"""C2SP signed notes and tlog checkpoints with Ed25519."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.errors import VerificationError
from broker.protocol import _note

# The example of golang.org/x/mod/sumdb/note (package documentation and note_test.go): an independent
# implementation's key, text and signature. Ed25519 is deterministic, so we must reproduce it exactly.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_NOTE = (
    GO_TEXT
    + "\n\u2014 PeterNeumann "
    + "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
).encode()

ROOT = bytes(range(32))


def go_private_key() -> Ed25519PrivateKey:
    seed = base64.b64decode(GO_SKEY.split("+", 4)[4])
    assert seed[0] == _note.SIGNATURE_TYPE_ED25519
    return Ed25519PrivateKey.from_private_bytes(seed[1:])


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_sign_note_reproduces_the_go_reference_note() -> None:
    """Signing the Go example text with its key gives the Go example note byte for byte."""
    assert _note.sign_note(GO_TEXT, "PeterNeumann", go_private_key()) == GO_NOTE


def test_vkey_encoding_reproduces_the_go_reference_vkey() -> None:
    """The verifier key string (name, key id, type and key) matches the Go example."""
    assert _note.encode_vkey("PeterNeumann", go_private_key().public_key()) == GO_VKEY


def test_open_note_accepts_the_go_reference_note() -> None:
    """The Go example note verifies under its published verifier key."""
    name, public_key = _note.parse_vkey(GO_VKEY)
    assert _note.open_note(GO_NOTE, name, public_key) == GO_TEXT


def test_open_note_rejects_a_changed_text() -> None:
    """One changed character in the text breaks the signature."""
    name, public_key = _note.parse_vkey(GO_VKEY)
    with pytest.raises(VerificationError, match="does not verify"):
        _note.open_note(GO_NOTE.replace(b"cryptography", b"cryptographY"), name, public_key)


def test_parse_vkey_rejects_a_key_id_that_does_not_match() -> None:
    """A vkey whose key id is not derived from its name and key is refused."""
    with pytest.raises(VerificationError, match="key id"):
        _note.parse_vkey(GO_VKEY.replace("c74f20a3", "c74f20a4"))


def test_parse_vkey_rejects_malformed_strings() -> None:
    """Truncated or garbled vkeys are a VerificationError, not a ValueError."""
    for bad in ("PeterNeumann", "PeterNeumann+zz+AAAA", "PeterNeumann+c74f20a3+!!!!", GO_VKEY[:-4]):
        with pytest.raises(VerificationError):
            _note.parse_vkey(bad)


def test_checkpoint_round_trips(key: Ed25519PrivateKey) -> None:
    """A signed checkpoint verifies and parses back into origin, size, root and time."""
    when = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    note = _note.sign_checkpoint(
        "isb.dev/audit", 42, ROOT, "isb.dev/audit", key, extensions=(_note.timestamp_extension(when),)
    )
    checkpoint = _note.verify_checkpoint(note, "isb.dev/audit", key.public_key())
    assert (checkpoint.origin, checkpoint.size, checkpoint.root) == ("isb.dev/audit", 42, ROOT)
    assert checkpoint.time == when
    assert note.startswith(b"isb.dev/audit\n42\n" + base64.b64encode(ROOT) + b"\ntimestamp ")
    assert "\n\n\u2014 isb.dev/audit ".encode() in note


def test_checkpoint_signed_by_another_key_is_rejected(key: Ed25519PrivateKey) -> None:
    """A checkpoint by a different key under the same name carries no signature we accept."""
    note = _note.sign_checkpoint("isb.dev/audit", 1, ROOT, "isb.dev/audit", Ed25519PrivateKey.generate())
    with pytest.raises(VerificationError, match="no signature by key"):
        _note.verify_checkpoint(note, "isb.dev/audit", key.public_key())


def test_checkpoint_with_a_forged_signature_is_rejected(key: Ed25519PrivateKey) -> None:
    """A checkpoint whose signature bytes were altered fails verification."""
    note = _note.sign_checkpoint("isb.dev/audit", 1, ROOT, "isb.dev/audit", key)
    text, sig_line = note.decode().rsplit(" ", 1)
    blob = bytearray(base64.b64decode(sig_line))
    blob[10] ^= 1
    forged = f"{text} {base64.b64encode(bytes(blob)).decode()}\n".encode()
    with pytest.raises(VerificationError, match="does not verify"):
        _note.verify_checkpoint(forged, "isb.dev/audit", key.public_key())


def test_checkpoint_with_changed_size_is_rejected(key: Ed25519PrivateKey) -> None:
    """Rewriting the tree size under an existing signature is caught."""
    note = _note.sign_checkpoint("isb.dev/audit", 10, ROOT, "isb.dev/audit", key)
    with pytest.raises(VerificationError):
        _note.verify_checkpoint(note.replace(b"\n10\n", b"\n11\n"), "isb.dev/audit", key.public_key())


def test_unknown_extra_signers_are_ignored(key: Ed25519PrivateKey) -> None:
    """A witness cosignature line from another key does not disturb verification."""
    note = _note.sign_checkpoint("isb.dev/audit", 3, ROOT, "isb.dev/audit", key)
    witness = base64.b64encode(b"\x01\x02\x03\x04" + bytes(64)).decode()
    cosigned = note + f"\u2014 witness.example {witness}\n".encode()
    assert _note.verify_checkpoint(cosigned, "isb.dev/audit", key.public_key()).size == 3


@pytest.mark.parametrize(
    ("note", "message"),
    [
        (b"isb.dev/audit\n1\n", "blank line"),
        (b"\xff\xfe\n\n\xe2\x80\x94 a b\n", "UTF-8"),
        (b"isb.dev/audit\n1\x07\n\n\xe2\x80\x94 a AAAA\n", "control character"),
        (b"isb.dev/audit\n1\n\n-- isb.dev/audit AAAAAAAA\n", "malformed signature line"),
        (b"isb.dev/audit\n1\n\n\xe2\x80\x94 isb.dev/audit ***\n", "not base64"),
    ],
)
def test_malformed_notes_raise_verification_error(key: Ed25519PrivateKey, note: bytes, message: str) -> None:
    """Malformed notes surface as VerificationError naming the defect."""
    with pytest.raises(VerificationError, match=message):
        _note.verify_checkpoint(note, "isb.dev/audit", key.public_key())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("isb.dev/audit\n", "three non-empty lines"),
        ("isb.dev/audit\n007\nAAAA\n", "decimal"),
        ("isb.dev/audit\n7\nnot-base64!\n", "base64"),
        ("isb.dev/audit\n7\nAAAA\n", "SHA-256"),
    ],
)
def test_malformed_checkpoint_bodies_are_rejected(key: Ed25519PrivateKey, text: str, message: str) -> None:
    """Validly signed texts that are not checkpoints are refused."""
    note = _note.sign_note(text, "isb.dev/audit", key)
    with pytest.raises(VerificationError, match=message):
        _note.verify_checkpoint(note, "isb.dev/audit", key.public_key())


def test_key_names_with_spaces_or_plus_are_refused(key: Ed25519PrivateKey) -> None:
    """Signing under a name the spec forbids is a programming error."""
    for name in ("has space", "a+b", ""):
        with pytest.raises(ValueError, match="key name"):
            _note.sign_note("x\n", name, key)


def test_non_ascii_character_in_a_signature_line_is_a_verification_error() -> None:
    """A non-ASCII character inside the base64 of a signature line is VerificationError, not ValueError."""
    key = Ed25519PrivateKey.generate()
    note = _note.sign_note("hello\n", "isb.test/audit", key).decode()
    tampered = (note[:-3] + "\u00e9" + note[-2:]).encode()
    with pytest.raises(VerificationError, match="not base64"):
        _note.open_note(tampered, "isb.test/audit", key.public_key())
