"""A call cancelled while its refusal is being audited (its deadline passed under load): the entry is still
written once, the refusal is counted as unanswered, and the cancellation reaches the call."""

from __future__ import annotations

import asyncio

import pytest

from broker.audit import AuditEvent, refusals
from broker.errors import InvalidRequest
from broker.metrics import REGISTRY


def _unanswered() -> float:
    return REGISTRY.get_sample_value("isb_refusals_unanswered_total") or 0.0


def test_a_refusal_whose_call_is_cancelled_is_written_once_and_counted_unanswered() -> None:
    """The record function is held until the call has been cancelled; the entry still lands, once."""
    written: list[AuditEvent] = []

    async def scenario() -> None:
        entered, release = asyncio.Event(), asyncio.Event()

        async def record(entry: AuditEvent) -> None:
            entered.set()
            await release.wait()
            written.append(entry)

        async def call() -> None:
            async with refusals.audited(record, "spiffe://isb.dev/agency/FR-CUSTOMS", "Send"):
                raise InvalidRequest("header.kind is not a kind")

        task = asyncio.ensure_future(call())
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert written == []  # the entry is still on its way: the cancellation did not stop it
        release.set()
        for _ in range(10):
            await asyncio.sleep(0)

    before = _unanswered()
    asyncio.run(scenario())
    [entry] = written
    assert (entry.event, entry.fields["rpc"]) == ("request.rejected", "Send")
    assert "header.kind is not a kind" in str(entry.fields["reason"])
    assert _unanswered() == before + 1


def test_a_refusal_answered_normally_is_not_counted_unanswered() -> None:
    """Without a cancellation the refusal is re-raised after its one entry, and nothing is counted apart."""
    written: list[AuditEvent] = []

    async def record(entry: AuditEvent) -> None:
        written.append(entry)

    async def call() -> None:
        async with refusals.audited(record, "spiffe://isb.dev/agency/FR-CUSTOMS", "Send"):
            raise InvalidRequest("too big")

    before = _unanswered()
    with pytest.raises(InvalidRequest):
        asyncio.run(call())
    assert len(written) == 1
    assert _unanswered() == before
