"""Where the console's log comes from: the broker, over mTLS with the auditor's own certificate, or an
export file on disk. Both hand the pages an `AuditSnapshot` and inclusion proofs."""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.errors import VerificationError
from broker.protocol import _merkle, _note
from clients.auditor import AuditorClient
from clients.console.snapshot import AuditSnapshot, load_snapshot
from clients.errors import ClientError

__all__ = ["AuditSource", "ExportSource", "LiveSource", "StepProof"]


@dataclass(frozen=True, slots=True)
class StepProof:
    """The audit path of one entry for the browser, and the console process's own verdict on it."""

    hashes: list[bytes]
    console_error: str | None
    """None when the console process verified the proof against the checkpoint; else what failed."""


class AuditSource(Protocol):
    """What the pages read from."""

    label: str

    def snapshot(self, *, reload: bool = False) -> AuditSnapshot:
        """The current snapshot (reloaded when stale, or when `reload`)."""
        ...

    def proof(self, snapshot: AuditSnapshot, index: int) -> StepProof:
        """The inclusion proof of entry `index` against `snapshot.proof_checkpoint`."""
        ...


def _local_proof(snapshot: AuditSnapshot, index: int) -> StepProof:
    checkpoint = snapshot.proof_checkpoint
    try:
        hashes = snapshot.inclusion_proof(index)
    except VerificationError as exc:
        return StepProof([], str(exc))
    if checkpoint is None:  # inclusion_proof refuses then; this tells the type checker
        return StepProof([], f"entry {index} is not covered by a signed checkpoint")
    try:
        _merkle.verify_inclusion(
            _merkle.leaf_hash(snapshot.entries[index].entry), index, checkpoint.size, hashes, checkpoint.root
        )
    except VerificationError as exc:
        return StepProof(hashes, f"entry {index}: {exc}")
    return StepProof(hashes, None)


class ExportSource:
    """An export file, read and verified once."""

    def __init__(self, path: Path, key: Ed25519PublicKey | str) -> None:
        """Open `path`, verified against the auditor's audit key; raises `VerificationError` if unreadable."""
        self.label = f"export {path}"
        self._snapshot = load_snapshot(path, key, source=str(path))

    def snapshot(self, *, reload: bool = False) -> AuditSnapshot:
        """The snapshot of the file (which does not change: `reload` has nothing to do)."""
        del reload
        return self._snapshot

    def proof(self, snapshot: AuditSnapshot, index: int) -> StepProof:
        """Computed over the file's stored leaf hashes."""
        return _local_proof(snapshot, index)


class LiveSource:
    """The broker's log, streamed as an export over the auditor's mTLS connection and re-read when stale."""

    def __init__(self, auditor: AuditorClient, target: str, *, refresh_seconds: float = 15.0) -> None:
        """Read from the broker at `target` through `auditor`; a snapshot older than `refresh_seconds` is reloaded."""
        self.label = f"broker {target}"
        self._auditor = auditor
        self._vkey = _note.encode_vkey(auditor.key_name, auditor.audit_key)
        self._refresh = refresh_seconds
        self._lock = threading.Lock()
        self._snapshot: AuditSnapshot | None = None
        self._loaded = 0.0

    def snapshot(self, *, reload: bool = False) -> AuditSnapshot:
        """A snapshot of the whole log up to a checkpoint the broker signs now."""
        with self._lock:
            stale = time.monotonic() - self._loaded > self._refresh
            if self._snapshot is None or reload or stale:
                self._snapshot = self._load()
                self._loaded = time.monotonic()
            return self._snapshot

    def _load(self) -> AuditSnapshot:
        # A fresh checkpoint first, so that the export (which ends at the latest checkpoint) holds
        # everything logged so far. The export goes to a private temporary file, read once.
        self._auditor.checkpoint(fresh=True)
        with tempfile.TemporaryDirectory(prefix="isb-console-") as folder:
            path = Path(folder) / "live.jsonl"
            with path.open("wb") as stream:
                self._auditor.export(stream)
            return load_snapshot(path, self._vkey, source=self.label)

    def proof(self, snapshot: AuditSnapshot, index: int) -> StepProof:
        """The broker's own inclusion proof (GetInclusionProof), verified by the auditor SDK."""
        checkpoint = snapshot.proof_checkpoint
        if checkpoint is None:
            return StepProof([], f"entry {index} is not covered by any checkpoint with a valid signature")
        try:
            proven = self._auditor.prove(index, checkpoint)
        except (VerificationError, ClientError) as exc:
            # Still hand the browser a path (over the stored hashes) so that it checks and names the entry too.
            local = _local_proof(snapshot, index)
            return StepProof(local.hashes, f"the broker's proof of entry {index} does not verify: {exc}")
        return StepProof(proven.proof, None)
