"""The broker's configuration: one typed home, read from a TOML file with environment overrides.

No other module reads environment variables. Every override is named `ISB_<FIELD>` in upper case
(for example `ISB_LISTEN=127.0.0.1:7443`); `DATABASE_URL` is also honoured for `database_url`.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from broker.errors import ConfigurationError
from broker.identity import DEFAULT_TRUST_DOMAIN

DEFAULT_CERT_DIR = Path("certs/dev")
# The policy a broker without `policy_file` loads: the repository's dev policy, found from the package
# and not from the working directory, so `isb serve` started from any folder loads the same file.
DEV_POLICY_FILE = Path(__file__).resolve().parent.parent / "examples" / "policy-dev.toml"


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Everything the broker process needs to know; immutable once loaded."""

    listen: str = "127.0.0.1:7443"
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    node: str = "node-1"
    cert_dir: Path = DEFAULT_CERT_DIR
    # Files below default to names inside cert_dir (see `path`).
    server_cert: Path | None = None
    server_key: Path | None = None
    ca_bundle: Path | None = None
    audit_key: Path | None = None
    # The CA directory (see `isb pki init`) used by AdminService to issue and revoke, and whose
    # crl.pem the broker checks on every call. Default: cert_dir (the dev PKI is a CA directory).
    ca_dir: Path | None = None
    database_url: str = "sqlite:///var/isb.db"
    # How long a starting broker waits for its database (retrying with backoff) before it gives up.
    database_wait_seconds: float = 30.0
    max_envelope_bytes: int = 4 * 1024 * 1024
    max_recipients: int = 256
    # How far an envelope's `created` may be from the broker's clock (issue 12; docs/protocol.md).
    max_clock_skew_seconds: float = 600.0
    lease_seconds: float = 30.0
    max_in_flight: int = 256
    checkpoint_interval_seconds: float = 2.0
    max_connection_age_seconds: float = 3600.0
    policy_file: Path | None = None
    # Attachments (docs/protocol.md "Attachments"). blob_store "": a folder beside a SQLite database
    # (blob_dir, default <database folder>/blobs), chunk rows in a PostgreSQL one; or "directory"/"database".
    blob_store: str = ""
    blob_dir: Path | None = None
    max_attachment_bytes: int = 2 * 1024 * 1024 * 1024
    attachment_quota_bytes: int = 50 * 1024 * 1024 * 1024  # per agency, every attachment it has stored
    upload_ttl_seconds: float = 24 * 3600.0  # an upload no envelope references by then is deleted
    attachment_sweep_seconds: float = 30.0
    # The retention purge (docs/protocol.md section 22): how often it runs; the periods are in the policy.
    retention_interval_seconds: float = 3600.0
    # Watchlist review (docs/protocol.md section 22): owners are notified this far ahead of a review
    # date (a period: 4mo, 120d...), checked this often.
    review_notice: str = "4mo"
    review_notice_interval_seconds: float = 3600.0
    # The broker's own files (the policy an admin applied): default, the SQLite database's folder,
    # or var/ beside a PostgreSQL database.
    state_dir: Path | None = None
    metrics_listen: str = ""  # host:port of the Prometheus endpoint (mutual TLS only); "" disables it
    log_level: str = "info"
    # Witnesses (docs/protocol.md section 18): a tlog-policy file whose `witness` lines with a URL
    # are sent every new checkpoint; the broker presents this witness-role client certificate.
    witness_policy: Path | None = None
    witness_client_cert: Path | None = None
    witness_client_key: Path | None = None
    witness_timeout_seconds: float = 5.0
    # A file the broker rewrites every few seconds with its health (SERVING or NOT_SERVING), for a
    # container health check that needs no client certificate (`python -m clients.healthcheck`).
    health_file: Path | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def path(self, name: str) -> Path:
        """The configured path of a PKI file, or its default inside `cert_dir`."""
        configured: Path | None = getattr(self, name)
        if configured is not None:
            return configured
        defaults = {
            "server_cert": "broker.crt",
            "server_key": "broker.key",
            "ca_bundle": "ca.crt",
            "audit_key": "audit.key",
        }
        return self.cert_dir / defaults[name]

    def state_path(self, name: str) -> Path:
        """A file of the broker's own in `state_dir` (default: the SQLite database's folder, else var/)."""
        if self.state_dir is not None:
            return self.state_dir / name
        if self.database_url.startswith("sqlite:///") and self.database_url != "sqlite:///:memory:":
            return Path(self.database_url.removeprefix("sqlite:///")).parent / name
        return Path("var") / name


def _coerce(name: str, raw: Any, annotation: str) -> Any:
    try:
        if annotation.startswith("int"):
            return int(raw)
        if annotation.startswith("float"):
            return float(raw)
        if "Path" in annotation:
            return Path(raw) if raw not in ("", None) else None
        if annotation.startswith("str"):
            return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"configuration {name}={raw!r} is not a valid {annotation}") from exc
    raise ConfigurationError(f"configuration {name} cannot be set")


