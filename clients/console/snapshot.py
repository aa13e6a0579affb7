"""The console's picture of the audit log: every entry and checkpoint of one export, each with what
was verified about it.

A snapshot is always built from an export file (`clients/audit/exportfile.py`), whether the auditor
opened one (`isb console --export FILE`) or the console just streamed it from the broker. So both
modes show the same pages, checked the same way:

1. The verdict on the whole log is the offline verifier's (`clients.audit.verify_export`), word for
   word: on a failure it names the first entry that does not match.
2. Each entry is checked on its own (its content against the leaf hash stored with it, its declared
   index against its position), so a page can mark the very entries that were changed.
3. Each checkpoint is checked on its own: signature by the auditor's copy of the audit key, origin,
   and its root against the root recomputed from the entries it covers. Two checkpoints whose roots
   both equal the recomputed tree's roots are consistent by construction.
4. The inclusion proofs this console hands to the browser are computed over the *stored* leaf hashes
   against the largest checkpoint whose signature verifies; the browser then hashes the entry bytes
   itself, so an entry whose content changed fails in the browser too, by name.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.audit.events import AuditEvent
from broker.errors import VerificationError
from broker.protocol import _merkle, _note
from clients.audit.exportfile import ExportCheckpoint, ExportEntry, ExportHeader, read_export
from clients.audit.verify import resolve_key, verify_export

__all__ = ["AuditSnapshot", "CheckpointState", "LoggedEntry", "load_snapshot"]

_EM_DASH = "\u2014"


@dataclass(frozen=True, slots=True)
class LoggedEntry:
    """One entry line of the export, parsed, with what is wrong with it on its own (if anything)."""

    index: int
    """Its position in the log (0, 1, 2, ...)."""
    line: int
    entry: bytes
    stored_leaf: bytes
    event: AuditEvent | None
    """None when the bytes are not a version 1 audit entry."""
    problem: str | None
    """Why this entry does not verify by itself; None when its content matches its leaf hash and index."""

    @property
    def entry_b64(self) -> str:
        """The entry bytes in base64, as handed to the browser."""
        return base64.b64encode(self.entry).decode()


@dataclass(frozen=True, slots=True)
class CheckpointState:
    """One signed checkpoint of the export and its verification status."""

    line: int
    note: bytes
    size: int | None
    root: bytes | None
    time: datetime | None
    signature_ok: bool
    problem: str | None
    """None when signature, origin, position and root over the recomputed entries all verify."""
    cosigners: tuple[str, ...]
    """Names on other signature lines of the note (witnesses); not verified: no witness policy yet."""

    @property
    def verified(self) -> bool:
        """Signature, origin and root all verified."""
        return self.problem is None


@dataclass(slots=True)
class AuditSnapshot:
    """Entries and checkpoints of one export, and what the console verified about them."""

    source: str
    """Where the log came from: the broker's address, or the export file's path."""
    origin: str
    key_name: str
    vkey: str
    """The auditor's audit key as a C2SP verifier key (what the browser checks signatures with)."""
    loaded_at: datetime
    entries: list[LoggedEntry] = field(default_factory=list)
    checkpoints: list[CheckpointState] = field(default_factory=list)
    failure: str | None = None
    """The offline verifier's verdict when the log does not verify (it names the entry); else None."""
    verified_size: int = 0
    """Size of the last checkpoint the offline verifier accepted (entries below it are proven)."""
    proof_checkpoint: _note.Checkpoint | None = None
    """The largest checkpoint whose signature verifies: the one the browser proves entries against."""
    _stored: _merkle.MemoryTree = field(default_factory=_merkle.MemoryTree)

    @property
    def bad_entries(self) -> list[LoggedEntry]:
        """Entries whose content does not match their leaf hash or position."""
        return [e for e in self.entries if e.problem is not None]

    def inclusion_proof(self, index: int) -> list[bytes]:
        """The audit path of entry `index` over the stored leaf hashes, to `proof_checkpoint`."""
        if self.proof_checkpoint is None or index >= self.proof_checkpoint.size:
            raise VerificationError(f"entry {index} is not covered by any checkpoint with a valid signature")
        return _merkle.inclusion_proof(index, self.proof_checkpoint.size, self._stored.subtree)


def _event(entry: bytes) -> tuple[int | None, AuditEvent | None]:
    try:
        return AuditEvent.from_entry_bytes(entry)
    except VerificationError:
        return None, None


def _cosigners(note: bytes, key_name: str) -> tuple[str, ...]:
    text = note.decode("utf-8", errors="replace")
    split = text.rfind("\n\n")
    names = []
    for line in text[split + 2 :].splitlines() if split >= 0 else ():
        parts = line.split(" ")
        if line.startswith(_EM_DASH + " ") and len(parts) == 3 and parts[1] != key_name:
            names.append(parts[1])
    return tuple(names)


