"""Benchmark: audit log appends and proofs over a log of a million entries in SQLite.

Builds the log through `AuditLog.append` (the broker's hot path, in batches of `--batch` entries per
transaction), then times inclusion proofs (random entry, random tree size) and consistency proofs
(random pair of sizes), each read from stored subtree hashes in one query, and checks a sample with the
RFC 9162 verifier. Prints a table and a JSON line.

    .venv/bin/python bench/bench_proofs.py [--entries 1000000] [--queries 1000] [--db PATH]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlmodel import SQLModel

from broker.audit import AUDIT_TABLES, AuditEvent, AuditLog
from broker.protocol import _merkle

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_engine(path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # the broker's SQLite mode (DESIGN.md section 9)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def build(engine: Engine, entries: int, batch: int) -> tuple[AuditLog, float]:
    SQLModel.metadata.create_all(engine, tables=list(AUDIT_TABLES))
    with engine.connect() as conn:
        log = AuditLog.open(conn)
    started = time.perf_counter()
    while log.size < entries:
        count = min(batch, entries - log.size)
        base = log.size
        events = [
            AuditEvent(
                event="delivery.delivered",
                actor="spiffe://isb.dev/broker/node-1",
                time=T0 + timedelta(microseconds=base + i),
                message_id=f"0190f5e2-0000-7000-8000-{base + i:012x}",
                agency="DE-BKA",
                fields={"recipient": "DE-BKA", "envelope_sha256": f"{base + i:064x}"},
            )
            for i in range(count)
        ]
        with engine.begin() as conn:
            log.append(conn, events)
        log.commit()
        if log.size % 100_000 < batch:
            print(f"  built {log.size:>9,} entries", flush=True)
    return log, time.perf_counter() - started


def timed(samples: int, run: Callable[[], object]) -> list[float]:
    out = []
    for _ in range(samples):
        started = time.perf_counter()
        run()
        out.append((time.perf_counter() - started) * 1000)
    return out


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
        "max_ms": round(ordered[-1], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=5000, help="entries per transaction while building")
    parser.add_argument("--db", type=Path, help="SQLite file to build in (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    with tempfile.TemporaryDirectory() as scratch:
        path = args.db or Path(scratch) / "audit.db"
        engine = make_engine(path)
        with engine.connect() as conn:
            SQLModel.metadata.create_all(engine, tables=list(AUDIT_TABLES))
            existing = AuditLog.open(conn).size
        build_seconds = 0.0
        if existing < args.entries:
            print(f"building {args.entries:,} entries in {path} ...", flush=True)
            log, build_seconds = build(engine, args.entries, args.batch)
            appended = args.entries - existing
        else:
            appended = 0
        started = time.perf_counter()
        with engine.connect() as conn:
            log = AuditLog.open(conn)
        open_ms = (time.perf_counter() - started) * 1000
        size = log.size

        with engine.connect() as conn:
            # Exact roots of the sizes we sample, computed from stored nodes (not timed).
            def root(n: int) -> bytes:
                reader = _subtree_reader(conn, log, n)
                return _merkle.fold([reader(s, e) for s, e in _merkle.perfect_ranges(0, n)])

            inclusion_cases = []
            for _ in range(args.queries):
                tree_size = rng.randint(1, size)
                inclusion_cases.append((rng.randrange(tree_size), tree_size))
            consistency_cases = []
            for _ in range(args.queries):
                second = rng.randint(2, size)
                consistency_cases.append((rng.randint(1, second - 1), second))

            inclusion_iter = iter(inclusion_cases)
            consistency_iter = iter(consistency_cases)
            inclusion = timed(args.queries, lambda: log.inclusion_proof(conn, *next(inclusion_iter)))
            consistency = timed(args.queries, lambda: log.consistency_proof(conn, *next(consistency_iter)))

            # Check a sample with the RFC verifier so that fast does not mean wrong.
            for index, tree_size in inclusion_cases[:50]:
                leaf = log.entry(conn, index).leaf_hash
                proof = log.inclusion_proof(conn, index, tree_size)
                _merkle.verify_inclusion(leaf, index, tree_size, proof, root(tree_size))
            for first, second in consistency_cases[:50]:
                proof = log.consistency_proof(conn, first, second)
                _merkle.verify_consistency(first, second, root(first), root(second), proof)
        engine.dispose()

    result = {
        "entries": size,
        "append_entries_per_second": round(appended / build_seconds) if build_seconds else None,
        "open_ms": round(open_ms, 3),
        "queries": args.queries,
        "inclusion": summary(inclusion),
        "consistency": summary(consistency),
    }
    print()
    print(f"{'audit log of ' + format(size, ',') + ' entries (SQLite, WAL)':<44}{'median':>10}{'p99':>10}{'max':>10}")
    for name in ("inclusion", "consistency"):
        row = result[name]
        assert isinstance(row, dict)
        print(f"{name + ' proof (ms)':<44}{row['median_ms']:>10}{row['p99_ms']:>10}{row['max_ms']:>10}")
    if build_seconds:
        print(f"append throughput: {result['append_entries_per_second']:,} entries/s (batches of {args.batch})")
    print(f"open (load frontier): {open_ms:.2f} ms")
    print(json.dumps(result))


def _subtree_reader(conn: Any, log: AuditLog, size: int) -> _merkle.SubtreeReader:
    """Read single perfect subtrees through the log's proof machinery (a one-element plan)."""

    def read(start: int, end: int) -> bytes:
        return log._materialise(conn, [[(start, end)]], size)[0]  # a benchmark check of stored nodes

    return read


if __name__ == "__main__":
    main()
