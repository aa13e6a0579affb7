"""Reading a gRPC server stream with a timeout: a thread pumps the stream into a queue."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any, Final, Generic, TypeVar

T = TypeVar("T")

_END: Final = object()


class StreamReader(Generic[T]):
    """Reads a server stream on a thread so that the caller can wait for each message with a timeout."""

    def __init__(self, call: Iterator[T], name: str, maxsize: int = 1024) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
        threading.Thread(target=self._pump, args=(call,), daemon=True, name=name).start()

    def _pump(self, call: Iterator[T]) -> None:
        try:
            for item in call:
                self._queue.put(item)
        except Exception as exc:  # noqa: BLE001 - handed to the reading thread, which raises it
            self._queue.put(exc)
        self._queue.put(_END)

    def next(self, timeout: float | None) -> T | None:
        """The next message; None at the end of the stream or after `timeout` seconds of silence.

        An error of the stream (a `grpc.RpcError`) is raised here, in the reading thread.
        """
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _END:
            return None
        if isinstance(item, Exception):
            raise item
        result: T = item
        return result
