"""Fixtures of the PKI tests: CA directories in tmp_path (the `openssl` runner is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.pki.store import CaDirectory

TRUST_DOMAIN = "isb.test"


@pytest.fixture
def ca(tmp_path: Path) -> CaDirectory:
    """A fresh CA whose root signs leaves directly."""
    return CaDirectory.init(tmp_path / "ca", TRUST_DOMAIN)


@pytest.fixture
def intermediate_ca(tmp_path: Path) -> CaDirectory:
    """A fresh CA whose intermediate signs leaves and the CRL."""
    return CaDirectory.init(tmp_path / "ca-int", TRUST_DOMAIN, intermediate=True)
