"""Shared fixtures of the policy tests: the table policy, parsed once per session, and the examples."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.policy import Policy

_HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def table_policy() -> Policy:
    """The policy of policy_table.toml."""
    return Policy.parse((_HERE / "policy_table.toml").read_text(encoding="utf-8"), source="policy_table.toml")


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    """The repository's examples/ directory."""
    return _HERE.parents[2] / "examples"
