"""What e2e tests share besides fixtures: a fresh database, a broker on its own event loop thread,
the broker configuration over the session PKI, and a private copy of that PKI. The fixtures that
build them are in conftest.py; tests import these names from here, never from conftest."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import faulthandler
import os
import shutil
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

from broker.config import DEV_POLICY_FILE, BrokerConfig, load_config
from broker.pki.dev import DevPki
from broker.server import Broker
from broker.store.db import create_engine

__all__ = ["PG_ADMIN_URL", "REPO", "Database", "RunningBroker", "broker_config", "copy_pki"]

REPO = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


class Database:
    """A fresh, empty database for one test; dropped afterwards."""

    def __init__(self, tmp: Path) -> None:
        self.kind = os.environ.get("ISB_TEST_DATABASE", "sqlite")
        self.tmp = tmp
        if self.kind == "postgresql":
            self.name = f"isb_test_{uuid.uuid4().hex[:12]}"
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.name}"')
            self.url = f"postgresql://postgres@127.0.0.1:5432/{self.name}"
        else:
            self.path = tmp / "broker.db"
            self.url = f"sqlite:///{self.path}"
        self.engine = create_engine(self.url)

    def scalar(self, query: str, **params: Any) -> Any:
        """Run one read-only SQL query and return its first column of the first row."""
        with self.engine.connect() as conn:
            return conn.execute(sa.text(query), params).scalar()

    def rows(self, query: str, **params: Any) -> list[Any]:
        """Run one read-only SQL query and return all rows."""
        with self.engine.connect() as conn:
            return list(conn.execute(sa.text(query), params))

    def drop(self) -> None:
        self.engine.dispose()
        if self.kind == "postgresql":
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


@dataclass
class RunningBroker:
    """A broker serving on its own event loop thread, restartable on the same database."""

    config: BrokerConfig
    broker: Broker | None = None
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="test-broker")
        self.thread.start()
        self.broker = Broker(self.config)
        self.call(self.broker.start())
        if self.config.listen.endswith(":0"):
            self.config = _replace(self.config, listen=f"127.0.0.1:{self.broker.port}")

    def call(self, coroutine: Any, timeout: float = 30) -> Any:
        """Run a coroutine on the broker's loop and wait for its result.

        One that does not finish in time leaves the broker's threads and tasks on stderr, so that a
        hang on a loaded CI machine can be read from its log."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            _dump(self.loop)
            raise

    @property
    def target(self) -> str:
        assert self.broker is not None
        return f"127.0.0.1:{self.broker.port}"

    def stop(self) -> None:
        """Stop the broker (a stop that overran its bound fails the test: its log line says where each
        task and thread waited), then its loop."""
        overran: list[str] = []
        if self.broker is not None:
            self.call(self.broker.stop(grace=0.5))
            overran = self.broker.stop_overran
            self.broker = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self.thread is not None:
            self.thread.join(10)
        self.loop.close()
        assert not overran, f"the broker's stop overran its bound in {overran} (see broker.stop_overran)"

    def restart(self) -> None:
        """Stop and start a new broker process state on the same port and database."""
        self.stop()
        self.loop = asyncio.new_event_loop()
        self.start()


def _dump(loop: asyncio.AbstractEventLoop) -> None:
    print(
        f"--- the broker's loop did not answer; its tasks and every thread ({time.monotonic():.1f}):", file=sys.stderr
    )
    with contextlib.suppress(RuntimeError):  # the set of tasks may change under this thread
        for task in list(asyncio.all_tasks(loop)):
            task.print_stack(limit=12, file=sys.stderr)
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)


def _replace(config: BrokerConfig, **changes: Any) -> BrokerConfig:
    return dataclasses.replace(config, **changes)


def broker_config(pki: DevPki, database: Database, **overrides: Any) -> BrokerConfig:
    """A broker configuration over the session PKI and the test's database."""
    overrides.setdefault("listen", "127.0.0.1:0")
    overrides.setdefault("policy_file", DEV_POLICY_FILE)
    overrides.setdefault("checkpoint_interval_seconds", 0.5)
    overrides.setdefault("cert_dir", pki.directory)
    # The broker's own files (an applied policy) stay with the test, whatever the database.
    overrides.setdefault("state_dir", database.tmp / "state")
    return load_config(environ={}, database_url=database.url, **overrides)


def copy_pki(pki: DevPki, destination: Path) -> Path:
    """A private copy of the PKI folder, for tests that change certificates or the CRL."""
    shutil.copytree(pki.directory, destination)
    return destination
