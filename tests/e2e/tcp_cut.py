"""A loopback TCP relay whose connections a test can cut, to drop a transfer halfway like a network would."""

from __future__ import annotations

import contextlib
import socket
import threading


class CuttableRelay:
    """Relays 127.0.0.1:`port` to `target`; `cut()` closes every open connection (new ones still work)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        self.cuts = 0
        self._cut_after: int | None = None  # bytes still to relay before cutting, once armed
        threading.Thread(target=self._accept, daemon=True, name="test-relay").start()

    @property
    def address(self) -> str:
        """host:port to connect to instead of the target."""
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(1 << 16):
                sink.sendall(data)
                self._count(len(data))
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)

    def _count(self, n: int) -> None:
        with self._lock:
            if self._cut_after is None:
                return
            self._cut_after -= n
            if self._cut_after > 0:
                return
            self._cut_after = None
        self.cut()

    def cut_after(self, n: int) -> None:
        """Cut every connection once `n` more bytes went through (either way), for a process not under test control."""
        with self._lock:
            self._cut_after = n

    def cut(self) -> None:
        """Drop every connection open now, as a failing network would."""
        with self._lock:
            sockets, self._open = self._open, []
            self.cuts += 1
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        """Stop relaying."""
        self._closed = True
        self._listener.close()
        self.cut()
