"""The producer's batching rules, against a scripted stream that answers each batch after a delay.

The real SendStream is exercised end to end in tests/e2e/test_producer.py; here the stream is a
stand-in so that batch boundaries, which the broker does not report, can be observed.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from broker.api.v1 import broker_pb2, envelope_pb2
from clients import ClientError
from clients.producer import Producer


class ScriptedStream:
    """Reads batches on a thread, records their sizes, answers each one `delay` seconds later."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.sizes: list[int] = []
        self._replies: queue.Queue[broker_pb2.SendBatchResult | None] = queue.Queue()

    def __call__(self, requests: Iterator[broker_pb2.SendBatch]) -> ScriptedStream:
        threading.Thread(target=self._serve, args=(requests,), daemon=True).start()
        return self

    def _serve(self, requests: Iterator[broker_pb2.SendBatch]) -> None:
        for batch in requests:
            self.sizes.append(len(batch.envelopes))
            time.sleep(self.delay)
            self._replies.put(
                broker_pb2.SendBatchResult(
                    results=[
                        broker_pb2.SendResult(
                            message_id=e.header.decode(), response=broker_pb2.SendResponse(message_id=e.header.decode())
                        )
                        for e in batch.envelopes
                    ]
                )
            )
        self._replies.put(None)

    def __iter__(self) -> Iterator[broker_pb2.SendBatchResult]:
        while (reply := self._replies.get()) is not None:
            yield reply

    def cancel(self) -> None:
        self._replies.put(None)


def _envelope(i: int) -> envelope_pb2.Envelope:
    return envelope_pb2.Envelope(header=f"m{i}".encode())


def _unused_translation(exc: grpc.RpcError) -> ClientError:
    return ClientError(str(exc))


def test_batches_grow_while_the_broker_owes_answers() -> None:
    """With one batch in flight and a 20 ms answer, 200 quick submits travel in a handful of batches."""
    stream = ScriptedStream(delay=0.02)
    with Producer(stream, _unused_translation, linger=0.0, batch_size=64, max_in_flight=1) as producer:
        futures = [producer.submit(_envelope(i)) for i in range(200)]
    assert [f.result().message_id for f in futures] == [f"m{i}" for i in range(200)]
    assert sum(stream.sizes) == 200
    assert len(stream.sizes) <= 10
    assert max(stream.sizes) == 64


def test_at_a_low_rate_each_envelope_leaves_after_the_linger() -> None:
    """One submit every 30 ms with a 1 ms linger: every envelope is its own batch, answered promptly."""
    stream = ScriptedStream(delay=0.0)
    with Producer(stream, _unused_translation, linger=0.001, max_in_flight=4) as producer:
        for i in range(5):
            started = time.monotonic()
            assert producer.submit(_envelope(i)).result(timeout=1).message_id == f"m{i}"
            assert time.monotonic() - started < 0.5
            time.sleep(0.03)
    assert stream.sizes == [1, 1, 1, 1, 1]


def test_closed_producer_refuses_new_envelopes() -> None:
    stream = ScriptedStream(delay=0.0)
    producer = Producer(stream, _unused_translation)
    producer.close()
    with pytest.raises(ClientError, match="closed"):
        producer.submit(_envelope(0))
