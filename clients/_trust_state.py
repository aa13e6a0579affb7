"""What the SDK has seen and must never go back from, kept next to its keys.

- the highest CRL number it has verified: a broker serving an older CRL is refused
  (`broker.protocol.revocation`);
- for each agency, the audit index of the newest key bundle publication it has used: a broker
  offering only an older bundle (withholding the newer one) is refused.

Stored as `<keystore>/trust-state.json`, mode 0600, replaced atomically. Several clients of one
agency (processes, threads) may share the file: every save merges with what is on disk under a
lock and keeps the maximum of each value, so no writer can lower what another has seen. A file
that does not parse is an error, never a reset: starting from zero is what an attacker would want.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from clients.errors import ClientError

FORMAT: Final = "isb-sdk-trust-state/1"
FILE_NAME: Final = "trust-state.json"
_MODE: Final = 0o600


class TrustStateError(ClientError):
    """The trust state file is unreadable: the SDK will not guess what it had seen."""


class TrustState:
    """High-water marks of the CRL number and of each agency's key bundle publication index."""

    def __init__(self, path: Path | None) -> None:
        """Load `path` if it exists; `None` keeps the state in memory only (for this client's life)."""
        self._path = path
        self._lock = threading.Lock()
        self.crl_number = 0
        self.bundle_index: dict[str, int] = {}
        if path is not None and path.exists():
            self._merge(_read(path))

    def _merge(self, other: tuple[int, dict[str, int]]) -> None:
        crl_number, bundles = other
        self.crl_number = max(self.crl_number, crl_number)
        for agency, index in bundles.items():
            self.bundle_index[agency] = max(self.bundle_index.get(agency, 0), index)

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
            document = {"format": FORMAT, "crl_number": self.crl_number,
                        "key_bundle_audit_index": dict(sorted(self.bundle_index.items()))}
            _atomic_write(self._path, (json.dumps(document, indent=2) + "\n").encode())


def _read(path: Path) -> tuple[int, dict[str, int]]:
    try:
        document: Any = json.loads(path.read_bytes())
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise TrustStateError(f"{path} is not an {FORMAT} file")
        number = document["crl_number"]
        bundles = document["key_bundle_audit_index"]
        if not isinstance(number, int) or not isinstance(bundles, dict) or \
                not all(isinstance(k, str) and isinstance(v, int) for k, v in bundles.items()):
            raise TrustStateError(f"{path} has malformed values")
    except (OSError, ValueError, KeyError) as exc:
        raise TrustStateError(f"cannot read the SDK trust state {path}: {exc}; restore it from a backup"
                              " (deleting it forgets which CRL and key bundles were already seen)") from exc
    return number, dict(bundles)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, _MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), _MODE)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
