"""Agency processes for the ISB: senders that seal and stream batches, subscribers that verify,
open and acknowledge with signed receipts. Each runs in its own process (multiprocessing, spawn).

Everything goes through the agency SDK's full security path: `AgencyClient.seal` (inner signature,
AES-256-GCM, an HPKE wrap per recipient, outer signature), the SDK's `Producer` (envelopes ready
within its linger share one SendStream message), `deliveries()` (sender certificate chain check,
outer and inner signature checks, unwrap, decrypt) and `ack()` (one signed receipt per message,
many receipts per call).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Generator
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any, cast

from bench.workload import AgentSpec, Pacer, cpu_seconds_self, make_body, read_stamp
from clients import AgencyClient
from clients.agency import ReceivedMessage
from clients.errors import ClientError

ACK_LINGER_S = 0.005  # receipts wait at most this long to be acknowledged together


def _client(spec: AgentSpec, agency: str) -> AgencyClient:
    cert_dir = Path(spec.cert_dir)
    return AgencyClient.from_dir(spec.target, cert_dir, agency, keystore=cert_dir / "keys" / agency, timeout=30.0)


def _await_start(go: Event) -> None:
    if not go.wait(120):
        raise TimeoutError("the coordinator never said go")


def run_sender(spec: AgentSpec, go: Event, stop: Event, out: Any) -> None:
    """Seal and send `spec.messages` envelopes over one SendStream, paced by the scenario's rate."""
    scenario = spec.scenario
    agency = spec.agencies[0]
    result: dict[str, Any] = {"role": "sender", "agency": agency, "sent": 0, "ok": 0, "errors": {}}
    try:
        client = _client(spec, agency)
        client.recipient_keys(spec.recipients)  # fetch and verify key bundles before the clock starts
        recipients = list(spec.recipients)
        out.put(("ready", spec.index))
        _await_start(go)
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

        futures = []
        with client.producer(linger=scenario.linger, batch_size=scenario.batch_size) as producer:
            seq = 0
            for n in pacer.batches():
                if stop.is_set():
                    break
                for _ in range(n):
                    envelope = client.seal(
                        recipients, make_body(scenario.body_bytes, spec.index, seq), tlp="GREEN", sign=False
                    )
                    futures.append(producer.submit(envelope))
                    seq += 1
                result["sent"] += n
        errors: dict[str, int] = result["errors"]
        for future in futures:
            error = future.exception()
            if error is None:
                result["ok"] += 1
            else:
                errors[str(error)[:120]] = errors.get(str(error)[:120], 0) + 1
        result["cpu_s"] = cpu_seconds_self() - cpu0
        result["elapsed_s"] = time.monotonic() - start
        result["max_lag_s"] = pacer.max_lag
        client.close()
    except Exception as exc:  # report any failure to the coordinator instead of dying silently
        result["fatal"] = repr(exc)
    out.put(("result", result))


