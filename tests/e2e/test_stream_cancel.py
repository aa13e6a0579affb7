"""A server stream cancelled by its client while the broker writes it ends cleanly in the broker.

The broker used to hand each streaming handler to grpcio as an async generator; a call cancelled
while grpcio wrote a response left that generator suspended, and it was finalised later in another
task and context, where its refusal scope could not be reset: every such stream logged an
`rpc.failed` traceback and asyncio's "Task exception was never retrieved" (seen in the garbage
test's PostgreSQL runs, where 1 s deadlines cut long exports).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import grpc
import pytest

from broker.api.v1 import audit_pb2, audit_pb2_grpc
from broker.audit import AuditEvent
from broker.pki.dev import DevPki
from broker.store.writer import RecordEvent
from tests.e2e.broker_support import Database, RunningBroker

# A log long enough that the broker is still streaming when the client cancels after the first
# entry; over a few rounds, some cancellations land while grpcio writes a response (the case that
# failed), others while the handler reads the next window.
FILLER = 600
ROUNDS = 5


async def _fill(broker: RunningBroker) -> None:
    assert broker.broker is not None
    writer = broker.broker.writer
    now = dt.datetime.now(dt.UTC)
    event = AuditEvent(event="test.filler", actor="test", time=now, fields={"pad": "x" * 400})
    await asyncio.gather(*(writer.submit(RecordEvent(event)) for _ in range(FILLER)))
    await broker.broker.sign_checkpoint()  # an export runs to the latest checkpoint


def test_export_cancelled_mid_stream_logs_no_error(
    broker: RunningBroker, pki: DevPki, database: Database, capfd: pytest.CaptureFixture[str]
) -> None:
    broker.call(_fill(broker))
    cert, key = pki.auditor
    credentials = grpc.ssl_channel_credentials(pki.ca_cert.read_bytes(), key.read_bytes(), cert.read_bytes())
    with grpc.secure_channel(broker.target, credentials) as channel:
        stub = audit_pb2_grpc.AuditServiceStub(channel)
        for _ in range(ROUNDS):
            call = stub.Export(audit_pb2.ExportRequest(), timeout=60)
            assert next(call).HasField("entry")
            call.cancel()  # while the broker streams the rest
            with pytest.raises(grpc.RpcError) as ended:
                for _ in call:
                    pass
            assert ended.value.code() is grpc.StatusCode.CANCELLED
        # A few calls later the cancelled streams have long been finalised, wherever that happens.
        for _ in range(5):
            time.sleep(0.2)
            assert database.scalar("SELECT count(*) FROM audit_entries") > FILLER
    logged = capfd.readouterr()
    assert "rpc.failed" not in logged.err + logged.out
    assert "never retrieved" not in logged.err + logged.out
