"""Prometheus metrics, served on their own port over mutual TLS only (DESIGN.md section 10).

The scraper presents a certificate of the deployment's CA, like every other client: there is no
plain-HTTP port. Metrics carry counts and timings, never identities of messages or payloads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric

REGISTRY = CollectorRegistry()

ENVELOPES = Counter("isb_envelopes", "Envelopes handled by Send, by outcome", ["outcome"], registry=REGISTRY)
DELIVERIES = Counter("isb_deliveries", "Deliveries handed to subscriber streams", registry=REGISTRY)
RECEIPTS = Counter("isb_receipts", "Signed receipts stored", registry=REGISTRY)
WRITER_BATCH = Histogram(
    "isb_writer_batch_operations",
    "Operations committed per transaction",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
    registry=REGISTRY,
)
WRITER_COMMIT = Histogram(
    "isb_writer_commit_seconds",
    "Time to stage and commit one batch",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
    registry=REGISTRY,
)
SEQUENCER_HELD = Counter(
    "isb_sequencer_held_seconds",
    "Time inside the audit log's serialised section: the audit tree's row held by an "
    "integration round's compare-and-set, as the database measures it (PostgreSQL replicas), "
    "the writer's whole transaction (SQLite's single writer)",
    registry=REGISTRY,
)
REFUSALS_AUDITED = Counter(
    "isb_refusals", "Refused requests, each audited once, by status", ["status"], registry=REGISTRY
)
REFUSALS_ANSWERED = Counter(
    "isb_refusals_answered", "Refusals returned to a client (a status or a batch result)", registry=REGISTRY
)
REFUSALS_UNANSWERED = Counter(
    "isb_refusals_unanswered",
    "Refusals audited whose call was cancelled (deadline "
    "passed, client gone) while the entry was written: no status reached the client",
    registry=REGISTRY,
)
WITNESS_SUBMISSIONS = Counter(
    "isb_witness_submissions",
    "Checkpoints sent to witnesses, by witness and outcome (cosigned, unreachable, refused <HTTP status>)",
    ["witness", "outcome"],
    registry=REGISTRY,
)
AUDIT_ENTRIES = Gauge("isb_audit_entries", "Entries in the audit log (committed)", registry=REGISTRY)
WRITER_HEALTHY = Gauge(
    "isb_writer_healthy", "1 while the writer's store commits, 0 while it is lost", registry=REGISTRY
)
WRITER_HELD = Gauge(
    "isb_writer_held_records",
    "Records (audit entries nobody waits for) held until the store commits again",
    registry=REGISTRY,
)
STORE_FAULTS = Counter(
    "isb_store_faults", "Commits and probes the store failed, by the status callers got", ["status"], registry=REGISTRY
)
AUDIT_WRITE_FAILURES = Counter(
    "isb_audit_write_failures",
    "Audit entries not written: a refusal's entry lost with its failed batch (refusal), held records dropped (dropped)",
    ["kind"],
    registry=REGISTRY,
)

DELIVERY_LATENCY = Histogram(
    "isb_delivery_latency_seconds",
    "From acceptance to the first hand-over to a subscriber",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 300, 3600),
    registry=REGISTRY,
)
CHECKPOINT_TIME = Gauge(
    "isb_checkpoint_timestamp_seconds", "Unix time of the last checkpoint this broker signed", registry=REGISTRY
)
CERTIFICATE_EXPIRY = Gauge(
    "isb_certificate_expiry_timestamp_seconds",
    "Unix time at which a certificate the broker serves or trusts expires",
    ["certificate"],
    registry=REGISTRY,
)


class QueueDepth:
    """`isb_queue_depth{agency}`: deliveries not yet settled per recipient, counted at scrape time."""

    def __init__(self, count: Callable[[], dict[str, int]]) -> None:
        """`count` returns the unsettled deliveries by agency (one grouped query)."""
        self._count = count

    def collect(self) -> Iterator[Metric]:
        """The gauge family, one sample per agency with a backlog."""
        family = GaugeMetricFamily(
            "isb_queue_depth", "Deliveries queued or in flight, by recipient agency", labels=["agency"]
        )
        try:
            depths = self._count()
        except Exception:  # noqa: BLE001 - a scrape during a store outage gets no queue samples, not an error
            depths = {}
        for agency, depth in sorted(depths.items()):
            family.add_metric([agency], depth)
        yield family


def unwatch_queue_depth() -> None:
    """Unregister the queue-depth collector (a stopped broker's store is closed)."""
    for collector in list(_queue_collectors):
        REGISTRY.unregister(collector)
        _queue_collectors.remove(collector)


def watch_queue_depth(count: Callable[[], dict[str, int]]) -> QueueDepth:
    """Register the queue-depth collector (once per process; a later broker replaces the earlier one)."""
    unwatch_queue_depth()
    collector = QueueDepth(count)
    REGISTRY.register(collector)
    _queue_collectors.append(collector)
    return collector


_queue_collectors: list[QueueDepth] = []


def serve_metrics(listen: str, *, cert: Path, key: Path, ca: Path) -> WSGIServer:
    """Serve /metrics on `listen` (host:port) with TLS that requires a client certificate of `ca`;
    stop it with `shutdown()`."""
    host, _, port = listen.rpartition(":")
    server, _ = start_http_server(
        int(port),
        addr=host or "127.0.0.1",
        registry=REGISTRY,
        certfile=str(cert),
        keyfile=str(key),
        client_cafile=str(ca),
        client_auth_required=True,
    )
    return server
