"""C2SP tlog-cosignature/v1 Ed25519 cosignatures (https://c2sp.org/tlog-cosignature).

Internal: the witness (`broker.witness`) signs with this, the broker attaches the lines, auditors and
agencies verify them through `broker.protocol.witness_policy`.

A cosignature is a signed-note signature line on a checkpoint:

    U+2014 SPACE <cosigner name> SPACE base64(key id || timestamp || signature) NEWLINE

- key id: `SHA-256(name || 0x0A || 0x04 || 32-byte Ed25519 public key)[:4]` (0x04: cosignature/v1);
- timestamp: u64 big-endian, POSIX seconds, at most 2^63 - 1;
- signature: Ed25519 over `"cosignature/v1\\n" || "time " || decimal(timestamp) || "\\n" || note body`,
  the note body being the whole checkpoint text including its final newline (extension lines too).

A cosigner vkey is `<name>+<hex key id>+<base64(0x04 || public key)>`.
"""

from __future__ import annotations

import base64
import re
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from broker.protocol import _note
from broker.protocol.errors import ProtocolError, VerificationError

COSIGNATURE_TYPE_ED25519 = 0x04
COSIGNATURE_HEADER = "cosignature/v1"
MAX_TIMESTAMP = (1 << 63) - 1
_EM_DASH = "\u2014"
_ED25519_SIGNATURE_SIZE = 64
_BLOB_SIZE = 4 + 8 + _ED25519_SIGNATURE_SIZE
_MAX_NOTE_BYTES = 1 << 20
_MAX_SIGNATURES = 100
_BAD_NAME = re.compile(r"[\s+]")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")


def _check_name(name: str, error: type[Exception] = ProtocolError) -> None:
    if not name or _BAD_NAME.search(name) or _CONTROL.search(name):
        raise error(f"{name!r} is not a signed-note key name (non-empty, no spaces, no '+')")


@dataclass(frozen=True, slots=True)
class Cosigner:
    """A cosigner (witness) identity: its key name and Ed25519 public key."""

    name: str
    public_key: Ed25519PublicKey

    @property
    def key_id(self) -> bytes:
        """`SHA-256(name || 0x0A || 0x04 || public key)[:4]`."""
        return cosigner_key_id(self.name, self.public_key)

    @property
    def vkey(self) -> str:
        """The verifier key string to publish in a policy."""
        return encode_cosigner_vkey(self.name, self.public_key)

    @property
    def raw_public_key(self) -> bytes:
        """The 32 public key bytes."""
        return _note.raw_public_bytes(self.public_key)


def cosigner_key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    """The 4-byte key id of an Ed25519 cosignature/v1 key."""
    return _note.key_id(name, public_key, key_type=COSIGNATURE_TYPE_ED25519)


def encode_cosigner_vkey(name: str, public_key: Ed25519PublicKey) -> str:
    """`<name>+<hex key id>+<base64(0x04 || public key)>`."""
    _check_name(name, ValueError)
    return _note.encode_vkey(name, public_key, key_type=COSIGNATURE_TYPE_ED25519)


def parse_cosigner_vkey(vkey: str) -> Cosigner:
    """Parse a cosignature/v1 Ed25519 verifier key (type 0x04), checking its key id."""
    name, public_key = _note.parse_vkey(vkey, key_type=COSIGNATURE_TYPE_ED25519, error=ProtocolError)
    _check_name(name)  # cosigner names also refuse control characters
    return Cosigner(name, public_key)


