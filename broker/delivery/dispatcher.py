"""Per-agency delivery queues in memory, backed by the durable deliveries table.

The table is the truth; this is the fast path over it. A queue is loaded from the table when its
agency first subscribes, and from then on accepted messages are pushed into it after their commit,
so delivery reads nothing from the database. Leases live here: a delivery handed to a stream and
not acknowledged within the lease (or whose stream closes) goes back to the queue. A broker
restart therefore redelivers whatever was in flight: at-least-once, never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

import structlog

from broker.api.v1 import envelope_pb2
from broker.delivery.operations import QueuedDelivery

log = structlog.get_logger(__name__)

Loader = Callable[[str], Awaitable[list[QueuedDelivery]]]
EnvelopeLoader = Callable[[str], Awaitable[bytes]]


@dataclass
class _InFlight:
    item: QueuedDelivery
    stream: int
    deadline: float


@dataclass
class AgencyQueue:
    """The deliveries of one agency not yet acknowledged, expired or recalled."""

    agency: str
    heap: list[tuple[int, int, str]] = field(default_factory=list)
    items: dict[str, QueuedDelivery] = field(default_factory=dict)
    in_flight: dict[str, _InFlight] = field(default_factory=dict)
    in_heap: set[str] = field(default_factory=set)
    per_stream: dict[int, int] = field(default_factory=dict)
    # Waiters hold the current event; `notify` sets it and installs a fresh one. The event loop is
    # single-threaded, so this needs no lock and costs no task per notification.
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    loading_buffer: list[QueuedDelivery] | None = field(default_factory=list)

    def push(self, item: QueuedDelivery) -> None:
        """Make `item` ready for delivery (again)."""
        self.items[item.message_id] = item
        if item.message_id not in self.in_heap:
            self.in_heap.add(item.message_id)
            # Priority first (higher first), then arrival order.
            heapq.heappush(self.heap, (-item.priority, item.seq, item.message_id))

    def pop_ready(self) -> QueuedDelivery | None:
        """The most urgent delivery that is neither in flight nor gone, if any."""
        while self.heap:
            _, _, message_id = heapq.heappop(self.heap)
            self.in_heap.discard(message_id)
            item = self.items.get(message_id)
            if item is not None and message_id not in self.in_flight:
                return item
        return None

    def lease(self, item: QueuedDelivery, stream: int, deadline: float) -> None:
        """Record that `item` was handed to `stream` until `deadline`."""
        self.in_flight[item.message_id] = _InFlight(item, stream, deadline)
        self.per_stream[stream] = self.per_stream.get(stream, 0) + 1

    def release(self, message_id: str) -> _InFlight | None:
        """End the lease of `message_id`, if it has one."""
        flight = self.in_flight.pop(message_id, None)
        if flight is not None:
            self.per_stream[flight.stream] -= 1
        return flight

    def notify(self) -> None:
        """Wake every stream waiting on this queue."""
        self.wakeup.set()
        self.wakeup = asyncio.Event()


class Dispatcher:
    """Hands deliveries to subscribed streams in priority then arrival order, with leases."""

    def __init__(
        self,
        load_backlog: Loader,
        load_envelope: EnvelopeLoader,
        lease_seconds: float,
        on_delivered: Callable[[QueuedDelivery], None],
        on_expired: Callable[[QueuedDelivery], None],
    ) -> None:
        self._queues: dict[str, AgencyQueue] = {}
        self._load_backlog = load_backlog
        self._load_envelope = load_envelope
        self._lease = lease_seconds
        self._on_delivered = on_delivered
        self._on_expired = on_expired
        self._streams = itertools.count(1)
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the lease sweeper."""
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="isb-lease-sweeper")

    async def stop(self) -> None:
        """Stop the lease sweeper."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    # Called after commits, on the event loop.
    def accepted(self, queued: list[QueuedDelivery], recalled: str | None) -> None:
        """New deliveries committed; a RECALL also drops the recalled message's undelivered copies."""
        if recalled is not None:
            for holder in self._queues.values():
                if holder.items.pop(recalled, None) is not None:
                    holder.release(recalled)
        for item in queued:
            queue = self._queues.get(item.recipient)
            if queue is None:
                continue  # loaded from the table when the agency subscribes
            if queue.loading_buffer is not None:
                queue.loading_buffer.append(item)
            else:
                queue.push(item)
                queue.notify()

    def acknowledged(self, done: list[tuple[str, str]]) -> None:
        """Receipts committed: take the deliveries off their queues for good."""
        touched = set()
        for message_id, recipient in done:
            queue = self._queues.get(recipient)
            if queue is not None:
                queue.items.pop(message_id, None)
                queue.release(message_id)
                touched.add(recipient)
        for recipient in touched:
            self._queues[recipient].notify()

    async def open_stream(self, agency: str, max_in_flight: int) -> Stream:
        """A new consumer of `agency`'s queue; several consumers share one queue."""
        existing = self._queues.get(agency)
        if existing is None:
            queue = AgencyQueue(agency)
            self._queues[agency] = queue
            try:
                backlog = await self._load_backlog(agency)
            except BaseException:
                del self._queues[agency]
                raise
            for item in backlog:
                queue.push(item)
            buffered, queue.loading_buffer = queue.loading_buffer or [], None
            for item in buffered:
                queue.push(item)
            queue.loaded.set()
            log.info("queue.loaded", agency=agency, backlog=len(queue.items))
        else:
            queue = existing
            await queue.loaded.wait()
        return Stream(self, queue, next(self._streams), max_in_flight)

    def agencies(self) -> list[str]:
        """Agencies whose queues are loaded here."""
        return list(self._queues)

    async def refresh(self, agency: str) -> None:
        """Another replica committed deliveries for `agency`: merge them in from the table."""
        queue = self._queues.get(agency)
        if queue is None or queue.loading_buffer is not None:
            return  # not loaded here, or loading now (the load reads the table anyway)
        fresh = [item for item in await self._load_backlog(agency) if item.message_id not in queue.items]
        for item in fresh:
            queue.push(item)
        if fresh:
            queue.notify()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(0.25, self._lease / 4))
            now = time.monotonic()
            for queue in self._queues.values():
                expired = [m for m, f in queue.in_flight.items() if f.deadline <= now]
                for message_id in expired:
                    flight = queue.release(message_id)
                    if flight is not None and message_id in queue.items:
                        queue.push(flight.item)
                if expired:
                    log.info("lease.expired", agency=queue.agency, deliveries=len(expired))
                    queue.notify()


