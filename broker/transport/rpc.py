"""The one place where domain errors become gRPC statuses, and where every call gets a request id.

Each handler is wrapped so that: a request id is bound to the logs and returned in trailing
metadata; a `BrokerError` aborts the call with its own status code and message, after its refusal
has been written to the audit log (if the domain did not already); anything else is logged and
returned as INTERNAL without details.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import grpc
import structlog

from broker.errors import STORAGE_FAULTS, BrokerError

log = structlog.get_logger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
# grpcio ships no type information: the servicer context is typed loosely on purpose.
Context: TypeAlias = Any
# Servicers provide `refuse(actor, rpc, error)`, which writes a refusal's audit entry.
Refuser = Callable[[str, str, BrokerError], Awaitable[None]]


def caller_of(context: Context) -> str:
    """The SPIFFE id the peer certificate claims (for audit entries of refused calls)."""
    uris = context.auth_context().get("x509_subject_alternative_name") or []
    pems = context.auth_context().get("x509_common_name") or []
    named = [u.decode(errors="replace") for u in uris if u.startswith(b"spiffe://")]
    return named[0] if named else (pems[0].decode(errors="replace") if pems else "unknown")


async def _fail(context: Context, name: str, exc: BaseException, refuse: Refuser) -> None:
    if isinstance(exc, BrokerError):
        # A fault of the store is not a refusal of the request: logged by the writer, not audited.
        if not exc.audited and not isinstance(exc, STORAGE_FAULTS):
            await refuse(caller_of(context), name, exc)
        log.info("rpc.refused", status=exc.status.name, reason=str(exc))
        trailing: tuple[tuple[str, str], ...] = ()
        if exc.trailing:  # replaces the call's trailing metadata, so the request id is repeated
            request_id = str(structlog.contextvars.get_contextvars().get("request_id", ""))
            trailing = (("x-request-id", request_id), *exc.trailing)
        await context.abort(exc.status, str(exc), trailing_metadata=trailing)
    log.exception("rpc.failed")
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; the request id is in the trailing metadata")


def unary(name: str) -> Callable[[Callable[[Any, Req, Context], Awaitable[Resp]]],
                                                 Callable[[Any, Req, Context], Awaitable[Resp]]]:
    """Wrap a unary-response handler (unary or client-streaming request)."""
    def wrap(handler: Callable[[Any, Req, Context], Awaitable[Resp]]) -> Callable[[Any, Req, Context], Awaitable[Resp]]:
        @functools.wraps(handler)
        async def run(self: Any, request: Req, context: Context) -> Resp:
            request_id = uuid.uuid4().hex
            context.set_trailing_metadata((("x-request-id", request_id),))
            with structlog.contextvars.bound_contextvars(request_id=request_id, rpc=name):
                try:
                    return await handler(self, request, context)
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:  # mapped to a status in one place
                    await _fail(context, name, exc, self.refuse)
                    raise
        return run
    return wrap


def streaming(name: str) -> Callable[[Callable[[Any, Req, Context], AsyncIterator[Resp]]],
                                                     Callable[[Any, Req, Context], AsyncIterator[Resp]]]:
    """Wrap a server-streaming handler."""
    def wrap(handler: Callable[[Any, Req, Context], AsyncIterator[Resp]]) -> Callable[[Any, Req, Context],
                                                                                     AsyncIterator[Resp]]:
        @functools.wraps(handler)
        async def run(self: Any, request: Req, context: Context) -> AsyncIterator[Resp]:
            request_id = uuid.uuid4().hex
            context.set_trailing_metadata((("x-request-id", request_id),))
            with structlog.contextvars.bound_contextvars(request_id=request_id, rpc=name):
                try:
                    async for item in handler(self, request, context):
                        yield item
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:  # mapped to a status in one place
                    await _fail(context, name, exc, self.refuse)
                    raise
        return run
    return wrap
