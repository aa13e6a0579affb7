"""The sharing policy: who may send what, at which handling code, to whom, and who may forward it.

Public surface::

    policy = Policy.parse(text, source="policy.toml")      # PolicyError lists every bad line
    decision = policy.decide_send("FR-CUSTOMS", "ALERT", "AMBER", ["EU-CUSTOMS"])
    decision.raise_if_denied()                              # PolicyViolation (PERMISSION_DENIED)
    running = RunningPolicy.load(path); running.reload_if_changed(); running.apply(text, actor)

See `broker/policy/policy.py` for the decision rules and `examples/policy.toml` for the format.
"""

from broker.policy.codes import (
    AGENCY_KINDS,
    KINDS,
    TLP_CODES,
    kind_from_proto,
    kind_name,
    tlp_code,
    tlp_from_proto,
)
from broker.policy.errors import PolicyError
from broker.policy.forwarding import AnyOf, NoForwarding, SameOrganisation, ToAgencies
from broker.policy.justification import Justification, Requirement
from broker.policy.model import Agency, ForwardClause, Rule
from broker.policy.policy import Decision, Policy, diff
from broker.policy.running import PolicyChange, RunningPolicy, ValidationReport

__all__ = [
    "AGENCY_KINDS",
    "KINDS",
    "TLP_CODES",
    "Agency",
    "AnyOf",
    "Decision",
    "ForwardClause",
    "Justification",
    "NoForwarding",
    "Policy",
    "PolicyChange",
    "PolicyError",
    "Requirement",
    "Rule",
    "RunningPolicy",
    "SameOrganisation",
    "ToAgencies",
    "ValidationReport",
    "diff",
    "kind_from_proto",
    "kind_name",
    "tlp_code",
    "tlp_from_proto",
]
