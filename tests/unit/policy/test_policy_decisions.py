"""Send and forward decisions against policy_table.toml, as a table, plus the built-in refusals."""

from __future__ import annotations

import time
from dataclasses import dataclass

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.errors import InvalidRequest, PolicyViolation
from broker.policy import KINDS, TLP_CODES, Decision, Policy


@dataclass(frozen=True)
class Send:
    sender: str
    kind: str
    tlp: str
    to: tuple[str, ...]
    allowed: bool
    rule: str
    expanded: tuple[str, ...] | None = None  # checked when given
    says: str = ""  # a phrase the reason must contain


@dataclass(frozen=True)
class Forward:
    forwarder: str
    original: str
    kind: str
    tlp: str
    to: tuple[str, ...]
    allowed: bool
    rule: str
    expanded: tuple[str, ...] | None = None
    says: str = ""


RED_GROUP = "builtin:red-to-named-agencies-only"
EMPTY = "builtin:empty-group"

SENDS = [
    # EU-CUSTOMS: CLEAR..AMBER+STRICT for four kinds, RED alerts by name.
    Send("FR-CUSTOMS", "ALERT", "CLEAR", ("EU-CUSTOMS",), True, "eu-customs", ("DE-ZOLL", "FR-DNRED")),
    Send("FR-CUSTOMS", "ALERT", "GREEN", ("DE-ZOLL",), True, "eu-customs"),
    Send("DE-ZOLL", "REQUEST", "AMBER", ("EU-CUSTOMS",), True, "eu-customs", ("FR-CUSTOMS", "FR-DNRED")),
    Send("FR-DNRED", "RECALL", "AMBER+STRICT", ("FR-CUSTOMS", "DE-ZOLL"), True, "eu-customs"),
    Send("FR-CUSTOMS", "ALERT", "RED", ("DE-ZOLL",), True, "eu-customs-red", ("DE-ZOLL",)),
    Send("FR-CUSTOMS", "ALERT", "RED", ("EU-CUSTOMS",), False, RED_GROUP, says="'EU-CUSTOMS' is a group"),
    Send("FR-CUSTOMS", "REQUEST", "RED", ("DE-ZOLL",), False, "eu-customs", says="not RED"),
    Send("FR-CUSTOMS", "WATCHLIST_UPDATE", "AMBER", ("DE-ZOLL",), False, "eu-customs", says="not WATCHLIST"),
    Send("FR-CUSTOMS", "ALERT", "AMBER", ("DE-BKA",), False, "eu-customs", says="DE-BKA is not in it"),
    # G7-CT: CLEAR..AMBER, forward to the rule's recipients.
    Send("DE-BKA", "ALERT", "GREEN", ("G7-CT",), True, "g7-ct", ("FR-DNRED", "US-CBP")),
    Send("US-CBP", "REPLY", "AMBER", ("DE-BKA", "FR-DNRED"), True, "g7-ct"),
    Send("DE-BKA", "ALERT", "AMBER+STRICT", ("G7-CT",), False, "g7-ct", says="not AMBER+STRICT"),
    Send("DE-BKA", "ALERT", "RED", ("G7-CT",), False, RED_GROUP),
    Send("DE-BKA", "ALERT", "RED", ("US-CBP",), False, "g7-ct", says="CLEAR, GREEN, AMBER, not RED"),
    Send("US-CBP", "ALERT", "CLEAR", ("EU-CUSTOMS",), False, "g7-ct", says="DE-ZOLL is not in it"),
    # ARCHEO-EXPERTS: CLEAR..AMBER for alerts, watchlists and hit reports.
    Send(
        "IT-TPC",
        "WATCHLIST_UPDATE",
        "AMBER",
        ("ARCHEO-EXPERTS",),
        True,
        "archeo",
        ("FR-CUSTOMS", "INT-INTERPOL"),
    ),
    Send("INT-INTERPOL", "HIT_REPORT", "GREEN", ("IT-TPC",), True, "archeo"),
    Send(
        "FR-CUSTOMS",
        "ALERT",
        "CLEAR",
        ("ARCHEO-EXPERTS", "EU-CUSTOMS"),
        True,
        "eu-customs, archeo",
        ("DE-ZOLL", "FR-DNRED", "INT-INTERPOL", "IT-TPC"),
    ),
    Send("IT-TPC", "ALERT", "AMBER+STRICT", ("ARCHEO-EXPERTS",), False, "archeo", says="not AMBER+STRICT"),
    Send("IT-TPC", "ALERT", "RED", ("ARCHEO-EXPERTS",), False, RED_GROUP),
    Send("IT-TPC", "REQUEST", "GREEN", ("FR-CUSTOMS",), False, "archeo", says="not REQUEST"),
    # Rules naming single agencies and "*".
    Send("INT-INTERPOL", "ALERT", "CLEAR", ("PL-SG", "NL-FIOD", "US-CBP"), True, "interpol-clear"),
    Send("INT-INTERPOL", "ALERT", "GREEN", ("PL-SG",), False, "interpol-clear", says="not GREEN"),
    Send("NL-FIOD", "REQUEST", "AMBER", ("DE-BKA", "FR-CUSTOMS"), True, "fiod-requests"),
    Send("NL-FIOD", "REQUEST", "AMBER+STRICT", ("DE-BKA",), False, "fiod-requests"),
    Send("NL-FIOD", "ALERT", "GREEN", ("DE-BKA",), False, "fiod-requests", says="not ALERT"),
    # Built-in refusals.
    Send("PL-SG", "ALERT", "AMBER", ("PENDING",), False, EMPTY, says="never read as everyone"),
    Send("PL-SG", "ALERT", "AMBER", ("SOLO",), False, EMPTY),
    Send("XX-NOBODY", "ALERT", "CLEAR", ("DE-ZOLL",), False, "builtin:unknown-sender"),
    Send("FR-CUSTOMS", "ALERT", "CLEAR", ("EU-CUSTOM",), False, "builtin:unknown-recipient"),
    Send("FR-CUSTOMS", "ALERT", "CLEAR", ("*",), False, "builtin:unknown-recipient"),
    Send("FR-CUSTOMS", "ALERT", "CLEAR", (), False, "builtin:no-recipients"),
]

