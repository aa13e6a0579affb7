"""Fixtures of the protocol tests: one throwaway CA per session."""

from __future__ import annotations

import pytest

from tests.unit.protocol.protocol_testpki import Pki, make_ca


@pytest.fixture(scope="session")
def pki() -> Pki:
    """The session's test CA, with agencies created on demand."""
    return Pki(*make_ca())


@pytest.fixture(scope="session")
def other_pki() -> Pki:
    """A second, unrelated CA: its certificates must not be accepted by `pki`'s trust roots."""
    return Pki(*make_ca("Rogue CA"))
