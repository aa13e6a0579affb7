"""`isb console`: the auditor's web console over the verifiable audit log (issue 18).

It runs on the auditor's machine, reads the log from the broker over gRPC with the auditor's own
certificate (`clients.auditor.AuditorClient`) or from an export file, verifies it (`snapshot.py`),
and serves read-only pages on 127.0.0.1 behind a random access token (`access.py`). Message pages
carry their inclusion proofs, which the browser re-checks with WebCrypto (`static/verify.js`).
"""

from clients.console.server import ConsoleServer
from clients.console.snapshot import AuditSnapshot, load_snapshot
from clients.console.sources import ExportSource, LiveSource

__all__ = ["AuditSnapshot", "ConsoleServer", "ExportSource", "LiveSource", "load_snapshot"]
