"""What the fault tests break and watch: a small tmpfs to fill, a private PostgreSQL server to stop,
the broker's health, and the audit log's verification afterwards.

The shared PostgreSQL server of the machine (127.0.0.1:5432) is never touched: a test that stops
its database starts its own server with initdb and pg_ctl on a free port in a temporary folder,
as the `postgres` user when the tests run as root (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from grpc_health.v1 import health_pb2, health_pb2_grpc

from broker.pki.dev import DevPki
from clients.audit import verify_export
from clients.auditor import AuditorClient


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "12m") -> Iterator[Path]:
    """A tmpfs of `size` mounted at `where` (root only), unmounted afterwards; skip if it cannot be mounted."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill_disk(where: Path) -> Path:
    """Write a file in `where` until the file system is full; return it (delete it to free the space)."""
    filler = where / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 65536, 4096, 512):  # down to the last block
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


class PrivatePostgres:
    """A PostgreSQL server of its own for one test: initdb in a temp folder, pg_ctl start/stop."""

    def __init__(self) -> None:
        bin_dir = _pg_bin()
        if bin_dir is None:
            pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql (install postgresql)")
        self.bin = bin_dir
        # Not under pytest's tmp_path: its folders are root's alone, and the server runs as postgres.
        root = Path(tempfile.mkdtemp(prefix="isb-pg-"))
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.log = root / "postgres.log"
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user:
            shutil.chown(root, self._user)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{root}'\n"
                "fsync = off\nmax_connections = 60\n"
            )

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self._user:
            command = ["runuser", "-u", self._user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30", "start")

    def stop(self, mode: str = "immediate") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def health(target: str, pki: DevPki, service: str = "") -> str:
    """The broker's health status name (SERVING, NOT_SERVING), asked with the admin certificate."""
    cert, key = pki.admin
    credentials = grpc.ssl_channel_credentials(pki.ca_cert.read_bytes(), key.read_bytes(), cert.read_bytes())
    with grpc.secure_channel(target, credentials) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]  # stub lacks methods
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def wait_for_health(target: str, pki: DevPki, wanted: str, timeout: float = 20.0) -> float:
    """Seconds until the broker's health is `wanted`; fails the test after `timeout`."""
    started = time.monotonic()
    status = ""
    while time.monotonic() - started < timeout:
        status = health(target, pki)
        if status == wanted:
            return time.monotonic() - started
        time.sleep(0.05)
    pytest.fail(f"health stayed {status} for {timeout} s, expected {wanted}")


def auditor_for(target: str, pki: DevPki) -> AuditorClient:
    """An SDK auditor client of the dev PKI for `target`."""
    key = load_pem_public_key(pki.audit_pub.read_bytes())
    cert, private = pki.auditor
    return AuditorClient(target, cert=cert, key=private, ca=pki.ca_cert, audit_key=key)  # type: ignore[arg-type]


def export_verifies(auditor: AuditorClient, pki: DevPki, destination: Path) -> int:
    """Export the whole log with a fresh checkpoint and verify it offline; return the entry count."""
    auditor.checkpoint(fresh=True)
    with destination.open("wb") as out:
        written = auditor.export(out)
    key = load_pem_public_key(pki.audit_pub.read_bytes())
    report = verify_export(destination, key)  # type: ignore[arg-type]
    assert report.entries == written
    return written
