"""The same workload on NATS JetStream: the reference the ISB's numbers are divided by.

A file-backed stream, one durable pull consumer per recipient (so a one-to-ten fan-out is ten
consumers reading every message), publishes confirmed by JetStream's PubAck, every message acked
explicitly. No signatures, no encryption, no per-message fsync: this is the ceiling a Python client
reaches on this machine, which is what makes the ratio meaningful on a noisy host.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from multiprocessing.synchronize import Event
from typing import Any

import nats
from nats.js import api

from bench.workload import AgentSpec, Pacer, cpu_seconds_self, make_body, read_stamp

NATS_URL = "nats://127.0.0.1:4222"
STREAM = "ISB_BENCH"


def consumer_name(agency: str) -> str:
    """The durable consumer that stands for `agency`."""
    return agency.replace("-", "_")


async def prepare_stream(subject: str, agencies: tuple[str, ...]) -> None:
    """A fresh stream on `subject` and one durable consumer per recipient agency."""
    nc = await nats.connect(NATS_URL, connect_timeout=5)
    try:
        js = nc.jetstream()
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(STREAM)
        await js.add_stream(api.StreamConfig(name=STREAM, subjects=[subject], storage=api.StorageType.FILE))
        for agency in agencies:
            await js.add_consumer(
                STREAM,
                api.ConsumerConfig(
                    durable_name=consumer_name(agency),
                    ack_policy=api.AckPolicy.EXPLICIT,
                    deliver_policy=api.DeliverPolicy.ALL,
                    max_ack_pending=100_000,
                    ack_wait=30,
                ),
            )
    finally:
        await nc.close()


async def delete_stream() -> None:
    """Remove the benchmark stream."""
    nc = await nats.connect(NATS_URL, connect_timeout=5)
    try:
        await nc.jetstream().delete_stream(STREAM)
    except nats.js.errors.NotFoundError:
        pass
    finally:
        await nc.close()


async def _wait(event: Event, seconds: float) -> bool:
    return await asyncio.get_running_loop().run_in_executor(None, event.wait, seconds)


async def _send(spec: AgentSpec, go: Event, stop: Event, out: Any) -> dict[str, Any]:
    scenario = spec.scenario
    result: dict[str, Any] = {"role": "sender", "agency": spec.agencies[0], "sent": 0, "ok": 0, "errors": {}}
    nc = await nats.connect(NATS_URL, connect_timeout=5)
    js = nc.jetstream(publish_async_max_pending=1024)
    out.put(("ready", spec.index))
    if not await _wait(go, 120):
        raise TimeoutError("never told to start")
    start = time.monotonic()
    cpu0 = cpu_seconds_self()
    offset = spec.index / scenario.rate if scenario.rate else 0.0
    pacer = Pacer(
        spec.messages,
        None if scenario.rate is None else scenario.rate / scenario.senders,
        scenario.batch_size,
        start,
        start + scenario.time_limit,
        offset,
    )
    errors: dict[str, int] = result["errors"]

    def confirmed(future: asyncio.Future[Any]) -> None:
        if future.exception() is None:
            result["ok"] += 1
        else:
            key = repr(future.exception())[:120]
            errors[key] = errors.get(key, 0) + 1

    seq = 0
    async for n in pacer.abatches():
        if stop.is_set():
            break
        for _ in range(n):
            future = await js.publish_async(spec.subject, make_body(scenario.body_bytes, spec.index, seq))
            future.add_done_callback(confirmed)
            seq += 1
        result["sent"] += n
    async with asyncio.timeout(scenario.time_limit + 30):
        await js.publish_async_completed()
    result["cpu_s"] = cpu_seconds_self() - cpu0
    result["elapsed_s"] = time.monotonic() - start
    result["max_lag_s"] = pacer.max_lag
    await nc.close()
    return result


def run_sender(spec: AgentSpec, go: Event, stop: Event, out: Any) -> None:
    """Publish `spec.messages` messages with JetStream acknowledgements, paced like the ISB senders."""
    try:
        result = asyncio.run(_send(spec, go, stop, out))
    except Exception as exc:  # report any failure to the coordinator instead of dying silently
        result = {"role": "sender", "fatal": repr(exc), "sent": 0, "ok": 0, "errors": {}}
    out.put(("result", result))


async def _consume(spec: AgentSpec, go: Event, stop: Event, expected: Any, delivered: Any, out: Any) -> dict[str, Any]:
    scenario = spec.scenario
    nc = await nats.connect(NATS_URL, connect_timeout=5)
    js = nc.jetstream()
    latencies: list[int] = []
    sealed: list[int] = []  # each latency's seal time, as the ISB subscribers keep it (timeline_ms)
    per_agency: list[dict[str, Any]] = []

    subs = {
        agency: await js.pull_subscribe(spec.subject, durable=consumer_name(agency), stream=STREAM)
        for agency in spec.agencies
    }

    async def consume(agency: str) -> None:
        sub = subs[agency]
        seen: set[tuple[int, int]] = set()
        state: dict[str, Any] = {
            "agency": agency,
            "unique": 0,
            "duplicates": 0,
            "acked": 0,
            "last_open_ns": 0,
            "last_ack_ns": 0,
        }
        per_agency.append(state)
        deadline = time.monotonic() + scenario.time_limit + 150
        # Several consumer processes may share one durable consumer: the count of all of them decides.
        while delivered.value < expected.value * scenario.fanout and not stop.is_set() and time.monotonic() < deadline:
            try:
                messages = await sub.fetch(batch=256, timeout=0.5)
            except (nats.errors.TimeoutError, TimeoutError):  # nats-py raises either when nothing is pending
                continue
            for message in messages:
                now = time.time_ns()
                seal_ns, sender, seq = read_stamp(message.data)
                if (sender, seq) in seen:
                    state["duplicates"] += 1
                else:
                    seen.add((sender, seq))
                    with delivered.get_lock():
                        delivered.value += 1
                    latencies.append((now - seal_ns) // 1000)
                    sealed.append(seal_ns)
                    state["last_open_ns"] = now
                await message.ack()
                state["acked"] += 1
            state["last_ack_ns"] = time.time_ns()
            state["unique"] = len(seen)
        await nc.flush()  # the acks above are fire-and-forget publishes: make sure they left
        state["last_ack_ns"] = max(state["last_ack_ns"], time.time_ns()) if seen else 0

    out.put(("ready", spec.index))
    if not await _wait(go, 120):
        raise TimeoutError("never told to start")
    cpu0 = cpu_seconds_self()
    await asyncio.gather(*(consume(agency) for agency in spec.agencies))
    result = {
        "role": "subscriber",
        "index": spec.index,
        "cpu_s": cpu_seconds_self() - cpu0,
        "agencies": per_agency,
        "latencies_us": latencies,
        "sealed_ns": sealed,
    }
    await nc.close()
    return result


def run_subscriber(spec: AgentSpec, go: Event, stop: Event, expected: Any, delivered: Any, out: Any) -> None:
    """Fetch and ack every message from each recipient's durable consumer until all arrived."""
    try:
        result = asyncio.run(_consume(spec, go, stop, expected, delivered, out))
    except Exception as exc:  # report any failure to the coordinator instead of dying silently
        result = {"role": "subscriber", "fatal": repr(exc)}
    out.put(("result", result))
