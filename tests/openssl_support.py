"""The system `openssl`, run by the tests that check our files against it (the `openssl` fixture)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

OpenSsl = Callable[..., subprocess.CompletedProcess[str]]
"""The type of the `openssl` fixture (tests/conftest.py)."""


def run_openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the system `openssl` with arguments; the caller checks the return code."""
    return subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, check=False)