FORWARDS = [
    Forward("FR-CUSTOMS", "DE-ZOLL", "ALERT", "AMBER", ("FR-DNRED",), True, "eu-customs"),
    Forward("FR-CUSTOMS", "DE-ZOLL", "ALERT", "AMBER+STRICT", ("FR-DNRED",), True, "eu-customs"),
    Forward("FR-CUSTOMS", "DE-ZOLL", "ALERT", "RED", ("FR-DNRED",), False, "eu-customs-red", says="nowhere"),
    Forward("FR-CUSTOMS", "DE-ZOLL", "ALERT", "AMBER", ("DE-BKA",), False, "eu-customs", says="own organisation"),
    Forward("FR-CUSTOMS", "FR-DNRED", "REQUEST", "AMBER+STRICT", ("DE-ZOLL",), False, "builtin:organisation-bound"),
    Forward("FR-CUSTOMS", "DE-ZOLL", "ALERT", "RED", ("EU-CUSTOMS",), False, RED_GROUP),
    Forward("FR-CUSTOMS", "DE-ZOLL", "ALERT", "RED", ("DE-ZOLL",), True, "builtin:return-to-original-sender"),
    Forward("DE-BKA", "US-CBP", "ALERT", "GREEN", ("FR-DNRED",), True, "g7-ct"),
    Forward("DE-BKA", "US-CBP", "ALERT", "AMBER", ("PL-SG",), False, "g7-ct", says="only to the rule's recipients"),
    Forward("DE-BKA", "US-CBP", "ALERT", "CLEAR", ("G7-CT",), True, "g7-ct", ("FR-DNRED",)),
    Forward("IT-TPC", "FR-CUSTOMS", "HIT_REPORT", "AMBER", ("INT-INTERPOL",), True, "archeo"),
    Forward(
        "IT-TPC",
        "FR-CUSTOMS",
        "HIT_REPORT",
        "AMBER",
        ("DE-BKA",),
        False,
        "archeo",
        says="only to INT-INTERPOL",
    ),
    Forward("DE-BKA", "INT-INTERPOL", "ALERT", "CLEAR", ("NL-FIOD",), True, "interpol-clear"),
    Forward("DE-BKA", "FR-CUSTOMS", "ALERT", "GREEN", ("DE-ZOLL",), False, "eu-customs", says="could not receive"),
]


def test_table_covers_three_groups_and_every_handling_code() -> None:
    """The table has 30+ attempts over EU-CUSTOMS, G7-CT, ARCHEO-EXPERTS and all five TLP codes."""
    attempts: list[Send | Forward] = [*SENDS, *FORWARDS]
    assert len(attempts) >= 30
    assert {a.tlp for a in attempts} == set(TLP_CODES)
    addressed = {address for a in attempts for address in a.to}
    assert {"EU-CUSTOMS", "G7-CT", "ARCHEO-EXPERTS"} <= addressed


