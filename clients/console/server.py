"""Serving the console on 127.0.0.1 only, with uvicorn, behind its access token."""

from __future__ import annotations

import secrets
import socket
import threading
import time

import uvicorn

from clients.console.app import create_app
from clients.console.sources import AuditSource

__all__ = ["ConsoleServer"]

LOOPBACK = "127.0.0.1"


class ConsoleServer:
    """The console's HTTP server: bound to 127.0.0.1:`port` (0: any free port) with a fresh random token."""

    def __init__(self, source: AuditSource, *, port: int = 0, token: str | None = None) -> None:
        """Bind now (so the port is known and taken), serve on `run` or `start`."""
        # The socket is bound here, to the loopback address only; no option binds anything else.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((LOOPBACK, port))
        self._socket.listen(64)
        self.port: int = self._socket.getsockname()[1]
        self.token = token or secrets.token_urlsafe(32)
        app = create_app(source, token=self.token, port=self.port)
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", server_header=False, proxy_headers=False
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def base(self) -> str:
        """The console's origin, without the token."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        """The URL to open: it carries the access token."""
        return f"{self.base}/?token={self.token}"

    def run(self) -> None:
        """Serve until interrupted (Ctrl-C)."""
        self._server.run(sockets=[self._socket])

    def start(self, timeout: float = 10.0) -> None:
        """Serve on a background thread; return once it accepts connections."""
        self._thread = threading.Thread(target=self.run, name="isb-console", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the console server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop a server started with `start`."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._socket.close()
