"""Fixtures of the PKI tests: CA directories in tmp_path and an `openssl` runner."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.pki.store import CaDirectory

TRUST_DOMAIN = "isb.test"
OpenSsl = Callable[..., subprocess.CompletedProcess[str]]  # the `openssl` fixture


def run_openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the system `openssl` with arguments; the caller checks the return code."""
    return subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, check=False)


@pytest.fixture
def openssl() -> OpenSsl:
    """Run the system `openssl` with arguments; returns the completed process (no check)."""
    return run_openssl


@pytest.fixture
def ca(tmp_path: Path) -> CaDirectory:
    """A fresh CA whose root signs leaves directly."""
    return CaDirectory.init(tmp_path / "ca", TRUST_DOMAIN)


@pytest.fixture
def intermediate_ca(tmp_path: Path) -> CaDirectory:
    """A fresh CA whose intermediate signs leaves and the CRL."""
    return CaDirectory.init(tmp_path / "ca-int", TRUST_DOMAIN, intermediate=True)
