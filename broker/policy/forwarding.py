"""What a recipient may forward: small composable clauses, one per `forward` form of a rule.

A rule's `forward` is `"none"` (the default), `"same-organisation"`, `"rule-recipients"`, or a list
mixing those keywords with agency ids, group names and `"*"`; a list means any of its parts
(`AnyOf`). The handling code narrows this further in `Policy.decide_forward`: AMBER+STRICT and RED
never leave the forwarder's organisation, whatever the clause says.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.policy.model import Agency, ForwardClause


@dataclass(frozen=True, slots=True)
class NoForwarding:
    """`forward = "none"`: recipients keep what they receive to themselves."""

    def allows(self, forwarder: Agency, target: Agency) -> bool:
        """Never."""
        return False

    def scope(self) -> str:
        """Nowhere."""
        return 'nowhere (forward = "none")'


@dataclass(frozen=True, slots=True)
class SameOrganisation:
    """`"same-organisation"`: only to agencies of the forwarder's own organisation."""

    def allows(self, forwarder: Agency, target: Agency) -> bool:
        """True if both agencies belong to one organisation."""
        return forwarder.organisation == target.organisation

    def scope(self) -> str:
        """Inside the organisation."""
        return "only within their own organisation"


@dataclass(frozen=True, slots=True)
class ToAgencies:
    """Forwarding to a fixed set of agencies: `"rule-recipients"` or listed ids/groups/`*`."""

    agencies: frozenset[str]
    spec: str  # as written, for messages

    def allows(self, forwarder: Agency, target: Agency) -> bool:
        """True if `target` is in the set."""
        return target.id in self.agencies

    def scope(self) -> str:
        """The allowed targets as the admin wrote them."""
        return f"only to {self.spec}"


@dataclass(frozen=True, slots=True)
class AnyOf:
    """A list of clauses: forwarding is allowed if any of them allows it."""

    clauses: tuple[ForwardClause, ...]

    def allows(self, forwarder: Agency, target: Agency) -> bool:
        """True if one of the clauses allows it."""
        return any(clause.allows(forwarder, target) for clause in self.clauses)

    def scope(self) -> str:
        """The parts' scopes, joined."""
        return " or ".join(clause.scope() for clause in self.clauses)
