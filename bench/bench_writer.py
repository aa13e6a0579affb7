"""The writer's commit latency alone, on a real SQLite file: open-loop operations at a fixed rate,
each staging three audit entries with about 2 KB of fields (about what one message writes), timed
from submit to its commit's answer. No network, no cryptography: what the store adds to a message.

    .venv/bin/python -m bench.bench_writer [--rate 500] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.workload import percentile
from broker.audit import AuditEvent, AuditLog
from broker.store.db import create_engine
from broker.store.schema import upgrade_schema
from broker.store.writer import Batch, Writer

_PADDING = "ab" * 330  # 660 characters per entry, about 2 KB per operation


@dataclass
class ThreeEntries:
    n: int

    def stage(self, batch: Batch) -> int:
        for kind in ("envelope.accepted", "delivery.queued", "delivery.acknowledged"):
            index = batch.audit(
                AuditEvent(kind, "bench", batch.now, message_id=f"m-{self.n}", fields={"padding": _PADDING})
            )
        return index


async def _run(path: Path, rate: float, seconds: float) -> list[float]:
    engine = create_engine(f"sqlite:///{path}")
    upgrade_schema(engine)
    with engine.begin() as conn:
        writer = Writer(engine, AuditLog.open(conn))
    writer.start()
    latencies: list[float] = []

    async def one(n: int, due: float) -> None:
        await writer.submit(ThreeEntries(n))
        latencies.append((time.monotonic() - due) * 1000)

    start = time.monotonic()
    tasks = []
    for n in range(int(rate * seconds)):
        due = start + n / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(n, due)))
    await asyncio.gather(*tasks)
    await writer.stop()
    engine.dispose()
    return sorted(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_writer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    gc.freeze()
    with tempfile.TemporaryDirectory(prefix="isb-writer-") as tmp:
        lat = asyncio.run(_run(Path(tmp) / "w.db", args.rate, args.seconds))
    print(
        f"{args.rate:.0f}/s for {args.seconds:.0f} s: commit latency p50 {percentile(lat, 50):.2f} ms, "
        f"p99 {percentile(lat, 99):.2f} ms, p99.9 {percentile(lat, 99.9):.2f} ms, max {lat[-1]:.2f} ms "
        f"({len(lat)} operations, {dt.datetime.now(dt.UTC):%H:%M} UTC)"
    )


if __name__ == "__main__":
    main()