@pytest.mark.parametrize("case", SENDS, ids=lambda c: f"{c.sender}-{c.kind}-{c.tlp}-{'+'.join(c.to) or 'none'}")
def test_send_is_decided_as_the_policy_says(table_policy: Policy, case: Send) -> None:
    """Each send is allowed or refused as policy_table.toml says, naming the rule."""
    decision = table_policy.decide_send(case.sender, case.kind, case.tlp, case.to)
    assert (decision.allowed, decision.rule) == (case.allowed, case.rule), decision.reason
    if case.expanded is not None:
        assert decision.expanded == case.expanded
    assert case.says in decision.reason
    if not decision.allowed and not decision.rule.startswith("builtin:"):
        assert f"rule '{decision.rule}'" in decision.reason


@pytest.mark.parametrize(
    "case", FORWARDS, ids=lambda c: f"{c.forwarder}-fwd-{c.original}-{c.kind}-{c.tlp}-{'+'.join(c.to)}"
)
def test_forward_is_decided_as_the_policy_says(table_policy: Policy, case: Forward) -> None:
    """Each forward is allowed or refused as policy_table.toml and the handling code say."""
    decision = table_policy.decide_forward(case.forwarder, case.original, case.kind, case.tlp, case.to)
    assert (decision.allowed, decision.rule) == (case.allowed, case.rule), decision.reason
    if case.expanded is not None:
        assert decision.expanded == case.expanded
    assert case.says in decision.reason


def test_refusal_names_first_uncovered_recipient_and_closest_rule(table_policy: Policy) -> None:
    """A refusal says which recipient no rule covers and what the closest rule lacks."""
    decision = table_policy.decide_send("FR-CUSTOMS", "ALERT", "AMBER", ["DE-ZOLL", "DE-BKA"])
    assert not decision.allowed
    assert decision.reason == (
        "no rule allows FR-CUSTOMS to send ALERT at AMBER to DE-BKA; closest is rule 'eu-customs': "
        "it allows ALERT at AMBER only to EU-CUSTOMS; DE-BKA is not in it"
    )


def test_group_expansion_excludes_the_sender(table_policy: Policy) -> None:
    """A sender addressing its own group does not send to itself."""
    decision = table_policy.decide_send("FR-DNRED", "ALERT", "GREEN", ["EU-CUSTOMS"])
    assert decision.expanded == ("DE-ZOLL", "FR-CUSTOMS")


def test_duplicate_addresses_expand_once(table_policy: Policy) -> None:
    """An agency named directly and through a group appears once in the expansion."""
    decision = table_policy.decide_send("FR-CUSTOMS", "ALERT", "GREEN", ["DE-ZOLL", "EU-CUSTOMS", "DE-ZOLL"])
    assert decision.expanded == ("DE-ZOLL", "FR-DNRED")


def test_nested_groups_are_flattened() -> None:
    """A group listing another group contains that group's agencies."""
    policy = Policy.parse(
        """
[[agencies]]
id = "FR-CUSTOMS"
country = "FR"
kind = "customs"
[[agencies]]
id = "DE-ZOLL"
country = "DE"
kind = "customs"
[[groups]]
name = "OUTER"
members = ["INNER"]
[[groups]]
name = "INNER"
members = ["FR-CUSTOMS", "DE-ZOLL"]
"""
    )
    assert policy.groups["OUTER"] == frozenset({"FR-CUSTOMS", "DE-ZOLL"})


def test_empty_policy_denies_everything_by_default() -> None:
    """Without rules, every send is refused as deny-by-default."""
    policy = Policy.parse(
        '[[agencies]]\nid = "FR-CUSTOMS"\ncountry = "FR"\nkind = "customs"\n'
        '[[agencies]]\nid = "DE-ZOLL"\ncountry = "DE"\nkind = "customs"\n'
    )
    decision = policy.decide_send("FR-CUSTOMS", "ALERT", "CLEAR", ["DE-ZOLL"])
    assert (decision.allowed, decision.rule) == (False, "builtin:deny-by-default")


def test_kind_and_tlp_spellings_are_accepted(table_policy: Policy) -> None:
    """Lower case, `TLP:` prefixes and protobuf enum names mean the same code."""
    for tlp in ("amber+strict", "TLP:AMBER+STRICT", "TLP_AMBER_STRICT"):
        assert table_policy.decide_send("FR-DNRED", "recall", tlp, ["DE-ZOLL"]).allowed


