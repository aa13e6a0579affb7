"""Reads: read-only queries on pooled connections, off the event loop.

The writer owns every change (`broker.store.writer`); everything that only looks (the exchange's
checks, a delivery's backlog, the directory, the audit service, the watchlist desk) reads through one
`Reader`, so a lost store answers every read the same way: `StorageUnavailable` or `StorageFull`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from broker.store.db import storage_fault

T = TypeVar("T")


class Reader:
    """Runs read-only queries of one engine on its connection pool, in the default executor."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` on a pooled connection off the event loop; a store fault raises its `BrokerError`."""

        def run() -> T:
            try:
                with self._engine.connect() as conn:
                    return fn(conn)
            except sa.exc.SQLAlchemyError as exc:
                fault = storage_fault(exc)
                if fault is None:
                    raise
                raise fault from exc

        return await asyncio.get_running_loop().run_in_executor(None, run)


__all__ = ["Reader"]
