"""Fixtures of the console's unit tests (their helpers are in console_support.py)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.unit.clients.console.console_support import Log


@pytest.fixture(scope="session")
def log() -> Log:
    return Log(Ed25519PrivateKey.generate())
