"""Shared pieces of the PKI tests (a uniquely named module: pytest puts this directory on sys.path)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

TRUST_DOMAIN = "isb.test"

OpenSsl = Callable[..., subprocess.CompletedProcess[str]]


def run_openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the system `openssl` with arguments; the caller checks the return code."""
    return subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, check=False)
