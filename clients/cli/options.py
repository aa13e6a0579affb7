"""Options shared by the `isb` commands, with defaults from the client settings.

Every command that talks to a broker takes `--broker`, `--certs` and `--trust-domain`; their
defaults come from `ISB_BROKER`, `ISB_CERT_DIR`, `ISB_TRUST_DOMAIN` (and `ISB_AGENCY` for
`--agency`) or the `[client]` table of the configuration file (`broker.config.ClientSettings`),
so a command works from any directory once these are set.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from broker.config import ClientSettings, load_client_settings

__all__ = [
    "add_broker_arguments",
    "add_justification_arguments",
    "add_trust_domain_argument",
    "justification",
    "settings",
]

_current: ClientSettings | None = None


def settings() -> ClientSettings:
    """The client settings of this run (read once per parser build, see `reload_settings`)."""
    return _current if _current is not None else reload_settings()


def reload_settings() -> ClientSettings:
    """Read the configuration file and the environment again (each `isb` run does, once)."""
    global _current  # noqa: PLW0603 - one run of `isb` has one set of settings
    _current = load_client_settings()
    return _current


def add_trust_domain_argument(parser: argparse.ArgumentParser) -> None:
    """`--trust-domain`, with its default from the settings."""
    parser.add_argument(
        "--trust-domain",
        default=settings().trust_domain,
        metavar="DOMAIN",
        help="SPIFFE trust domain of the deployment, as in spiffe://DOMAIN/agency/ID "
        "(default %(default)s; ISB_TRUST_DOMAIN or the config file set it)",
    )


def add_broker_arguments(parser: argparse.ArgumentParser, *, holds: str) -> None:
    """`--broker`, `--certs` and `--trust-domain`; `holds` says which files `--certs` must contain."""
    current = settings()
    parser.add_argument(
        "--broker",
        default=current.broker,
        metavar="HOST:PORT",
        help="address of the broker (default %(default)s; ISB_BROKER or the config file set it)",
    )
    parser.add_argument(
        "--certs",
        type=_path,
        default=current.cert_dir,
        metavar="DIR",
        help=f"folder with {holds} (default %(default)s; ISB_CERT_DIR or the config file set it)",
    )
    add_trust_domain_argument(parser)


def add_justification_arguments(parser: argparse.ArgumentParser, *, what: str) -> None:
    """`--legal-basis`, `--case-ref` and `--operator`: the justification recorded in the audit log."""
    group = parser.add_argument_group("justification", f"why {what}, recorded in the audit log (never personal data)")
    group.add_argument(
        "--legal-basis",
        default="",
        metavar="CODE",
        help="legal-basis code from the deployment's list (policy `legal_bases`)",
    )
    group.add_argument("--case-ref", default="", metavar="REF", help="case or file reference")
    group.add_argument(
        "--operator",
        default="",
        metavar="ID",
        help="our opaque identifier of the person acting (recorded as asserted by us)",
    )


def justification(args: argparse.Namespace) -> dict[str, str]:
    """The justification options as SDK keyword arguments (only those given)."""
    given = {"legal_basis": args.legal_basis, "case_reference": args.case_ref, "operator": args.operator}
    return {name: value for name, value in given.items() if value}


def _path(text: str) -> Path:
    return Path(text).expanduser()