class _Receiver:
    """One recipient agency: a delivery loop and an acknowledging thread."""

    def __init__(self, spec: AgentSpec, agency: str, expected: Any, delivered: Any, stop: Event) -> None:
        self.agency = agency
        self.client = _client(spec, agency)
        self.scenario = spec.scenario
        self.expected = expected
        self.delivered = delivered
        self.stop = stop
        self.seen: set[tuple[int, int]] = set()
        self.duplicates = 0
        self.invalid = 0
        self.latencies_us: list[int] = []
        self.sealed_ns: list[int] = []  # each latency's seal time, to see the latency over the run
        self.acked = 0
        self.ack_calls = 0
        self.ack_errors: dict[str, int] = {}
        self.last_open_ns = 0
        self.last_ack_ns = 0
        self.done = threading.Event()
        self.subscribed = threading.Event()
        self._acks: queue.Queue[ReceivedMessage] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._receive, daemon=True, name=f"recv-{agency}"),
            threading.Thread(target=self._ack, daemon=True, name=f"ack-{agency}"),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def finished(self) -> bool:
        # Several consumer processes may share one agency's queue: the count of all of them decides.
        return int(self.delivered.value) >= int(self.expected.value) * self.scenario.fanout

    def _receive(self) -> None:
        # deliveries() ends after a second of silence; resubscribe until done or told to stop.
        while not (self.finished() or self.stop.is_set()):
            stream = self.client.deliveries(max_in_flight=256, timeout=1.0, on_invalid=lambda _: self._count_invalid())
            deliveries = cast(Generator[ReceivedMessage, None, None], stream)
            self.subscribed.set()
            try:
                for message in deliveries:
                    now = time.time_ns()
                    seal_ns, sender, seq = read_stamp(message.body)
                    key = (sender, seq)
                    if key in self.seen:
                        self.duplicates += 1
                    else:
                        self.seen.add(key)
                        with self.delivered.get_lock():
                            self.delivered.value += 1
                        self.latencies_us.append((now - seal_ns) // 1000)
                        self.sealed_ns.append(seal_ns)
                        self.last_open_ns = now
                    self._acks.put(message)
                    if self.finished() or self.stop.is_set():
                        break
            except ClientError as exc:
                self.ack_errors[f"subscribe: {exc}"[:120]] = 1
                time.sleep(0.2)
            finally:
                deliveries.close()
        self.done.set()

    def _count_invalid(self) -> None:
        self.invalid += 1

    def _ack(self) -> None:
        while True:
            try:
                first = self._acks.get(timeout=0.05)
            except queue.Empty:
                if self.done.is_set():
                    return
                continue
            # Linger a few milliseconds for more receipts, as a producer batches (the advice):
            # one Ack call per message would cost the broker a unary call each at low rates.
            batch = [first]
            linger_until = time.monotonic() + ACK_LINGER_S
            while len(batch) < self.scenario.ack_batch:
                remaining = linger_until - time.monotonic()
                try:
                    batch.append(self._acks.get(timeout=remaining) if remaining > 0 else self._acks.get_nowait())
                except queue.Empty:
                    break
            try:
                self.acked += self.client.ack(batch)
            except Exception as exc:  # counted and reported: an ack failure must not end the run silently
                key = f"{type(exc).__name__}: {exc}"[:120]
                self.ack_errors[key] = self.ack_errors.get(key, 0) + 1
            self.ack_calls += 1
            self.last_ack_ns = time.time_ns()

    def join(self, timeout: float) -> None:
        for thread in self._threads:
            thread.join(timeout)

    def result(self) -> dict[str, Any]:
        return {
            "agency": self.agency,
            "unique": len(self.seen),
            "duplicates": self.duplicates,
            "invalid": self.invalid,
            "acked": self.acked,
            "ack_calls": self.ack_calls,
            "ack_errors": self.ack_errors,
            "last_open_ns": self.last_open_ns,
            "last_ack_ns": self.last_ack_ns,
        }


def run_subscriber(spec: AgentSpec, go: Event, stop: Event, expected: Any, delivered: Any, out: Any) -> None:
    """Receive, verify, open and acknowledge every message for `spec.agencies` until all arrived."""
    result: dict[str, Any] = {"role": "subscriber", "index": spec.index}
    try:
        receivers = [_Receiver(spec, agency, expected, delivered, stop) for agency in spec.agencies]
        for receiver in receivers:
            receiver.start()
        for receiver in receivers:
            receiver.subscribed.wait(10)
        out.put(("ready", spec.index))
        _await_start(go)
        cpu0 = cpu_seconds_self()
        deadline = time.monotonic() + spec.scenario.time_limit + 30
        for receiver in receivers:
            receiver.done.wait(max(0.0, deadline - time.monotonic()))
        for receiver in receivers:
            receiver.join(5)
        result["cpu_s"] = cpu_seconds_self() - cpu0
        result["agencies"] = [r.result() for r in receivers]
        result["latencies_us"] = [v for r in receivers for v in r.latencies_us]
        result["sealed_ns"] = [v for r in receivers for v in r.sealed_ns]
        for receiver in receivers:
            receiver.client.close()
    except Exception as exc:  # report any failure to the coordinator instead of dying silently
        result["fatal"] = repr(exc)
    out.put(("result", result))
