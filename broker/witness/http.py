"""The C2SP tlog-witness HTTP binding over mutual TLS: `POST <prefix>/add-checkpoint`.

Standard library only (`http.server`, `ssl`): the interface is one POST, and a framework would add
nothing the spec needs. The TLS handshake runs in the request's thread, so a slow client cannot
block others. The witness presents a `witness`-role certificate of the deployment CA and requires a
client certificate of the same CA; it authorises nothing by certificate: the checkpoint signature
is the authentication C2SP defines.
"""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import structlog

from broker.witness.core import MAX_BODY_BYTES, Witness

log = structlog.get_logger("isb.witness")


def server_context(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    """TLS 1.2+ server context requiring a client certificate of `ca`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.load_verify_locations(ca)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


class _Handler(BaseHTTPRequestHandler):
    server: WitnessHTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive, as the spec recommends

    def do_POST(self) -> None:
        if self.path.rstrip("/") != f"{self.server.prefix}/add-checkpoint":
            self._answer(404, b"no such endpoint\n", "text/plain; charset=utf-8")
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._answer(411, b"Content-Length required\n", "text/plain; charset=utf-8")
            return
        if not 0 <= length <= MAX_BODY_BYTES:
            self._answer(413, b"request body is larger than 1 MiB\n", "text/plain; charset=utf-8")
            return
        reply = self.server.witness.add_checkpoint(self.rfile.read(length))
        self._answer(reply.status, reply.body, reply.content_type)

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("witness.http", request=self.requestline[:200], status=args[1] if len(args) > 1 else None)


class WitnessHTTPServer(ThreadingHTTPServer):
    """The witness's HTTPS server; `serve_forever` in a thread, `shutdown` to stop."""

    daemon_threads = True

    def __init__(self, listen: tuple[str, int], witness: Witness, context: ssl.SSLContext, prefix: str = "") -> None:
        super().__init__(listen, _Handler)
        self.witness = witness
        self.prefix = prefix.rstrip("/")
        self.socket = context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A failed TLS handshake or a dropped connection: log one line, no traceback."""
        log.info("witness.connection_failed", client=str(client_address[0]))

    def start(self) -> threading.Thread:
        """Serve in a daemon thread."""
        thread = threading.Thread(target=self.serve_forever, name="isb-witness", daemon=True)
        thread.start()
        return thread
