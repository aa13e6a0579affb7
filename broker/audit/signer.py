"""The broker's audit key: it signs checkpoints and publishes its verifier key."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from broker.errors import ConfigurationError
from broker.protocol import _note


class CheckpointSigner:
    """Signs checkpoints of the log `origin` with an Ed25519 key named `key_name`."""

    def __init__(self, private_key: Ed25519PrivateKey, origin: str, key_name: str | None = None) -> None:
        """Use `private_key`; the key name defaults to the origin, as C2SP logs usually do."""
        self._private_key = private_key
        self.origin = origin
        self.key_name = origin if key_name is None else key_name
        try:
            self.vkey = _note.encode_vkey(self.key_name, private_key.public_key())
            _note.checkpoint_text(origin, 0, bytes(32))
        except ValueError as exc:
            raise ConfigurationError(f"audit checkpoint origin or key name is unusable: {exc}") from exc

    @classmethod
    def from_pem_file(cls, path: Path, origin: str, key_name: str | None = None) -> CheckpointSigner:
        """Load an unencrypted PKCS#8 PEM Ed25519 private key (e.g. `certs/dev/audit.key`)."""
        try:
            key = load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigurationError(f"cannot load the audit key {path}: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigurationError(f"the audit key {path} is not an Ed25519 key")
        return cls(key, origin, key_name)

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The key auditors verify checkpoints with."""
        return self._private_key.public_key()

    def sign(self, size: int, root: bytes, when: datetime | None = None) -> bytes:
        """A signed checkpoint note for the tree of `size` leaves with `root`, stamped with `when`."""
        when = datetime.now(UTC) if when is None else when
        return _note.sign_checkpoint(
            self.origin,
            size,
            root,
            self.key_name,
            self._private_key,
            extensions=(_note.timestamp_extension(when),),
        )

    def __repr__(self) -> str:
        """Show the public identity only: never the private key."""
        return f"CheckpointSigner(origin={self.origin!r}, vkey={self.vkey!r})"
