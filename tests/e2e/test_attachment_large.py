"""A 2 GiB attachment between two agencies over mTLS, cut halfway up and down (issue 15, "Done when").

Broker, sender and recipient are three processes, so each one's memory is its own: the broker is
`isb serve`, each agency is `tests.e2e.attachment_agent`. A relay in front of the broker cuts every
TCP connection once half the file went through it, on the upload and again on the download; the
SDK resumes from the last committed chunk. The file arrives bit-identical, and each process's
resident high-water mark stays within a bound that does not grow with the file.

ISB_TEST_ATTACHMENT_MIB sets the size (default 2048).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.pki.dev import DevPki
from clients import AgencyClient
from tests.e2e.broker_process import BrokerProcess, serving
from tests.e2e.broker_support import REPO, Database
from tests.e2e.tcp_cut import CuttableRelay

pytestmark = [pytest.mark.slow, pytest.mark.foreign_broker, pytest.mark.timeout(900)]

MIB = 1024 * 1024
# What a process may grow by over its resident set once connected, whatever the file's size: a few
# 1 MiB chunks in flight on each side, gRPC's HTTP/2 and TLS buffers, and glibc's per-thread arenas
# (measured at 2 GiB: broker +39 to +56 MiB, each agency +25 to +63 MiB).
MEMORY_BOUND = 96 * MIB


def _generate(path: Path, size: int) -> str:
    """Write `size` bytes of incompressible data, streaming, and return its SHA-256 as written."""
    digest = hashlib.sha256()
    block = os.urandom(MIB)
    with path.open("wb") as out:
        for i in range(size // MIB):
            piece = block[i % 4093 :] + block[: i % 4093]  # no two neighbouring chunks alike
            digest.update(piece)
            out.write(piece)
        tail = os.urandom(size % MIB)
        digest.update(tail)
        out.write(tail)
    return digest.hexdigest()


class _PeakMemory:
    """A process's resident high-water mark (VmHWM) over its resident set, per phase."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._start()

    def _field(self, name: str) -> int:
        for line in Path(f"/proc/{self._pid}/status").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return int(line.split()[1]) * 1024
        raise LookupError(name)

    def _start(self) -> None:
        Path(f"/proc/{self._pid}/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
        self._base = self._field("VmRSS")

    def growth(self) -> int:
        """How far the peak rose over the resident set at the start of the phase; start the next phase."""
        peak = self._field("VmHWM") - self._base
        self._start()
        return peak


def _agent(action: str, relay: CuttableRelay, pki: DevPki, keystore: Path, file: Path) -> dict[str, Any]:
    """Run one agency's side as its own process; its memory report."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.e2e.attachment_agent",
            action,
            relay.address,
            str(pki.directory),
            str(keystore),
            str(file),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


@pytest.fixture
def broker_process(pki: DevPki, database: Database, tmp_path: Path) -> Iterator[BrokerProcess]:
    """`isb serve` over the test's fresh database."""
    database.engine.dispose()  # the broker process owns the database from here
    with serving(pki, database.url, tmp_path) as process:
        yield process


def test_2_gib_round_trip_cut_halfway_both_ways_is_bit_identical_with_flat_memory(
    broker_process: BrokerProcess,
    pki: DevPki,
    database: Database,
    tmp_path: Path,
) -> None:
    """Cut at half the upload and half the download, resumed, identical; no process grows with the file."""
    size = int(os.environ.get("ISB_TEST_ATTACHMENT_MIB", "2048")) * MIB - 12345  # a short last chunk
    source, received = tmp_path / "scan.tiff", tmp_path / "received.tiff"
    expected = _generate(source, size)
    keys = {agency: tmp_path / f"keys-{agency}" for agency in ("FR-CUSTOMS", "DE-BKA")}
    for agency, keystore in keys.items():
        with AgencyClient.from_dir(broker_process.target, pki.directory, agency, keystore=keystore) as client:
            client.publish_key()
    assert broker_process.process is not None
    broker = _PeakMemory(broker_process.process.pid)
    relay = CuttableRelay(("127.0.0.1", broker_process.port))
    try:
        relay.cut_after(size // 2)
        sender = _agent("send", relay, pki, keys["FR-CUSTOMS"], source)
        broker_up = broker.growth()
        assert relay.cuts == 1
        relay.cut_after(size // 2)
        recipient = _agent("receive", relay, pki, keys["DE-BKA"], received)
        broker_down = broker.growth()
        assert relay.cuts == 2
    finally:
        relay.close()
    with received.open("rb") as f:
        assert hashlib.file_digest(f, "sha256").hexdigest() == expected
    # Each side resumed past the cut rather than starting again.
    uploaded = database.rows("SELECT entry FROM audit_entries WHERE event = 'attachment.uploaded'")
    assert json.loads(bytes(uploaded[-1][0]))["fields"]["resumed_from_chunk"] > 0
    downloads = [
        json.loads(bytes(r[0]))
        for r in database.rows(
            "SELECT entry FROM audit_entries WHERE event = 'attachment.downloaded' ORDER BY leaf_index"
        )
    ]
    assert [d["fields"]["first_chunk"] > 0 for d in downloads] == [False, True]
    growth = {
        "broker upload": broker_up,
        "broker download": broker_down,
        "sender": sender["peak"] - sender["base"],
        "recipient": recipient["peak"] - recipient["base"],
    }
    print(
        f"\n{size / MIB:.0f} MiB: resident growth "
        + ", ".join(f"{who} +{g / MIB:.1f} MiB" for who, g in growth.items())
    )
    assert all(g < MEMORY_BOUND for g in growth.values()), {k: f"{v / MIB:.1f} MiB" for k, v in growth.items()}
