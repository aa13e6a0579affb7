"""The sharing policy in force: decides every send and forward (DESIGN.md section 5).

Deny by default: a send is allowed only if, for every agency it reaches, some rule names the
sender, the kind, the handling code and that agency. Group addresses are expanded here, at send
time, and the expansion is part of the decision so that the broker can record it.

Three refusals do not depend on any rule (their `Decision.rule` starts with `builtin:`):
- RED addressed to a group: TLP:RED is for named recipients only.
- A group address that reaches nobody: an empty sharing group is an error, never "everyone"
  (the classic leak is a filter that treats "no members" as "no restriction").
- AMBER+STRICT or RED forwarded outside the forwarder's organisation, whatever a rule says.

`decide_send` runs on every send, so all name resolution happens once in `Policy.parse`: rules
are indexed by (sender, kind, handling code) and hold frozensets of the agency ids they reach.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from broker.errors import BrokerError, PolicyViolation
from broker.policy._schema import parse_document
from broker.policy.codes import KINDS, ORGANISATION_BOUND, TLP_CODES, kind_name, tlp_code
from broker.policy.justification import Justification
from broker.policy.model import Agency, Rule
from broker.policy.retention import DEFAULT_RETENTION, Retention

BUILTIN_UNKNOWN_SENDER: Final = "builtin:unknown-sender"
BUILTIN_UNKNOWN_RECIPIENT: Final = "builtin:unknown-recipient"
BUILTIN_NO_RECIPIENTS: Final = "builtin:no-recipients"
BUILTIN_RED_TO_GROUP: Final = "builtin:red-to-named-agencies-only"
BUILTIN_EMPTY_GROUP: Final = "builtin:empty-group"
BUILTIN_ORGANISATION_BOUND: Final = "builtin:organisation-bound"
BUILTIN_DENY_BY_DEFAULT: Final = "builtin:deny-by-default"
BUILTIN_BAD_REQUEST: Final = "builtin:bad-request"
BUILTIN_RETURN_TO_SENDER: Final = "builtin:return-to-original-sender"


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to "may this be sent (or forwarded)?".

    `rule` names the rule(s) that allowed it, or the rule that came closest and failed (or a
    `builtin:` refusal); `reason` says why in words; `expanded` is the sorted agency ids the
    addresses stand for (empty when the addresses could not be expanded).
    """

    allowed: bool
    rule: str
    reason: str
    expanded: tuple[str, ...] = ()

    def raise_if_denied(self) -> None:
        """Raise `PolicyViolation` (PERMISSION_DENIED) with the reason if this is a refusal."""
        if not self.allowed:
            raise PolicyViolation(f"refused by policy ({self.rule}): {self.reason}")


def _refuse(rule: str, reason: str, expanded: Iterable[str] = ()) -> Decision:
    return Decision(allowed=False, rule=rule, reason=reason, expanded=tuple(sorted(expanded)))


def _allow(used: Mapping[str, list[str]], what: str, expanded: tuple[str, ...]) -> Decision:
    """An allowing decision naming, per rule, which recipients it covered."""
    reason = "; ".join(
        f"{', '.join(ids)} is the original sender, who may always have it back"
        if name == BUILTIN_RETURN_TO_SENDER
        else f"rule '{name}' allows {what} to {', '.join(ids)}"
        for name, ids in used.items()
    )
    return Decision(allowed=True, rule=", ".join(used), reason=reason, expanded=expanded)


def diff(old_text: str, new_text: str, old_name: str = "running", new_name: str = "proposed") -> str:
    """A unified diff between two policy texts ("" when they are equal)."""
    return "".join(
        difflib.unified_diff(
            old_text.splitlines(keepends=True),
            new_text.splitlines(keepends=True),
            fromfile=old_name,
            tofile=new_name,
        )
    )


def _organisation(agency: Agency) -> str:
    if agency.organisation == agency.id:
        return f"{agency.id}'s organisation (it has no sister agencies in the policy)"
    return f"{agency.id}'s organisation '{agency.organisation}'"