def load_config(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> BrokerConfig:
    """Load the configuration: defaults, then the TOML file, then `ISB_*` variables, then overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    known = {f.name: str(f.type) for f in fields(BrokerConfig) if f.name != "extra"}
    if path is not None:
        try:
            document = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"cannot read configuration {path}: {exc}") from exc
        section = document.get("broker", document)
        for key, raw in section.items():
            if key not in known:
                raise ConfigurationError(f"{path}: unknown setting {key!r}")
            values[key] = _coerce(key, raw, known[key])
    if "DATABASE_URL" in env:
        values["database_url"] = env["DATABASE_URL"]
    for name, annotation in known.items():
        env_name = f"ISB_{name.upper()}"
        if env_name in env:
            values[name] = _coerce(name, env[env_name], annotation)
    for key, raw in overrides.items():
        if key not in known:
            raise ConfigurationError(f"unknown setting {key!r}")
        values[key] = raw
    return dataclasses.replace(BrokerConfig(), **values)


DEFAULT_BROKER_ADDRESS = "127.0.0.1:7443"


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """What every `isb` client command needs to find its broker and its own certificates.

    Read from the `[client]` table of the file named by `ISB_CONFIG` (default
    `$XDG_CONFIG_HOME/isb/config.toml`, if it exists), then overridden by `ISB_BROKER`,
    `ISB_CERT_DIR`, `ISB_TRUST_DOMAIN` and `ISB_AGENCY`; command-line options override both.
    """

    broker: str = DEFAULT_BROKER_ADDRESS
    cert_dir: Path = DEFAULT_CERT_DIR
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    agency: str | None = None
    source: Path | None = None
    """The configuration file the settings came from, if any."""


_CLIENT_SETTINGS = {"broker": "str", "cert_dir": "Path", "trust_domain": "str", "agency": "str"}


def client_config_path(environ: Mapping[str, str] | None = None) -> Path | None:
    """The client configuration file: `ISB_CONFIG`, else the per-user file if it exists."""
    env = os.environ if environ is None else environ
    if env.get("ISB_CONFIG"):
        return Path(env["ISB_CONFIG"])
    home = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path(env.get("HOME", "~")) / ".config"
    candidate = home.expanduser() / "isb" / "config.toml"
    return candidate if candidate.is_file() else None


def load_client_settings(environ: Mapping[str, str] | None = None) -> ClientSettings:
    """Client settings: defaults, then the `[client]` table of the configuration file, then `ISB_*`."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = client_config_path(env)
    if path is not None:
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"cannot read the configuration file {path}: {exc}") from exc
        section = document.get("client", {})
        if not isinstance(section, dict):
            raise ConfigurationError(f"{path}: [client] must be a table")
        for key, raw in section.items():
            if key not in _CLIENT_SETTINGS:
                raise ConfigurationError(
                    f"{path}: unknown setting {key!r} in [client] (known: {', '.join(_CLIENT_SETTINGS)})"
                )
            values[key] = _coerce(key, raw, _CLIENT_SETTINGS[key])
        if isinstance(values.get("cert_dir"), Path) and not values["cert_dir"].is_absolute():
            # A relative folder in a file means relative to that file, wherever the command runs.
            values["cert_dir"] = path.parent / values["cert_dir"]
        values["source"] = path
    for key, annotation in _CLIENT_SETTINGS.items():
        raw_env = env.get(f"ISB_{key.upper()}")
        if raw_env:
            values[key] = _coerce(key, raw_env, annotation)
    return dataclasses.replace(ClientSettings(), **values)


PKI_FILES = ("server_cert", "server_key", "ca_bundle", "audit_key")


def check_pki_files(config: BrokerConfig) -> None:
    """Each PKI file the broker reads exists and is readable by this process, or say which and how.

    In the container the broker runs as uid 10001 (group 10001) and the deployment's keys are
    mounted from the host: a key left 0600 for its host owner is the usual mistake (README, Container).
    """
    for name in PKI_FILES:
        path = config.path(name)
        try:
            with path.open("rb"):
                pass
        except FileNotFoundError as exc:
            raise ConfigurationError(f"{name} {path} does not exist (run `isb pki dev` for a dev PKI)") from exc
        except PermissionError as exc:
            try:
                info = path.stat()
                held = f"owner {info.st_uid}, group {info.st_gid}, mode {info.st_mode & 0o777:04o}"
            except OSError:
                held = "its folder cannot be entered"
            raise ConfigurationError(
                f"{name} {path} is not readable by the broker (uid {os.getuid()}, gid {os.getgid()}; {held}): "
                f"`chgrp {os.getgid()} {path}` and `chmod 0640 {path}` (or chown it to uid {os.getuid()})"
            ) from exc
        except OSError as exc:
            raise ConfigurationError(f"{name} {path} cannot be read: {exc.strerror}") from exc
