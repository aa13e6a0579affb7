"""Stopping a broker is bounded: `Broker.stop` returns within its grace plus twice its bound, whatever its
parts wait for, and names what overran (broker.server.STOP_BOUND_SECONDS)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from broker.pki.dev import DevPki
from broker.store.replication import take_state_lock
from clients import AgencyClient
from clients.errors import ClientError
from tests.e2e.broker_support import Database

GRACE, BOUND = 0.5, 2.0
# Sessions of this test's database waiting for an advisory lock (the server is shared with other databases).
WAITING = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def _until(check: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen in {timeout} s")
        time.sleep(0.05)


async def _settled() -> None:
    """Wait until nothing else runs on this loop."""
    others = {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}
    if others:
        await asyncio.wait(others)


def test_stop_is_bounded_while_the_writer_waits_for_another_replicas_lock(
    broker_factory: Any, pki: DevPki, database: Database, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Another replica hangs holding the state lock; a key publication's batch waits for it in the writer.
    The broker still stops in GRACE + BOUND (plus a loaded machine's slack), naming the writer, and
    finishes its stop in the background once the lock is released."""
    if database.kind != "postgresql":
        pytest.skip("the state lock is PostgreSQL's (replicas share one database)")
    running = broker_factory()
    client = AgencyClient.from_dir(running.target, pki.directory, "DE-BKA", keystore=tmp_path / "de")
    outcome: list[BaseException | None] = []

    def publish() -> None:
        try:
            client.publish_key()
            outcome.append(None)
        except ClientError as exc:
            outcome.append(exc)

    with database.engine.connect() as other_replica:
        other_replica.begin()
        take_state_lock(other_replica)
        publishing = threading.Thread(target=publish, daemon=True)
        publishing.start()
        _until(lambda: database.scalar(WAITING) == 1, "the writer waiting for the state lock")
        broker = running.broker
        assert broker is not None
        started = time.monotonic()
        running.call(broker.stop(grace=GRACE, bound=BOUND))
        took = time.monotonic() - started
        other_replica.rollback()  # the hung replica lets go: the writer's batch commits, its stop ends
    running.broker = None
    running.call(_settled())  # the writer's stop, finishing in the background once the lock is free
    out, err = capfd.readouterr()
    logged = out + err
    publishing.join(60)
    client.close()
    assert broker.stop_overran == ["writer"]
    assert took < GRACE + 2 * BOUND + 5  # 5 s: a loaded machine's slack, far below a hang
    overran = [line for line in logged.splitlines() if '"broker.stop_overran"' in line]
    assert len(overran) == 1
    assert '"part": "writer"' in overran[0]
    assert "isb-writer" in overran[0]  # where the writer thread waits
    assert outcome
    assert outcome[0] is not None  # the publication's call ended with the stop, not with an answer
