"""Server TLS credentials that reload from disk without a restart (DESIGN.md section 2).

`grpc.dynamic_ssl_server_credentials` asks the fetcher on every new handshake; the fetcher
answers None unless the certificate, key or trust bundle file changed, in which case new
connections get the new material. Existing connections keep theirs until the maximum connection
age closes them, which the server sets.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import grpc
import structlog

log = structlog.get_logger(__name__)


class ReloadingServerCredentials:
    """Mutual-TLS server credentials over three files, reloaded when any of them changes."""

    def __init__(self, cert: Path, key: Path, ca_bundle: Path) -> None:
        self._paths = (cert, key, ca_bundle)
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self.reloads = 0

    def _stat(self) -> tuple[tuple[int, int], ...]:
        return tuple((os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in self._paths)

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        cert, key, ca = (p.read_bytes() for p in self._paths)
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            try:
                stamp = self._stat()
                if stamp == self._stamp:
                    return None
                configuration = self._configuration()
            except (OSError, ValueError) as exc:
                log.exception("tls.reload_failed", error=str(exc))
                return None
            self._stamp = stamp
            self.reloads += 1
            log.info("tls.reloaded", certificate=str(self._paths[0]), trust_bundle=str(self._paths[2]))
            return configuration

    def credentials(self) -> grpc.ServerCredentials:
        """Credentials that require and verify a client certificate on every connection."""
        return grpc.dynamic_ssl_server_credentials(
            # grpc keeps the configuration in force when the callback returns None (the stubs say
            # it may not).
            self._configuration(),
            self._fetch,  # type: ignore[arg-type]
            require_client_authentication=True,
        )
