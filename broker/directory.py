"""The directory: registered agencies and their published encryption key bundles.

Senders fetch bundles from here but verify them against the recipient's certificate chain
themselves (DESIGN.md section 3): the broker is not trusted for keys, only for availability.
`KeyDirectory` is what the BrokerService offers over it: an agency publishes its signed bundle,
a sender looks bundles up (with their publication proofs, protocol 18.4), and each lookup is audited.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import sqlalchemy as sa
import structlog
from cryptography import x509
from sqlalchemy.engine import Connection, Engine

from broker.api.v1 import envelope_pb2
from broker.audit import AuditEvent
from broker.audit.events import KEYBUNDLE_PUBLISHED, Consultation
from broker.audit.tables import entries_table
from broker.audit.witnessed import DirectoryProofs, WitnessedCheckpoints
from broker.errors import FailedPrecondition, InvalidRequest, PermissionDenied
from broker.identity import Principal, Role
from broker.policy import RunningPolicy
from broker.protocol.keys import verify_key_bundle
from broker.store import tables
from broker.store.db import now_us
from broker.store.reads import Reader
from broker.store.writer import Batch, RecordEvent, Writer

log = structlog.get_logger(__name__)


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


@dataclass(frozen=True, slots=True)
class Listing:
    """One agency of a directory answer: its record and the bundles offered to senders, newest first."""

    agency: AgencyRecord
    bundles: list[StoredBundle]


@dataclass(frozen=True, slots=True)
class DirectoryView:
    """What GetDirectory answers: the agencies asked for, the policy's groups, and the publication
    proofs of their bundles (None while the broker has no checkpoint its witness policy accepts)."""

    listings: list[Listing]
    groups: dict[str, list[str]]
    proofs: DirectoryProofs | None


class RevocationCheck(Protocol):
    """Whether a certificate is revoked (the broker's `Authenticator`, which enforces the CRL per call)."""

    def is_revoked_der(self, certificate_der: bytes) -> bool: ...


class KeyDirectory:
    """Agencies publish their key bundles here and senders look them up (DESIGN.md section 3)."""

    def __init__(
        self,
        registry: Registry,
        reader: Reader,
        writer: Writer,
        policy: RunningPolicy,
        trust_roots: Callable[[], Sequence[x509.Certificate]],
        trust_domain: str,
        revocations: RevocationCheck,
        consultation: Consultation,
        witnessed: WitnessedCheckpoints | None,
    ) -> None:
        self._registry = registry
        self._reader = reader
        self._writer = writer
        self._policy = policy
        self._trust_roots = trust_roots
        self._trust_domain = trust_domain
        self._revocations = revocations
        self._consultation = consultation
        self._witnessed = witnessed

    async def publish(self, caller: Principal, signed: envelope_pb2.SignedKeyBundle) -> tuple[str, int]:
        """Check and store the calling agency's signed key bundle; return its key id and audit index."""
        if caller.name not in self._registry:
            # As for every other call: an agency the admin has not registered publishes nothing.
            raise PermissionDenied(f"agency {caller.name} is not registered with this broker")
        if len(signed.bundle) > 8192 or len(signed.certificate) > 16384 or len(signed.signature) > 256:
            raise InvalidRequest("key bundle is larger than any valid bundle")
        if signed.certificate != caller.certificate_der:
            raise PermissionDenied("a key bundle must be signed with the certificate of the calling agency")
        bundle = verify_key_bundle(
            signed,
            trust_roots=self._trust_roots(),
            expected_agency=caller.name,
            trust_domain=self._trust_domain,
            now=dt.datetime.now(dt.UTC),
        )
        index: int = await self._writer.submit(
            PublishBundle(
                agency=caller.name,
                key_id=bundle.key_id,
                bundle=signed.bundle,
                signature=signed.signature,
                certificate=signed.certificate,
                not_after=bundle.not_after.ToDatetime(dt.UTC),
                actor=str(caller),
                suite=envelope_pb2.KeySuite.Name(bundle.suite),
            )
        )
        log.info("keybundle.published", agency=caller.name, key_id=bundle.key_id)
        return bundle.key_id, index

    async def lookup(
        self,
        caller: Principal,
        wanted: Sequence[str],
        min_audit_index: Mapping[str, int],
        known_tree_size: int,
        *,
        legal_basis: str,
        case_reference: str,
        operator: str,
    ) -> DirectoryView:
        """The registered agencies `wanted` (every one if none) with their current, unrevoked bundles.

        A bundle whose agency's certificate is revoked is not offered to senders; an agency whose newest
        bundle is older than the caller's `min_audit_index` for it fails the lookup (this broker is
        behind, or withholds a bundle); the lookup is audited with its justification.
        """
        justification = self._consultation(str(caller.spiffe_id), legal_basis, case_reference, operator)
        # No agencies named: every registered agency, as the proto documents.
        found = [self._registry.get(a) for a in wanted] if wanted else self._registry.all()
        unknown = [a for a, r in zip(wanted, found, strict=True) if r is None] if wanted else []
        records = [r for r in found if r is not None]
        if unknown:
            raise InvalidRequest(f"not registered: {', '.join(unknown[:5])}")
        unasked = sorted(set(min_audit_index) - set(wanted))
        if unasked:
            raise InvalidRequest(f"freshness bound for an agency not asked for: {', '.join(unasked[:5])}")
        bundles = await self._reader.read(lambda conn: current_bundles(conn, wanted, now_us()))
        listings = []
        for record in records:
            # A key signed under a revoked identity is not offered to senders.
            offered = [
                b for b in bundles.get(record.agency_id, []) if not self._revocations.is_revoked_der(b.certificate)
            ]
            newest = max((b.audit_index for b in offered), default=0)
            bound = min_audit_index.get(record.agency_id, 0)
            if newest < bound:
                # The caller has used a bundle published later than anything this broker holds:
                # it is behind (a stale replica, a copy of the database) or withholds that bundle.
                raise FailedPrecondition(
                    f"this broker holds no current key bundle of {record.agency_id} published at or after"
                    f" audit index {bound} (newest: {newest}); ask an up-to-date broker"
                )
            listings.append(Listing(record, offered))
        groups = {name: sorted(members) for name, members in sorted(self._policy.current.groups.items())}
        proofs = await self._prove([b.audit_index for item in listings for b in item.bundles], known_tree_size)
        # A consultation like any other (docs/protocol.md section 22, Justification): who looked up whom, and why.
        # Recorded, not required first, as for auditors' queries: a full disk does not stop senders.
        await self._writer.record(
            RecordEvent(
                AuditEvent(
                    event="directory.lookup",
                    actor=str(caller.spiffe_id),
                    time=dt.datetime.now(dt.UTC),
                    agency=caller.name if caller.role is Role.AGENCY else None,
                    fields={"asked": len(wanted), "agencies": list(wanted[:64]), **justification},
                )
            )
        )
        return DirectoryView(listings, groups, proofs)

    async def _prove(self, indexes: list[int], known_size: int) -> DirectoryProofs | None:
        """Each bundle's publication proof and the checkpoint they lead to (protocol 18.4); None without
        a witness-accepted checkpoint (bundles then go without proofs, and a checking SDK waits)."""
        witnessed = self._witnessed
        if witnessed is None:
            return None
        return await self._reader.read(lambda conn: witnessed.prove(conn, indexes, known_size))
