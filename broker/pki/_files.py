"""File handling of PKI material: private keys 0600, atomic replacement, parse errors as our own errors.

Internal: callers use `broker.pki.store` and `broker.pki.dev`, which decide what goes where. Replacing
a file is `broker.files.write_atomically`, shared with the SDK.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from broker.errors import ConfigurationError
from broker.files import PRIVATE_MODE, PUBLIC_MODE, write_atomically


def private_key_pem(key: PrivateKeyTypes) -> bytes:
    """PKCS#8 PEM without encryption: the dev and CA keys are protected by file mode, not a passphrase."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_private_key(path: Path, key: PrivateKeyTypes, *, replace: bool = False) -> None:
    """Write `key` to `path` with mode 0600; refuse an existing file unless `replace`."""
    data = private_key_pem(key)
    if replace:
        write_atomically(path, data, PRIVATE_MODE)
        return
    # O_EXCL: never follow a pre-planted file or symlink, never clobber a key by accident.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    except FileExistsError as exc:
        raise ConfigurationError(f"refusing to overwrite existing private key {path}") from exc
    with os.fdopen(fd, "wb") as handle:
        # The umask may have removed bits but never adds any; fchmod makes the mode exact.
        os.fchmod(handle.fileno(), PRIVATE_MODE)
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_public_file(path: Path, data: bytes) -> None:
    """Atomically write public material (certificates, CRLs, JSON) with mode 0644."""
    write_atomically(path, data, PUBLIC_MODE)


def certificate_pem(*certificates: x509.Certificate) -> bytes:
    """Concatenated PEM of `certificates`, in order (leaf first for a chain file)."""
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certificates)


def load_private_key(path: Path) -> PrivateKeyTypes:
    """Load an unencrypted PEM private key, raising `ConfigurationError` with the path on failure."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read private key {path}: {exc.strerror}") from exc
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"{path} is not an unencrypted PEM private key") from exc


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Load every PEM certificate of a file (a chain file holds the leaf first)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read certificate file {path}: {exc.strerror}") from exc
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ConfigurationError(f"{path} does not contain PEM certificates") from exc
    return certs


def load_certificate(path: Path) -> x509.Certificate:
    """Load the first (leaf) certificate of a PEM file."""
    return load_certificates(path)[0]