class Stream:
    """One Subscribe call's view of its agency queue, with its own in-flight limit."""

    def __init__(self, dispatcher: Dispatcher, queue: AgencyQueue, stream_id: int, max_in_flight: int) -> None:
        self._d = dispatcher
        self._queue = queue
        self._id = stream_id
        self._max = max_in_flight

    def _take(self) -> QueuedDelivery | None:
        """Lease the most urgent ready delivery to this stream, if it has room; drop expired ones."""
        queue = self._queue
        while queue.per_stream.get(self._id, 0) < self._max:
            item = queue.pop_ready()
            if item is None:
                return None
            if item.expires_us is not None and item.expires_us <= time.time_ns() // 1000:
                queue.items.pop(item.message_id, None)
                self._d._on_expired(item)
                continue
            item = replace(item, attempts=item.attempts + 1)
            queue.items[item.message_id] = item
            queue.lease(item, self._id, time.monotonic() + self._d._lease)
            return item
        return None

    async def next_batch(self, wait_seconds: float, limit: int) -> list[QueuedDelivery]:
        """The deliveries ready for this stream, most urgent first, at most `limit`: waits up to
        `wait_seconds` for the first (the caller re-checks its certificate between waits), then
        takes whatever else is ready without waiting."""
        queue = self._queue
        deadline = time.monotonic() + wait_seconds
        first = self._take()
        while first is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            try:
                async with asyncio.timeout(remaining):
                    await queue.wakeup.wait()
            except TimeoutError:
                return []
            first = self._take()
        batch = [first]
        while len(batch) < limit and (item := self._take()) is not None:
            batch.append(item)
        loaded = []
        for taken in batch:
            item = taken
            if item.envelope is None:
                stored = await self._d._load_envelope(item.message_id)
                if not stored:  # purged by retention after it was queued: its delivery is dropped
                    queue.items.pop(item.message_id, None)
                    queue.release(item.message_id)
                    continue
                item = replace(item, envelope=envelope_pb2.Envelope.FromString(stored))
            self._d._on_delivered(item)
            loaded.append(item)
        return loaded

    def close(self) -> None:
        """Return this stream's unacknowledged deliveries to the queue at once."""
        queue = self._queue
        mine = [m for m, f in queue.in_flight.items() if f.stream == self._id]
        for message_id in mine:
            flight = queue.release(message_id)
            if flight is not None and message_id in queue.items:
                queue.push(flight.item)
        queue.per_stream.pop(self._id, None)
        if mine:
            queue.notify()
