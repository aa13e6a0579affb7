"""The in-memory delivery queues: priority then arrival order, leases, several consumers."""

from __future__ import annotations

import asyncio

import pytest

from broker.api.v1 import envelope_pb2
from broker.delivery.dispatcher import Dispatcher, Stream
from broker.delivery.operations import QueuedDelivery


def _item(message_id: str, priority: int, seq: int, expires_us: int | None = None) -> QueuedDelivery:
    return QueuedDelivery(message_id, "DE-BKA", priority, seq, expires_us, 0, envelope_pb2.Envelope())


async def _next(stream: Stream, wait: float) -> QueuedDelivery | None:
    batch = await stream.next_batch(wait, 1)
    return batch[0] if batch else None


def _dispatcher(backlog: list[QueuedDelivery], lease: float = 30.0) -> tuple[Dispatcher, list[str], list[str]]:
    delivered: list[str] = []
    expired: list[str] = []

    async def load(_: str) -> list[QueuedDelivery]:
        return list(backlog)

    async def envelope(_: str) -> bytes:
        return b"envelope"

    return (
        Dispatcher(
            load, envelope, lease, lambda i: delivered.append(i.message_id), lambda i: expired.append(i.message_id)
        ),
        delivered,
        expired,
    )


def test_backlog_comes_out_by_priority_then_arrival() -> None:
    """Higher priority first; equal priority in arrival (sequence) order."""

    async def run() -> list[str]:
        dispatcher, _, _ = _dispatcher([_item("a", 2, 1), _item("b", 4, 2), _item("c", 2, 3), _item("d", 4, 4)])
        stream = await dispatcher.open_stream("DE-BKA", 10)
        return [(await _next(stream, 0.1)).message_id for _ in range(4)]  # type: ignore[union-attr]

    assert asyncio.run(run()) == ["b", "d", "a", "c"]


def test_ready_deliveries_travel_together_in_one_batch_up_to_the_limit() -> None:
    """Everything ready comes in one batch, most urgent first, capped by the batch limit."""

    async def run() -> list[list[str]]:
        dispatcher, delivered, _ = _dispatcher([_item("a", 2, 1), _item("b", 4, 2), _item("c", 2, 3)])
        stream = await dispatcher.open_stream("DE-BKA", 10)
        first = await stream.next_batch(0.1, 2)
        second = await stream.next_batch(0.1, 2)
        assert delivered == ["b", "a", "c"]
        return [[i.message_id for i in first], [i.message_id for i in second]]

    assert asyncio.run(run()) == [["b", "a"], ["c"]]


def test_stream_respects_its_in_flight_limit_until_an_ack() -> None:
    """With max_in_flight=1 the second delivery waits for the first acknowledgement."""

    async def run() -> tuple[str | None, str | None]:
        dispatcher, _, _ = _dispatcher([_item("a", 2, 1), _item("b", 2, 2)])
        stream = await dispatcher.open_stream("DE-BKA", 1)
        first = await _next(stream, 0.1)
        blocked = await _next(stream, 0.1)
        dispatcher.acknowledged([("a", "DE-BKA")])
        second = await _next(stream, 0.1)
        assert first is not None
        return (blocked.message_id if blocked else None), (second.message_id if second else None)

    assert asyncio.run(run()) == (None, "b")


def test_unacknowledged_delivery_returns_after_lease_with_next_attempt() -> None:
    """A delivery not acknowledged within the lease is handed out again, attempt 2."""

    async def run() -> tuple[int, int]:
        dispatcher, _, _ = _dispatcher([_item("a", 2, 1)], lease=0.2)
        dispatcher.start()
        stream = await dispatcher.open_stream("DE-BKA", 5)
        first = await _next(stream, 0.1)
        again = await _next(stream, 2.0)
        await dispatcher.stop()
        assert first is not None
        assert again is not None
        return first.attempts, again.attempts

    assert asyncio.run(run()) == (1, 2)


def test_closed_stream_gives_its_deliveries_to_another_consumer_at_once() -> None:
    """Two consumers share a queue; when one closes, its unacknowledged delivery goes to the other."""

    async def run() -> str | None:
        dispatcher, _, _ = _dispatcher([_item("a", 2, 1)])
        one = await dispatcher.open_stream("DE-BKA", 5)
        two = await dispatcher.open_stream("DE-BKA", 5)
        assert await _next(one, 0.1) is not None
        assert await _next(two, 0.05) is None
        one.close()
        item = await _next(two, 0.1)
        return item.message_id if item else None

    assert asyncio.run(run()) == "a"


def test_expired_delivery_is_reported_and_not_handed_out() -> None:
    """A delivery whose message expired is dropped and reported; the next one is delivered."""

    async def run() -> tuple[str | None, list[str]]:
        dispatcher, _, expired = _dispatcher([_item("old", 4, 1, expires_us=1), _item("new", 2, 2)])
        stream = await dispatcher.open_stream("DE-BKA", 5)
        item = await _next(stream, 0.1)
        return (item.message_id if item else None), expired

    assert asyncio.run(run()) == ("new", ["old"])


def test_recall_drops_undelivered_copies() -> None:
    """After a RECALL commits, the recalled message is no longer handed out."""

    async def run() -> str | None:
        dispatcher, _, _ = _dispatcher([_item("a", 2, 1), _item("b", 2, 2)])
        stream = await dispatcher.open_stream("DE-BKA", 5)
        dispatcher.accepted([], recalled="a")
        item = await _next(stream, 0.1)
        return item.message_id if item else None

    assert asyncio.run(run()) == "b"


@pytest.mark.parametrize("turns", range(8))
def test_a_waiting_stream_that_accepts_a_cancellation_ends_cancelled_even_as_a_delivery_wakes_it(turns: int) -> None:
    """A delivery arrives, the loop turns `turns` times, the stream's wait is cancelled: if the task took the
    cancellation (it had not returned yet), it ends cancelled. With asyncio.wait_for, Python 3.11 returned
    the delivery instead in the turn the wake-up landed (CPython gh-86296): a Subscribe whose client left
    went on running, and the broker's stop waited for it forever."""

    async def run() -> tuple[bool, bool]:
        dispatcher, _, _ = _dispatcher([])
        stream = await dispatcher.open_stream("DE-BKA", 10)
        waiting = asyncio.create_task(stream.next_batch(5.0, 10))
        await asyncio.sleep(0)  # the stream waits for a delivery
        dispatcher.accepted([_item("a", 2, 1)], None)
        for _ in range(turns):
            await asyncio.sleep(0)
        took = waiting.cancel()
        await asyncio.wait({waiting}, timeout=1.0)
        return took, waiting.cancelled()

    took, cancelled = asyncio.run(run())
    assert cancelled == took
