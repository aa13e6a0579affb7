"""C2SP signed notes (https://c2sp.org/signed-note) and tlog checkpoints (https://c2sp.org/tlog-checkpoint).

Internal: the audit log signs its checkpoints with this, auditors verify them with it.

A signed note is a UTF-8 text ending in a newline, a blank line, then signature lines
`U+2014 SPACE <key name> SPACE base64(key id || signature) NEWLINE`. The signature covers the text
including its final newline. With Ed25519 (signature type 0x01) the key id is the first four bytes of
`SHA-256(key name || 0x0A || 0x01 || public key)`, and a verifier key ("vkey") is published as
`<key name>+<hex key id>+<base64(0x01 || public key)>`.

A checkpoint is a note whose text is `origin`, the decimal tree size, the base64 root hash, then
optional non-empty extension lines. Our broker adds one extension line, `timestamp <unix seconds>`,
because DESIGN.md section 8 wants the signing time under the signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from broker.protocol.errors import ProtocolError, VerificationError

SIGNATURE_TYPE_ED25519 = 0x01
_EM_DASH = "\u2014"
_MAX_SIGNATURES = 100  # the Go reference implementation's cap; a note is small
_MAX_NOTE_BYTES = 1 << 20
_ED25519_SIGNATURE_SIZE = 64
_TIMESTAMP_PREFIX = "timestamp "
# Unicode spaces and '+' are forbidden in key names; control characters are forbidden in notes.
_BAD_NAME = re.compile(r"[\s+]")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


def raw_public_bytes(public_key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of an Ed25519 public key, as signed-note key ids and vkeys encode it."""
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _check_key_name(name: str, error: type[Exception] = VerificationError) -> None:
    if not name or _BAD_NAME.search(name):
        raise error(f"{name!r} is not a signed-note key name (non-empty, no spaces, no '+')")


# Signed-note key types (C2SP signed-note): 0x01 signs notes, 0x04 is a cosignature/v1 witness key.
_KEY_TYPE_NAMES = {SIGNATURE_TYPE_ED25519: "Ed25519 (type 0x01)", 0x04: "Ed25519 cosignature/v1 (type 0x04)"}


def key_id(key_name: str, public_key: Ed25519PublicKey, *, key_type: int = SIGNATURE_TYPE_ED25519) -> bytes:
    """The 4-byte key id: `SHA-256(key name || 0x0A || key type || public key)[:4]`."""
    data = key_name.encode() + b"\n" + bytes([key_type]) + raw_public_bytes(public_key)
    return hashlib.sha256(data).digest()[:4]


def encode_vkey(key_name: str, public_key: Ed25519PublicKey, *, key_type: int = SIGNATURE_TYPE_ED25519) -> str:
    """The verifier key string `<name>+<hex key id>+<base64(key type || public key)>` to publish."""
    _check_key_name(key_name, ValueError)
    material = base64.b64encode(bytes([key_type]) + raw_public_bytes(public_key)).decode()
    return f"{key_name}+{key_id(key_name, public_key, key_type=key_type).hex()}+{material}"


def parse_vkey(
    vkey: str, *, key_type: int = SIGNATURE_TYPE_ED25519, error: type[ProtocolError] = VerificationError
) -> tuple[str, Ed25519PublicKey]:
    """Parse a verifier key of `key_type` into its name and Ed25519 public key, checking its key id."""
    # The base64 part may itself contain '+', so split from the left exactly twice.
    parts = vkey.strip().split("+", 2)
    if len(parts) != 3:
        raise error("a verifier key has the form <name>+<hex key id>+<base64 key>")
    name, hex_id, material = parts
    _check_key_name(name, error)
    try:
        raw = decode_base64(material)
        claimed_id = bytes.fromhex(hex_id)
    except (binascii.Error, ValueError) as exc:
        raise error(f"verifier key {name!r}: bad encoding ({exc})") from exc
    if len(raw) != 33 or raw[0] != key_type or len(hex_id) != 8:
        raise error(f"verifier key {name!r} is not an {_KEY_TYPE_NAMES[key_type]} key")
    public_key = Ed25519PublicKey.from_public_bytes(raw[1:])
    if key_id(name, public_key, key_type=key_type) != claimed_id:
        raise error(f"verifier key {name!r}: key id {hex_id} does not match the key")
    return name, public_key


def sign_note(text: str, key_name: str, private_key: Ed25519PrivateKey) -> bytes:
    """Sign `text` (non-empty, newline-terminated, no control characters) as a one-signature note."""
    _check_key_name(key_name, ValueError)
    if not text.endswith("\n") or _CONTROL.search(text):
        raise ValueError("note text must end in a newline and hold no control characters but newline")
    signature = private_key.sign(text.encode())
    blob = key_id(key_name, private_key.public_key()) + signature
    return f"{text}\n{_EM_DASH} {key_name} {base64.b64encode(blob).decode()}\n".encode()


def decode_base64(text: str) -> bytes:
    """Standard padded base64, canonical only: `text` must be exactly what encoding the result gives.

    `b64decode` alone ignores the unused low bits of the last character, so several strings decode to
    the same bytes; a signed note or key with a changed character must not verify (section 12).
    Raises `binascii.Error` or `ValueError` (a non-ASCII character).
    """
    raw = base64.b64decode(text, validate=True)
    if base64.b64encode(raw).decode() != text:
        raise binascii.Error("not canonical base64")
    return raw


