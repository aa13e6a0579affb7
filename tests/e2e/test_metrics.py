"""Prometheus metrics on their own port, over mutual TLS only."""

from __future__ import annotations

import socket
import ssl
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from broker.pki.dev import DevPki
from clients import AgencyClient


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _context(pki: DevPki, with_certificate: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    if with_certificate:
        cert, key = pki.auditor
        context.load_cert_chain(cert, key)
    return context


def test_metrics_need_a_client_certificate_and_count_envelopes(
    broker_factory: Any, pki: DevPki, tmp_path: Path
) -> None:
    """/metrics answers a scraper with a certificate of the CA, counts accepted envelopes, and refuses others."""
    port = _free_port()
    broker = broker_factory(metrics_listen=f"127.0.0.1:{port}")
    customs = AgencyClient.from_dir(broker.target, pki.directory, "FR-CUSTOMS", keystore=tmp_path / "fr")
    police = AgencyClient.from_dir(broker.target, pki.directory, "DE-BKA", keystore=tmp_path / "de")
    police.publish_key()
    customs.send(["DE-BKA"], b"counted, not logged")
    url = f"https://localhost:{port}/metrics"
    with urllib.request.urlopen(url, context=_context(pki, True), timeout=5) as response:
        text = response.read().decode()
    accepted = [line for line in text.splitlines() if line.startswith('isb_envelopes_total{outcome="accepted"}')]
    assert accepted
    assert float(accepted[0].split()[-1]) >= 1
    assert "isb_writer_commit_seconds_bucket" in text
    assert "counted, not logged" not in text
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        urllib.request.urlopen(url, context=_context(pki, False), timeout=5).read()


def test_dashboard_metrics_show_queue_depth_latency_checkpoints_and_expiry(
    broker_factory: Any, pki: DevPki, tmp_path: Path
) -> None:
    """A message queued for an agency without a stream shows in isb_queue_depth; a delivery observes the
    latency histogram; checkpoint time and certificate expiry are exported for the Grafana dashboard."""
    port = _free_port()
    broker = broker_factory(metrics_listen=f"127.0.0.1:{port}")
    customs = AgencyClient.from_dir(broker.target, pki.directory, "FR-CUSTOMS", keystore=tmp_path / "fr")
    police = AgencyClient.from_dir(broker.target, pki.directory, "DE-BKA", keystore=tmp_path / "de")
    police.publish_key()
    customs.send(["DE-BKA"], b"waiting")
    url = f"https://localhost:{port}/metrics"
    with urllib.request.urlopen(url, context=_context(pki, True), timeout=5) as response:
        before = response.read().decode()
    assert 'isb_queue_depth{agency="DE-BKA"} 1.0' in before
    assert 'isb_certificate_expiry_timestamp_seconds{certificate="broker"}' in before
    message = next(iter(police.deliveries(timeout=5)))
    police.ack(message)
    broker.call(broker.broker.sign_checkpoint())
    with urllib.request.urlopen(url, context=_context(pki, True), timeout=5) as response:
        after = response.read().decode()
    assert 'isb_queue_depth{agency="DE-BKA"}' not in after
    count = [line for line in after.splitlines() if line.startswith("isb_delivery_latency_seconds_count")]
    assert float(count[0].split()[-1]) >= 1
    stamp = [line for line in after.splitlines() if line.startswith("isb_checkpoint_timestamp_seconds ")]
    assert float(stamp[0].split()[-1]) > 0
