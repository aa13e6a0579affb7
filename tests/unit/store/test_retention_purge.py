"""The retention purge on a real SQLite store: bounded runs, tombstones, one entry per run, dry run agrees."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from broker import retention as retention_module
from broker.api.v1 import envelope_pb2
from broker.audit import AuditLog
from broker.config import DEV_POLICY_FILE
from broker.pki import _files
from broker.pki.dev import ensure_dev_pki
from broker.pki.revocation import RevocationList
from broker.policy import Policy, RunningPolicy
from broker.policy.retention import Period, Retention
from broker.retention import Purge, PurgeReport, RetentionJob, plan
from broker.store import tables
from broker.store.db import create_engine
from broker.store.schema import upgrade_schema
from broker.store.writer import Writer

DAY_US = 86_400 * 1_000_000
DEV_POLICY = DEV_POLICY_FILE


@pytest.fixture
def engine(tmp_path: Path) -> sa.engine.Engine:
    engine = create_engine(f"sqlite:///{tmp_path / 'r.db'}")
    upgrade_schema(engine)
    return engine


def _store(engine: sa.engine.Engine, count: int, *, age_days: int, kind: int = envelope_pb2.ALERT) -> list[str]:
    """`count` messages accepted `age_days` ago, each with one pending delivery."""
    now = int(dt.datetime.now(dt.UTC).timestamp() * 1_000_000)
    ids = [str(uuid.uuid4()) for _ in range(count)]
    with engine.begin() as conn:
        start = conn.execute(sa.select(sa.func.coalesce(sa.func.max(tables.messages.c.seq), 0))).scalar_one()
        for i, message_id in enumerate(ids):
            conn.execute(
                tables.messages.insert().values(
                    message_id=message_id,
                    seq=start + i + 1,
                    sender="FR-CUSTOMS",
                    kind=kind,
                    priority=2,
                    tlp=envelope_pb2.TLP_GREEN,
                    references="",
                    accepted_us=now - age_days * DAY_US,
                    expires_us=None,
                    envelope=b"sealed bytes",
                    envelope_sha256=bytes(32),
                    sender_cert=bytes(32),
                    audit_index=0,
                )
            )
            conn.execute(
                tables.deliveries.insert().values(
                    message_id=message_id,
                    recipient="DE-BKA",
                    seq=start + i + 1,
                    priority=2,
                    state=1,
                    attempts=0,
                    updated_us=now,
                )
            )
    return ids


def _run(engine: sa.engine.Engine, retention: Retention, limit: int) -> list[PurgeReport]:
    async def go() -> list[PurgeReport]:
        with engine.begin() as conn:
            writer = Writer(engine, AuditLog.open(conn))
        writer.start()
        reports = []
        try:
            while True:
                report: PurgeReport = await writer.submit(Purge(retention, {}, None, "test", "admin", "digest", limit))
                reports.append(report)
                if not report.full:
                    return reports
        finally:
            await writer.stop()

    return asyncio.run(go())


def test_a_backlog_is_purged_in_bounded_runs_each_one_audit_entry(engine: sa.engine.Engine) -> None:
    """Six messages past a 30-day period, two per run: three runs that purge, three entries (an empty fourth run
    writes none), digests kept, queue entries dropped, the younger message kept."""
    old = _store(engine, 5, age_days=40)
    young = _store(engine, 1, age_days=10)
    kept = _store(engine, 1, age_days=40, kind=envelope_pb2.REQUEST)
    retention = Retention(periods={"default": Period(3, "y"), "envelopes": Period(30, "d")})
    with engine.connect() as conn:
        preview = plan(conn, retention, dt.datetime.now(dt.UTC), {})
    assert [(c.what, c.rule, c.count) for c in preview.counts] == [("envelopes", "retention.envelopes", 6)]
    reports = _run(engine, retention, limit=2)
    purged = [m for r in reports for m in r.message_ids]
    assert sorted(purged) == sorted([*old, *kept])  # REQUEST too: the envelopes period has no kind filter
    assert [len(r.message_ids) for r in reports] == [2, 2, 2, 0]
    with engine.connect() as conn:
        rows = {r.message_id: r for r in conn.execute(sa.select(tables.messages))}
        entries = [
            json.loads(bytes(r[0]))
            for r in conn.execute(
                sa.text("SELECT entry FROM audit_entries WHERE event = 'retention.purged' ORDER BY leaf_index")
            )
        ]
        states: dict[str, int] = dict(
            conn.execute(sa.select(tables.deliveries.c.message_id, tables.deliveries.c.state)).all()
        )
    assert all(rows[m].envelope == b"" and rows[m].purge_rule == "retention.envelopes" for m in purged)
    assert all(len(rows[m].envelope_sha256) == 32 for m in purged)
    assert rows[young[0]].envelope == b"sealed bytes"
    assert len(entries) == 3
    assert [e["fields"]["envelopes"] for e in entries] == [2, 2, 2]
    assert sorted(m for e in entries for m in e["fields"]["message_ids"]) == sorted(purged)
    assert {states[m] for m in purged} == {6}  # PURGED
    assert states[young[0]] == 1


def test_a_long_purge_reports_at_most_max_reported_ids(
    engine: sa.engine.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RetentionJob.run over many runs returns at most MAX_REPORTED_IDS ids (memory and an admin's reply stay
    bounded); every run still has its entry with all its ids, and the counts stay complete."""
    monkeypatch.setattr(retention_module, "MAX_REPORTED_IDS", 3)
    old = _store(engine, 7, age_days=40)
    pki = ensure_dev_pki(tmp_path / "pki", "isb.dev")
    ca = pki.ca_directory
    revocations = RevocationList(ca.crl_path, _files.load_certificate(ca.issuing_cert_path))
    policy = RunningPolicy(Policy.parse(DEV_POLICY.read_text() + '\n[retention]\nenvelopes = "30d"\n'))

    async def go() -> list[PurgeReport]:
        with engine.begin() as conn:
            writer = Writer(engine, AuditLog.open(conn))
        writer.start()
        try:
            job = RetentionJob(
                engine,
                writer,
                policy,
                revocations,
                lambda: None,
                lambda _dropped: None,
                node="test",
                interval_seconds=3600,
                limit=2,
            )
            return await job.run("test", "admin")
        finally:
            await writer.stop()

    reports = asyncio.run(go())
    assert [len(r.message_ids) for r in reports] == [2, 1, 0, 0]
    assert sum(c.count for r in reports for c in r.counts) == 7
    with engine.connect() as conn:
        entries = [
            json.loads(bytes(r[0]))
            for r in conn.execute(
                sa.text("SELECT entry FROM audit_entries WHERE event = 'retention.purged' ORDER BY leaf_index")
            )
        ]
    assert sorted(m for e in entries for m in e["fields"]["message_ids"]) == sorted(old)
