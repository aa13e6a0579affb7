"""Structured JSON logs (structlog): an event name plus fields, a request id and the caller.

Everything the broker prints is one JSON object per line on standard error:
- its own events (structlog), with context variables (request id, caller, rpc) merged in;
- records of libraries that use the standard `logging` module (Alembic's migration lines), as
  events named after their logger with the text in `message`;
- with `capture_native_stderr()` (which `isb serve` calls), the lines gRPC's C core writes to file
  descriptor 2 itself. grpc-python exposes no hook for a failed TLS handshake (it never reaches
  Python: no servicer, interceptor or callback runs), and C core logs the cause at INFO without
  the peer's address, so a `Handshake failed` line becomes a `tls.handshake_failed` event with the
  OpenSSL reason as `cause`; any other C-core line becomes `grpc.core`.

Nothing here ever receives payload bytes: the broker cannot read payloads, and envelope bytes are
never passed to a logger (only sizes and digests).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import sys
import threading
from typing import Any

import structlog
from structlog.typing import EventDict, Processor

__all__ = ["capture_native_stderr", "configure_logging", "native_line_event"]

# absl's prefix, as gRPC's C core writes it: "I1201 09:55:00.012724   29522 file.cc:2563] text".
_NATIVE_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ ([\w./-]+):(\d+)\] (.*)$")
_NATIVE_LEVELS = {"I": "info", "W": "warning", "E": "error", "F": "critical"}
_HANDSHAKE = re.compile(r"Handshake failed with (?:fatal )?error (\w+): (.*)$")
_OPENSSL_REASON = re.compile(r"error:[0-9a-fA-F]+:[^:]*:[^:]*:([A-Z0-9_]+)(?::\s*(.*))?$")


class _LineSink:
    """One `write` per line, under one lock, so lines from several threads never interleave."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.fd: int | None = None  # None: write to whatever sys.stderr is (pytest swaps it)

    def write(self, text: str) -> int:
        with self._lock:
            if self.fd is None:
                sys.stderr.write(text)
                sys.stderr.flush()
            else:
                os.write(self.fd, text.encode("utf-8", errors="replace"))
        return len(text)

    def flush(self) -> None:
        """Every write is already complete."""


_sink = _LineSink()


def _foreign_event(_: Any, __: str, event_dict: EventDict) -> EventDict:
    # A stdlib record: its logger names the event ("alembic.runtime.migration"), its text is data.
    record = event_dict.get("_record")
    if isinstance(record, logging.LogRecord):
        event_dict["message"] = event_dict.pop("event", "")
        event_dict["event"] = record.name
    return event_dict


def _processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]


_configured: list[str] = []


def configure_logging(level: str = "info") -> None:
    """JSON lines on stderr for structlog and standard-library loggers alike, at `level` and up."""
    if _configured == [level]:
        # Loggers cache their configuration on first use (and structlog's capture_logs edits the
        # processor list in place): configuring again with the same level would only detach them.
        return
    _configured[:] = [level]
    numeric = logging.getLevelName(level.upper())
    handler = logging.StreamHandler(_sink)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
            foreign_pre_chain=[_foreign_event, *_processors()],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    structlog.configure(
        processors=[*_processors(), structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(_sink),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )


def native_line_event(line: str) -> dict[str, Any]:
    """The JSON event for one line written to fd 2 by native code (gRPC's C core, or anything else)."""
    match = _NATIVE_LINE.match(line)
    if match is None:
        return {"event": "stderr", "level": "warning", "message": line}
    severity, source, number, text = match.groups()
    event: dict[str, Any] = {
        "event": "grpc.core",
        "level": _NATIVE_LEVELS[severity],
        "source": f"{source}:{number}",
        "message": text,
    }
    handshake = _HANDSHAKE.search(text)
    if handshake is not None:
        reason = _OPENSSL_REASON.search(handshake.group(2))
        event.update(
            event="tls.handshake_failed",
            level="warning",
            ssl_error=handshake.group(1),
            cause=reason.group(1) if reason else handshake.group(2),
            detail=(reason.group(2) or "") if reason else "",
        )
    return event


def capture_native_stderr() -> None:
    """Send what native code writes to fd 2 through a pipe and re-emit each line as a JSON event.

    Our own JSON lines go straight to the original stderr; a line that is already a JSON object
    (a library printing JSON) passes unchanged.
    """
    if _sink.fd is not None:
        return
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    _sink.fd = original

    def forward() -> None:
        with os.fdopen(read_end, "r", encoding="utf-8", errors="replace") as lines:
            for raw in lines:
                line = raw.rstrip("\n")
                if not line.strip():
                    continue
                if line.startswith("{"):
                    try:
                        json.loads(line)
                    except ValueError:
                        pass
                    else:
                        _sink.write(line + "\n")
                        continue
                event = native_line_event(line)
                event["timestamp"] = _now()
                _sink.write(json.dumps(event) + "\n")

    reader = threading.Thread(target=forward, name="isb-native-stderr", daemon=True)
    reader.start()

    def drain() -> None:
        # Point fd 2 back at the terminal: the pipe's last writer closes, the reader sees its end.
        os.dup2(original, 2)
        reader.join(timeout=2)

    atexit.register(drain)


def _now() -> str:
    stamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    return str(stamper(None, "", {})["timestamp"])
