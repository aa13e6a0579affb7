"""`isb config` (the client settings in force, and where each came from) and `isb completion SHELL`."""

from __future__ import annotations

import argparse

import argcomplete

from clients.cli.options import settings
from clients.cli.output import output

__all__ = ["register"]

SHELLS = ("bash", "zsh", "fish", "tcsh", "powershell")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `config` and `completion`."""
    config = subparsers.add_parser(
        "config", help="show the client settings every command uses (ISB_CONFIG file, ISB_* variables)"
    )
    config.set_defaults(func=_show)
    completion = subparsers.add_parser(
        "completion", help='print the shell completion script, e.g. `eval "$(isb completion bash)"`'
    )
    completion.add_argument("shell", choices=SHELLS)
    completion.set_defaults(func=_completion)


def _show(args: argparse.Namespace) -> int:
    current = settings()
    output(args).record(
        {
            "broker": current.broker,
            "cert_dir": current.cert_dir,
            "trust_domain": current.trust_domain,
            "agency": current.agency,
            "config_file": current.source,
        },
        title="client settings",
    )
    return 0


def _completion(args: argparse.Namespace) -> int:
    # The script only registers `isb` with argcomplete; completions are computed by `isb` itself.
    print(argcomplete.shellcode(["isb"], shell=args.shell), end="")  # type: ignore[attr-defined]
    return 0
