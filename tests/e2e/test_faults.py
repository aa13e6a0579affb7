"""Storage faults over real mutual TLS: what clients get while the database cannot commit, that the
broker's health says so and recovers by itself, that nothing acknowledged is lost, and that the audit
log verifies afterwards (issue 12, faults)."""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from broker.config import DEV_POLICY_FILE, BrokerConfig, load_config
from broker.pki.dev import DevPki
from clients import AgencyClient, RemoteError
from tests.e2e.broker_support import RunningBroker
from tests.e2e.faults_support import (
    PrivatePostgres,
    auditor_for,
    export_verifies,
    fill_disk,
    health,
    small_tmpfs,
    wait_for_health,
)

pytestmark = pytest.mark.slow


def _config(pki: DevPki, database_url: str, **overrides: Any) -> BrokerConfig:
    overrides.setdefault("listen", "127.0.0.1:0")
    overrides.setdefault("policy_file", DEV_POLICY_FILE)
    overrides.setdefault("checkpoint_interval_seconds", 0.5)
    overrides.setdefault("state_dir", Path(tempfile.mkdtemp(prefix="isb-state-")))
    return load_config(environ={}, database_url=database_url, cert_dir=pki.directory, **overrides)


@pytest.fixture
def full_disk_broker(pki: DevPki, tmp_path: Path) -> Iterator[tuple[RunningBroker, Path]]:
    """A broker whose SQLite database lives on a 16 MiB tmpfs of its own."""
    with small_tmpfs(tmp_path / "disk", "16m") as disk:
        running = RunningBroker(_config(pki, f"sqlite:///{disk / 'broker.db'}"))
        running.start()
        try:
            yield running, disk
        finally:
            if running.broker is not None:
                running.stop()


def _clients(target: str, pki: DevPki, tmp_path: Path) -> dict[str, AgencyClient]:
    clients = {}
    for agency in ("FR-CUSTOMS", "DE-BKA"):
        clients[agency] = AgencyClient.from_dir(target, pki.directory, agency, keystore=tmp_path / "keys" / agency)
        clients[agency].publish_key()
    return clients


def _until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} in {timeout} s")
        time.sleep(0.05)


def test_full_disk_is_resource_exhausted_not_serving_then_recovers_with_nothing_lost(
    full_disk_broker: tuple[RunningBroker, Path],
    pki: DevPki,
    tmp_path: Path,
) -> None:
    """SQLite on a full tmpfs: sends get RESOURCE_EXHAUSTED naming the disk, a refusal keeps its own status,
    health turns NOT_SERVING, auditors still read (their queries are recorded later), and once space is
    freed the broker is SERVING again by itself; every acknowledged send is delivered and the log verifies."""
    running, disk = full_disk_broker
    clients = _clients(running.target, pki, tmp_path)
    customs, police = clients["FR-CUSTOMS"], clients["DE-BKA"]
    accepted = [customs.send(["DE-BKA"], b"before the disk fills %d" % i).message_id for i in range(5)]
    auditor = auditor_for(running.target, pki)
    signed_before = auditor.checkpoint(fresh=True).size
    filler = fill_disk(disk)
    refused: RemoteError | None = None
    for i in range(2000):
        try:
            accepted.append(customs.send(["DE-BKA"], b"while filling %d " % i + b"x" * 8192).message_id)
        except RemoteError as exc:
            refused = exc
            break
    assert refused is not None, "the disk never filled"
    assert refused.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "disk is full" in refused.message
    to_not_serving = wait_for_health(running.target, pki, "NOT_SERVING", timeout=10)
    # A refusal's own status wins over the fault of its audit entry.
    envelope = customs.seal(["DE-BKA"], b"bad signature")
    envelope.header_signature = bytes(64)
    with pytest.raises(RemoteError) as bad:
        customs.send_envelope(envelope)
    assert bad.value.code is grpc.StatusCode.INVALID_ARGUMENT
    # Auditors still read: their query entries wait for the store.
    queried = len(list(auditor.entries(message_id=accepted[0])))
    assert queried >= 1
    assert auditor.checkpoint(fresh=True).size >= signed_before  # the latest signed one, not an error
    filler.unlink()
    to_serving = wait_for_health(running.target, pki, "SERVING", timeout=20)
    accepted.append(customs.send(["DE-BKA"], b"after the disk was freed").message_id)
    received = set()
    for message in police.deliveries(timeout=5):
        received.add(message.message_id)
        police.ack(message)
        if received >= set(accepted):
            break
    assert received >= set(accepted)
    print(
        f"\nfull disk: {len(accepted) - 6} sends after filling, NOT_SERVING after {to_not_serving:.2f} s, "
        f"SERVING {to_serving:.2f} s after freeing space"
    )
    export_verifies(auditor, pki, tmp_path / "log.jsonl")
    # The auditor's queries during the outage were recorded once the store was back.
    queries = [e for _, e in auditor.entries(event="audit.query")]
    assert len(queries) >= 3
    rejected = [e for _, e in auditor.entries(event="request.rejected")]
    assert any("signature" in str(e.fields.get("reason", "")) for e in rejected)
    assert health(running.target, pki) == "SERVING"


