"""The broker's own logs: JSON lines with a request id and the caller, never payloads or keys."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from broker.pki.dev import DevPki
from clients import AgencyClient
from tests.e2e.broker_process import BrokerProcess
from tests.e2e.broker_support import Database
from tests.e2e.pki_support import foreign_agency_certificate

pytestmark = pytest.mark.foreign_broker

MARKER = b"LOG-MARKER passport X1234567 of Jane DOE"


def test_logs_are_json_with_request_id_and_caller_and_never_plaintext_or_keys(
    pki: DevPki,
    database: Database,
    tmp_path: Path,
) -> None:
    """A send and delivery leave JSON log lines naming request and caller; no payload or private key appears."""
    database.engine.dispose()
    broker = BrokerProcess(tmp_path / "broker.toml", tmp_path / "broker.log", pki, database.url, log_level="info")
    broker.start()
    try:
        customs = AgencyClient.from_dir(broker.target, pki.directory, "FR-CUSTOMS", keystore=tmp_path / "fr")
        police = AgencyClient.from_dir(broker.target, pki.directory, "DE-BKA", keystore=tmp_path / "de")
        police.publish_key()
        sent = customs.send(["DE-BKA"], MARKER)
        message = next(iter(police.deliveries(timeout=5)))
        assert message.body == MARKER
        police.ack(message)
    finally:
        broker.terminate()
    text = (tmp_path / "broker.log").read_bytes()
    assert b"LOG-MARKER" not in text
    assert b"PRIVATE KEY" not in text
    events = [json.loads(line) for line in text.decode().splitlines() if line.startswith("{")]
    accepted = [e for e in events if e.get("event") == "envelope.accepted"]
    assert [e["message_id"] for e in accepted] == [sent.message_id]
    assert accepted[0]["caller"] == "spiffe://isb.dev/agency/FR-CUSTOMS"
    assert len(accepted[0]["request_id"]) == 32


def test_everything_the_broker_prints_is_json_and_a_refused_handshake_names_its_cause(
    pki: DevPki,
    database: Database,
    tmp_path: Path,
) -> None:
    """Start-up (Alembic included) and a handshake with a certificate of another CA leave only JSON
    lines, among them a `tls.handshake_failed` event naming the verification failure."""
    database.engine.dispose()
    broker = BrokerProcess(tmp_path / "broker.toml", tmp_path / "broker.log", pki, database.url, log_level="info")
    broker.start()
    try:
        cert, key = foreign_agency_certificate(tmp_path, "DE-BKA")
        credentials = grpc.ssl_channel_credentials(pki.ca_cert.read_bytes(), key.read_bytes(), cert.read_bytes())
        with grpc.secure_channel(broker.target, credentials) as channel, pytest.raises(grpc.FutureTimeoutError):
            grpc.channel_ready_future(channel).result(timeout=1.5)
    finally:
        broker.terminate()
    lines = (tmp_path / "broker.log").read_text().splitlines()
    events = [json.loads(line) for line in lines]  # every line parses: nothing but JSON
    names = [e["event"] for e in events]
    assert "broker.started" in names
    assert any(name.startswith("alembic.") for name in names)
    refused = [e for e in events if e["event"] == "tls.handshake_failed"]
    assert refused, names
    assert refused[0]["cause"] == "CERTIFICATE_VERIFY_FAILED"
