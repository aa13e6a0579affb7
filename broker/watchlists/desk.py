"""The watchlist desk: the broker's domain logic for watchlists (DESIGN.md section 7).

Every public method takes the authenticated `Principal` and protobuf-free values (or the envelope
to store), checks the request, and changes state only through the writer. A refused request raises
a `BrokerError` after its refusal has been audited, as in `broker.delivery.exchange`.

Keys: an update is sealed once, with a wrapped content key for every agency the watchlist's
subscribers expand to (policy groups at publish time) and for the owner. The broker requires
exactly that set, so that every allowed subscriber can open every version it is served (a version
one subscriber could not open would be a gap in its replica that it could never close), and the
owner can rebuild its own list from the broker. An agency that joins a subscribing group later
reads versions from then on, and older ones only through the next snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
from collections.abc import Sequence
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from broker.api.v1 import envelope_pb2, payload_pb2, watchlist_pb2
from broker.audit import AuditEvent, refusals
from broker.audit.refusals import bounded
from broker.config import BrokerConfig
from broker.delivery.certificates import PeerCertificates
from broker.delivery.intake import take_in
from broker.delivery.operations import refusal_record
from broker.directory import Registry
from broker.errors import FailedPrecondition, InvalidRequest, NotFound, PermissionDenied
from broker.identity import AGENCY_ID, AGENCY_ID_PATTERN, GROUP_NAME, Principal, Role
from broker.policy import RunningPolicy, tlp_from_proto
from broker.protocol import validation
from broker.protocol.envelope import verify_outer
from broker.protocol.errors import OutOfRange
from broker.store import tables as store_tables
from broker.store.db import now_us
from broker.store.reads import Reader
from broker.store.writer import RecordEvent, Writer
from broker.watchlists import tables
from broker.watchlists.operations import CreateWatchlist, Published, PublishVersion
from broker.watchlists.records import StoredVersion, WatchlistRecord, record_of_row
from broker.watchlists.review import Notice, notices, schedule_of

__all__ = ["MAX_SUBSCRIBERS", "WATCHLIST_ID", "StoredVersion", "WatchlistDesk", "WatchlistRecord"]

# "<OWNER>/<name>": the owner's agency id as prefix, so no agency can take another's list names.
WATCHLIST_ID: Final = re.compile(rf"^(?P<owner>{AGENCY_ID_PATTERN})/[a-z0-9][a-z0-9._-]{{0,80}}$")
MAX_SUBSCRIBERS: Final = 200
MAX_TITLE: Final = 200
_KIND = "WATCHLIST_UPDATE"


class WatchlistDesk:
    """Creates watchlists, accepts versions from their owners, serves them to allowed subscribers."""

    def __init__(
        self,
        config: BrokerConfig,
        reader: Reader,
        writer: Writer,
        registry: Registry,
        policy: RunningPolicy,
        certificates: PeerCertificates,
    ) -> None:
        self._config = config
        self._reader = reader
        self._writer = writer
        self._record_refusal = refusal_record(writer)
        self._registry = registry
        self._policy = policy
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._certificates = certificates
        self.actor = f"broker:{config.node}"

    # -- refusals ------------------------------------------------------------------------------
    def _audited(self, caller: Principal) -> contextlib.AbstractAsyncContextManager[refusals.RefusalScope]:
        """The refusal scope of one request by `caller` (one audit entry per refusal)."""
        return refusals.audited(self._record_refusal, str(caller.spiffe_id), agency=caller.name)

    # -- reading -------------------------------------------------------------------------------
    async def _load(self, watchlist_id: str) -> WatchlistRecord | None:
        query = sa.select(tables.watchlist_lists).where(tables.watchlist_lists.c.watchlist_id == watchlist_id)

        def run(conn: Connection) -> WatchlistRecord | None:
            row = conn.execute(query).first()
            return None if row is None else record_of_row(row)

        return await self._reader.read(run)

    def may_subscribe(self, agency: str, record: WatchlistRecord) -> bool:
        """Whether `agency` may receive `record`'s versions: its owner, or named in its subscribers
        directly or through a group of the current policy."""
        if agency == record.owner or agency in record.subscribers:
            return True
        groups = self._policy.current.groups
        return any(agency in groups.get(s, frozenset()) for s in record.subscribers)

    def _require_subscriber(self, caller: Principal, record: WatchlistRecord) -> None:
        if not self.may_subscribe(caller.name, record):
            raise PermissionDenied(
                f"{caller.name} may not subscribe to watchlist {record.watchlist_id}: its owner {record.owner} "
                f"shares it with {', '.join(record.subscribers)} only"
            )

    async def get(self, caller: Principal, watchlist_id: str) -> WatchlistRecord:
        """One watchlist the caller owns or may subscribe to."""
        async with self._audited(caller):
            record = await self._load(watchlist_id)
            if record is None:
                raise NotFound(f"no watchlist {bounded(watchlist_id, 200)!r}")
            self._require_subscriber(caller, record)
        return record

    async def visible(self, caller: Principal) -> list[WatchlistRecord]:
        """Every watchlist the caller owns or may subscribe to, by id."""
        query = sa.select(tables.watchlist_lists).order_by(tables.watchlist_lists.c.watchlist_id)
        records = await self._reader.read(lambda conn: [record_of_row(r) for r in conn.execute(query)])
        return [r for r in records if self.may_subscribe(caller.name, r)]

    # -- CreateWatchlist -----------------------------------------------------------------------
    async def create(
        self,
        caller: Principal,
        watchlist_id: str,
        title: str,
        entry_types: Sequence[int],
        subscribers: Sequence[str],
        tlp: int,
    ) -> WatchlistRecord:
        """Create a watchlist owned by the caller, at version 0."""
        async with self._audited(caller):
            if caller.role is not Role.AGENCY:
                raise PermissionDenied(f"{caller.spiffe_id} is not an agency; only agencies own watchlists")
            if caller.name not in self._registry:
                raise PermissionDenied(f"agency {caller.name} is not registered with this broker")
            match = WATCHLIST_ID.fullmatch(watchlist_id)
            if match is None:
                raise InvalidRequest(
                    f"watchlist id {watchlist_id!r} must look like '{caller.name}/stolen-documents' "
                    "(owner id, '/', lowercase name)"
                )
            if match["owner"] != caller.name:
                raise PermissionDenied(f"watchlist id {watchlist_id!r} must start with the owner's id {caller.name}/")
            if len(title) > MAX_TITLE:
                raise InvalidRequest(f"title is over {MAX_TITLE} characters")
            types = []
            for value in entry_types:
                if value not in payload_pb2.EntityType.values() or value == payload_pb2.ENTITY_TYPE_UNSPECIFIED:
                    raise InvalidRequest(f"entry type {value} is unspecified or unknown")
                types.append(payload_pb2.EntityType.Name(value))  # type: ignore[arg-type]
            names = self._check_subscribers(caller.name, subscribers)
            tlp_name = tlp_from_proto(tlp)
            # A list nobody may receive under the policy is refused now, not at the first publish.
            self._policy.current.decide_send(caller.name, _KIND, tlp_name, names).raise_if_denied()
            record = WatchlistRecord(
                watchlist_id, caller.name, title, tuple(sorted(set(types))), names, tlp, 0, 0, 0, 0
            )
            created: WatchlistRecord = await self._writer.submit(CreateWatchlist(record, actor=str(caller.spiffe_id)))
        return created

    def _check_subscribers(self, owner: str, subscribers: Sequence[str]) -> tuple[str, ...]:
        if not subscribers:
            raise InvalidRequest("a watchlist needs at least one subscriber (agency id or group)")
        if len(subscribers) > MAX_SUBSCRIBERS:
            raise InvalidRequest(f"{len(subscribers)} subscribers, over the limit of {MAX_SUBSCRIBERS}")
        if len(set(subscribers)) != len(subscribers):
            raise InvalidRequest("a subscriber is named twice")
        groups = self._policy.current.groups
        for s in subscribers:
            if s == owner:
                raise InvalidRequest("the owner always reads its own watchlist; do not list it as a subscriber")
            if AGENCY_ID.fullmatch(s):
                if s not in self._registry:
                    raise NotFound(f"subscriber {s} is not a registered agency")
            elif GROUP_NAME.fullmatch(s):
                if s not in groups:
                    raise NotFound(f"subscriber {s} is not a known group")
            else:
                raise InvalidRequest(f"subscriber {s!r} is neither an agency id nor a group name")
        return tuple(sorted(subscribers))

    # -- PublishUpdate -------------------------------------------------------------------------
    async def publish(
        self,
        caller: Principal,
        envelope: envelope_pb2.Envelope,
        snapshot: bool,
        review: watchlist_pb2.ReviewSchedule | None = None,
    ) -> Published:
        """Check one WATCHLIST_UPDATE envelope from the owner and store it as the next version (and the
        owner's review schedule, if given: broker.watchlists.review)."""
        async with self._audited(caller) as refusal:
            # 1-2. Who, how big, well formed; the header is trusted only after step 4.
            intake = take_in(
                caller,
                envelope,
                envelope.ByteSize(),
                refusal,
                max_bytes=self._config.max_envelope_bytes,
                max_recipients=self._config.max_recipients,
                action="publish",
                what="watchlists",
            )
            envelope_bytes, digest, header = intake.envelope_bytes, intake.digest, intake.header
            if header.kind != envelope_pb2.WATCHLIST_UPDATE:
                raise InvalidRequest(
                    f"a watchlist update must be of kind WATCHLIST_UPDATE, not {envelope_pb2.Kind.Name(header.kind)}"
                )
            if not header.watchlist_id or header.watchlist_version == 0:
                raise InvalidRequest("a watchlist update needs header.watchlist_id and header.watchlist_version >= 1")
            # 3. The watchlist exists and the caller owns it.
            record = await self._load(header.watchlist_id)
            if record is None:
                raise NotFound(f"no watchlist {header.watchlist_id!r}")
            if record.owner != caller.name:
                raise PermissionDenied(
                    f"watchlist {record.watchlist_id} is owned by {record.owner}; only its owner may publish updates"
                )
            # 4. The outer signature and digests, against the caller's own certificate.
            header = verify_outer(envelope, self._certificates.of(caller), max_bytes=self._config.max_envelope_bytes)
            if header.HasField("expires") and header.expires.ToMicroseconds() <= now_us():
                raise InvalidRequest("envelope expired before it was sent (header.expires is in the past)")
            await self._check_created(header, digest)
            # 5. Addressed as the watchlist says, with the keys it needs.
            expected = self._check_addressing(record, header, envelope)
            schedule = schedule_of(review) if review is not None else None
            # 6. The version check and the store, in the writer (see broker.watchlists.operations).
            published: Published = await self._writer.submit(
                PublishVersion(
                    header=header,
                    snapshot=snapshot,
                    envelope=envelope_bytes,
                    envelope_sha256=digest,
                    sender_cert_fingerprint=caller.fingerprint,
                    sender_cert_der=caller.certificate_der,
                    caller=str(caller.spiffe_id),
                    wrapped_for=expected,
                    on_commit=self._published,
                    review=schedule,
                )
            )
        return published

    async def _check_created(self, header: envelope_pb2.Header, digest: bytes) -> None:
        # As for sends: `created` within the skew window, unless this is a retry of a stored version.
        try:
            validation.check_created_skew(
                header, dt.datetime.now(dt.UTC), dt.timedelta(seconds=self._config.max_clock_skew_seconds)
            )
        except OutOfRange:
            v = tables.watchlist_versions
            stored = await self._reader.read(
                lambda conn: conn.execute(
                    sa.select(v.c.envelope_sha256).where(v.c.message_id == header.message_id)
                ).scalar()
            )
            if stored is None or bytes(stored) != digest:
                raise

    def _check_addressing(
        self, record: WatchlistRecord, header: envelope_pb2.Header, envelope: envelope_pb2.Envelope
    ) -> tuple[str, ...]:
        """The agencies an update of `record` must be wrapped for; raise if `header`/`envelope` differ."""
        # Addressed to the watchlist's subscribers, at its handling code, as the policy allows.
        if sorted(header.recipients) != list(record.subscribers):
            raise InvalidRequest(
                f"a version of {record.watchlist_id} must be addressed to its subscribers "
                f"{list(record.subscribers)}, not {sorted(header.recipients)}"
            )
        if header.handling.tlp != record.tlp:
            raise InvalidRequest(
                f"watchlist {record.watchlist_id} is {envelope_pb2.Tlp.Name(record.tlp)}; "  # type: ignore[arg-type]
                f"the update is {envelope_pb2.Tlp.Name(header.handling.tlp)}"
            )
        policy = self._policy.current
        policy.justification.check_send(
            _KIND,
            tlp_from_proto(header.handling.tlp),
            {"legal_basis": header.legal_basis, "case_reference": header.case_reference},
        )
        decision = policy.decide_send(
            record.owner, _KIND, tlp_from_proto(header.handling.tlp), list(record.subscribers)
        )
        decision.raise_if_denied()
        # One wrapped key per subscribing agency and for the owner (see the module docstring).
        expected = tuple(sorted(set(decision.expanded) | {record.owner}))
        unregistered = [a for a in expected if a not in self._registry]
        if unregistered:
            raise NotFound(f"subscriber {unregistered[0]} is not a registered agency")
        wrapped = tuple(sorted(k.recipient for k in envelope.wrapped_keys))
        if wrapped != expected:
            raise InvalidRequest(
                "a watchlist update must carry a wrapped key for every subscribing agency and the owner: "
                f"expected {list(expected)}, envelope has {list(wrapped)}"
            )
        return expected

    # -- Sync ----------------------------------------------------------------------------------
    async def open_sync(self, caller: Principal, watchlist_id: str, have_version: int) -> WatchlistRecord:
        """Check that the caller may sync `watchlist_id` from `have_version`; return the watchlist."""
        async with self._audited(caller):
            if caller.role is not Role.AGENCY:
                raise PermissionDenied(f"{caller.spiffe_id} is not an agency; only agencies subscribe to watchlists")
            record = await self._load(watchlist_id)
            if record is None:
                raise NotFound(f"no watchlist {watchlist_id!r}")
            self._require_subscriber(caller, record)
            if have_version > record.version:
                raise FailedPrecondition(
                    f"you hold version {have_version} of {watchlist_id}, but the broker has only published up to "
                    f"version {record.version}; start again from a snapshot (have_version 0)"
                )
        return record

    async def review_notices(self, caller: Principal, watchlist_id: str) -> list[Notice]:
        """The review notices of the caller's own watchlists (all, or the one named, which must be the caller's:
        asking for another agency's is refused and audited, not answered with an empty list)."""
        if watchlist_id:
            async with self._audited(caller):
                record = await self._load(watchlist_id)
                if record is None:
                    raise NotFound(f"no watchlist {bounded(watchlist_id, 200)!r}")
                if record.owner != caller.name:
                    raise PermissionDenied(
                        f"{caller.name} does not own watchlist {record.watchlist_id}: only its "
                        f"owner {record.owner} reads its review notices"
                    )
        return await self._reader.read(lambda conn: notices(conn, caller.name, watchlist_id))

    def still_allowed(self, caller: Principal, record: WatchlistRecord) -> None:
        """Raise `PermissionDenied` if a policy change took the caller out of the subscribers."""
        self._require_subscriber(caller, record)

    async def versions_after(self, watchlist_id: str, after: int, limit: int = 64) -> list[StoredVersion]:
        """Stored versions > `after`, in order, at most `limit` of them."""
        v, c = tables.watchlist_versions, store_tables.peer_certificates
        query = (
            sa.select(v.c.version, v.c.snapshot, v.c.envelope, v.c.accepted_us, c.c.der)
            .join(c, c.c.fingerprint == v.c.sender_cert)
            .where(v.c.watchlist_id == watchlist_id, v.c.version > after)
            .order_by(v.c.version)
            .limit(limit)
        )
        return await self._reader.read(
            lambda conn: [
                StoredVersion(
                    watchlist_id, int(r.version), bool(r.snapshot), bytes(r.envelope), bytes(r.der), int(r.accepted_us)
                )
                for r in conn.execute(query)
            ]
        )

    async def latest_snapshot(self, watchlist_id: str) -> int:
        """The version of the latest snapshot of `watchlist_id` (0: none)."""
        query = sa.select(tables.watchlist_lists.c.snapshot_version).where(
            tables.watchlist_lists.c.watchlist_id == watchlist_id
        )
        return int(await self._reader.read(lambda conn: conn.execute(query).scalar() or 0))

    def served(self, caller: Principal, watchlist_id: str, first: int, last: int) -> None:
        """Audit that versions `first..last` were sent to the caller (queued, not awaited)."""
        self._writer.submit_nowait(
            RecordEvent(
                AuditEvent(
                    event="watchlist.delivered",
                    actor=self.actor,
                    time=dt.datetime.now(dt.UTC),
                    agency=caller.name,
                    fields={
                        "watchlist_id": watchlist_id,
                        "recipient": caller.name,
                        "from_version": first,
                        "to_version": last,
                    },
                )
            )
        )

    # -- live pushes ---------------------------------------------------------------------------
    def watch(self, watchlist_id: str) -> asyncio.Event:
        """An event set whenever a version of `watchlist_id` commits; release it with `unwatch`."""
        event = asyncio.Event()
        self._waiters.setdefault(watchlist_id, set()).add(event)
        return event

    def unwatch(self, watchlist_id: str, event: asyncio.Event) -> None:
        """Stop notifying `event`."""
        waiters = self._waiters.get(watchlist_id)
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[watchlist_id]

    def _published(self, watchlist_id: str, version: int) -> None:
        # Runs on the event loop after the commit (Writer runs after_commit callbacks there).
        for event in self._waiters.get(watchlist_id, ()):
            event.set()
