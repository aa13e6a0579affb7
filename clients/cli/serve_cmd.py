"""`isb serve`: run the broker (on the embedded SQLite default with the dev PKI unless configured)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import structlog

from broker.config import DEFAULT_CERT_DIR, load_config
from broker.errors import BrokerError
from broker.logs import capture_native_stderr, configure_logging
from broker.pki.dev import ensure_dev_pki
from broker.server import serve

__all__ = ["register"]

log = structlog.get_logger(__name__)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `serve`."""
    serve = subparsers.add_parser("serve", help="run the broker (mutual TLS only)")
    serve.add_argument("--config", type=Path, help="TOML configuration file (ISB_* variables override it)")
    serve.add_argument(
        "--dev", action="store_true", help=f"create the development PKI in {DEFAULT_CERT_DIR} first if it is missing"
    )
    serve.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    # Everything the broker prints is a JSON line, gRPC's own C-core lines included (broker/logs.py).
    capture_native_stderr()
    configure_logging()
    try:
        config = load_config(args.config)
        configure_logging(config.log_level)
        if args.dev:
            ensure_dev_pki(config.cert_dir, config.trust_domain)
        asyncio.run(serve(config))
    except BrokerError as exc:
        log.error("broker.exit", reason=str(exc), error=type(exc).__name__)  # noqa: TRY400 - a known cause, no traceback
        return 2
    except KeyboardInterrupt:
        return 0
    return 0