def parse_signature_line(line: str) -> tuple[str, bytes]:
    """`— <name> <base64>` (without its newline) as (name, decoded blob)."""
    prefix = f"{_EM_DASH} "
    fields = line[len(prefix) :].split(" ") if line.startswith(prefix) else []
    if len(fields) != 2 or not fields[0]:
        raise VerificationError(f"malformed signature line {line[:80]!r}")
    name, encoded = fields
    try:
        blob = decode_base64(encoded)
    except (binascii.Error, ValueError) as exc:  # ValueError: a non-ASCII character in the base64
        raise VerificationError(f"signature line of {name[:80]!r} is not base64 (standard, padded, canonical)") from exc
    if len(blob) < 5:
        raise VerificationError(f"signature line of {name[:80]!r} is too short")
    return name, blob


def open_note(note: bytes, key_name: str, public_key: Ed25519PublicKey) -> str:
    """Verify `note` carries a valid signature by (`key_name`, `public_key`); return its text."""
    _check_key_name(key_name)
    # 1. Size, encoding and character set.
    if len(note) > _MAX_NOTE_BYTES:
        raise VerificationError("signed note is larger than 1 MiB")
    try:
        decoded = note.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise VerificationError("signed note is not valid UTF-8") from exc
    if _CONTROL.search(decoded):
        raise VerificationError("signed note holds a control character")
    # 2. The text ends at the last blank line; signatures follow, one per line.
    split = decoded.rfind("\n\n")
    if split < 0 or not decoded.endswith("\n"):
        raise VerificationError("signed note has no blank line before its signatures")
    text, signature_block = decoded[: split + 1], decoded[split + 2 :]
    lines = signature_block[:-1].split("\n")
    if len(lines) > _MAX_SIGNATURES:
        raise VerificationError(f"signed note has more than {_MAX_SIGNATURES} signatures")
    wanted_id = key_id(key_name, public_key)
    # 3. Every line must be well formed; the one from our key must verify.
    found = False
    for line in lines:
        name, blob = parse_signature_line(line)
        if name != key_name or blob[:4] != wanted_id:
            continue  # another signer (e.g. a witness): not ours to judge
        if len(blob) != 4 + _ED25519_SIGNATURE_SIZE:
            raise VerificationError(f"signature of {name!r} is not an Ed25519 signature")
        try:
            public_key.verify(blob[4:], text.encode())
        except InvalidSignature as exc:
            raise VerificationError(f"signature of {key_name!r} on the note does not verify") from exc
        found = True
    if not found:
        raise VerificationError(f"signed note carries no signature by key {key_name!r} (key id {wanted_id.hex()})")
    return text


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A verified tlog checkpoint: the log `origin`, its `size` and `root` hash, and the signed note."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...]
    note: bytes

    @property
    def time(self) -> datetime | None:
        """The signing time from the `timestamp` extension line, if any."""
        for line in self.extensions:
            if line.startswith(_TIMESTAMP_PREFIX) and _DECIMAL.fullmatch(line[len(_TIMESTAMP_PREFIX) :]):
                return datetime.fromtimestamp(int(line[len(_TIMESTAMP_PREFIX) :]), tz=UTC)
        return None


def checkpoint_text(origin: str, size: int, root: bytes, extensions: tuple[str, ...] = ()) -> str:
    """The checkpoint note text: origin, size, base64 root, extension lines, each newline-terminated."""
    if not origin or "\n" in origin or size < 0 or len(root) != 32:
        raise ValueError("a checkpoint needs a one-line origin, a size >= 0 and a 32-byte root")
    if any(not line or "\n" in line for line in extensions):
        raise ValueError("checkpoint extension lines must be non-empty single lines")
    lines = [origin, str(size), base64.b64encode(root).decode(), *extensions]
    return "".join(f"{line}\n" for line in lines)


def timestamp_extension(when: datetime) -> str:
    """The `timestamp <unix seconds>` extension line for a checkpoint signed at `when`."""
    return f"{_TIMESTAMP_PREFIX}{int(when.timestamp())}"


def sign_checkpoint(
    origin: str,
    size: int,
    root: bytes,
    key_name: str,
    private_key: Ed25519PrivateKey,
    *,
    extensions: tuple[str, ...] = (),
) -> bytes:
    """Sign a checkpoint of the tree of `size` leaves with `root` as a C2SP signed note."""
    return sign_note(checkpoint_text(origin, size, root, extensions), key_name, private_key)


def verify_checkpoint(note: bytes, key_name: str, public_key: Ed25519PublicKey) -> Checkpoint:
    """Verify a checkpoint's signature by (`key_name`, `public_key`) and parse its text."""
    text = open_note(note, key_name, public_key)
    lines = text[:-1].split("\n")
    if len(lines) < 3 or any(not line for line in lines):
        raise VerificationError("checkpoint text needs at least three non-empty lines")
    origin, size_text, root_text = lines[:3]
    if not _DECIMAL.fullmatch(size_text):
        raise VerificationError(f"checkpoint tree size {size_text!r} is not a decimal number")
    try:
        root = decode_base64(root_text)
    except (binascii.Error, ValueError) as exc:  # ValueError: a non-ASCII character in the base64
        raise VerificationError("checkpoint root hash is not base64 (standard, padded, canonical)") from exc
    if len(root) != 32:
        raise VerificationError(f"checkpoint root hash is {len(root)} bytes, not a SHA-256 hash (32)")
    return Checkpoint(origin, int(size_text), root, tuple(lines[3:]), note)