def test_unknown_tlp_raises_invalid_request(table_policy: Policy) -> None:
    """A handling code that does not exist is a malformed request, not a policy refusal."""
    with pytest.raises(InvalidRequest, match="unknown handling code 'PURPLE'"):
        table_policy.decide_send("FR-CUSTOMS", "ALERT", "PURPLE", ["DE-ZOLL"])


def test_unknown_kind_raises_invalid_request(table_policy: Policy) -> None:
    """A kind that does not exist is a malformed request, not a policy refusal."""
    with pytest.raises(InvalidRequest, match="unknown message kind"):
        table_policy.decide_forward("FR-CUSTOMS", "DE-ZOLL", "GOSSIP", "CLEAR", ["FR-DNRED"])


def test_raise_if_denied_raises_policy_violation_naming_the_rule(table_policy: Policy) -> None:
    """A refusal becomes PERMISSION_DENIED with the rule and the reason."""
    decision = table_policy.decide_send("DE-BKA", "ALERT", "AMBER+STRICT", ["US-CBP"])
    with pytest.raises(PolicyViolation, match=r"refused by policy \(g7-ct\)") as info:
        decision.raise_if_denied()
    assert info.value.status is grpc.StatusCode.PERMISSION_DENIED


def test_raise_if_denied_is_silent_when_allowed(table_policy: Policy) -> None:
    """An allowing decision raises nothing."""
    table_policy.decide_send("DE-BKA", "ALERT", "AMBER", ["US-CBP"]).raise_if_denied()


def test_explain_without_recipients_lists_everyone_reachable(table_policy: Policy) -> None:
    """ExplainPolicy with no recipients answers to whom the sender may send."""
    decision = table_policy.explain("FR-CUSTOMS", "ALERT", "AMBER")
    assert decision.allowed
    assert decision.expanded == ("DE-ZOLL", "FR-DNRED", "INT-INTERPOL", "IT-TPC")
    assert decision.rule == "eu-customs, archeo"


def test_explain_turns_a_bad_question_into_a_refusal(table_policy: Policy) -> None:
    """ExplainPolicy answers a malformed question with a reason instead of raising."""
    decision = table_policy.explain("FR-CUSTOMS", "ALERT", "PURPLE", ["DE-ZOLL"])
    assert (decision.allowed, decision.rule) == (False, "builtin:bad-request")
    assert "PURPLE" in decision.reason


def test_explain_with_recipients_matches_decide_send(table_policy: Policy) -> None:
    """ExplainPolicy about a concrete send gives the same decision the broker enforces."""
    args = ("US-CBP", "ALERT", "CLEAR", ["EU-CUSTOMS"])
    assert table_policy.explain(*args) == table_policy.decide_send(*args)


def test_decide_send_is_fast_enough_for_every_send(table_policy: Policy) -> None:
    """Ten thousand group sends decide well within a second (indexes are built at parse time)."""
    start = time.perf_counter()
    for _ in range(10_000):
        table_policy.decide_send("FR-CUSTOMS", "ALERT", "AMBER", ("EU-CUSTOMS", "ARCHEO-EXPERTS"))
    assert time.perf_counter() - start < 1.0


_AGENCIES = [
    "FR-CUSTOMS",
    "FR-DNRED",
    "DE-ZOLL",
    "DE-BKA",
    "IT-TPC",
    "US-CBP",
    "INT-INTERPOL",
    "NL-FIOD",
    "PL-SG",
]
_ADDRESSES = [*_AGENCIES, "EU-CUSTOMS", "G7-CT", "ARCHEO-EXPERTS", "PENDING", "SOLO"]


@settings(max_examples=300, deadline=None)
@given(
    sender=st.sampled_from(_AGENCIES),
    kind=st.sampled_from(KINDS),
    tlp=st.sampled_from(TLP_CODES),
    to=st.lists(st.sampled_from(_ADDRESSES), min_size=1, max_size=4),
)
def test_every_allowed_send_is_covered_rule_by_rule(
    table_policy: Policy, sender: str, kind: str, tlp: str, to: list[str]
) -> None:
    """Whenever a send is allowed, each agency reached is named by a rule for this sender, kind and code."""
    decision: Decision = table_policy.decide_send(sender, kind, tlp, to)
    if tlp == "RED" and any(address in table_policy.groups for address in to):
        assert not decision.allowed
    if not decision.allowed:
        return
    assert decision.expanded
    for recipient in decision.expanded:
        assert recipient in table_policy.known_agencies
        assert recipient != sender or sender in to
        assert any(
            sender in r.sender_set and kind in r.kinds and tlp in r.handling and recipient in r.recipient_set
            for r in table_policy.rules
        )
