"""AuditService: auditors read the log, its signed checkpoints and proofs. Every query is itself
an audit entry; callers without an auditor certificate are refused (and that is logged too)."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import structlog

from broker.api.v1 import audit_pb2, audit_pb2_grpc
from broker.audit import AuditEvent, AuditLog, AuditRecord, CheckpointRecord
from broker.audit.events import Consultation
from broker.errors import STORAGE_FAULTS, FailedPrecondition, InvalidRequest
from broker.identity import Principal, Role
from broker.store.reads import Reader
from broker.store.writer import RecordEvent, Writer
from broker.transport.auth import Authenticator
from broker.transport.rpc import Context

log = structlog.get_logger(__name__)

EXPORT_WINDOW = 1000
# The consultations that carry a justification (request fields 30-32).
_Justified = audit_pb2.QueryEntriesRequest | audit_pb2.InclusionProofRequest | audit_pb2.ExportRequest
MAX_FILTER_LENGTH = 128


def _entry(record: AuditRecord) -> audit_pb2.AuditEntry:
    return audit_pb2.AuditEntry(index=record.index, entry=record.entry, leaf_hash=record.leaf_hash)


def _checkpoint(record: CheckpointRecord) -> audit_pb2.Checkpoint:
    return audit_pb2.Checkpoint(note=record.note, tree_size=record.tree_size, root_hash=record.root_hash)


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    """AuditService over the broker's audit log (read-only, auditors only)."""

    def __init__(
        self,
        auth: Authenticator,
        reader: Reader,
        writer: Writer,
        consultation: Consultation,
        sign_checkpoint: Callable[[], Awaitable[None]],
    ) -> None:
        self._auth = auth
        self._reader = reader
        self._writer = writer
        self._consultation = consultation
        self._sign_checkpoint = sign_checkpoint

    @property
    def _log(self) -> AuditLog:
        return self._writer.audit_log

    async def _auditor(self, context: Context, rpc: str, request: _Justified | None = None, **fields: Any) -> Principal:
        caller = self._auth.require(context, Role.AUDITOR)
        if request is not None:  # the consultation's justification, checked before anything is read
            fields |= self._consultation(str(caller), request.legal_basis, request.case_reference, request.operator)
        # An auditor's query is an event like any other (DESIGN.md section 8): who looked at what.
        # Recorded, not required first: while the store cannot commit, the entry is held and the
        # auditor still gets the answer (reads work on a full disk).
        await self._writer.record(
            RecordEvent(
                AuditEvent(
                    event="audit.query",
                    actor=str(caller),
                    time=dt.datetime.now(dt.UTC),
                    message_id=fields.pop("message_id", None) or None,
                    agency=fields.pop("agency", None) or None,
                    fields={"rpc": rpc, **{k: v for k, v in fields.items() if v not in (None, "", 0)}},
                )
            )
        )
        return caller

    async def QueryEntries(
        self, request: audit_pb2.QueryEntriesRequest, context: Context
    ) -> audit_pb2.QueryEntriesResponse:
        for name in ("agency", "message_id", "event"):
            if len(getattr(request, name)) > MAX_FILTER_LENGTH:
                raise InvalidRequest(f"{name} filter is longer than {MAX_FILTER_LENGTH} characters")
        await self._auditor(
            context,
            "QueryEntries",
            request,
            agency=request.agency,
            message_id=request.message_id,
            event=request.event,
            start_index=request.start_index,
        )
        since = request.since.ToDatetime(dt.UTC) if request.HasField("since") else None
        until = request.until.ToDatetime(dt.UTC) if request.HasField("until") else None
        page = await self._reader.read(
            lambda conn: self._log.query(
                conn,
                since=since,
                until=until,
                agency=request.agency or None,
                message_id=request.message_id or None,
                event=request.event or None,
                start_index=request.start_index,
                limit=request.page_size or 100,
            )
        )
        return audit_pb2.QueryEntriesResponse(
            entries=[_entry(r) for r in page.records], next_index=page.next_index or 0
        )

    async def GetCheckpoint(self, request: audit_pb2.GetCheckpointRequest, context: Context) -> audit_pb2.Checkpoint:
        await self._auditor(context, "GetCheckpoint")
        if request.fresh and self._writer.healthy:
            # Without a store that commits, the latest signed checkpoint is the freshest there is.
            with contextlib.suppress(*STORAGE_FAULTS):
                await self._sign_checkpoint()
        latest = await self._reader.read(self._log.latest_checkpoint)
        if latest is None:
            raise FailedPrecondition("no checkpoint has been signed yet; ask again with fresh=true")
        return _checkpoint(latest)

    async def _size(self, requested: int) -> int:
        if requested:
            return requested
        latest = await self._reader.read(self._log.latest_checkpoint)
        if latest is None:
            raise FailedPrecondition("no checkpoint has been signed yet")
        return latest.tree_size

    async def GetInclusionProof(
        self, request: audit_pb2.InclusionProofRequest, context: Context
    ) -> audit_pb2.InclusionProof:
        await self._auditor(context, "GetInclusionProof", request, index=request.index, tree_size=request.tree_size)
        size = await self._size(request.tree_size)

        def prove(conn: Any) -> tuple[list[bytes], AuditRecord]:
            return self._log.inclusion_proof(conn, request.index, size), self._log.entry(conn, request.index)

        hashes, record = await self._reader.read(prove)
        return audit_pb2.InclusionProof(index=request.index, tree_size=size, hashes=hashes, entry=_entry(record))

    async def GetConsistencyProof(
        self, request: audit_pb2.ConsistencyProofRequest, context: Context
    ) -> audit_pb2.ConsistencyProof:
        await self._auditor(
            context, "GetConsistencyProof", first_size=request.first_size, second_size=request.second_size
        )
        second = await self._size(request.second_size)
        hashes = await self._reader.read(lambda conn: self._log.consistency_proof(conn, request.first_size, second))
        return audit_pb2.ConsistencyProof(first_size=request.first_size, second_size=second, hashes=hashes)

    def _window(self, conn: Any, *, start: int, stop: int) -> list[AuditRecord | CheckpointRecord]:
        return list(self._log.export(conn, start, stop))

    async def Export(self, request: audit_pb2.ExportRequest, context: Context) -> AsyncIterator[audit_pb2.ExportItem]:
        await self._auditor(context, "Export", request, start_index=request.start_index, end_index=request.end_index)
        end = request.end_index or await self._size(0)
        position = request.start_index
        while position < end:
            window_end = min(position + EXPORT_WINDOW, end)
            items = await self._reader.read(functools.partial(self._window, start=position, stop=window_end))
            for item in items:
                if isinstance(item, CheckpointRecord):
                    yield audit_pb2.ExportItem(checkpoint=_checkpoint(item))
                else:
                    yield audit_pb2.ExportItem(entry=_entry(item))
            position = window_end
