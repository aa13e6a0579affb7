"""Client settings: the config file's [client] table, then ISB_* variables, then options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.config import load_client_settings
from broker.errors import ConfigurationError
from clients.cli import main


def test_defaults_without_file_or_variables(tmp_path: Path) -> None:
    """Nothing set: the dev broker on 127.0.0.1:7443 and certs/dev."""
    settings = load_client_settings({"HOME": str(tmp_path)})
    assert (settings.broker, str(settings.cert_dir), settings.trust_domain, settings.agency) == (
        "127.0.0.1:7443",
        "certs/dev",
        "isb.dev",
        None,
    )


def test_file_then_environment(tmp_path: Path) -> None:
    """ISB_* variables override the file; a relative cert_dir in the file is relative to the file."""
    config = tmp_path / "agency" / "isb.toml"
    config.parent.mkdir()
    config.write_text('[client]\nbroker = "broker.example:7443"\ncert_dir = "."\nagency = "IT-GDF"\n')
    settings = load_client_settings({"ISB_CONFIG": str(config), "ISB_BROKER": "10.0.0.1:7443"})
    assert settings.broker == "10.0.0.1:7443"
    assert settings.cert_dir == config.parent
    assert settings.agency == "IT-GDF"
    assert settings.source == config


def test_per_user_file_is_found_under_xdg_config_home(tmp_path: Path) -> None:
    """Without ISB_CONFIG, $XDG_CONFIG_HOME/isb/config.toml is read if it exists."""
    (tmp_path / "isb").mkdir()
    (tmp_path / "isb" / "config.toml").write_text('[client]\ntrust_domain = "isb.example.eu"\n')
    assert load_client_settings({"XDG_CONFIG_HOME": str(tmp_path)}).trust_domain == "isb.example.eu"


def test_unknown_setting_is_refused_by_name(tmp_path: Path) -> None:
    """A misspelt key in [client] names itself and the known ones."""
    config = tmp_path / "isb.toml"
    config.write_text('[client]\nbrokr = "x"\n')
    with pytest.raises(ConfigurationError, match="brokr"):
        load_client_settings({"ISB_CONFIG": str(config)})


def test_every_command_takes_its_defaults_from_the_environment(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """ISB_CERT_DIR and ISB_AGENCY reach an agency command: the error names the file in that folder."""
    monkeypatch.setenv("ISB_CERT_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("ISB_AGENCY", "NL-FIOD")
    monkeypatch.delenv("ISB_CONFIG", raising=False)
    assert main(["status", "0190"]) == 1
    assert str(tmp_path / "elsewhere" / "NL-FIOD.crt") in capsys.readouterr().err
    assert main(["config", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["cert_dir"], shown["agency"]) == (str(tmp_path / "elsewhere"), "NL-FIOD")


def test_a_broken_config_file_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config file that does not parse stops every command with one line naming the file."""
    config = tmp_path / "isb.toml"
    config.write_text("[client\n")
    monkeypatch.setenv("ISB_CONFIG", str(config))
    assert main(["config"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"isb: error: cannot read the configuration file {config}")
    assert len(err.strip().splitlines()) == 1
