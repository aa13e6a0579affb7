"""The parts of a sharing policy, as read from the document and checked: agencies and rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Agency:
    """An agency the policy knows: `[[agencies]]`."""

    id: str
    country: str  # ISO 3166-1 alpha-2
    kind: str  # one of codes.AGENCY_KINDS
    # Agencies of one organisation (e.g. a customs administration and its investigation service)
    # share AMBER+STRICT material; an agency without one is an organisation of its own.
    organisation: str
    name: str = ""


class ForwardClause(Protocol):
    """Decides whether `forwarder` may pass a message on to `target`."""

    def allows(self, forwarder: Agency, target: Agency) -> bool:
        """True if this clause lets `forwarder` forward to `target`."""
        ...

    def scope(self) -> str:
        """Where forwarding may go, to follow "lets recipients forward" in a refusal."""
        ...


@dataclass(frozen=True, slots=True)
class Rule:
    """One `[[rules]]` entry: who may send which kinds at which handling codes to whom.

    `senders` and `recipients` are as written (agency ids, group names, `*`); `sender_set` and
    `recipient_set` are the agency ids they stand for, resolved once when the policy is parsed.
    """

    name: str
    senders: tuple[str, ...]
    kinds: frozenset[str]
    handling: frozenset[str]
    recipients: tuple[str, ...]
    forward: ForwardClause
    line: int
    sender_set: frozenset[str]
    recipient_set: frozenset[str]
    description: str = ""
