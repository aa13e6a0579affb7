"""The policy in force in a running broker: loaded from a file, reloaded when it changes, replaced
by an admin call. A document that does not validate never replaces the running policy.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from broker.errors import ConfigurationError
from broker.files import PUBLIC_MODE, write_atomically
from broker.policy.errors import PolicyError
from broker.policy.policy import Policy, diff

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """One replacement of the running policy, for the audit log: who, when, from what, to what."""

    actor: str  # "file:<path>" for a reload, the admin's identity for an apply
    time: datetime
    old_digest: str
    new_digest: str

    @property
    def changed(self) -> bool:
        """False when the new document is byte-for-byte the old one (an apply of the same text)."""
        return self.old_digest != self.new_digest


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """What ValidatePolicy answers: valid or the error lines, the digest, the diff to the running policy."""

    valid: bool
    errors: tuple[str, ...]
    digest: str
    diff: str


def _reachable(policy: Policy, agency: str) -> bool:
    # Some rule lets the agency send to someone else, or lets someone else send to it.
    return any(
        (agency in rule.sender_set and rule.recipient_set - {agency})
        or (agency in rule.recipient_set and rule.sender_set - {agency})
        for rule in policy.rules
    )


def _utcnow() -> datetime:
    return datetime.now(UTC)


# (mtime_ns, size, inode): a rename-into-place changes the inode even if mtime and size coincide.
_FileState = tuple[int, int, int]


def _file_state(path: Path) -> _FileState | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _write_policy(path: Path, text: str) -> None:
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        mode = PUBLIC_MODE  # the policy is not secret; the admin must be able to read it
    try:
        write_atomically(path, text.encode("utf-8"), mode)
    except OSError as exc:
        raise ConfigurationError(f"cannot write policy file {path}: {exc}") from exc


class RunningPolicy:
    """Holds the `Policy` in force; swaps it only for a document that validates.

    Reads of `current` take no lock (replacing a reference is atomic), so the send path pays only a
    `stat` when it calls `reload_if_changed`; writers serialise on a lock.
    """

    def __init__(self, policy: Policy, path: Path | None = None, clock: Callable[[], datetime] = _utcnow) -> None:
        """Hold `policy`; if `path` is given, it is the file that `reload_if_changed` watches."""
        self._policy = policy
        self._path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: _FileState | None = _file_state(path) if path is not None else None

    @classmethod
    def load(cls, path: Path, clock: Callable[[], datetime] = _utcnow) -> RunningPolicy:
        """Load the policy file at startup; `PolicyError` if invalid, `ConfigurationError` if unreadable."""
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"cannot read policy file {path}: {exc}") from exc
        return cls(Policy.parse(text, source=str(path)), path, clock)

    @property
    def current(self) -> Policy:
        """The policy in force."""
        return self._policy

    @property
    def path(self) -> Path | None:
        """The watched file, if any."""
        return self._path

    def reload_if_changed(self) -> PolicyChange | None:
        """Re-read the file if its mtime, size or inode changed; apply it if it validates.

        Returns the change when a new policy took effect, else None. An invalid or unreadable file
        keeps the old policy and logs `policy.reload_rejected` once per version of the file.
        """
        if self._path is None:
            return None
        path = self._path
        state = _file_state(path)
        if state == self._seen:
            return None
        with self._lock:
            if state == self._seen:  # another caller got here first
                return None
            self._seen = state
            old = self._policy
            new = self._read(path)
            if new is None or new.digest == old.digest:
                return None
            self._policy = new
            change = PolicyChange(f"file:{path}", self._clock(), old.digest, new.digest)
        log.info("policy.reloaded", path=str(path), old_digest=old.digest, new_digest=new.digest)
        return change

    def _read(self, path: Path) -> Policy | None:
        """The policy in the file, or None (logged) if it cannot be read or does not validate."""
        errors: list[str]
        try:
            return Policy.parse(path.read_text(encoding="utf-8"), source=str(path))
        except (OSError, UnicodeDecodeError) as exc:
            errors = [f"{path}: cannot read: {exc}"]
        except PolicyError as exc:
            errors = exc.errors
        # Logged outside the handler on purpose: the line messages are the diagnosis, not a traceback.
        log.error("policy.reload_rejected", path=str(path), errors=errors, running_digest=self._policy.digest)
        return None

    def _source(self) -> str:
        return self._path.name if self._path is not None else "policy.toml"

    def validate(self, text: str, source: str = "") -> ValidationReport:
        """Check a proposed document (ValidatePolicy) and diff it against the running one; errors name `source`."""
        errors: tuple[str, ...] = ()
        try:
            Policy.parse(text, source=source or self._source())
        except PolicyError as exc:
            errors = tuple(exc.errors)
        return ValidationReport(
            valid=not errors,
            errors=errors,
            digest=hashlib.sha256(text.encode()).hexdigest(),
            diff=diff(self._policy.text, text),
        )

    def cut_off(self, text: str, registered: Iterable[str]) -> list[str]:
        """Registered agencies that can send or receive under the running policy and could do neither under `text`."""
        new = Policy.parse(text, source=self._source())
        return [
            agency for agency in sorted(registered) if _reachable(self._policy, agency) and not _reachable(new, agency)
        ]

    def move_to(self, path: Path) -> None:
        """Watch and rewrite `path` from now on (the broker's own policy file in its state directory)."""
        with self._lock:
            self._path = path
            self._seen = _file_state(path)

    def apply(self, text: str, actor: str) -> PolicyChange:
        """Replace the running policy with `text` (ApplyPolicy); `PolicyError` if it does not validate.

        With a watched file, the file is rewritten first (atomically, by rename), so that the
        file stays the source of truth across restarts and the next reload sees no change.
        """
        new = Policy.parse(text, source=self._source())
        with self._lock:
            old = self._policy
            if self._path is not None and new.digest != old.digest:
                _write_policy(self._path, text)
                self._seen = _file_state(self._path)
            self._policy = new
            change = PolicyChange(actor, self._clock(), old.digest, new.digest)
        log.info("policy.applied", actor=actor, old_digest=old.digest, new_digest=new.digest)
        return change
