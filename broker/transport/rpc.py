"""The one place where a call gets its request id, its request parsed, and its errors turned into statuses.

`CallInterceptor` wraps the handler of every method of every service (the broker's own, health and
reflection alike), so that for each call:

1. a request id is bound to the logs and returned in trailing metadata;
2. the request bytes are parsed here, not by grpcio (which answers a request that does not parse
   with UNKNOWN before any handler runs): bytes that do not parse are INVALID_ARGUMENT, audited
   with the caller, for unary and streamed requests alike;
3. the call runs inside the root refusal scope (`broker.audit.refusals`), so every refusal gets
   exactly one audit entry;
4. a refusal aborts the call with its own status (`broker.errors.status_of`) and a bounded
   message; anything else is logged and returned as INTERNAL without details.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc
import structlog

from broker.audit import refusals
from broker.errors import REFUSALS, STORAGE_FAULTS, BrokerError, InvalidRequest, status_of
from broker.metrics import REFUSALS_ANSWERED

log = structlog.get_logger(__name__)

# Requests and responses are raw bytes here (parsed by `_parser`), protobuf messages in servicers.
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
_INTERNAL = "internal error; the request id is in the trailing metadata"


def caller_of(context: Context) -> str:
    """The SPIFFE id the peer certificate claims (for audit entries of refused calls)."""
    uris = context.auth_context().get("x509_subject_alternative_name") or []
    named = [u.decode(errors="replace") for u in uris if u.startswith(b"spiffe://")]
    common_name = first_peer_value(context, "x509_common_name")
    return named[0] if named else (common_name.decode(errors="replace") if common_name else "unknown")


def first_peer_value(context: Context, key: str) -> bytes | None:
    """The first value of the peer's `key` in the call's auth context (grpc gives an iterable)."""
    return next(iter(context.auth_context().get(key, ())), None)


def _parser(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    if deserializer is None:
        return lambda raw: raw
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    name = getattr(descriptor, "full_name", "the request message")

    def parse(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception as exc:  # noqa: BLE001 - any parser failure is the client's malformed request
            raise InvalidRequest(f"request does not parse as {name}: {refusals.bounded(str(exc), 200)}") from None

    return parse


@contextlib.asynccontextmanager
async def _call(context: Context, rpc: str, record: refusals.Record) -> AsyncIterator[None]:
    request_id = uuid.uuid4().hex
    context.set_trailing_metadata((("x-request-id", request_id),))
    with structlog.contextvars.bound_contextvars(request_id=request_id, rpc=rpc):
        try:
            async with refusals.audited(record, caller_of(context), rpc, request_id=request_id):
                yield
        except grpc.aio.AbortError:
            raise
        except REFUSALS as exc:  # audited by the scope above (a fault of the store is not a refusal)
            reason = refusals.bounded(str(exc))
            if not isinstance(exc, STORAGE_FAULTS):
                REFUSALS_ANSWERED.inc()
            log.info("rpc.refused", status=status_of(exc).name, reason=reason)
            trailing: tuple[tuple[str, str], ...] = ()
            if isinstance(exc, BrokerError) and exc.trailing:  # replaces the call's trailing metadata
                trailing = (("x-request-id", request_id), *exc.trailing)
            await context.abort(status_of(exc), reason, trailing_metadata=trailing)
        except NotImplementedError:  # a generated servicer's default body (grpcio's health List, for one)
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{rpc} is not implemented by this broker")
        except Exception:  # mapped to a status in one place
            log.exception("rpc.failed")
            await context.abort(grpc.StatusCode.INTERNAL, _INTERNAL)


async def _parsed_stream(requests: AsyncIterator[bytes], parse: Callable[[bytes], Any]) -> AsyncIterator[Any]:
    async for raw in requests:
        yield parse(raw)


def _wrap(handler: Handler, rpc: str, record: refusals.Record) -> Handler:
    parse = _parser(handler.request_deserializer)
    serializer = handler.response_serializer
    # The stubs type a handler's behaviours as synchronous callables; on grpc.aio they are
    # coroutine functions or async generator functions.
    behaviour: Any
    if handler.request_streaming and handler.response_streaming:
        behaviour = handler.stream_stream

        async def stream_stream(requests: AsyncIterator[bytes], context: Context) -> None:
            async with _call(context, rpc, record):
                await _write_all(behaviour(_parsed_stream(requests, parse), context), context)

        return grpc.stream_stream_rpc_method_handler(stream_stream, response_serializer=serializer)
    if handler.request_streaming:
        behaviour = handler.stream_unary

        async def stream_unary(requests: AsyncIterator[bytes], context: Context) -> Any:
            async with _call(context, rpc, record):
                return await behaviour(_parsed_stream(requests, parse), context)
            return None  # reached only after an abort, which raises

        return grpc.stream_unary_rpc_method_handler(stream_unary, response_serializer=serializer)
    if handler.response_streaming:
        behaviour = handler.unary_stream

        async def unary_stream(raw: bytes, context: Context) -> None:
            async with _call(context, rpc, record):
                await _write_all(behaviour(parse(raw), context), context)

        return grpc.unary_stream_rpc_method_handler(unary_stream, response_serializer=serializer)
    behaviour = handler.unary_unary

    async def unary_unary(raw: bytes, context: Context) -> Any:
        async with _call(context, rpc, record):
            return await behaviour(parse(raw), context)
        return None  # reached only after an abort, which raises

    return grpc.unary_unary_rpc_method_handler(unary_unary, response_serializer=serializer)


async def _write_all(result: AsyncGenerator[Any, None] | Awaitable[Any], context: Context) -> None:
    """Write a streaming handler's responses from the call's own task.

    A streaming handler is an async generator, or a coroutine that writes with context.write
    (grpcio's health servicer does). The generator is closed here whatever happens, so that its
    `finally` blocks and the call's refusal scope end in the call's task and context. Handed to
    grpcio as an async generator, a call cancelled while grpcio wrote a response left it suspended,
    to be finalised later in another task, where resetting the scope's context variable failed: an
    `rpc.failed` traceback and a "Task exception was never retrieved" per such call.
    """
    if isinstance(result, AsyncGenerator):
        async with contextlib.aclosing(result) as items:
            async for item in items:
                await context.write(item)
    else:
        await result


class CallInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every method handler of the server (see the module docstring)."""

    def __init__(self, record: refusals.Record) -> None:
        self._record = record

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method  # "/isb.v1.BrokerService/Send"
        return _wrap(handler, method.rsplit("/", 1)[-1], self._record)


__all__ = ["CallInterceptor", "Context", "caller_of"]
