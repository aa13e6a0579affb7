"""The agency and auditor SDKs and the `isb` command line."""

from clients.agency import (
    MLKEM768_X25519,
    X25519,
    AgencyClient,
    Attachment,
    InvalidDelivery,
    ReceivedAttachment,
    ReceivedMessage,
    RecipientReceipt,
)
from clients.errors import (
    CertificateProblem,
    ClientError,
    ConnectionFailed,
    ProtocolViolation,
    RemoteError,
    Unavailable,
    VerificationError,
)

__all__ = [
    "MLKEM768_X25519",
    "X25519",
    "AgencyClient",
    "Attachment",
    "CertificateProblem",
    "ClientError",
    "ConnectionFailed",
    "InvalidDelivery",
    "ProtocolViolation",
    "ReceivedAttachment",
    "ReceivedMessage",
    "RecipientReceipt",
    "RemoteError",
    "Unavailable",
    "VerificationError",
]
