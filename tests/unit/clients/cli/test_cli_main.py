"""`isb` as one command line: --json and --debug everywhere, --version, one error style, no tracebacks."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.cli import build_parser, main
from clients.cli import config_cmd as config_module


def _leaves(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subcommands:
        yield path, parser
        return
    for name, child in subcommands[0].choices.items():
        yield from _leaves(child, (*path, name))


def test_every_command_accepts_json_and_debug() -> None:
    """Each leaf command of the parser tree has --json and --debug, whoever registered it."""
    leaves = list(_leaves(build_parser()))
    assert len(leaves) > 30
    for path, parser in leaves:
        options = {o for a in parser._actions for o in a.option_strings}
        assert {"--json", "--debug"} <= options, " ".join(path)


def test_every_trust_domain_option_has_help() -> None:
    """--trust-domain says what it is wherever it appears."""
    for path, parser in _leaves(build_parser()):
        for action in parser._actions:
            if "--trust-domain" in action.option_strings:
                assert "trust domain" in (action.help or ""), " ".join(path)


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`isb --version` prints `isb <version>` and exits 0."""
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("isb ")


def test_usage_errors_use_the_one_error_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    """A missing option is reported as `isb: error: ...` and names the help command."""
    with pytest.raises(SystemExit) as done:
        main(["send", "--to", "DE-BKA", "--text", "x"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == ("isb: error: the following arguments are required: --agency; see `isb send --help`")


def test_json_goes_before_or_after_the_command(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`isb --json config` and `isb config --json` both print one JSON object."""
    monkeypatch.delenv("ISB_CONFIG", raising=False)
    for argv in (["--json", "config"], ["config", "--json"]):
        assert main(argv) == 0
        assert isinstance(json.loads(capsys.readouterr().out), dict)


def test_unreadable_certificates_are_one_line_naming_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A command pointed at an empty folder says which file it could not read and how to make the folder."""
    assert main(["status", "--agency", "FR-CUSTOMS", "--certs", str(tmp_path), "0190"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("isb: error: cannot read TLS material")
    assert "`isb pki install`" in err


def test_errors_are_json_on_stderr_with_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With --json a failure is one JSON object on stderr with the message and the hint."""
    assert main(["status", "--json", "--agency", "FR-CUSTOMS", "--certs", str(tmp_path), "0190"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    error = json.loads(captured.err)
    assert error["error"].startswith("cannot read TLS material")
    assert "isb pki install" in error["hint"]


def test_an_unexpected_error_is_one_line_and_debug_adds_the_traceback(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A bug is one line pointing at --debug (exit 2); with --debug the traceback comes first."""

    def broken(_: argparse.Namespace) -> int:
        raise RuntimeError("something odd")

    monkeypatch.setattr(config_module, "_show", broken)
    assert main(["config"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "isb: error: unexpected RuntimeError: something odd; run the command again with "
        "--debug to see the traceback, and report it"
    )
    assert main(["config", "--debug"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert err.strip().endswith("and report it")


def test_completion_prints_a_script_for_the_shell(capsys: pytest.CaptureFixture[str]) -> None:
    """`isb completion bash` prints a script that registers isb with argcomplete."""
    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    assert "complete" in script
    assert "isb" in script