class _Builder:
    def __init__(self, snapshot: AuditSnapshot, public_key: Ed25519PublicKey) -> None:
        self.snapshot = snapshot
        self.public_key = public_key
        self.recomputed = _merkle.MemoryTree()

    def entry(self, record: ExportEntry) -> None:
        position = len(self.snapshot.entries)
        declared, event = _event(record.entry)
        recomputed = _merkle.leaf_hash(record.entry)
        problem = None
        if record.index != position:
            problem = f"entry line {record.line} says index {record.index} but stands at position {position}"
        elif event is None:
            problem = f"entry {position} (line {record.line}) is not an audit entry"
        elif declared != position:
            problem = f"entry {position} (line {record.line}) holds the content of entry {declared}"
        elif recomputed != record.leaf_hash:
            problem = f"entry {position} (line {record.line}) was changed: its content does not match its leaf hash"
        self.snapshot.entries.append(LoggedEntry(position, record.line, record.entry, record.leaf_hash, event, problem))
        self.recomputed.append(recomputed)
        # A malformed stored hash cannot be a tree node; the recomputed one keeps the proofs' shape.
        self.snapshot._stored.append(record.leaf_hash if len(record.leaf_hash) == 32 else recomputed)

    def checkpoint(self, record: ExportCheckpoint) -> None:
        snap = self.snapshot
        cosigners = _cosigners(record.note, snap.key_name)
        try:
            checkpoint = _note.verify_checkpoint(record.note, snap.key_name, self.public_key)
        except VerificationError as exc:
            snap.checkpoints.append(
                CheckpointState(
                    record.line, record.note, None, None, None, False, f"signature does not verify: {exc}", cosigners
                )
            )
            return
        problem = None
        if checkpoint.origin != snap.origin:
            problem = f"checkpoint is for log {checkpoint.origin!r}, not {snap.origin!r}"
        elif checkpoint.size > self.recomputed.size:
            problem = (
                f"checkpoint of size {checkpoint.size} follows only {self.recomputed.size} entries:"
                f" entry {self.recomputed.size} is missing"
            )
        elif self.recomputed.root(checkpoint.size) != checkpoint.root:
            bad = [e.index for e in snap.entries[: checkpoint.size] if e.problem is not None]
            named = f"entry {bad[0]} does not match" if bad else "entries were changed with their leaf hashes"
            problem = f"entries 0..{checkpoint.size - 1} do not hash to the signed root: {named}"
        snap.checkpoints.append(
            CheckpointState(
                record.line, record.note, checkpoint.size, checkpoint.root, checkpoint.time, True, problem, cosigners
            )
        )
        if (
            checkpoint.origin == snap.origin
            and checkpoint.size <= self.recomputed.size
            and (snap.proof_checkpoint is None or checkpoint.size >= snap.proof_checkpoint.size)
        ):
            snap.proof_checkpoint = checkpoint


def load_snapshot(path: Path, key: Ed25519PublicKey | str, *, source: str | None = None) -> AuditSnapshot:
    """Read and verify an export file against the auditor's audit key (a public key or a vkey line)."""
    with path.open("rb") as stream:
        records = read_export(stream)
        try:
            first = next(records, None)
        except VerificationError as exc:
            raise VerificationError(f"{path} is not an audit export: {exc}") from exc
        if first is None or not isinstance(first[1], ExportHeader):
            raise VerificationError(f"{path} is not an audit export: it does not start with a header line")
        header = first[1]
        key_name, public_key = resolve_key(key, header)
        snapshot = AuditSnapshot(
            source=source or str(path),
            origin=header.origin,
            key_name=key_name,
            vkey=_note.encode_vkey(key_name, public_key),
            loaded_at=datetime.now(UTC),
        )
        builder = _Builder(snapshot, public_key)
        try:
            for _done, record in records:
                if isinstance(record, ExportEntry):
                    builder.entry(record)
                elif isinstance(record, ExportCheckpoint):
                    builder.checkpoint(record)
                else:
                    snapshot.failure = f"export holds a second header after entry {len(snapshot.entries) - 1}"
                    break
        except VerificationError as exc:
            snapshot.failure = str(exc)  # a line that does not parse: show what came before it
    if snapshot.failure is None:
        try:
            snapshot.verified_size = verify_export(path, key).tree_size
        except VerificationError as exc:
            snapshot.failure = str(exc)
    if snapshot.failure is not None:
        snapshot.verified_size = max(
            (
                c.size
                for c in snapshot.checkpoints
                if c.verified and c.size is not None and all(e.problem is None for e in snapshot.entries[: c.size])
            ),
            default=0,
        )
    return snapshot


def entry_document(entry: LoggedEntry) -> dict[str, object]:
    """The entry's JSON as a dictionary (for display), or {} when it is not JSON."""
    try:
        document = json.loads(entry.entry)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return document if isinstance(document, dict) else {}
