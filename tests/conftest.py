"""Test-session set-up shared by unit and e2e tests."""

from __future__ import annotations

import pytest

from broker.logs import configure_logging
from tests.openssl_support import OpenSsl, run_openssl

# The brokers that e2e tests run in-process log like a deployed broker (JSON), warnings and up, so
# CI output stays readable; tests that check log content run the broker as a process of its own.
configure_logging("warning")


@pytest.fixture
def openssl() -> OpenSsl:
    """Run the system `openssl` with arguments; returns the completed process (no check)."""
    return run_openssl
