"""The systems under test as separate processes: the ISB broker (`isb serve`) and its database.

The broker runs exactly as an operator would run it, `isb serve --config FILE`, so its CPU time is
its own and not shared with the load generators. CPU time is read from /proc (user + system of the
broker and any worker processes it starts), which is what "broker CPU microseconds per envelope"
divides.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc
import psycopg

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
_TICKS = os.sysconf("SC_CLK_TCK")


def isb_executable() -> Path:
    """The `isb` console script of the virtual environment that runs the benchmark."""
    found = Path(sys.executable).with_name("isb")
    if not found.exists():
        raise FileNotFoundError(f"{found} does not exist: install the project into the venv (make run)")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid`, its reaped children and its live descendants."""
    total = 0.0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # Fields after "(comm)": state is index 0, so utime/stime/cutime/cstime are 11..14 (stat(5): 14..17).
        total += sum(int(v) for v in fields[11:15]) / _TICKS
        stack.extend(_children(current))
    return total


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat: every process of
    every session on it, which is what "the machine saturated" means."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = values[3] + values[4]  # idle, iowait
    total = sum(values)
    return (total - idle) / _TICKS, total / _TICKS


class PostgresCpu:
    """User + system CPU seconds of the PostgreSQL backends serving one database.

    Only that database's backends: the server is shared (other sessions' tests run on it too), so
    summing every `postgres` process would charge their work to the benchmark. Background
    processes (WAL writer, checkpointer) serve every database and are left out, so this is a floor.
    A backend that exits keeps the CPU it was last seen with, so the total never goes back.
    """

    def __init__(self, database: str) -> None:
        self.database = database
        self._seen: dict[int, float] = {}

    def __call__(self) -> float:
        """CPU seconds so far of every backend of the database seen until now."""
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            pids = [
                int(row[0])
                for row in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (self.database,)
                )
            ]
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            self._seen[pid] = max(self._seen.get(pid, 0.0), sum(int(v) for v in fields[11:15]) / _TICKS)
        return sum(self._seen.values())


def write_config(path: Path, settings: Mapping[str, str | int | float]) -> Path:
    """Write a `[broker]` TOML table."""
    lines = ["[broker]"]
    for key, value in settings.items():
        lines.append(f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value}")
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class BrokerProcess:
    """`isb serve --config <file>` as a child process, on 127.0.0.1."""

    config_file: Path
    port: int
    log_file: Path
    ca: Path
    cert: Path
    key: Path
    environ: Mapping[str, str] = field(default_factory=dict)
    metrics_port: int | None = None  # the broker's Prometheus endpoint (mutual TLS), if configured
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def target(self) -> str:
        """host:port for clients."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The broker's process id."""
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 30.0) -> None:
        """Start the broker and wait until it completes a mutual TLS handshake."""
        self._log = self.log_file.open("ab")
        env = {**os.environ, **self.environ}
        argv = [str(isb_executable()), "serve", "--config", str(self.config_file)]
        self.process = subprocess.Popen(argv, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        """Block until the broker accepts an mTLS connection (raise if it exits or times out)."""
        credentials = grpc.ssl_channel_credentials(self.ca.read_bytes(), self.key.read_bytes(), self.cert.read_bytes())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"broker exited with {self.process.returncode}; see {self.log_file}")
            with grpc.secure_channel(self.target, credentials) as channel:
                try:
                    grpc.channel_ready_future(channel).result(timeout=1.0)
                except grpc.FutureTimeoutError:
                    continue
                return
        raise TimeoutError(f"broker did not accept connections within {timeout} s; see {self.log_file}")

    def cpu_seconds(self) -> float:
        """CPU seconds the broker has used so far."""
        return process_cpu_seconds(self.pid)

    def metric(self, name: str) -> float:
        """The sum of every sample of counter `name` on the broker's /metrics (NaN without an endpoint)."""
        if self.metrics_port is None:
            return float("nan")
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(self.cert, self.key)
        url = f"https://localhost:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            text = response.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and line[len(name)] in " {"
        )

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (the broker drains and exits), then SIGKILL if it does not."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL the broker: no drain, no shutdown code runs."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


@contextlib.contextmanager
def postgres_database(name: str = "isb_bench") -> Iterator[str]:
    """A fresh PostgreSQL database (dropped first if a previous run left it, and dropped after)."""
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_available() -> bool:
    """Whether the local PostgreSQL server answers."""
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def nats_available(host: str = "127.0.0.1", port: int = 4222) -> bool:
    """Whether something listens on the NATS port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        return sock.connect_ex((host, port)) == 0


def py_spy() -> str | None:
    """The py-spy executable of the venv or PATH, if installed."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")
