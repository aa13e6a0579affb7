"""Starting a broker: one writer per database, one broker per port, a database bound to its
deployment, and a database that is not there yet (issue 12, faults)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from broker.errors import ConfigurationError
from broker.pki.dev import DevPki, ensure_dev_pki
from clients import AgencyClient
from tests.e2e.broker_process import BrokerProcess
from tests.e2e.broker_support import Database, RunningBroker, broker_config
from tests.e2e.faults_support import PrivatePostgres, auditor_for, export_verifies, free_port

pytestmark = pytest.mark.slow


def _one_clear_line(output: str) -> str:
    """The reason of the one `broker.exit` line `isb serve` ends with (its output is JSON lines)."""
    assert "Traceback" not in output
    exits = [json.loads(line) for line in output.splitlines() if '"broker.exit"' in line]
    assert len(exits) == 1, output
    return str(exits[0]["reason"])


def test_second_broker_on_the_same_sqlite_database_refuses_and_the_first_keeps_serving(
    pki: DevPki,
    database: Database,
    tmp_path: Path,
) -> None:
    """A second `isb serve` on the same SQLite file (another port) exits with one line naming the lock and
    the holder; the first broker still accepts sends."""
    if database.kind != "sqlite":
        pytest.skip("replicas may share a PostgreSQL database; the lock is SQLite's")
    database.engine.dispose()
    first = BrokerProcess(tmp_path / "a.toml", tmp_path / "a.log", pki, database.url)
    first.start()
    try:
        second = BrokerProcess(tmp_path / "b.toml", tmp_path / "b.log", pki, database.url)
        status, output = second.run_to_exit()
        assert status == 2
        line = _one_clear_line(output)
        assert "in use by another broker" in line
        assert f"pid {first.process.pid if first.process else 0}" in line
        customs = AgencyClient.from_dir(first.target, pki.directory, "FR-CUSTOMS", keystore=tmp_path / "fr")
        police = AgencyClient.from_dir(first.target, pki.directory, "DE-BKA", keystore=tmp_path / "de")
        police.publish_key()
        assert customs.send(["DE-BKA"], b"still served").audit_index > 0
    finally:
        first.terminate()


def test_taken_port_refuses_to_start(pki: DevPki, database: Database, tmp_path: Path) -> None:
    """A second broker on a port that is taken (SO_REUSEPORT off) exits with one line saying so."""
    database.engine.dispose()
    first = BrokerProcess(tmp_path / "a.toml", tmp_path / "a.log", pki, database.url)
    first.start()
    try:
        other = tmp_path / "other.db"
        second = BrokerProcess(tmp_path / "b.toml", tmp_path / "b.log", pki, f"sqlite:///{other}")
        status, output = second.run_to_exit(port=first.port)
        assert status == 2
        assert f"cannot listen on 127.0.0.1:{first.port}" in _one_clear_line(output)
    finally:
        first.terminate()


def test_broker_with_another_pki_refuses_the_database_naming_what_differs(
    broker_factory: Any,
    pki: DevPki,
    database: Database,
    tmp_path: Path,
) -> None:
    """A database records its deployment at creation; a broker with another CA and audit key, or another
    trust domain, refuses to start on it and names each item that differs; nothing is written."""
    first: RunningBroker = broker_factory()
    first.stop()
    size = database.scalar("SELECT count(*) FROM audit_entries")
    bound = database.rows("SELECT trust_domain, ca_fingerprint, audit_key_id FROM deployment")
    assert len(bound) == 1
    assert bound[0][0] == "isb.dev"
    other = ensure_dev_pki(tmp_path / "other", "isb.dev")
    stranger = RunningBroker(broker_config(other, database))
    with pytest.raises(ConfigurationError) as refused:
        stranger.start()
    message = str(refused.value)
    assert "belongs to another deployment" in message
    assert "CA certificate" in message
    assert "audit key" in message
    assert "trust domain" not in message
    stranger.broker = None  # it never started: only its loop is left to stop
    stranger.stop()
    elsewhere = ensure_dev_pki(tmp_path / "elsewhere", "isb.example")
    foreign = RunningBroker(broker_config(elsewhere, database, trust_domain="isb.example"))
    with pytest.raises(ConfigurationError, match=r"trust domain: the database's is 'isb\.dev'"):
        foreign.start()
    foreign.broker = None
    foreign.stop()
    assert database.scalar("SELECT count(*) FROM audit_entries") == size
    # The right PKI still starts on it.
    again: RunningBroker = broker_factory()
    assert again.broker is not None


def _attempts(log: Path) -> int:
    return sum("broker.database_unavailable" in line for line in log.read_text().splitlines()) if log.exists() else 0


def test_broker_started_before_its_database_retries_then_serves(pki: DevPki, tmp_path: Path) -> None:
    """`isb serve` with its PostgreSQL server still down logs one line per attempt, and serves once the server
    is up (started after two attempts); sends then work and the log verifies."""
    postgres = PrivatePostgres()
    try:
        process = BrokerProcess(
            tmp_path / "b.toml", tmp_path / "b.log", pki, postgres.url, log_level="info", database_wait_seconds=60.0
        )
        process.launch()
        try:
            # The server starts once the broker has logged two failed attempts (however slow its start-up).
            deadline = time.monotonic() + 60
            while _attempts(process.log) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _attempts(process.log) >= 2, process.log.read_text()[-2000:]
            postgres.start()
            process._wait_ready()
            attempts = _attempts(process.log)
            assert "Traceback" not in process.log.read_text()
            customs = AgencyClient.from_dir(process.target, pki.directory, "FR-CUSTOMS", keystore=tmp_path / "fr")
            police = AgencyClient.from_dir(process.target, pki.directory, "DE-BKA", keystore=tmp_path / "de")
            police.publish_key()
            sent = customs.send(["DE-BKA"], b"after the database came up")
            assert sent.audit_index > 0
            export_verifies(auditor_for(process.target, pki), pki, tmp_path / "log.jsonl")
            print(f"\nstarted before its database: {attempts} attempts logged")
        finally:
            process.terminate()
    finally:
        postgres.close()


def test_broker_whose_database_never_comes_exits_with_one_line(pki: DevPki, tmp_path: Path) -> None:
    """With nothing listening on its database port, `isb serve` retries for database_wait_seconds and exits 2 with
    one line naming the database and the attempts, never a traceback."""
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    process = BrokerProcess(
        tmp_path / "b.toml", tmp_path / "b.log", pki, url, log_level="info", database_wait_seconds=3.0
    )
    started = time.monotonic()
    status, output = process.run_to_exit()
    took = time.monotonic() - started
    assert status == 2
    line = _one_clear_line(output)
    assert "could not be reached in" in line
    assert "database_wait_seconds = 3" in line
    assert output.count("broker.database_unavailable") >= 2
    assert took < 30
