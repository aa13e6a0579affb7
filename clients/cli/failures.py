"""What `isb` says when a command fails: one line naming the cause and, where we know it, the fix.

Known failures (the SDK's `ClientError`, the broker's and the CA's `BrokerError`, files that cannot
be read, a broken configuration) are one line with a hint that names an `isb` command. Anything else
is a bug on our side: one line, and `--debug` shows its traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import grpc

from broker.errors import BrokerError
from clients.errors import CertificateProblem, ClientError, ConnectionFailed, RemoteError

__all__ = ["EXIT_BUG", "EXIT_FAILED", "CommandError", "Failure", "explain"]

EXIT_FAILED = 1  # a known failure: the message says why
EXIT_BUG = 2  # an unexpected error: `--debug` shows where


class CommandError(ClientError):
    """A failure a command detected itself, with the command that fixes it."""

    def __init__(self, message: str, hint: str | None = None, *, exit_status: int = EXIT_FAILED) -> None:
        """`hint` names the fix (an `isb` command where there is one)."""
        super().__init__(message)
        self.hint = hint
        self.exit_status = exit_status


@dataclass(frozen=True)
class Failure:
    """How a failed command is reported."""

    message: str
    hint: str | None
    exit_status: int
    known: bool
    code: str | None = None


_NOT_REGISTERED = re.compile(r"agency (\S+) is not registered")


def _remote_hint(error: RemoteError) -> str | None:
    message = error.message
    if match := _NOT_REGISTERED.search(message):
        return f"an admin registers it with `isb admin register {match.group(1)}`"
    if error.code is grpc.StatusCode.PERMISSION_DENIED and "rule" in message:
        return "ask the broker which rule decides with `isb admin explain --as AGENCY ...`"
    if error.code is grpc.StatusCode.UNAUTHENTICATED and "revoked" in message:
        return "ask the admin for a new certificate (`isb pki request`, then `isb pki issue`)"
    if error.code is grpc.StatusCode.UNAVAILABLE:
        return "retry later; sends are idempotent"
    if error.code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return "retry later, or send less at once"
    return None


def _client_hint(error: ClientError) -> str | None:  # noqa: PLR0911 - one answer per known cause
    message = str(error)
    if isinstance(error, RemoteError):
        return _remote_hint(error)
    if isinstance(error, CertificateProblem):
        if "cannot read TLS material" in message:
            return (
                "point --certs (or ISB_CERT_DIR) at the folder with the certificate, its key and ca.crt; "
                "`isb pki install` prepares one from an issued certificate"
            )
        if "expired" in message:
            return "ask the admin to renew it (`isb pki renew SERIAL`)"
        if "trust domain" in message:
            return "pass the deployment's --trust-domain (or set ISB_TRUST_DOMAIN)"
        return None
    if isinstance(error, ConnectionFailed) and "connection refused" in message:
        return "start it with `isb serve`, or point --broker (or ISB_BROKER) at it"
    return None


def explain(error: BaseException) -> Failure:  # noqa: PLR0911 - one report per kind of failure
    """The report of a failed command."""
    if isinstance(error, CommandError):
        return Failure(str(error), error.hint, error.exit_status, known=True)
    if isinstance(error, RemoteError):
        return Failure(str(error), _remote_hint(error), EXIT_FAILED, known=True, code=error.code.name)
    if isinstance(error, ClientError):
        return Failure(str(error), _client_hint(error), EXIT_FAILED, known=True)
    if isinstance(error, BrokerError):
        return Failure(str(error), None, EXIT_FAILED, known=True)
    if isinstance(error, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError):
        name = error.filename or ""
        return Failure(f"cannot open {name}: {error.strerror}", None, EXIT_FAILED, known=True)
    if isinstance(error, UnicodeDecodeError):
        return Failure(
            f"the input is not UTF-8 text ({error.reason} at byte {error.start})", None, EXIT_FAILED, known=True
        )
    if isinstance(error, OSError):
        return Failure(f"{error.strerror or error}", None, EXIT_FAILED, known=True)
    return Failure(
        f"unexpected {type(error).__name__}: {error}",
        "run the command again with --debug to see the traceback, and report it",
        EXIT_BUG,
        known=False,
    )
