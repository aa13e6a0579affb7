"""The broker configuration: defaults, TOML file, environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import DEV_POLICY_FILE, load_client_settings, load_config
from broker.errors import ConfigurationError
from broker.identity import DEFAULT_TRUST_DOMAIN
from broker.policy import Policy


def test_defaults_listen_on_loopback_with_embedded_sqlite() -> None:
    """Without a file or variables the broker listens on 127.0.0.1 and uses SQLite under var/."""
    config = load_config(environ={})
    assert config.listen == "127.0.0.1:7443"
    assert config.database_url.startswith("sqlite:///")
    assert config.max_envelope_bytes == 4 * 1024 * 1024


def test_file_then_environment_then_overrides_win_in_that_order(tmp_path: Path) -> None:
    """A TOML value is overridden by ISB_* and DATABASE_URL, and those by explicit overrides."""
    path = tmp_path / "broker.toml"
    path.write_text('[broker]\nlisten = "127.0.0.1:9000"\nlease_seconds = 5\nmax_recipients = 10\n')
    config = load_config(
        path, environ={"ISB_LEASE_SECONDS": "2.5", "DATABASE_URL": "postgresql://db/x"}, max_recipients=3
    )
    assert (config.listen, config.lease_seconds, config.database_url, config.max_recipients) == (
        "127.0.0.1:9000",
        2.5,
        "postgresql://db/x",
        3,
    )


def test_unknown_setting_in_file_is_refused_by_name(tmp_path: Path) -> None:
    """A misspelt setting is an error that names it, not a silently ignored line."""
    path = tmp_path / "broker.toml"
    path.write_text('[broker]\nlisten_adress = "0.0.0.0:1"\n')
    with pytest.raises(ConfigurationError, match="listen_adress"):
        load_config(path, environ={})


def test_malformed_number_in_environment_is_refused() -> None:
    """ISB_LEASE_SECONDS=soon is a configuration error naming the setting."""
    with pytest.raises(ConfigurationError, match="lease_seconds"):
        load_config(environ={"ISB_LEASE_SECONDS": "soon"})


def test_pki_paths_default_inside_cert_dir(tmp_path: Path) -> None:
    """Server certificate, key, CA bundle and audit key default to files in cert_dir."""
    config = load_config(environ={}, cert_dir=tmp_path)
    assert config.path("server_cert") == tmp_path / "broker.crt"
    assert config.path("ca_bundle") == tmp_path / "ca.crt"


def test_default_policy_file_is_found_from_the_package_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The policy a broker without `policy_file` loads is an absolute path that parses from any folder."""
    monkeypatch.chdir(tmp_path)
    assert DEV_POLICY_FILE.is_absolute()
    policy = Policy.parse(DEV_POLICY_FILE.read_text(encoding="utf-8"), str(DEV_POLICY_FILE))
    assert policy.digest


def test_default_trust_domain_is_the_one_constant() -> None:
    """Broker and client settings default to `broker.identity.DEFAULT_TRUST_DOMAIN`."""
    assert load_config(environ={}).trust_domain == DEFAULT_TRUST_DOMAIN
    assert load_client_settings(environ={"HOME": "/nonexistent"}).trust_domain == DEFAULT_TRUST_DOMAIN
