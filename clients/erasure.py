"""Erasure propagation (docs/protocol.md section 22, Erasure): a RECALL makes each recipient's SDK delete its
local copies of the recalled message, then confirm with a signed ERASED receipt.

What the SDK itself keeps: the keystore holds this agency's keys and trust state, never message
data; watchlist replicas hold watchlist versions, which leave a replica through signed removals and
review dates (a RECALL cannot name a watchlist version); the copies of messages are the attachments
saved to disk (`ReceivedAttachment.save`, `isb listen --save-attachments`: `SavedFiles`) and what
the application stores itself, which it registers as a `LocalStore`:

    class CaseFiles:
        name = "case files"
        def erase(self, message_id: str, sender: str) -> int:
            return db.execute("DELETE FROM received WHERE message_id = ?", (message_id,)).rowcount

    AgencyClient(..., local_stores=[SavedFiles(inbox), CaseFiles()])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from broker.api.v1 import envelope_pb2

__all__ = ["ErasureConfirmation", "LocalStore", "SavedFiles", "erasure_reason"]

MAX_REASON = 500  # characters of an ERASED receipt's reason (the protocol allows 1,024)


class LocalStore(Protocol):
    """A local store that may hold copies of received messages and can delete them."""

    @property
    def name(self) -> str:
        """What the store is, as the ERASED receipt's reason reports it ("saved attachments")."""
        ...

    def erase(self, message_id: str, sender: str) -> int:
        """Delete every copy of `message_id` (sent by `sender`); return how many items went. Raise on failure."""
        ...


@dataclass(frozen=True)
class SavedFiles:
    """Attachments saved as `<directory>/<message id>-<n><extension>` (what `isb listen --save-attachments` writes)."""

    directory: Path
    name: str = "saved attachments"

    def erase(self, message_id: str, sender: str) -> int:
        """Delete the files of `message_id`."""
        del sender  # the file names carry no sender; the broker accepts a RECALL only from the original sender
        files = sorted(self.directory.glob(f"{message_id}-*")) if self.directory.is_dir() else []
        for path in files:
            path.unlink()
        return len(files)


def erasure_reason(message_id: str, counts: Sequence[tuple[str, int]]) -> str:
    """The reason of an ERASED receipt: the erased message id, then what each store deleted."""
    detail = ", ".join(f"{count} from {name}" for name, count in counts) or "no local copy held"
    return f"{message_id}: erased {detail}"[:MAX_REASON]


@dataclass(frozen=True)
class ErasureConfirmation:
    """One recipient's answer to the RECALLs of a message, its receipt verified by the SDK."""

    recipient: str
    recall_id: str
    """The RECALL the recipient answered (or the latest one asked of it)."""
    state: str
    """The delivery state of that RECALL (PENDING, IN_FLIGHT, ACKNOWLEDGED, ...)."""
    receipt: envelope_pb2.Receipt | None

    @property
    def confirmed(self) -> bool:
        """The recipient signed an ERASED receipt naming this message."""
        return self.receipt is not None and self.receipt.status == envelope_pb2.ERASED

    @property
    def detail(self) -> str:
        """What the recipient says it erased (its signed reason), or why nothing is confirmed yet."""
        if self.receipt is None:
            return f"no receipt yet ({self.state})"
        if not self.confirmed:
            return f"acknowledged {envelope_pb2.ReceiptStatus.Name(self.receipt.status)}, not ERASED"
        return self.receipt.reason
