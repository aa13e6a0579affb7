"""`isb policy check | explain | diff` against files, offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients.cli import main


@pytest.fixture
def table_file() -> Path:
    """The policy tests' policy_table.toml (tests/unit/policy)."""
    return Path(__file__).resolve().parents[3] / "unit" / "policy" / "policy_table.toml"


def test_check_valid_file_exits_zero(table_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`policy check` on a valid file prints its digest and exits 0."""
    assert main(["policy", "check", str(table_file)]) == 0
    assert "valid: 9 agencies, 5 groups, 7 rules; sha256 " in capsys.readouterr().out


def test_check_invalid_file_prints_lines_and_exits_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`policy check` prints each error with its line and exits 1."""
    path = tmp_path / "bad.toml"
    path.write_text('[[groups]]\nname = "EU-CUSTOMS"\nmembers = ["FR-CUSTOMS"]\n', encoding="utf-8")
    assert main(["policy", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:3: group 'EU-CUSTOMS': unknown agency or group 'FR-CUSTOMS'" in err


def test_explain_allowed_exits_zero(table_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`policy explain` says ALLOWED, the rule and the expansion."""
    argv = ["policy", "explain", "--policy", str(table_file), "--sender", "FR-CUSTOMS", "--kind", "ALERT"]
    assert main([*argv, "--tlp", "AMBER", "--to", "EU-CUSTOMS"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ALLOWED (eu-customs)\n  recipients: DE-ZOLL, FR-DNRED\n")


def test_explain_refused_exits_one_naming_the_rule(table_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`policy explain` says REFUSED and names the rule that failed."""
    argv = ["policy", "explain", "--policy", str(table_file), "--sender", "DE-BKA", "--kind", "ALERT"]
    assert main([*argv, "--tlp", "AMBER+STRICT", "--to", "US-CBP,FR-DNRED"]) == 1
    assert capsys.readouterr().out.startswith("REFUSED (g7-ct)\n")


def test_explain_forward(table_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`policy explain --forwarded-by` decides a forward of the sender's message."""
    argv = ["policy", "explain", "--policy", str(table_file), "--sender", "FR-DNRED", "--kind", "REQUEST"]
    argv += ["--tlp", "AMBER+STRICT", "--forwarded-by", "FR-CUSTOMS", "--to", "DE-ZOLL"]
    assert main(argv) == 1
    assert capsys.readouterr().out.startswith("REFUSED (builtin:organisation-bound)\n")


def test_explain_with_invalid_policy_exits_two(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`policy explain` against an invalid file reports its errors and exits 2."""
    path = tmp_path / "bad.toml"
    path.write_text("[[rules]\n", encoding="utf-8")
    argv = ["policy", "explain", "--policy", str(path), "--sender", "A", "--kind", "ALERT", "--tlp", "RED"]
    assert main(argv) == 2
    assert f"{path}:1: TOML syntax error" in capsys.readouterr().err


def test_diff_shows_changes_and_exits_one(table_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`policy diff` prints a unified diff and exits 1 when the files differ."""
    new = tmp_path / "new.toml"
    new.write_text(table_file.read_text(encoding="utf-8").replace('handling = ["CLEAR"]', 'handling = ["GREEN"]'))
    assert main(["policy", "diff", str(table_file), str(new)]) == 1
    out = capsys.readouterr().out
    assert '-handling = ["CLEAR"]\n+handling = ["GREEN"]\n' in out


def test_diff_of_identical_files_exits_zero(table_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`policy diff` of a file with itself prints nothing and exits 0."""
    assert main(["policy", "diff", str(table_file), str(table_file)]) == 0
    assert capsys.readouterr().out == ""


def test_diff_to_invalid_file_exits_two(table_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`policy diff` warns that NEW does not validate and exits 2."""
    new = tmp_path / "new.toml"
    new.write_text(table_file.read_text(encoding="utf-8").replace('"CLEAR"]', '"WHITE"]'))
    assert main(["policy", "diff", str(table_file), str(new)]) == 2
    assert "does not validate" in capsys.readouterr().err