def signed_message(checkpoint_text: str, timestamp: int) -> bytes:
    """The bytes a cosigner signs: header line, `time <timestamp>` line, then the checkpoint text."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise ProtocolError(f"cosignature timestamp {timestamp} is outside 0..2^63-1")
    return f"{COSIGNATURE_HEADER}\ntime {timestamp}\n{checkpoint_text}".encode()


def cosign(checkpoint_text: str, name: str, private_key: Ed25519PrivateKey, timestamp: int) -> str:
    """The signature line (ending in a newline) of a cosignature on `checkpoint_text` at `timestamp`."""
    _check_name(name, ValueError)
    if not checkpoint_text.endswith("\n"):
        raise ValueError("checkpoint text must end in a newline")
    signature = private_key.sign(signed_message(checkpoint_text, timestamp))
    blob = cosigner_key_id(name, private_key.public_key()) + struct.pack(">Q", timestamp) + signature
    return f"{_EM_DASH} {name} {base64.b64encode(blob).decode()}\n"


def split_note(note: bytes) -> tuple[str, list[tuple[str, bytes]]]:
    """A signed note's text (with its final newline) and its signature lines as (name, blob) pairs."""
    if len(note) > _MAX_NOTE_BYTES:
        raise VerificationError("signed note is larger than 1 MiB")
    try:
        decoded = note.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise VerificationError("signed note is not valid UTF-8") from exc
    if _CONTROL.search(decoded):
        raise VerificationError("signed note holds a control character")
    split = decoded.rfind("\n\n")
    if split < 0 or not decoded.endswith("\n"):
        raise VerificationError("signed note has no blank line before its signatures")
    text, block = decoded[: split + 1], decoded[split + 2 : -1]
    lines = block.split("\n")
    if len(lines) > _MAX_SIGNATURES:
        raise VerificationError(f"signed note has more than {_MAX_SIGNATURES} signatures")
    return text, [_note.parse_signature_line(line) for line in lines]


def verify_cosignature(checkpoint_text: str, cosigner: Cosigner, blob: bytes) -> int:
    """Verify one cosignature blob (key id || timestamp || signature); return its timestamp."""
    if len(blob) != _BLOB_SIZE or blob[:4] != cosigner.key_id:
        raise VerificationError(f"cosignature of {cosigner.name!r} is not an Ed25519 cosignature/v1")
    (timestamp,) = struct.unpack(">Q", blob[4:12])
    if timestamp > MAX_TIMESTAMP:
        raise VerificationError(f"cosignature of {cosigner.name!r} has a timestamp above 2^63-1")
    try:
        cosigner.public_key.verify(blob[12:], signed_message(checkpoint_text, timestamp))
    except InvalidSignature as exc:
        raise VerificationError(f"cosignature of {cosigner.name!r} does not verify") from exc
    return int(timestamp)


def verify_cosignatures(note: bytes, cosigners: list[Cosigner]) -> dict[tuple[str, bytes], int]:
    """The cosigners, as (name, key id), whose cosignature on `note` verifies, with their timestamps.

    Lines of unknown (name, key id) are ignored, as C2SP requires. A line that claims a known
    cosigner's name and key id but does not verify is refused: it is forged or corrupted.
    """
    text, lines = split_note(note)
    wanted = {(c.name, c.key_id): c for c in cosigners}
    found: dict[tuple[str, bytes], int] = {}
    for name, blob in lines:
        cosigner = wanted.get((name, blob[:4]))
        if cosigner is not None:
            found[(name, blob[:4])] = verify_cosignature(text, cosigner, blob)
    return found


def attach(note: bytes, signature_lines: list[str]) -> bytes:
    """`note` with the given signature lines appended (each ending in a newline), skipping duplicates."""
    present = set(note.decode("utf-8").split("\n"))
    extra = [line for line in signature_lines if line.rstrip("\n") not in present]
    for line in extra:
        _note.parse_signature_line(line.rstrip("\n"))
    return note + "".join(line if line.endswith("\n") else f"{line}\n" for line in extra).encode()


def parse_signature_lines(body: bytes) -> list[str]:
    """A tlog-witness 200 response body: one or more signature lines, each ending in a newline."""
    try:
        decoded = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise VerificationError("cosignature response is not UTF-8") from exc
    if not decoded.endswith("\n") or _CONTROL.search(decoded):
        raise VerificationError("cosignature response must be newline-terminated signature lines")
    lines = decoded[:-1].split("\n")
    for line in lines:
        _note.parse_signature_line(line)
    return [f"{line}\n" for line in lines]
