"""The health file: the broker's gRPC health status on disk, for a container health check.

A check over the gRPC port would need a client certificate of the deployment (the port speaks
mutual TLS only), and handing one to the broker's container for that would give it a credential
it has no other use for. Instead the broker rewrites a small JSON file every few seconds with what
its health service says; the check (`python -m clients.healthcheck`) reads it, and a file older
than a few intervals means a broker that is stuck or gone.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from broker.files import write_atomically

__all__ = ["HEALTH_FILE_INTERVAL_SECONDS", "MAX_AGE_SECONDS", "read_health_file", "write_health_file"]

HEALTH_FILE_INTERVAL_SECONDS = 5.0
MAX_AGE_SECONDS = 4 * HEALTH_FILE_INTERVAL_SECONDS


def write_health_file(path: Path, document: dict[str, Any]) -> None:
    """Replace `path` atomically with `document` (a reader never sees half a file)."""
    write_atomically(path, json.dumps(document).encode())


def read_health_file(path: Path, now: float | None = None) -> str:
    """`SERVING` if the file says so and is fresh; otherwise raise `ValueError` saying why not."""
    try:
        document = json.loads(path.read_text())
        status, updated = str(document["status"]), float(document["updated"])
    except FileNotFoundError as exc:
        raise ValueError(f"no health file {path}: the broker has not started (or health_file differs)") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"health file {path} is unreadable: {exc}") from exc
    age = (time.time() if now is None else now) - updated
    if age > MAX_AGE_SECONDS:
        raise ValueError(f"health file {path} is {age:.0f} s old: the broker is stuck or stopped")
    if status != "SERVING":
        raise ValueError(f"the broker reports {status}")
    return status
