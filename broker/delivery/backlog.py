"""The dispatcher's link to the store: the backlog it loads, and the deliveries and expiries it records.

The dispatcher (`broker.delivery.dispatcher`) keeps queues in memory; what it hands out and what
expires is recorded here through the writer, and what it has not seen yet (after a restart, or a send
accepted on another replica) is read from the store here.
"""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from broker.delivery import operations as ops
from broker.delivery.certificates import PeerCertificates
from broker.metrics import DELIVERIES
from broker.store import tables
from broker.store.reads import Reader
from broker.store.writer import Writer


class Backlog:
    """Loads an agency's unsettled deliveries and records what the dispatcher hands out or expires."""

    def __init__(self, reader: Reader, writer: Writer, certificates: PeerCertificates, node: str) -> None:
        self._reader = reader
        self._writer = writer
        self._certificates = certificates
        self._actor = f"broker:{node}"
        self._delivered_buffer: list[tuple[str, str, int]] = []

    async def load(self, agency: str) -> list[ops.QueuedDelivery]:
        """Every unsettled delivery of `agency`, as the dispatcher queues it."""
        d, m = tables.deliveries, tables.messages
        query = (
            sa.select(
                d.c.message_id, d.c.priority, d.c.seq, d.c.attempts, m.c.expires_us, m.c.accepted_us, m.c.sender_cert
            )
            .join(m, m.c.message_id == d.c.message_id)
            .where(d.c.recipient == agency, ops.UNSETTLED)
        )
        return await self._reader.read(
            lambda conn: [
                ops.QueuedDelivery(
                    r.message_id,
                    agency,
                    r.priority,
                    r.seq,
                    r.expires_us,
                    r.accepted_us,
                    None,
                    r.attempts,
                    self._certificates.der(bytes(r.sender_cert)),
                )
                for r in conn.execute(query)
            ]
        )

    async def envelope(self, message_id: str) -> bytes:
        """The stored envelope of a message."""
        query = sa.select(tables.messages.c.envelope).where(tables.messages.c.message_id == message_id)
        return await self._reader.read(lambda conn: bytes(conn.execute(query).scalar_one()))

    def delivered(self, item: ops.QueuedDelivery) -> None:
        """Record that `item` was handed out (a new attempt)."""
        DELIVERIES.inc()
        # Deliveries handed out in one turn of the event loop are recorded by one operation.
        if not self._delivered_buffer:
            asyncio.get_running_loop().call_soon(self._flush_delivered)
        self._delivered_buffer.append((item.message_id, item.recipient, item.attempts))

    def _flush_delivered(self) -> None:
        items, self._delivered_buffer = self._delivered_buffer, []
        self._writer.submit_nowait(ops.RecordDelivered(items, actor=self._actor))

    def expired(self, item: ops.QueuedDelivery) -> None:
        """Record that `item` expired undelivered."""
        self._writer.submit_nowait(ops.ExpireDeliveries([(item.message_id, item.recipient)], actor=self._actor))

    async def sender_certificate(self, item: ops.QueuedDelivery) -> bytes:
        """The DER certificate the sender of a delivery used, as the broker verified it."""
        if item.sender_cert is not None:
            return item.sender_cert
        message_id = item.message_id
        query = (
            sa.select(tables.peer_certificates.c.der)
            .join(tables.messages, tables.messages.c.sender_cert == tables.peer_certificates.c.fingerprint)
            .where(tables.messages.c.message_id == message_id)
        )
        return await self._reader.read(lambda conn: bytes(conn.execute(query).scalar_one()))


__all__ = ["Backlog"]
