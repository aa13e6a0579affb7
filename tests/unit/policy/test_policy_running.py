"""The running policy: reloads a changed file, keeps the old policy when the new one is invalid."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from broker.errors import ConfigurationError
from broker.policy import Policy, PolicyError, RunningPolicy

AGENCIES = """\
[[agencies]]
id = "FR-CUSTOMS"
country = "FR"
kind = "customs"
[[agencies]]
id = "DE-BKA"
country = "DE"
kind = "police"
"""

ALLOW_ALERTS = (
    AGENCIES
    + """
[[rules]]
name = "alerts"
senders = ["FR-CUSTOMS"]
kinds = ["ALERT"]
handling = ["AMBER"]
recipients = ["DE-BKA"]
"""
)

INVALID = AGENCIES + '\n[[rules]]\nname = "alerts"\nsenders = ["FR-CUSTOM"]\n'

WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def write(path: Path, text: str, tick: int) -> None:
    """Write `text` and give the file a distinct mtime, as a later edit would have."""
    path.write_text(text, encoding="utf-8")
    stamp = 1_700_000_000_000_000_000 + tick * 1_000_000_000
    os.utime(path, ns=(stamp, stamp))


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    """A policy file with no rules (everything denied)."""
    path = tmp_path / "policy.toml"
    write(path, AGENCIES, 0)
    return path


def allows_alert(running: RunningPolicy) -> bool:
    """Whether the running policy lets FR-CUSTOMS send an AMBER alert to DE-BKA."""
    return running.current.decide_send("FR-CUSTOMS", "ALERT", "AMBER", ["DE-BKA"]).allowed


def test_valid_change_takes_effect_on_next_decision(policy_file: Path) -> None:
    """A valid edit is picked up without restart and reported as a change with both digests."""
    running = RunningPolicy.load(policy_file, clock=lambda: WHEN)
    old_digest = running.current.digest
    assert not allows_alert(running)
    write(policy_file, ALLOW_ALERTS, 1)
    change = running.reload_if_changed()
    assert change is not None
    assert (change.actor, change.time, change.old_digest) == (f"file:{policy_file}", WHEN, old_digest)
    assert change.new_digest == running.current.digest != old_digest
    assert allows_alert(running)


def test_invalid_file_keeps_the_old_policy_and_logs_the_lines(policy_file: Path) -> None:
    """An edit that does not validate is refused, logged with its line, and changes nothing."""
    running = RunningPolicy.load(policy_file)
    write(policy_file, ALLOW_ALERTS, 1)
    running.reload_if_changed()
    before = running.current
    write(policy_file, INVALID, 2)
    with capture_logs() as logs:
        assert running.reload_if_changed() is None
    assert running.current is before
    assert allows_alert(running)
    (event,) = logs
    assert event["event"] == "policy.reload_rejected"
    assert event["log_level"] == "error"
    assert event["errors"] == [
        f"{policy_file}:10: rule 'alerts': missing 'kinds'",
        f"{policy_file}:10: rule 'alerts': missing 'handling'",
        f"{policy_file}:10: rule 'alerts': missing 'recipients'",
        f"{policy_file}:12: rule 'alerts': 'senders': unknown agency 'FR-CUSTOM' (did you mean 'FR-CUSTOMS'?)",
    ]


def test_invalid_file_is_logged_once_not_on_every_check(policy_file: Path) -> None:
    """Checking again before the file changes neither re-reads nor re-logs it."""
    running = RunningPolicy.load(policy_file)
    write(policy_file, INVALID, 1)
    with capture_logs() as logs:
        running.reload_if_changed()
        running.reload_if_changed()
    assert [e["event"] for e in logs] == ["policy.reload_rejected"]


def test_fixing_an_invalid_file_applies_it(policy_file: Path) -> None:
    """After a refused edit, the next valid edit is applied."""
    running = RunningPolicy.load(policy_file)
    write(policy_file, INVALID, 1)
    assert running.reload_if_changed() is None
    write(policy_file, ALLOW_ALERTS, 2)
    assert running.reload_if_changed() is not None
    assert allows_alert(running)


def test_unchanged_file_reports_no_change(policy_file: Path) -> None:
    """Without an edit, reload_if_changed returns None."""
    running = RunningPolicy.load(policy_file)
    assert running.reload_if_changed() is None


def test_touched_file_with_same_text_reports_no_change(policy_file: Path) -> None:
    """A new mtime with the same content is not a policy change."""
    running = RunningPolicy.load(policy_file)
    write(policy_file, AGENCIES, 1)
    assert running.reload_if_changed() is None


def test_deleted_file_keeps_the_old_policy(policy_file: Path) -> None:
    """A policy file that disappears leaves the running policy in force and is logged."""
    running = RunningPolicy.load(policy_file)
    before = running.current
    policy_file.unlink()
    with capture_logs() as logs:
        assert running.reload_if_changed() is None
    assert running.current is before
    assert logs[0]["event"] == "policy.reload_rejected"


def test_apply_replaces_policy_and_rewrites_the_file(policy_file: Path) -> None:
    """An admin apply takes effect, is returned as a change by the actor, and persists to the file."""
    running = RunningPolicy.load(policy_file, clock=lambda: WHEN)
    old_digest = running.current.digest
    change = running.apply(ALLOW_ALERTS, actor="spiffe://isb.dev/admin/alice")
    assert (change.actor, change.time, change.old_digest) == ("spiffe://isb.dev/admin/alice", WHEN, old_digest)
    assert change.changed
    assert allows_alert(running)
    assert policy_file.read_text(encoding="utf-8") == ALLOW_ALERTS
    assert running.reload_if_changed() is None


def test_apply_invalid_raises_and_changes_nothing(policy_file: Path) -> None:
    """An invalid document given to apply raises PolicyError; policy and file stay as they were."""
    running = RunningPolicy.load(policy_file)
    before = running.current
    with pytest.raises(PolicyError):
        running.apply(INVALID, actor="spiffe://isb.dev/admin/alice")
    assert running.current is before
    assert policy_file.read_text(encoding="utf-8") == AGENCIES


def test_apply_without_a_file_holds_the_policy_in_memory() -> None:
    """A RunningPolicy with no file applies changes in memory only."""
    running = RunningPolicy(Policy.parse(AGENCIES))
    running.apply(ALLOW_ALERTS, actor="admin")
    assert allows_alert(running)
    assert running.reload_if_changed() is None


def test_validate_reports_errors_digest_and_diff(policy_file: Path) -> None:
    """ValidatePolicy's report carries the error lines, the digest and the diff to the running policy."""
    running = RunningPolicy.load(policy_file)
    bad = running.validate(INVALID)
    assert not bad.valid
    assert any(e.startswith("policy.toml:12: ") for e in bad.errors)
    good = running.validate(ALLOW_ALERTS)
    assert (good.valid, good.errors) == (True, ())
    assert '+name = "alerts"' in good.diff
    assert running.current.text == AGENCIES


def test_load_of_a_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    """Starting with no policy file fails loudly."""
    with pytest.raises(ConfigurationError, match="cannot read policy file"):
        RunningPolicy.load(tmp_path / "absent.toml")


def test_load_of_an_invalid_file_raises_policy_error(tmp_path: Path) -> None:
    """Starting with an invalid policy file fails with its lines."""
    path = tmp_path / "policy.toml"
    path.write_text(INVALID, encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        RunningPolicy.load(path)
    assert info.value.errors[0].startswith(f"{path}:")
