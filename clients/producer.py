"""Sending at a high rate: sealed envelopes share SendStream messages, as a Kafka producer batches.

`AgencyClient.producer()` opens one long-lived SendStream. `submit` queues a sealed envelope and
returns a future at once; gRPC's request thread takes what is queued, waits at most `linger`
seconds for more to share the gRPC message (up to `batch_size`), and sends the batch, unless
`max_in_flight` batches are still unanswered: then the batch keeps filling until one is answered,
so under load batches grow by themselves and at low rates nothing waits longer than the linger. The broker answers
each batch in order, once it is durably committed, so each future resolves with the broker's
`SendResponse`, or fails with the broker's refusal of that envelope alone. Envelopes sealed
without an outer signature (`AgencyClient.seal(..., sign=False)`) are signed just before they are
sent, those of one stream message with one batch signature (docs/protocol.md section 21): one
ECDSA signature per batch for the sender, one verification per batch for the broker and recipients.

Batching is where the throughput comes from: one stream message per envelope costs the broker and
this process about as much as sealing does (bench/README.md), and a linger of a millisecond or two
is invisible next to the broker's commit.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, Final

import grpc

from broker.api.v1 import broker_pb2, envelope_pb2
from clients.errors import ClientError, RemoteError

MAX_BATCH: Final = 256  # the broker refuses larger batches


class Producer:
    """One SendStream shared by many sends; use as a context manager, or call `close()`."""

    def __init__(
        self,
        send_stream: Callable[[Iterator[broker_pb2.SendBatch]], Any],
        translate_error: Callable[[grpc.RpcError], ClientError],
        *,
        linger: float = 0.001,
        batch_size: int = 64,
        max_pending: int = 4096,
        max_in_flight: int = 4,
        sign: Callable[[list[envelope_pb2.Envelope]], None] | None = None,
    ) -> None:
        if not 0 <= linger <= 1.0:
            raise ValueError("linger must be between 0 and 1 second")
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH}")
        self._translate_error = translate_error
        self._sign = sign
        self._linger = linger
        self._batch_size = batch_size
        self._max_pending = max(max_pending, batch_size)
        self._max_in_flight = max(1, max_in_flight)
        self._batches_in_flight = 0
        # One lock for all state. Submitters append to `_queued` and wake the request thread only
        # for the first envelope of a batch and for a full batch, so a batch costs one hand-over
        # between threads, not one per envelope.
        self._cond = threading.Condition()
        self._queued: list[tuple[envelope_pb2.Envelope, Future[broker_pb2.SendResponse]]] = []
        # Futures of sent envelopes in send order: the broker answers batches in order.
        self._in_flight: collections.deque[Future[broker_pb2.SendResponse]] = collections.deque()
        self._failure: ClientError | None = None
        self._closed = False
        self._preparing = 0  # submit_later calls whose envelope is not submitted yet
        self._call = send_stream(self._requests())
        self._reader = threading.Thread(target=self._read, daemon=True, name="isb-producer")
        self._reader.start()

    def submit(self, envelope: envelope_pb2.Envelope) -> Future[broker_pb2.SendResponse]:
        """Queue a sealed envelope (blocks while `max_pending` wait to be sent); returns its future."""
        future: Future[broker_pb2.SendResponse] = Future()
        with self._cond:
            while True:
                if self._closed:
                    raise ClientError("this producer is closed")
                if self._failure is not None:
                    raise self._failure
                if len(self._queued) < self._max_pending:
                    break
                self._cond.wait()
            self._queued.append((envelope, future))
            if len(self._queued) == 1 or len(self._queued) == self._batch_size:
                self._cond.notify_all()
        return future

    def submit_later(self, prepare: Callable[[], envelope_pb2.Envelope]) -> Future[broker_pb2.SendResponse]:
        """Run `prepare` (sealing with attachments: their uploads) on a thread of its own, then submit
        the envelope it returns; the future is answered like `submit`'s. Other envelopes keep flowing
        meanwhile: a large upload never blocks the producer."""
        outer: Future[broker_pb2.SendResponse] = Future()
        with self._cond:
            if self._closed:
                raise ClientError("this producer is closed")
            self._preparing += 1

        def run() -> None:
            try:
                inner = self.submit(prepare())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller through its future
                outer.set_exception(exc)
                return
            finally:
                with self._cond:
                    self._preparing -= 1
                    self._cond.notify_all()
            inner.add_done_callback(lambda done: _copy_outcome(done, outer))

        threading.Thread(target=run, daemon=True, name="isb-producer-prepare").start()
        return outer

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every envelope submitted so far has been answered (or has failed)."""
        with self._cond:
            while self._preparing:
                self._cond.wait()
        with self._cond:
            last = self._queued[-1][1] if self._queued else self._in_flight[-1] if self._in_flight else None
        if last is not None:
            # Answers come in submission order: the last one answered means all are.
            last.exception(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Send what is queued, wait for the answers, and end the stream."""
        with self._cond:
            if self._closed:
                return
            while self._preparing:  # envelopes still being prepared (uploads) are sent first
                self._cond.wait()
            self._closed = True
            self._cond.notify_all()
        self._reader.join(timeout)
        if self._reader.is_alive():
            self._call.cancel()
            self._reader.join(5)

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _next_batch(self) -> list[envelope_pb2.Envelope] | None:
        """The envelopes of the next stream message, once due; None when the stream should end."""
        with self._cond:
            while not self._queued:
                if self._closed or self._failure is not None:
                    return None
                self._cond.wait(0.25)
            # Linger for more envelopes; past the linger, keep filling the batch while the broker
            # still owes answers to `max_in_flight` batches: under load batches grow by themselves
            # (as TCP's Nagle and Kafka's in-flight limit do), at low rates nothing waits longer.
            deadline = time.monotonic() + self._linger
            while len(self._queued) < self._batch_size and not self._closed and self._failure is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 and self._batches_in_flight < self._max_in_flight:
                    break
                self._cond.wait(remaining if remaining > 0 else None)
            taken, self._queued = self._queued[: self._batch_size], self._queued[self._batch_size :]
            envelopes = []
            for envelope, future in taken:
                if future.set_running_or_notify_cancel():  # False: cancelled while queued
                    envelopes.append(envelope)
                    self._in_flight.append(future)
            if envelopes:
                self._batches_in_flight += 1
            self._cond.notify_all()  # submitters waiting for room
            return envelopes

    def _requests(self) -> Iterator[broker_pb2.SendBatch]:
        # Runs on gRPC's request thread: one batch per stream message.
        while (envelopes := self._next_batch()) is not None:
            if envelopes:
                self._sign_unsigned(envelopes)
                yield broker_pb2.SendBatch(envelopes=envelopes)

    def _sign_unsigned(self, envelopes: list[envelope_pb2.Envelope]) -> None:
        """Give the envelopes sealed without an outer signature one batch signature (protocol
        section 21), in place: a retry on another producer then sends the same bytes (idempotent)."""
        unsigned = [e for e in envelopes if not e.header_signature and not e.HasField("batch_signature")]
        if unsigned and self._sign is not None:
            self._sign(unsigned)

    def _read(self) -> None:
        try:
            for reply in self._call:
                with self._cond:
                    futures = [self._in_flight.popleft() for _ in reply.results]
                    self._batches_in_flight -= 1
                    self._cond.notify_all()
                for result, future in zip(reply.results, futures, strict=True):
                    if result.code == 0:
                        future.set_result(result.response)
                    else:
                        status = _STATUS.get(result.code, grpc.StatusCode.UNKNOWN)
                        future.set_exception(RemoteError(status, result.error))
        except grpc.RpcError as exc:
            self._fail(self._translate_error(exc))
            return
        self._fail(ClientError("the send stream ended"))

    def _fail(self, error: ClientError) -> None:
        # Whatever was not answered fails with the stream's error; sends are idempotent, so the
        # caller may submit the same envelopes again on a new producer.
        with self._cond:
            if self._failure is None:
                self._failure = error
            sent = list(self._in_flight)
            queued = [future for _, future in self._queued]
            self._in_flight.clear()
            self._queued.clear()
            self._cond.notify_all()
        for future in sent:
            future.set_exception(error)
        for future in queued:
            if future.set_running_or_notify_cancel():
                future.set_exception(error)


def _copy_outcome(done: Future[broker_pb2.SendResponse], outer: Future[broker_pb2.SendResponse]) -> None:
    error = done.exception()
    if error is not None:
        outer.set_exception(error)
    else:
        outer.set_result(done.result())


_STATUS: Final = {status.value[0]: status for status in grpc.StatusCode}
