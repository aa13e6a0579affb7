"""A broker as a child process (`isb serve --config FILE`), for tests that kill it or read its logs."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from broker.config import DEV_POLICY_FILE
from broker.pki.dev import DevPki
from tests.e2e.broker_support import REPO

# How long `isb serve` may take to serve: slack for a loaded machine (CI runs beside other jobs), not
# a measure of the broker; the wait ends as soon as the port answers.
READY_SECONDS = 60.0


class BrokerProcess:
    """`isb serve --config FILE` as a child process that can be killed and started again."""

    def __init__(
        self,
        config: Path,
        log: Path,
        pki: DevPki,
        database_url: str,
        log_level: str = "warning",
        **settings: str | float,
    ) -> None:
        self.log_level = log_level
        self.settings = settings
        self.config = config
        self.database_url = database_url
        self.log = log
        self.pki = pki
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def write_config(self, port: int = 0) -> None:
        self.port = port or _free_port()
        extra = "".join(
            f"{key} = {value!r}\n" if isinstance(value, float) else f'{key} = "{value}"\n'
            for key, value in self.settings.items()
        )
        self.config.write_text(
            "[broker]\n"
            f'listen = "127.0.0.1:{self.port}"\n'
            f'cert_dir = "{self.pki.directory}"\n'
            f'database_url = "{self.database_url}"\n'
            f'policy_file = "{DEV_POLICY_FILE}"\n'
            f'log_level = "{self.log_level}"\n'
            f'state_dir = "{self.config.parent / "state"}"\n' + extra
        )

    def launch(self, port: int = 0) -> None:
        """Start `isb serve` without waiting for it to serve."""
        self.write_config(port)
        isb = Path(sys.executable).with_name("isb")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(isb), "serve", "--config", str(self.config)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT
            )

    def start(self, port: int = 0, timeout: float = READY_SECONDS) -> None:
        self.launch(port)
        self._wait_ready(timeout)

    def run_to_exit(self, port: int = 0, timeout: float = 60.0) -> tuple[int, str]:
        """Run `isb serve` expecting it to refuse to start; its exit status and what it printed."""
        self.write_config(port)
        isb = Path(sys.executable).with_name("isb")
        done = subprocess.run(
            [str(isb), "serve", "--config", str(self.config)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return done.returncode, done.stdout + done.stderr

    def _wait_ready(self, timeout: float = READY_SECONDS) -> None:
        cert, key = self.pki.agency("DE-BKA")
        credentials = grpc.ssl_channel_credentials(self.pki.ca_cert.read_bytes(), key.read_bytes(), cert.read_bytes())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.fail(f"broker exited with {self.process.returncode}: {self.log.read_text()[-2000:]}")
            with grpc.secure_channel(self.target, credentials) as channel:
                try:
                    grpc.channel_ready_future(channel).result(timeout=1.0)
                except grpc.FutureTimeoutError:
                    continue
                return
        pytest.fail(f"broker did not start within {timeout} s: {self.log.read_text()[-2000:]}")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to flush or finish anything."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@contextlib.contextmanager
def serving(pki: DevPki, database_url: str, folder: Path) -> Iterator[BrokerProcess]:
    """A started broker subprocess over `database_url` (the caller no longer uses the database's pool)."""
    process = BrokerProcess(folder / "broker.toml", folder / "broker.log", pki, database_url)
    process.start()
    try:
        yield process
    finally:
        process.terminate()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
