"""One refusal, one audit entry: the single path by which a refused request reaches the audit log.

Every RPC runs inside `audited(record, actor, rpc)` (see `broker.transport.rpc`); domain code that
knows more about the request (the verified caller, the message id, the envelope digest) opens a
nested `audited(...)` or adds to the current one with `note(...)`. When a refusal (`BrokerError`
or `ProtocolError`) leaves a scope, the innermost scope writes its `request.rejected` entry, with
every field the enclosing scopes know, and the outer scopes let it pass: whether a refusal was
audited is state of the call (a context variable), never of the exception object, so one cached
exception raised by several calls is audited once per call. Refusals that are answered without
being raised (a refused envelope inside a SendStream batch) go through `audit_outcome`.

Entries are bounded: a text field of a refusal entry holds at most `MAX_TEXT` characters. A longer
value (a reason that quotes a 3 MB message id, a message id itself) is cut, and the cut value ends
with the length and SHA-256 of the whole (`bounded`), so the entry still identifies what was sent
without storing it. The same bound applies to log lines and to the status message returned.

If the entry cannot be written (the database is down), the refusal keeps its own status: the
failed write is logged and counted, never raised in place of the refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Final

import structlog

from broker.audit.events import AuditEvent, FieldValue
from broker.errors import REFUSALS, STORAGE_FAULTS, Refusal, status_of
from broker.metrics import AUDIT_WRITE_FAILURES, REFUSALS_AUDITED, REFUSALS_UNANSWERED

__all__ = ["MAX_TEXT", "Record", "RefusalScope", "audit_outcome", "audited", "bounded", "note", "rejection", "scope"]

log = structlog.get_logger(__name__)

MAX_TEXT: Final = 512
"""Characters of one text field of a refusal entry, log line or status message, at most."""

_ID_COLUMN: Final = 64  # audit_entries.message_id and .agency
_ACTOR_COLUMN: Final = 255  # audit_entries.actor

Record = Callable[[AuditEvent], Awaitable[object]]
"""Writes one audit entry (the broker's: a `RecordEvent` through the writer)."""


def bounded(text: str, limit: int = MAX_TEXT) -> str:
    """`text` if it has at most `limit` characters; else its first `limit // 2` characters, then its
    UTF-8 length and SHA-256 (docs/protocol.md, "Limits and refusals")."""
    if len(text) <= limit:
        return text
    raw = text.encode("utf-8", "surrogatepass")
    return f"{text[: limit // 2]}…[cut: {len(raw)} bytes, sha256:{hashlib.sha256(raw).hexdigest()}]"


def rejection(
    actor: str,
    rpc: str,
    reason: str,
    time: dt.datetime,
    *,
    message_id: str | None = None,
    agency: str | None = None,
    digest: str = "",
    status: str = "",
    fields: dict[str, FieldValue] | None = None,
) -> AuditEvent:
    """The audit entry of a refused request: who, which RPC, why; never the payload, every text bounded."""
    entry: dict[str, FieldValue] = {k: _bounded_value(v) for k, v in (fields or {}).items()}
    entry.update({"rpc": bounded(rpc), "reason": bounded(reason)})
    if digest:
        entry["envelope_sha256"] = bounded(digest)
    if status:
        entry["status"] = status
    # The indexed columns hold identifiers (at most 64 characters, 255 for the actor); a longer
    # claim is no identifier: it moves to the fields, bounded, and the column stays empty.
    if message_id is not None and len(message_id) > _ID_COLUMN:
        entry["claimed_message_id"], message_id = bounded(message_id), None
    if agency is not None and len(agency) > _ID_COLUMN:
        entry["claimed_agency"], agency = bounded(agency), None
    return AuditEvent(
        event="request.rejected",
        actor=bounded(actor, _ACTOR_COLUMN),
        time=time,
        message_id=message_id,
        agency=agency,
        fields=entry,
    )


def _bounded_value(value: FieldValue) -> FieldValue:
    if isinstance(value, str):
        return bounded(value)
    if isinstance(value, list | tuple):
        return [bounded(v) for v in value[:64]]
    return value


@dataclass(eq=False)
class _Call:
    """One RPC: where its refusals are written, and which of them already were."""

    record: Record
    audited: list[BaseException] = field(default_factory=list)

    def claim(self, error: BaseException) -> bool:
        """True the first time `error` is claimed in this call (identity, not equality)."""
        if any(e is error for e in self.audited):
            return False
        self.audited.append(error)
        return True


@dataclass(eq=False)
class RefusalScope:
    """What one scope knows about the request; `note` adds to it while the request is checked."""

    call: _Call
    parent: RefusalScope | None
    actor: str | None = None
    rpc: str | None = None
    message_id: str | None = None
    agency: str | None = None
    digest: str = ""
    fields: dict[str, FieldValue] = field(default_factory=dict)

    def note(
        self,
        *,
        message_id: str | None = None,
        agency: str | None = None,
        digest: str | None = None,
        **fields: FieldValue,
    ) -> None:
        """Add what became known (a message id once the header is read, the envelope digest...)."""
        if message_id is not None:
            self.message_id = message_id
        if agency is not None:
            self.agency = agency
        if digest is not None:
            self.digest = digest
        self.fields.update(fields)

    def entry(self, error: Refusal) -> AuditEvent:
        """The refusal entry of `error`, with what this scope and the enclosing ones know."""
        chain: list[RefusalScope] = []
        scope: RefusalScope | None = self
        while scope is not None:
            chain.append(scope)
            scope = scope.parent
        merged = RefusalScope(self.call, None)
        fields: dict[str, FieldValue] = {}
        for s in reversed(chain):  # outermost first, so inner scopes override
            merged.actor = s.actor or merged.actor
            merged.rpc = s.rpc or merged.rpc
            merged.message_id = s.message_id if s.message_id is not None else merged.message_id
            merged.agency = s.agency if s.agency is not None else merged.agency
            merged.digest = s.digest or merged.digest
            fields.update(s.fields)
        return rejection(
            merged.actor or "unknown",
            merged.rpc or "unknown",
            str(error),
            dt.datetime.now(dt.UTC),
            message_id=merged.message_id,
            agency=merged.agency,
            digest=merged.digest,
            status=status_of(error).name,
            fields=fields,
        )


_SCOPE: ContextVar[RefusalScope | None] = ContextVar("isb_refusal_scope", default=None)


@contextlib.contextmanager
def scope(
    record: Record | None = None,
    actor: str | None = None,
    rpc: str | None = None,
    *,
    message_id: str | None = None,
    agency: str | None = None,
    digest: str = "",
    **fields: FieldValue,
) -> Iterator[RefusalScope]:
    """A scope whose refusals its caller audits with `audit_outcome` (leaving it audits nothing).

    The outermost scope of a call needs `record`; nested scopes belong to the same call (their
    `record` is ignored) and inherit everything they do not set.
    """
    parent = _SCOPE.get()
    if parent is None:
        if record is None:
            raise RuntimeError("the outermost refusal scope of a call needs a record function")
        call = _Call(record)
    else:
        call = parent.call
    opened = RefusalScope(call, parent, actor, rpc, message_id, agency, digest, dict(fields))
    token = _SCOPE.set(opened)
    try:
        yield opened
    finally:
        _SCOPE.reset(token)


@contextlib.asynccontextmanager
async def audited(
    record: Record | None = None,
    actor: str | None = None,
    rpc: str | None = None,
    *,
    message_id: str | None = None,
    agency: str | None = None,
    digest: str = "",
    **fields: FieldValue,
) -> AsyncIterator[RefusalScope]:
    """A `scope` whose refusals are audited once as they leave it (here, unless a nested scope did),
    then re-raised."""
    with scope(record, actor, rpc, message_id=message_id, agency=agency, digest=digest, **fields) as opened:
        try:
            yield opened
        except REFUSALS as exc:
            await _audit(opened, exc)
            raise


def note(
    *, message_id: str | None = None, agency: str | None = None, digest: str | None = None, **fields: FieldValue
) -> None:
    """Add to the current scope's fields (no-op outside a scope)."""
    scope = _SCOPE.get()
    if scope is not None:
        scope.note(message_id=message_id, agency=agency, digest=digest, **fields)


async def audit_outcome(scope: RefusalScope, error: Refusal) -> None:
    """Audit a refusal raised in `scope` and answered, not raised (one refused envelope of a
    SendStream batch): once per call, as `audited` does."""
    await _audit(scope, error)


async def _audit(scope: RefusalScope, error: Refusal) -> None:
    if isinstance(error, STORAGE_FAULTS) or not scope.call.claim(error):
        return  # a fault of the store is not a refusal of the request: the writer logs it
    REFUSALS_AUDITED.labels(status_of(error).name).inc()
    # Shielded: a call cancelled meanwhile (its deadline passed, the client went away) still gets its entry,
    # written or held like any other (the refusal happened), but no status reaches its caller: counted apart.
    write = asyncio.ensure_future(_write(scope.call.record, scope.entry(error), error))
    _WRITING.add(write)
    write.add_done_callback(_WRITING.discard)
    try:
        await asyncio.shield(write)
    except asyncio.CancelledError:
        REFUSALS_UNANSWERED.inc()
        raise


_WRITING: set[asyncio.Future[None]] = set()  # entries being written for cancelled calls stay referenced


async def _write(record: Record, entry: AuditEvent, error: Refusal) -> None:
    try:
        await record(entry)
    except Exception as exc:
        AUDIT_WRITE_FAILURES.labels("refusal").inc()
        log.exception(
            "refusal.audit_failed",
            error=bounded(f"{type(exc).__name__}: {exc}"),
            status=status_of(error).name,
            reason=bounded(str(error)),
        )
