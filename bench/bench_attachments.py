"""Attachment throughput: upload and download MB/s with encryption, broker CPU per MB, peak memory.

For each database (SQLite with the directory blob store, PostgreSQL with chunk rows) and each size
(1 MiB, 100 MiB, 2 GiB by default), one agency sends a file as an attachment through a broker
process (`isb serve`, as an operator runs it) and another downloads it, decrypting and verifying
every chunk, to a file; the result is compared bit for bit. Beside it, a plain `cp` of the same
file on the same disk (and `cp` followed by fsync) gives the physical bound. Memory is sampled every
20 ms: the broker's resident set (peak over its baseline) and this process's (sender + recipient).

    .venv/bin/python -m bench.bench_attachments [--sizes 1M,100M,2G] [--db sqlite,postgresql] [--quick]

`--quick` runs 1 MiB and 100 MiB on SQLite only. The 2 GiB case needs about 8 GiB of free disk
(source, blob, received copy, cp copy).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.deployment import Deployment, build_deployment
from bench.profiling import Sampler, summarise
from bench.servers import BrokerProcess, free_port, postgres_available, postgres_database, py_spy, write_config
from clients import AgencyClient

MIB = 1024 * 1024


def parse_size(text: str) -> int:
    """ "1M", "100M", "2G": bytes (MiB and GiB)."""
    unit = {"K": 1024, "M": MIB, "G": 1024 * MIB}[text[-1].upper()]
    return int(text[:-1]) * unit


@dataclass
class Result:
    """One size on one database."""

    database: str
    size_mib: float
    upload_mb_s: float
    download_mb_s: float
    round_trip_mb_s: float  # size / (upload + download seconds)
    cp_mb_s: float
    cp_fsync_mb_s: float
    broker_cpu_ms_per_mb_upload: float
    broker_cpu_ms_per_mb_download: float
    broker_rss_base_mib: float
    broker_rss_peak_growth_mib: float
    client_rss_peak_growth_mib: float
    identical: bool


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class PeakSampler:
    """The peak resident set size of some processes, sampled every 20 ms while running."""

    def __init__(self, *pids: int) -> None:
        self._pids = pids
        self.base = [_rss(p) for p in pids]
        self.peak = list(self.base)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for i, pid in enumerate(self._pids):
                self.peak[i] = max(self.peak[i], _rss(pid))

    def stop(self) -> list[int]:
        """Stop; the growth of each peak over its start, in bytes."""
        self._stop.set()
        self._thread.join()
        return [p - b for p, b in zip(self.peak, self.base, strict=True)]


def _make_file(path: Path, size: int) -> None:
    block = os.urandom(MIB)
    with path.open("wb") as out:
        written = 0
        while written < size:
            piece = block[(written // MIB) % 997 :] + block[: (written // MIB) % 997]
            piece = piece[: size - written]
            out.write(piece)
            written += len(piece)


def _sha256(path: Path) -> bytes:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").digest()


def _cp(source: Path, destination: Path, *, fsync: bool) -> float:
    started = time.perf_counter()
    subprocess.run(["cp", str(source), str(destination)], check=True)
    if fsync:
        fd = os.open(destination, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    elapsed = time.perf_counter() - started
    destination.unlink()
    return elapsed


@contextmanager
def _broker(deployment: Deployment, work: Path, backend: str, url: str) -> Iterator[BrokerProcess]:
    port = free_port()
    config = write_config(
        work / f"broker-{backend}.toml",
        {
            "listen": f"127.0.0.1:{port}",
            "cert_dir": str(deployment.cert_dir),
            "database_url": url,
            "policy_file": str(deployment.policy_file),
            "log_level": "warning",
            "max_attachment_bytes": 4096 * MIB,
            "attachment_quota_bytes": 16384 * MIB,
        },
    )
    some = deployment.recipients[0]
    broker = BrokerProcess(
        config,
        port,
        work / f"broker-{backend}.log",
        ca=deployment.cert_dir / "ca.crt",
        cert=deployment.cert_dir / f"{some}.crt",
        key=deployment.cert_dir / f"{some}.key",
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@contextmanager
def _profiled(profile: Path | None, name: str, pids: dict[str, int]) -> Iterator[None]:
    """Sample each process with py-spy (GIL holder only: where its Python CPU goes) while the block runs."""
    spy = py_spy() if profile is not None else None
    if spy is None or profile is None:
        yield
        return
    profile.mkdir(parents=True, exist_ok=True)
    samplers = {who: Sampler(spy, pid, profile / f"{name}-{who}.collapsed", gil=True) for who, pid in pids.items()}
    try:
        yield
    finally:
        for who, sampler in samplers.items():
            sampler.stop()
            (profile / f"{name}-{who}.txt").write_text(summarise(profile / f"{name}-{who}.collapsed"))


def run_one(
    broker: BrokerProcess, deployment: Deployment, work: Path, backend: str, size: int, profile: Path | None = None
) -> Result:
    """Send one file of `size` bytes as an attachment, download it, and measure both."""
    sender, recipient = deployment.senders[0], deployment.recipients[0]
    source, received = work / "source.bin", work / "received.bin"
    _make_file(source, size)
    cp_s = _cp(source, work / "cp.bin", fsync=False)
    cp_fsync_s = _cp(source, work / "cp.bin", fsync=True)
    # Keystores (and the SDK's trust state in them) per database: each broker has its own audit log.
    keys = work / "keys" / backend
    with (
        AgencyClient.from_dir(broker.target, deployment.cert_dir, sender, keystore=keys / sender) as customs,
        AgencyClient.from_dir(broker.target, deployment.cert_dir, recipient, keystore=keys / recipient) as police,
    ):
        police.publish_key()
        sampler = PeakSampler(broker.pid, os.getpid())
        pids = {"broker": broker.pid, "client": os.getpid()}
        label = f"{backend}-{size // MIB}M"
        cpu0, t0 = broker.cpu_seconds(), time.perf_counter()
        with _profiled(profile, f"{label}-upload", pids):
            sent = customs.send([recipient], b"benchmark attachment", attachments=[source])
        upload_s, cpu1 = time.perf_counter() - t0, broker.cpu_seconds()
        message = next(m for m in police.deliveries(timeout=30) if m.message_id == sent.message_id)
        cpu2, t2 = broker.cpu_seconds(), time.perf_counter()
        with _profiled(profile, f"{label}-download", pids):
            message.attachments[0].save(received)
        download_s, cpu3 = time.perf_counter() - t2, broker.cpu_seconds()
        broker_growth, client_growth = sampler.stop()
        broker_base = sampler.base[0]
        police.ack(message)
        # The blob stays until the message expires (the benchmark policy allows ALERT only, not RECALL).
    identical = _sha256(received) == _sha256(source)
    received.unlink()
    source.unlink()
    mb = size / 1e6
    return Result(
        database=backend,
        size_mib=size / MIB,
        upload_mb_s=mb / upload_s,
        download_mb_s=mb / download_s,
        round_trip_mb_s=mb / (upload_s + download_s),
        cp_mb_s=mb / cp_s,
        cp_fsync_mb_s=mb / cp_fsync_s,
        broker_cpu_ms_per_mb_upload=1000 * (cpu1 - cpu0) / mb,
        broker_cpu_ms_per_mb_download=1000 * (cpu3 - cpu2) / mb,
        broker_rss_base_mib=broker_base / MIB,
        broker_rss_peak_growth_mib=broker_growth / MIB,
        client_rss_peak_growth_mib=client_growth / MIB,
        identical=identical,
    )


def _table(results: list[Result]) -> str:
    rows = [
        "| database | size | upload MB/s | download MB/s | cp MB/s (fsync) | broker CPU ms/MB up/down | "
        "broker RSS peak over base | client RSS peak growth | identical |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        size = f"{r.size_mib:.0f} MiB" if r.size_mib < 1024 else f"{r.size_mib / 1024:.0f} GiB"
        rows.append(
            f"| {r.database} | {size} | {r.upload_mb_s:.0f} | {r.download_mb_s:.0f} | {r.cp_mb_s:.0f} "
            f"({r.cp_fsync_mb_s:.0f}) | {r.broker_cpu_ms_per_mb_upload:.2f} / {r.broker_cpu_ms_per_mb_download:.2f} | "
            f"+{r.broker_rss_peak_growth_mib:.0f} MiB (base {r.broker_rss_base_mib:.0f}) | "
            f"+{r.client_rss_peak_growth_mib:.0f} MiB | {'yes' if r.identical else 'NO'} |"
        )
    return "\n".join(rows)


def main() -> None:
    """Run the benchmark and print a markdown table (and JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="1M,100M,2G", help="comma-separated sizes in K, M or G (MiB, GiB)")
    parser.add_argument("--db", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--quick", action="store_true", help="1 MiB and 100 MiB on SQLite only")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder on the disk to measure")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="sample broker and client with py-spy into this folder (profiles add overhead)",
    )
    args = parser.parse_args()
    sizes = ["1M", "100M"] if args.quick else args.sizes.split(",")
    backends = ["sqlite"] if args.quick else args.db.split(",")
    if "postgresql" in backends and not postgres_available():
        print("PostgreSQL is not reachable on 127.0.0.1:5432: skipping it", flush=True)
        backends.remove("postgresql")
    results: list[Result] = []
    work = Path(tempfile.mkdtemp(prefix="isb-bench-attach-", dir=args.work))
    try:
        deployment = build_deployment(work, senders=1, recipients=1)
        for backend in backends:
            if backend == "postgresql":
                with (
                    postgres_database("isb_bench_attachments") as url,
                    _broker(deployment, work, backend, url) as broker,
                ):
                    results += [run_one(broker, deployment, work, backend, parse_size(s), args.profile) for s in sizes]
            else:
                with _broker(deployment, work, backend, f"sqlite:///{work / 'broker.db'}") as broker:
                    results += [run_one(broker, deployment, work, backend, parse_size(s), args.profile) for s in sizes]
            for r in results[-len(sizes) :]:
                print(json.dumps(asdict(r)), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(_table(results))
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")


if __name__ == "__main__":
    main()
