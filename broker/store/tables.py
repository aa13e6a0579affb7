"""The broker's tables. Declared with SQLModel for the schema and migrations; the hot path uses
SQLAlchemy Core statements on `Model.__table__`, never ORM sessions (the ORM costs several times a
raw insert per row, see the benchmark issue).

Times are integer microseconds since the Unix epoch (UTC): unambiguous on SQLite and PostgreSQL
alike, and cheap to compare on the delivery path."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Field, SQLModel


def table_of(model: type[SQLModel]) -> sa.Table:
    """The `Table` of a `table=True` model, typed (SQLModel's metaclass sets `__table__` undeclared)."""
    table = vars(model).get("__table__")
    if not isinstance(table, sa.Table):
        raise TypeError(f"{model.__name__} is not a table model")
    return table


class Agency(SQLModel, table=True):
    """A registered agency: only registered agencies can be addressed."""

    __tablename__ = "agencies"

    agency_id: str = Field(primary_key=True, max_length=40)
    display_name: str = Field(default="", max_length=200)
    country: str = Field(default="", max_length=2)
    contact: str = Field(default="", max_length=200)
    registered_us: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))


class PeerCertificate(SQLModel, table=True):
    """Certificates seen on verified calls, by SHA-256 fingerprint, so receipts and envelopes
    stay verifiable after the certificate is rotated."""

    __tablename__ = "peer_certificates"

    fingerprint: bytes = Field(sa_column=sa.Column(sa.LargeBinary(32), primary_key=True))
    der: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))


class Message(SQLModel, table=True):
    """One accepted envelope, stored exactly as received."""

    __tablename__ = "messages"

    message_id: str = Field(primary_key=True, max_length=36)
    seq: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False, unique=True))
    sender: str = Field(index=True, max_length=40)
    kind: int
    priority: int
    tlp: int
    references: str = Field(default="", max_length=36)
    accepted_us: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    expires_us: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    envelope: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    envelope_sha256: bytes = Field(sa_column=sa.Column(sa.LargeBinary(32), nullable=False))
    sender_cert: bytes = Field(sa_column=sa.Column(sa.LargeBinary(32), nullable=False))
    audit_index: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    # Set when the retention period ended: `envelope` is then empty, the digest stays (a tombstone).
    purged_us: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    purge_rule: str | None = Field(default=None, max_length=80, nullable=True)


class DeliveryRow(SQLModel, table=True):
    """One recipient's copy of a message: the durable per-recipient queue."""

    __tablename__ = "deliveries"
    __table_args__ = (sa.Index("ix_deliveries_queue", "recipient", "state", "priority", "seq"),)

    message_id: str = Field(primary_key=True, max_length=36)
    recipient: str = Field(primary_key=True, max_length=40)
    seq: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    priority: int
    state: int  # broker_pb2.DeliveryState
    attempts: int = 0
    updated_us: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    receipt: bytes | None = Field(default=None, sa_column=sa.Column(sa.LargeBinary, nullable=True))
    receipt_signature: bytes | None = Field(default=None, sa_column=sa.Column(sa.LargeBinary, nullable=True))
    # The serialized BatchSignature of a batch-signed receipt (protocol section 21); receipt_signature is empty then.
    receipt_batch: bytes | None = Field(default=None, sa_column=sa.Column(sa.LargeBinary, nullable=True))
    receipt_cert: bytes | None = Field(default=None, sa_column=sa.Column(sa.LargeBinary(32), nullable=True))


class KeyBundleRow(SQLModel, table=True):
    """A published encryption key bundle, stored as signed by its agency."""

    __tablename__ = "key_bundles"

    agency: str = Field(primary_key=True, max_length=40)
    key_id: str = Field(primary_key=True, max_length=64)
    bundle: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    signature: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    certificate: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    not_after_us: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    published_us: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))


agencies = table_of(Agency)
peer_certificates = table_of(PeerCertificate)
messages = table_of(Message)
deliveries = table_of(DeliveryRow)
key_bundles = table_of(KeyBundleRow)


class ForwardConsentRow(SQLModel, table=True):
    """One recipient a forwarder may forward a message to, by the original sender's signed consent."""

    __tablename__ = "forward_consents"

    message_id: str = Field(primary_key=True, max_length=36)
    forwarder: str = Field(primary_key=True, max_length=40)
    recipient: str = Field(primary_key=True, max_length=40)
    not_after_us: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    consent: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    signature: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))


forward_consents = table_of(ForwardConsentRow)


class DeploymentRow(SQLModel, table=True):
    """The one deployment this database belongs to, recorded when it is created (see broker.store.binding)."""

    __tablename__ = "deployment"

    id: int = Field(default=1, primary_key=True)
    trust_domain: str = Field(max_length=253)
    ca_fingerprint: str = Field(max_length=64)  # SHA-256 of the CA certificate's DER, hex
    audit_key_id: str = Field(max_length=200)  # the checkpoint signer's key name and key hash
    created_us: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))


class WriterHeartbeat(SQLModel, table=True):
    """Each writer's last successful probe: the write with which a writer that lost its store finds it again."""

    __tablename__ = "writer_heartbeat"

    node: str = Field(primary_key=True, max_length=64)
    beat_us: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))


deployment = table_of(DeploymentRow)
writer_heartbeat = table_of(WriterHeartbeat)
