"""`Output`: JSON lines for scripts, tables for people, one error style."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

from clients.cli.output import Output


def _output(json_mode: bool) -> tuple[Output, io.StringIO, io.StringIO]:
    stdout, stderr = io.StringIO(), io.StringIO()
    return Output(json_mode=json_mode, stdout=stdout, stderr=stderr), stdout, stderr


def test_rows_are_one_json_object_per_line() -> None:
    """With --json a list is JSON Lines; times are ISO 8601 UTC and paths are text."""
    out, stdout, _ = _output(True)
    when = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
    out.rows([{"a": 1, "at": when}, {"a": 2, "at": None, "path": Path("/x")}])
    lines = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert lines == [{"a": 1, "at": "2026-12-01T09:00:00Z"}, {"a": 2, "at": None, "path": "/x"}]


def test_rows_are_a_table_for_people() -> None:
    """Without --json the same rows are a table with upper-case headers and no escape codes off a terminal."""
    out, stdout, _ = _output(False)
    out.rows([{"recipient": "DE-BKA", "state": "DELIVERED"}])
    text = stdout.getvalue()
    assert "RECIPIENT" in text
    assert "DE-BKA" in text
    assert "DELIVERED" in text
    assert "\x1b[" not in text


def test_sentences_are_for_people_only() -> None:
    """`say` prints nothing with --json, so scripts read only data on stdout."""
    out, stdout, _ = _output(True)
    out.say("next: run isb keys publish")
    assert stdout.getvalue() == ""


def test_error_line_has_the_prefix_the_cause_and_the_fix() -> None:
    """An error is `isb: error: <cause>; <fix>` on stderr, nothing on stdout."""
    out, stdout, stderr = _output(False)
    out.error("agency IT-GDF is not registered", "an admin runs `isb admin register IT-GDF`")
    assert stdout.getvalue() == ""
    assert stderr.getvalue() == (
        "isb: error: agency IT-GDF is not registered; an admin runs `isb admin register IT-GDF`\n"
    )


def test_error_is_json_with_json() -> None:
    """With --json the error is one JSON object with its hint and extra fields."""
    out, _, stderr = _output(True)
    out.error("broker unavailable", "retry later", code="UNAVAILABLE")
    assert json.loads(stderr.getvalue()) == {
        "error": "broker unavailable",
        "hint": "retry later",
        "code": "UNAVAILABLE",
    }