def test_postgresql_stopped_and_restarted_under_load_unavailable_then_recovers_nothing_lost(
    pki: DevPki,
    tmp_path: Path,
) -> None:
    """A private PostgreSQL server stopped under a stream of sends: callers get only UNAVAILABLE (after the SDK's
    bounded retries with the broker's pushback), health turns NOT_SERVING and back to SERVING by itself once the
    server is started again; every acknowledged send is delivered, and the audit log verifies."""
    postgres = PrivatePostgres()
    postgres.start()
    running = RunningBroker(_config(pki, postgres.url))
    running.start()
    try:
        clients = _clients(running.target, pki, tmp_path)
        customs, police = clients["FR-CUSTOMS"], clients["DE-BKA"]
        accepted: list[str] = []
        failures: list[grpc.StatusCode] = []
        stop = threading.Event()

        def load() -> None:
            for i in range(3000):
                if stop.is_set():
                    return
                try:
                    accepted.append(customs.send(["DE-BKA"], b"under load %d" % i).message_id)
                except RemoteError as exc:
                    failures.append(exc.code)
                    time.sleep(0.05)

        sender = threading.Thread(target=load)
        sender.start()
        # The server goes down under the stream: once sends are accepted (at load 12 none was after 1 s).
        _until(lambda: len(accepted) > 0, "a send accepted before the outage")
        before = len(accepted)
        postgres.stop("immediate")
        to_not_serving = wait_for_health(running.target, pki, "NOT_SERVING", timeout=15)
        time.sleep(3.0)  # the outage
        _until(lambda: len(failures) > 0, "a send failing while the database is down")
        postgres.start()
        to_serving = wait_for_health(running.target, pki, "SERVING", timeout=30)
        time.sleep(1.0)
        stop.set()
        sender.join(60)
        assert before > 0
        assert failures, "no send failed while the database was down"
        assert set(failures) == {grpc.StatusCode.UNAVAILABLE}
        after = customs.send(["DE-BKA"], b"after the restart").message_id
        accepted.append(after)
        received = set()
        for message in police.deliveries(timeout=10):
            received.add(message.message_id)
            police.ack(message)
            if received >= set(accepted):
                break
        assert received >= set(accepted)
        print(
            f"\npostgresql outage: {len(accepted)} sends accepted, {len(failures)} UNAVAILABLE after SDK retries, "
            f"NOT_SERVING after {to_not_serving:.2f} s, SERVING {to_serving:.2f} s after the server started"
        )
        export_verifies(auditor_for(running.target, pki), pki, tmp_path / "log.jsonl")
    finally:
        running.stop()
        postgres.close()
