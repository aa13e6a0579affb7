"""The directory: registered agencies and their published encryption key bundles.

Senders fetch bundles from here but verify them against the recipient's certificate chain
themselves (DESIGN.md section 3): the broker is not trusted for keys, only for availability.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from broker.audit import AuditEvent
from broker.audit.events import KEYBUNDLE_PUBLISHED
from broker.audit.tables import entries_table
from broker.store import tables
from broker.store.writer import Batch


@dataclass(frozen=True, slots=True)
class AgencyRecord:
    """A registered agency as the directory shows it."""

    agency_id: str
    display_name: str
    country: str
    contact: str


class Registry:
    """The set of registered agencies, held in memory for the per-send recipient check."""

    def __init__(self) -> None:
        self._agencies: dict[str, AgencyRecord] = {}

    def load(self, engine: Engine) -> None:
        """Read every registered agency."""
        with engine.connect() as conn:
            for row in conn.execute(sa.select(tables.agencies)):
                self._agencies[row.agency_id] = AgencyRecord(row.agency_id, row.display_name, row.country, row.contact)

    def __contains__(self, agency_id: object) -> bool:
        return agency_id in self._agencies

    def get(self, agency_id: str) -> AgencyRecord | None:
        """The record of `agency_id`, if registered."""
        return self._agencies.get(agency_id)

    def all(self) -> list[AgencyRecord]:
        """Every registered agency, by id."""
        return sorted(self._agencies.values(), key=lambda a: a.agency_id)

    def added(self, record: AgencyRecord) -> None:
        """Note a registration that has committed."""
        self._agencies[record.agency_id] = record


@dataclass
class RegisterAgency:
    """Writer operation: register (or update) an agency, with its audit entry."""

    record: AgencyRecord
    actor: str
    registry: Registry

    def stage(self, batch: Batch) -> AgencyRecord:
        r = self.record
        values = {"display_name": r.display_name, "country": r.country, "contact": r.contact}
        updated = batch.conn.execute(
            tables.agencies.update().where(tables.agencies.c.agency_id == r.agency_id).values(**values)
        ).rowcount
        if not updated:
            batch.conn.execute(
                tables.agencies.insert().values(agency_id=r.agency_id, registered_us=batch.now_us, **values)
            )
        batch.audit(
            AuditEvent(
                event="agency.registered",
                actor=self.actor,
                time=batch.now,
                message_id=None,
                agency=r.agency_id,
                fields={"display_name": r.display_name, "country": r.country},
            )
        )
        batch.after_commit.append(lambda: self.registry.added(r))
        return r


def publication_fields(key_id: str, suite: str, bundle: bytes) -> dict[str, str]:
    """The `fields` of a `keybundle.published` entry: the bundle's digest binds the entry to the exact
    bytes its agency signed, so a sender can check a bundle it got against the log (protocol 18.4)."""
    return {"bundle_sha256": hashlib.sha256(bundle).hexdigest(), "key_id": key_id, "suite": suite}


@dataclass
class PublishBundle:
    """Writer operation: store a key bundle the broker has checked was signed by its agency."""

    agency: str
    key_id: str
    bundle: bytes
    signature: bytes
    certificate: bytes
    not_after: dt.datetime
    actor: str
    suite: str

    def stage(self, batch: Batch) -> int:
        key = (tables.key_bundles.c.agency == self.agency) & (tables.key_bundles.c.key_id == self.key_id)
        batch.conn.execute(tables.key_bundles.delete().where(key))
        batch.insert(
            tables.key_bundles,
            {
                "agency": self.agency,
                "key_id": self.key_id,
                "bundle": self.bundle,
                "signature": self.signature,
                "certificate": self.certificate,
                "not_after_us": int(self.not_after.timestamp() * 1_000_000),
                "published_us": batch.now_us,
            },
        )
        return batch.audit(
            AuditEvent(
                event=KEYBUNDLE_PUBLISHED,
                actor=self.actor,
                time=batch.now,
                message_id=None,
                agency=self.agency,
                fields=publication_fields(self.key_id, self.suite, self.bundle),
            )
        )


@dataclass(frozen=True, slots=True)
class StoredBundle:
    """A key bundle as stored: exactly the bytes its agency signed."""

    agency: str
    key_id: str
    bundle: bytes
    signature: bytes
    certificate: bytes
    audit_index: int = 0
    """Index of the bundle's `keybundle.published` audit entry (0 if the log holds none)."""


def publication_indexes(conn: Connection, agencies: Sequence[str]) -> dict[tuple[str, str], int]:
    """The audit index of the latest publication of each (agency, key id), read from the log itself.

    The log is the record senders can later check a bundle against (DESIGN.md section 8), so the
    index comes from there rather than from a column the directory would have to keep in step.
    """
    query = sa.select(entries_table.c.leaf_index, entries_table.c.agency, entries_table.c.entry).where(
        entries_table.c.event == KEYBUNDLE_PUBLISHED
    )
    if agencies:
        query = query.where(entries_table.c.agency.in_(agencies))
    result: dict[tuple[str, str], int] = {}
    for index, agency, entry in conn.execute(query):
        key_id = json.loads(bytes(entry)).get("fields", {}).get("key_id")
        if isinstance(key_id, str) and agency:
            result[(agency, key_id)] = max(result.get((agency, key_id), 0), int(index))
    return result


def current_bundles(conn: Connection, agencies: Sequence[str], now_us: int) -> dict[str, list[StoredBundle]]:
    """The unexpired bundles of each agency with their publication index, newest first."""
    query = sa.select(tables.key_bundles).where(tables.key_bundles.c.not_after_us > now_us)
    if agencies:
        query = query.where(tables.key_bundles.c.agency.in_(agencies))
    indexes = publication_indexes(conn, agencies)
    result: dict[str, list[StoredBundle]] = {}
    for row in conn.execute(query.order_by(tables.key_bundles.c.published_us.desc())):
        result.setdefault(row.agency, []).append(
            StoredBundle(
                row.agency,
                row.key_id,
                row.bundle,
                row.signature,
                row.certificate,
                indexes.get((row.agency, row.key_id), 0),
            )
        )
    return result
