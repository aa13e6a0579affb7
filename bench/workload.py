"""What the load generators do, independent of the system under test: scenarios, message bodies
that carry their seal time, an open-loop pacer for fixed offered rates, and percentiles."""

from __future__ import annotations

import asyncio
import math
import os
import struct
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

# seal time (ns since the epoch, CLOCK_REALTIME: the same clock in every process of this machine),
# sender index, sequence number; the rest of the body is padding.
_STAMP = struct.Struct("<qII")
_PADDING = os.urandom(64 * 1024)


@dataclass(frozen=True)
class Scenario:
    """One measured run: how many messages, to how many recipients each, at which offered rate."""

    name: str
    kind: str  # "throughput" (as fast as possible) or "latency" (fixed offered rate)
    fanout: int
    messages: int
    rate: float | None
    senders: int
    subscribers: int
    batch_size: int = 64
    linger: float = 0.001  # the SDK producer's: seconds an envelope waits for others to share its batch
    body_bytes: int = 2048
    time_limit: float = 60.0
    ack_batch: int = 128


@dataclass(frozen=True)
class AgentSpec:
    """What one sender or subscriber process is told (picklable, for `spawn`)."""

    backend: str
    scenario: Scenario
    index: int
    agencies: tuple[str, ...]  # a sender's own agency, or the recipient agencies a subscriber serves
    recipients: tuple[str, ...] = ()
    messages: int = 0
    target: str = ""
    cert_dir: str = ""
    subject: str = ""
    stream: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def make_body(size: int, sender: int, seq: int) -> bytes:
    """A body of `size` bytes whose first bytes are the current time (taken now, at seal)."""
    stamp = _STAMP.pack(time.time_ns(), sender, seq)
    return stamp + _PADDING[: max(0, size - len(stamp))]


def read_stamp(body: bytes) -> tuple[int, int, int]:
    """(seal time ns, sender index, sequence) from a body made by `make_body`."""
    seal_ns, sender, seq = _STAMP.unpack_from(body)
    return int(seal_ns), int(sender), int(seq)


class Pacer:
    """Says how many messages are due: all at once in batches (no rate), or on an open-loop schedule
    of `rate` per second from `start` (late messages are not dropped, they go out in the next batch,
    so a slow system sees growing latency instead of a lower offered rate)."""

    def __init__(
        self, count: int, rate: float | None, batch_size: int, start: float, deadline: float, offset: float = 0.0
    ) -> None:
        self.count = count
        self.rate = rate
        self.batch_size = batch_size
        self.start = start + offset
        self.deadline = deadline
        self.produced = 0
        self.max_lag = 0.0

    def take(self, now: float) -> tuple[int, float]:
        """(messages to produce now, seconds to wait first if none); (0, 0) means finished."""
        if self.produced >= self.count or now >= self.deadline:
            return 0, 0.0
        if self.rate is None:
            n = min(self.batch_size, self.count - self.produced)
            self.produced += n
            return n, 0.0
        due = min(self.count, math.floor((now - self.start) * self.rate) + 1)
        if due <= self.produced:
            return 0, self.start + self.produced / self.rate - now
        self.max_lag = max(self.max_lag, now - (self.start + self.produced / self.rate))
        n = min(self.batch_size, due - self.produced)
        self.produced += n
        return n, 0.0

    def batches(self) -> Iterator[int]:
        """Sizes of successive batches, sleeping until each is due."""
        while True:
            n, wait = self.take(time.monotonic())
            if n:
                yield n
            elif wait > 0:
                time.sleep(wait)
            else:
                return

    async def abatches(self) -> AsyncIterator[int]:
        """`batches` for asyncio code."""
        while True:
            n, wait = self.take(time.monotonic())
            if n:
                yield n
            elif wait > 0:
                await asyncio.sleep(wait)
            else:
                return


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank `q` percentile (0-100) of already sorted values; NaN when empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def cpu_seconds_self() -> float:
    """CPU seconds (user + system, all threads) of the calling process."""
    times = os.times()
    return times.user + times.system
