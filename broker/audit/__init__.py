"""The verifiable audit log (DESIGN.md section 8): events, their Merkle log, and signed checkpoints.

`AuditLog` appends `AuditEvent`s inside the broker's write transaction, signs checkpoints with a
`CheckpointSigner`, and answers queries, proofs and exports for the AuditService.
"""

from broker.audit.events import KNOWN_EVENTS, AuditEvent, justification_fields
from broker.audit.log import AuditLog, AuditRecord, CheckpointRecord, QueryPage
from broker.audit.signer import CheckpointSigner
from broker.audit.tables import AUDIT_TABLES

__all__ = [
    "AUDIT_TABLES",
    "KNOWN_EVENTS",
    "AuditEvent",
    "AuditLog",
    "AuditRecord",
    "CheckpointRecord",
    "CheckpointSigner",
    "QueryPage",
    "justification_fields",
]
