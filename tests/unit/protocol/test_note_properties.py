"""Properties of the signed-note and checkpoint parser: whatever the bytes, the answer is a verified
checkpoint or a `VerificationError`, never another exception, and no change to a signed note verifies."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.protocol import _note
from broker.protocol.errors import VerificationError

KEY = Ed25519PrivateKey.generate()
NAME = "isb.test/audit"
PUBLIC = KEY.public_key()
NOTE = _note.sign_checkpoint(NAME, 42, bytes(range(32)), NAME, KEY, extensions=("timestamp 1700000000",))
PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Bytes near the grammar: pieces of a real note, the em dash, newlines, base64 characters, non-ASCII.
_PIECES = st.sampled_from(
    [
        b"\n",
        b"\n\n",
        "\u2014 ".encode(),
        NAME.encode(),
        b" ",
        b"+",
        b"=",
        b"AAAA",
        b"\xff",
        "\u00e9".encode(),
        b"\x00",
        b"42",
        b"timestamp ",
        NOTE[:20],
        NOTE[-30:],
    ]
)
NEAR_NOTES = st.lists(_PIECES, max_size=30).map(b"".join)


def _outcome(note: bytes) -> _note.Checkpoint | None:
    try:
        return _note.verify_checkpoint(note, NAME, PUBLIC)
    except VerificationError:
        return None


@PROPERTY_SETTINGS
@given(st.binary(max_size=600))
def test_arbitrary_bytes_are_a_verification_error_or_a_checkpoint(data: bytes) -> None:
    """Random bytes never raise anything but VerificationError (and never verify)."""
    assert _outcome(data) is None


@PROPERTY_SETTINGS
@given(NEAR_NOTES)
def test_bytes_near_the_note_grammar_are_a_verification_error(data: bytes) -> None:
    """Strings built from the note's own pieces are refused cleanly."""
    assert _outcome(data) is None


@PROPERTY_SETTINGS
@given(st.integers(min_value=0, max_value=len(NOTE) - 1), st.integers(min_value=0, max_value=255))
def test_any_changed_byte_of_a_signed_note_is_refused(position: int, value: int) -> None:
    """Changing one byte of a valid checkpoint never yields a different verified checkpoint."""
    changed = NOTE[:position] + bytes([value]) + NOTE[position + 1 :]
    outcome = _outcome(changed)
    assert outcome is None or (changed == NOTE and outcome.size == 42)


@PROPERTY_SETTINGS
@given(st.binary(max_size=40), st.binary(max_size=40))
def test_bytes_around_a_signed_note_are_refused(prefix: bytes, suffix: bytes) -> None:
    """A valid note with anything prepended or appended verifies only if nothing was added."""
    outcome = _outcome(prefix + NOTE + suffix)
    assert outcome is None or (prefix == b"" and suffix == b"")


@PROPERTY_SETTINGS
@given(st.text(max_size=120))
def test_arbitrary_verifier_keys_are_a_verification_error(text: str) -> None:
    """parse_vkey refuses anything that is not a verifier key with VerificationError only."""
    try:
        name, key = _note.parse_vkey(text)
    except VerificationError:
        return
    assert _note.encode_vkey(name, key) == text.strip()
