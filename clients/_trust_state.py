"""What the SDK has seen and must never go back from, kept next to its keys.

- the highest CRL number it has verified: a broker serving an older CRL is refused
  (`broker.protocol.revocation`);
- for each agency, the audit index of the newest key bundle publication it has used: a broker
  offering only an older bundle (withholding the newer one) is refused;
- the largest audit log checkpoint it has verified under its witness policy (docs/protocol.md
  section 18.4): a smaller one (a rollback) or one not consistent with it (a fork) is refused.

Stored as `<keystore>/trust-state.json`, mode 0600, replaced atomically. Several clients of one
agency (processes, threads) may share the file: every save merges with what is on disk under a
lock and keeps the maximum of each value, so no writer can lower what another has seen (two
checkpoints of one size with different roots are a fork, and an error). A file that does not parse
is an error, never a reset: starting from zero is what an attacker would want.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from broker.files import PRIVATE_MODE, write_atomically
from clients.errors import ClientError, VerificationError

FORMAT: Final = "isb-sdk-trust-state/1"
FILE_NAME: Final = "trust-state.json"
MAX_FILE_BYTES: Final = 1 << 20


class TrustStateError(ClientError):
    """The trust state file is unreadable: the SDK will not guess what it had seen."""


@dataclass(frozen=True, slots=True)
class HeldCheckpoint:
    """The largest checkpoint seen: its tree size, root hash and signed note (kept as evidence)."""

    tree_size: int
    root_hash: bytes
    note: bytes


class CheckpointFork(TrustStateError, VerificationError):
    """Two checkpoints of one tree size with different roots: the log forked."""


_State = tuple[int, dict[str, int], HeldCheckpoint | None]


def _larger(held: HeldCheckpoint | None, other: HeldCheckpoint | None) -> HeldCheckpoint | None:
    if held is None or other is None:
        return held or other
    if held.tree_size == other.tree_size and held.root_hash != other.root_hash:
        raise CheckpointFork(
            f"two checkpoints of tree size {held.tree_size} with different root hashes were"
            " seen: the broker showed two histories of its audit log (a fork)"
        )
    return other if other.tree_size > held.tree_size else held


class TrustState:
    """High-water marks of the CRL number, each agency's key bundle publication index, the checkpoint."""

    def __init__(self, path: Path | None) -> None:
        """Load `path` if it exists; `None` keeps the state in memory only (for this client's life)."""
        self._path = path
        self._lock = threading.Lock()
        self.crl_number = 0
        self.bundle_index: dict[str, int] = {}
        self.checkpoint: HeldCheckpoint | None = None
        if path is not None and path.exists():
            self._merge(_read(path))

    def _merge(self, other: _State) -> None:
        crl_number, bundles, checkpoint = other
        self.checkpoint = _larger(self.checkpoint, checkpoint)
        self.crl_number = max(self.crl_number, crl_number)
        for agency, index in bundles.items():
            self.bundle_index[agency] = max(self.bundle_index.get(agency, 0), index)

    def reload(self) -> None:
        """Merge what other clients sharing the file have recorded since (before a check that uses it)."""
        if self._path is not None and self._path.exists():
            with self._lock:
                self._merge(_read(self._path))

    def saw_checkpoint(self, checkpoint: HeldCheckpoint) -> None:
        """Record a checkpoint verified under the witness policy and consistent with the one held."""
        with self._lock:
            before = self.checkpoint
            self.checkpoint = _larger(before, checkpoint)
            if self.checkpoint is not before:
                self._save()

    def saw_crl(self, number: int) -> None:
        """Record a verified CRL number (kept only if higher than the one seen so far)."""
        if number > self.crl_number:
            with self._lock:
                self.crl_number = max(self.crl_number, number)
                self._save()

    def saw_bundle(self, agency: str, audit_index: int) -> None:
        """Record the publication index of a key bundle of `agency` the SDK verified and used."""
        if audit_index > self.bundle_index.get(agency, 0):
            with self._lock:
                self.bundle_index[agency] = max(self.bundle_index.get(agency, 0), audit_index)
                self._save()

    def _save(self) -> None:
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _locked(self._path.with_name(f".{self._path.name}.lock")):
            if self._path.exists():
                self._merge(_read(self._path))
            document: dict[str, Any] = {
                "format": FORMAT,
                "crl_number": self.crl_number,
                "key_bundle_audit_index": dict(sorted(self.bundle_index.items())),
            }
            if self.checkpoint is not None:
                document["checkpoint"] = {
                    "tree_size": self.checkpoint.tree_size,
                    "root_hash": base64.b64encode(self.checkpoint.root_hash).decode(),
                    "note": base64.b64encode(self.checkpoint.note).decode(),
                }
            write_atomically(self._path, (json.dumps(document, indent=2) + "\n").encode())


def _read(path: Path) -> _State:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise TrustStateError(f"{path} is larger than {MAX_FILE_BYTES} bytes")
        document: Any = json.loads(path.read_bytes())
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise TrustStateError(f"{path} is not an {FORMAT} file")
        number = document["crl_number"]
        bundles = document["key_bundle_audit_index"]
        if (
            not isinstance(number, int)
            or not isinstance(bundles, dict)
            or not all(isinstance(k, str) and isinstance(v, int) for k, v in bundles.items())
        ):
            raise TrustStateError(f"{path} has malformed values")
        checkpoint = _checkpoint(document.get("checkpoint"), path)
    # RecursionError: JSON nested deeper than the parser's recursion limit (the file is at most 1 MiB).
    except (OSError, ValueError, KeyError, binascii.Error, RecursionError) as exc:
        raise TrustStateError(
            f"cannot read the SDK trust state {path}: {exc}; restore it from a backup"
            " (deleting it forgets which CRL, key bundles and checkpoint were already seen)"
        ) from exc
    return number, dict(bundles), checkpoint


def _checkpoint(member: Any, path: Path) -> HeldCheckpoint | None:
    if member is None:
        return None
    if (
        not isinstance(member, dict)
        or not isinstance(member.get("tree_size"), int)
        or isinstance(member["tree_size"], bool)
        or member["tree_size"] < 0
        or not isinstance(member.get("root_hash"), str)
        or not isinstance(member.get("note"), str)
    ):
        raise TrustStateError(f"{path} has a malformed checkpoint")
    root = base64.b64decode(member["root_hash"], validate=True)
    if len(root) != 32:
        raise TrustStateError(f"{path} has a checkpoint root hash that is not 32 bytes")
    return HeldCheckpoint(member["tree_size"], root, base64.b64decode(member["note"], validate=True))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
