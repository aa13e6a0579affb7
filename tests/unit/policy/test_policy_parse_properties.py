"""Hypothesis: the policy file parser answers any document with a Policy or a PolicyError naming the file."""

from __future__ import annotations

import tomllib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.config import DEV_POLICY_FILE
from broker.policy import Policy, PolicyError

EXAMPLE = DEV_POLICY_FILE.read_text()
SOURCE = "proposed.toml"

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.text(max_size=20),
    st.sampled_from(["FR-CUSTOMS", "DE-BKA", "*", "ALERT", "GREEN", "RED", "police", "FR"]),
)
_values: Any = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12,
)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value if v is not None and not isinstance(v, dict)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml(k)} = {_toml(v)}" for k, v in value.items() if v is not None) + "}"
    return '""'


def _parses_or_refuses(text: str) -> None:
    errors: list[str] = []
    try:
        Policy.parse(text, source=SOURCE)
    except PolicyError as exc:
        errors = exc.errors or ["(no error lines)"]
    assert all(SOURCE in line for line in errors), errors


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_any_text_is_a_policy_or_a_policy_error(text: str) -> None:
    """Arbitrary text (TOML or not) never raises anything but PolicyError, whose lines name the file."""
    _parses_or_refuses(text)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["agencies", "groups", "rules"]), st.integers(0, 2), st.text(max_size=12), _values)
def test_one_changed_field_of_the_dev_policy_is_a_policy_or_a_policy_error(
    table: str,
    position: int,
    key: str,
    value: Any,
) -> None:
    """The dev policy with one field of one entry replaced by any TOML value parses or is refused cleanly."""
    document = tomllib.loads(EXAMPLE)
    entries = document.get(table, [])
    if not entries or value is None:
        return
    entries[position % len(entries)][key or "id"] = value
    lines = [f"version = {_toml(document.get('version', 1))}"]
    for name in ("agencies", "groups", "rules"):
        for entry in document.get(name, []):
            lines.append(f"[[{name}]]")
            lines += [f"{_toml(k)} = {_toml(v)}" for k, v in entry.items() if v is not None]
    _parses_or_refuses("\n".join(lines) + "\n")