def _ordered(values: Iterable[str], order: Sequence[str]) -> str:
    present = set(values)
    return ", ".join(v for v in order if v in present)


class Policy:
    """A validated, immutable sharing policy. Build one with `Policy.parse`."""

    __slots__ = (
        "_agencies",
        "_by_send",
        "_digest",
        "_groups",
        "_justification",
        "_retention",
        "_rules",
        "_source",
        "_text",
    )

    def __init__(
        self,
        text: str,
        source: str,
        agencies: Mapping[str, Agency],
        groups: Mapping[str, frozenset[str]],
        rules: tuple[Rule, ...],
        retention: Retention = DEFAULT_RETENTION,
        justification: Justification | None = None,
    ) -> None:
        """Use `Policy.parse`; this assembles the indexes from already validated parts."""
        self._retention = retention
        self._text = text
        self._source = source
        self._digest = hashlib.sha256(text.encode()).hexdigest()
        self._agencies: Mapping[str, Agency] = MappingProxyType(dict(agencies))
        self._groups: Mapping[str, frozenset[str]] = MappingProxyType(dict(groups))
        self._rules = rules
        self._justification = justification or Justification()
        # (sender, kind, tlp) -> rules that could allow it, in file order (first match is reported).
        by_send: dict[tuple[str, str, str], list[Rule]] = {}
        for rule in rules:
            for sender in rule.sender_set:
                for kind in rule.kinds:
                    for tlp in rule.handling:
                        by_send.setdefault((sender, kind, tlp), []).append(rule)
        self._by_send: dict[tuple[str, str, str], tuple[Rule, ...]] = {
            key: tuple(value) for key, value in by_send.items()
        }

    @classmethod
    def parse(cls, text: str, source: str = "policy.toml") -> Policy:
        """Validate a TOML policy document; raise `PolicyError` naming each bad line."""
        document = parse_document(text, source)
        return cls(
            text, source, document.agencies, document.groups, document.rules, document.retention, document.justification
        )

    # Introspection --------------------------------------------------------------------------------

    @property
    def text(self) -> str:
        """The document as written."""
        return self._text

    @property
    def source(self) -> str:
        """Where the document came from, as used in error messages (e.g. `policy.toml`)."""
        return self._source

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the document's UTF-8 text."""
        return self._digest

    @property
    def known_agencies(self) -> frozenset[str]:
        """The ids of every agency the policy defines."""
        return frozenset(self._agencies)

    @property
    def agencies(self) -> Mapping[str, Agency]:
        """Agency id -> agency."""
        return self._agencies

    @property
    def groups(self) -> Mapping[str, frozenset[str]]:
        """Group name -> the agency ids it contains (nested groups flattened)."""
        return self._groups

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The rules, in file order."""
        return self._rules

    @property
    def justification(self) -> Justification:
        """The accepted legal-basis codes and which sends must carry a justification."""
        return self._justification

    @property
    def retention(self) -> Retention:
        """How long stored data is kept (`[retention]`, docs/protocol.md section 22)."""
        return self._retention

    # Decisions ------------------------------------------------------------------------------------

    def _expand(self, addresses: Sequence[str], tlp: str, exclude: frozenset[str]) -> list[str] | Decision:
        """The sorted agency ids the addresses stand for, or a refusal if one cannot be addressed."""
        if not addresses:
            return _refuse(BUILTIN_NO_RECIPIENTS, "no recipients given")
        result: set[str] = set()
        for address in addresses:
            if address in self._agencies:
                result.add(address)
                continue
            members = self._groups.get(address)
            if members is None:
                return _refuse(BUILTIN_UNKNOWN_RECIPIENT, f"'{address}' is neither an agency nor a group in the policy")
            if tlp == "RED":
                return _refuse(
                    BUILTIN_RED_TO_GROUP,
                    f"RED may be addressed only to named agencies, never to a group: '{address}' is a "
                    "group (name its member agencies instead)",
                )
            reached = members - exclude
            if not reached:
                why = "has no members" if not members else f"has no members besides {', '.join(sorted(members))}"
                return _refuse(
                    BUILTIN_EMPTY_GROUP,
                    f"group '{address}' {why}, so it reaches no agency; an empty group is refused, "
                    "never read as everyone",
                )
            result |= reached
        return sorted(result)

    def _closest_refusal(self, sender: str, kind: str, tlp: str, recipient: str) -> tuple[str, str]:
        """The rule nearest to allowing sender->recipient, and what it lacks."""
        best: tuple[tuple[int, bool, bool, int], Rule, list[str]] | None = None
        for rule in self._rules:
            lacks: list[str] = []
            sender_ok = sender in rule.sender_set
            if not sender_ok:
                lacks.append(f"it applies only to senders {', '.join(rule.senders)}; {sender} is not one of them")
            if kind not in rule.kinds:
                lacks.append(f"it covers only {_ordered(rule.kinds, KINDS)}, not {kind}")
            if tlp not in rule.handling:
                lacks.append(f"it allows only {_ordered(rule.handling, TLP_CODES)}, not {tlp}")
            if recipient not in rule.recipient_set:
                lacks.append(
                    f"it allows {kind} at {tlp} only to {', '.join(rule.recipients)}; {recipient} is not in it"
                )
            # Fewest gaps first; among equals, a rule that already links this sender to this
            # recipient (an agreement at another level) is the most useful one to name.
            score = (len(lacks), not sender_ok, recipient not in rule.recipient_set, rule.line)
            if best is None or score < best[0]:
                best = (score, rule, lacks)
        head = f"no rule allows {sender} to send {kind} at {tlp} to {recipient}"
        if best is None:
            return BUILTIN_DENY_BY_DEFAULT, f"{head} (deny by default: the policy has no rules)"
        _, rule, lacks = best
        return rule.name, f"{head}; closest is rule '{rule.name}': {'; '.join(lacks)}"

    def decide_send(self, sender: str, kind: str, tlp: str, recipients: Sequence[str]) -> Decision:
        """May `sender` send `kind` at handling `tlp` to `recipients` (agency ids and/or groups)?

        Group addresses expand to their members minus the sender. `kind` and `tlp` take the
        policy's names (`ALERT`, `AMBER+STRICT`; see `codes.tlp_code` for accepted spellings);
        anything else raises `InvalidRequest`, since it is a malformed request, not a policy matter.
        """
        kind = kind_name(kind)
        tlp = tlp_code(tlp)
        if sender not in self._agencies:
            return _refuse(BUILTIN_UNKNOWN_SENDER, f"sender {sender} is not an agency in the policy")
        ordered = self._expand(recipients, tlp, frozenset((sender,)))
        if isinstance(ordered, Decision):
            return ordered
        candidates = self._by_send.get((sender, kind, tlp), ())
        used: dict[str, list[str]] = {}
        for recipient in ordered:
            for rule in candidates:
                if recipient in rule.recipient_set:
                    used.setdefault(rule.name, []).append(recipient)
                    break
            else:
                rule_name, reason = self._closest_refusal(sender, kind, tlp, recipient)
                return _refuse(rule_name, reason, ordered)
        return _allow(used, f"{kind} at {tlp}", tuple(ordered))

    def decide_forward(
        self, forwarder: str, original_sender: str, kind: str, tlp: str, new_recipients: Sequence[str]
    ) -> Decision:
        """May `forwarder`, a recipient of `original_sender`'s message, pass it on to `new_recipients`?

        The rules under which the original could have reached the forwarder govern: one of their
        `forward` clauses must allow each new recipient. AMBER+STRICT and RED never leave the
        forwarder's organisation. Returning a message to its original sender is always allowed.
        Group addresses expand minus the forwarder and the original sender.
        """
        kind = kind_name(kind)
        tlp = tlp_code(tlp)
        fwd = self._agencies.get(forwarder)
        if fwd is None:
            return _refuse(BUILTIN_UNKNOWN_SENDER, f"forwarder {forwarder} is not an agency in the policy")
        if original_sender not in self._agencies:
            return _refuse(BUILTIN_UNKNOWN_SENDER, f"original sender {original_sender} is not an agency in the policy")
        ordered = self._expand(new_recipients, tlp, frozenset((forwarder, original_sender)))
        if isinstance(ordered, Decision):
            return ordered
        governing = [
            rule for rule in self._by_send.get((original_sender, kind, tlp), ()) if forwarder in rule.recipient_set
        ]
        if not governing:
            rule_name, why = self._closest_refusal(original_sender, kind, tlp, forwarder)
            return _refuse(rule_name, f"no rule lets {forwarder} forward what it could not receive: {why}", ordered)
        used: dict[str, list[str]] = {}
        for recipient in ordered:
            covering = self._forward_rule(
                fwd, recipient, original_sender=original_sender, kind=kind, tlp=tlp, governing=governing
            )
            if isinstance(covering, Decision):
                return Decision(False, covering.rule, covering.reason, tuple(ordered))
            used.setdefault(covering, []).append(recipient)
        return _allow(used, f"forwarding {original_sender}'s {kind} at {tlp}", tuple(ordered))

    def _forward_rule(
        self,
        fwd: Agency,
        recipient: str,
        *,
        original_sender: str,
        kind: str,
        tlp: str,
        governing: Sequence[Rule],
    ) -> str | Decision:
        """The name of what lets `fwd` forward to `recipient`, or the refusal."""
        if recipient == original_sender:
            return BUILTIN_RETURN_TO_SENDER
        target = self._agencies[recipient]
        if tlp in ORGANISATION_BOUND and target.organisation != fwd.organisation:
            return _refuse(
                BUILTIN_ORGANISATION_BOUND,
                f"{tlp} is never forwarded outside the forwarder's organisation, and {recipient} is "
                f"not in {_organisation(fwd)}",
            )
        for rule in governing:
            if rule.forward.allows(fwd, target):
                return rule.name
        first = governing[0]
        others = "".join(f" (nor does rule '{r.name}')" for r in governing[1:])
        return _refuse(
            first.name,
            f"rule '{first.name}' lets recipients forward {first.forward.scope()}{others}; "
            f"{fwd.id} may not forward {original_sender}'s {kind} at {tlp} to {recipient}",
        )

    def explain(self, sender: str, kind: str, tlp: str, recipients: Sequence[str] = ()) -> Decision:
        """`decide_send` for people (ExplainPolicy, `isb policy explain`); never raises on bad input.

        With no recipients it answers "to whom may I send this?": `expanded` lists every agency
        the sender may reach with `kind` at `tlp`, and `rule` the rules that allow it.
        """
        try:
            if recipients:
                return self.decide_send(sender, kind, tlp, recipients)
            kind = kind_name(kind)
            tlp = tlp_code(tlp)
        except BrokerError as exc:
            return _refuse(BUILTIN_BAD_REQUEST, str(exc))
        if sender not in self._agencies:
            return _refuse(BUILTIN_UNKNOWN_SENDER, f"sender {sender} is not an agency in the policy")
        reach: dict[str, set[str]] = {}
        for rule in self._by_send.get((sender, kind, tlp), ()):
            reach.setdefault(rule.name, set()).update(rule.recipient_set - {sender})
        everyone = set().union(*reach.values()) if reach else set()
        if not everyone:
            return _refuse(BUILTIN_DENY_BY_DEFAULT, f"no rule allows {sender} to send {kind} at {tlp} to anyone")
        used = {name: sorted(ids) for name, ids in reach.items() if ids}
        return _allow(used, f"{kind} at {tlp}", tuple(sorted(everyone)))
