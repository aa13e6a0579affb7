"""The `[retention]` section of the policy: periods, rules, which one applies, and clear refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.config import DEV_POLICY_FILE
from broker.policy import Policy, PolicyError
from broker.policy.retention import BUILTIN_PERIOD, BUILTIN_RULE, Period, PeriodError

EXAMPLE = DEV_POLICY_FILE.read_text()

RETENTION = """
[retention]
default = "3y"
receipts = "5y"
revoked_key_bundles = "1y"

[[retention.rules]]
name = "red-alerts"
kinds = ["ALERT"]
handling = ["AMBER+STRICT..RED"]
envelopes = "6mo"
attachments = "30d"

[[retention.rules]]
name = "all-recalls"
kinds = ["RECALL"]
envelopes = "1w"
"""


def _policy(section: str) -> Policy:
    return Policy.parse(EXAMPLE + section, source="policy.toml")


def _errors(section: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        _policy(section)
    return caught.value.errors


def test_first_matching_rule_then_table_key_then_default_decides() -> None:
    """A rule that matches and sets the period wins; else the table's key for it; else its default."""
    retention = _policy(RETENTION).retention
    assert retention.period_for("envelopes", "ALERT", "RED") == (Period(6, "mo"), "red-alerts")
    assert retention.period_for("envelopes", "ALERT", "AMBER") == (Period(3, "y"), "retention.default")
    assert retention.period_for("receipts", "ALERT", "RED") == (Period(5, "y"), "retention.receipts")
    assert retention.period_for("envelopes", "RECALL", None) == (Period(1, "w"), "all-recalls")
    assert retention.period_for("revoked_key_bundles") == (Period(1, "y"), "retention.revoked_key_bundles")


def test_a_policy_without_retention_keeps_everything_three_years_not_forever() -> None:
    """No `[retention]` table: the documented built-in period of 3 years applies to everything."""
    retention = _policy("").retention
    for what in ("envelopes", "attachments", "receipts", "revoked_key_bundles"):
        assert retention.period_for(what, "ALERT", "GREEN") == (BUILTIN_PERIOD, BUILTIN_RULE)
    assert Period(3, "y") == BUILTIN_PERIOD


def test_a_bad_period_is_refused_naming_its_key_and_line() -> None:
    """`envelopes = "3 years"` is an error that names the rule, the key and the line."""
    errors = _errors('[retention]\n[[retention.rules]]\nname = "r"\nenvelopes = "3 years"\n')
    assert len(errors) == 1
    line = EXAMPLE.count("\n") + 4
    assert errors[0].startswith(f"policy.toml:{line}: retention rule 'r': 'envelopes': '3 years' is not a period")


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ('[retention]\ndefalt = "3y"\n', "unknown key 'defalt' (did you mean 'default'?)"),
        ("[retention]\ndefault = 3\n", "'default' must be a string, not an integer"),
        ('[retention]\ndefault = "200y"\n', "longer than 100 years"),
        (
            '[retention]\n[[retention.rules]]\nname = "r"\nkinds = ["ALERTS"]\nenvelopes = "1y"\n',
            "unknown kind 'ALERTS'",
        ),
        (
            '[retention]\n[[retention.rules]]\nname = "r"\nhandling = ["WHITE"]\nenvelopes = "1y"\n',
            "TLP 2.0 renamed WHITE to CLEAR",
        ),
        ('[retention]\n[[retention.rules]]\nname = "r"\nkinds = ["ALERT"]\n', "sets no period"),
        (
            '[retention]\n[[retention.rules]]\nname = "r"\nrevoked_key_bundles = "1y"\n',
            "unknown key 'revoked_key_bundles'",
        ),
    ],
)
def test_retention_mistakes_are_refused_with_a_clear_message(section: str, expected: str) -> None:
    """Each mistake in the section is one error line saying what is wrong."""
    assert any(expected in error for error in _errors(section)), _errors(section)


def test_calendar_months_count_as_a_lawyer_counts() -> None:
    """One month before 31 March is the last day of February; a year before 29 February is 28 February."""
    assert Period(1, "mo").cutoff(datetime(2026, 3, 31, 12, tzinfo=UTC)) == datetime(2026, 2, 28, 12, tzinfo=UTC)
    assert Period(1, "y").cutoff(datetime(2028, 2, 29, tzinfo=UTC)) == datetime(2027, 2, 28, tzinfo=UTC)
    assert Period(90, "s").cutoff(datetime(2026, 1, 1, tzinfo=UTC)) == datetime(2025, 12, 31, 23, 58, 30, tzinfo=UTC)


_periods = st.one_of(
    st.text(max_size=12),
    st.builds(
        lambda n, unit: f"{n}{unit}",
        st.integers(-5, 10**7),
        st.sampled_from(["s", "min", "h", "d", "w", "mo", "y", "m", "Y", " d", ""]),
    ),
)


@settings(max_examples=300, deadline=None)
@given(_periods)
def test_period_parser_accepts_exactly_the_grammar(text: str) -> None:
    """Any text is a Period that prints back as itself and lies in the past, or a PeriodError."""
    try:
        period = Period.parse(text)
    except PeriodError as exc:
        refusal = str(exc)
    else:
        refusal = ""
    if refusal:
        assert "is not a period" in refusal or "longer than 100 years" in refusal
        return
    assert str(period) == text
    now = datetime(2026, 6, 15, tzinfo=UTC)
    assert now - timedelta(seconds=period.longest_seconds) <= period.cutoff(now) < now


_values: Any = st.one_of(
    st.text(max_size=8),
    st.integers(-3, 3),
    st.booleans(),
    st.sampled_from(["1y", "6mo", "30d", "ALERT", "RED", "CLEAR..AMBER"]),
    st.lists(st.sampled_from(["ALERT", "RED", "GREEN", "X", "1y"]), max_size=3),
)
_keys = st.sampled_from(
    ["default", "envelopes", "attachments", "receipts", "revoked_key_bundles", "name", "kinds", "handling", "other"]
)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    text = str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=4), st.lists(st.dictionaries(_keys, _values, max_size=5), max_size=3))
def test_any_retention_section_is_a_retention_or_a_policy_error(
    table: dict[str, Any], rules: list[dict[str, Any]]
) -> None:
    """Any `[retention]` table and rules parse into a Retention or are refused with lines naming the file."""
    lines = ["[retention]", *(f"{k} = {_toml(v)}" for k, v in table.items())]
    for entry in rules:
        lines += ["[[retention.rules]]", *(f"{k} = {_toml(v)}" for k, v in entry.items())]
    errors: list[str] = []
    try:
        retention = _policy("\n" + "\n".join(lines) + "\n").retention
    except PolicyError as exc:
        errors = exc.errors or ["(no error lines)"]
    if errors:
        assert all(line.startswith("policy.toml:") for line in errors), errors
        return
    for what in ("envelopes", "attachments", "receipts"):
        period, rule = retention.period_for(what, "ALERT", "RED")
        assert rule
        assert period.longest_seconds > 0
