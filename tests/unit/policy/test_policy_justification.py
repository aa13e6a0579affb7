"""The policy's justification part: accepted legal-basis codes and per kind/handling requirements."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.errors import BrokerError
from broker.policy import Policy, PolicyError
from broker.protocol.errors import ProtocolError
from broker.protocol.validation import check_justification

BASE = """\
legal_bases = ["LED-ART8", "NAPLES-II"]

[[agencies]]
id = "FR-CUSTOMS"
country = "FR"
kind = "customs"

[[justification]]
kinds = ["ALERT"]
handling = ["AMBER..RED"]
require = ["legal_basis", "case_reference"]
"""


def refusal(policy: Policy, kind: str, tlp: str, **values: str) -> str:
    """The message of the INVALID_ARGUMENT refusal of a send with these justification values."""
    with pytest.raises(BrokerError) as info:
        policy.justification.check_send(kind, tlp, values)
    assert info.value.status is grpc.StatusCode.INVALID_ARGUMENT
    return str(info.value)


def test_missing_required_field_is_refused_naming_the_field_and_the_rule_line() -> None:
    """An AMBER alert without a case reference names header.case_reference and the requirement's line."""
    message = refusal(Policy.parse(BASE), "ALERT", "AMBER", legal_basis="LED-ART8")
    assert message.startswith("header.case_reference is required for ALERT at AMBER")
    assert "line 8" in message


def test_unknown_code_is_refused_listing_the_accepted_codes() -> None:
    """A code outside `legal_bases` is refused with the list an operator can pick from."""
    message = refusal(Policy.parse(BASE), "REQUEST", "GREEN", legal_basis="GDPR-6")
    assert message == ("header.legal_basis 'GDPR-6' is not an accepted legal-basis code; accepted: LED-ART8, NAPLES-II")


def test_sends_outside_every_requirement_need_no_justification() -> None:
    """A GREEN alert and an AMBER request match no requirement: nothing is required."""
    policy = Policy.parse(BASE)
    policy.justification.check_send("ALERT", "GREEN", {})
    policy.justification.check_send("REQUEST", "AMBER", {})


def test_a_policy_without_codes_refuses_any_code() -> None:
    """Without `legal_bases` no code is accepted, and the refusal says how to add them (fail closed)."""
    policy = Policy.parse(BASE.replace('legal_bases = ["LED-ART8", "NAPLES-II"]\n', ""))
    assert "lists no legal-basis codes" in refusal(policy, "ALERT", "GREEN", legal_basis="LED-ART8")


def test_bad_justification_tables_are_reported_with_their_lines() -> None:
    """An unknown field, a malformed code and an unknown kind are each reported at their line."""
    text = (
        BASE.replace('"NAPLES-II"', '"naples 2"')
        .replace('"case_reference"', '"case"')
        .replace('kinds = ["ALERT"]', 'kinds = ["ALERTS"]')
    )
    with pytest.raises(PolicyError) as info:
        Policy.parse(text, "policy.toml")
    assert info.value.errors == [
        "policy.toml:1: policy: legal basis 'naples 2' is not a code (1 to 32 of A-Z 0-9 . _ -)",
        "policy.toml:9: justification #1: unknown kind 'ALERTS' (expected one of ALERT, REQUEST, REPLY, "
        "WATCHLIST_UPDATE, HIT_REPORT, RECALL)",
        "policy.toml:11: justification #1: unknown field 'case' (expected legal_basis or case_reference)",
    ]


@given(st.text(max_size=300), st.text(max_size=300), st.text(max_size=300))
def test_justification_fields_are_accepted_or_refused_with_a_protocol_error(
    legal_basis: str, case_reference: str, operator: str
) -> None:
    """Any text is either within the limits or refused with a ProtocolError naming a justification field."""
    refused: ProtocolError | None = None
    try:
        check_justification(legal_basis, case_reference, operator, "header.")
    except ProtocolError as exc:
        refused = exc
    if refused is not None:
        assert refused.field in {"header.legal_basis", "header.case_reference", "header.operator"}
        assert len(str(refused)) < 512  # within a refusal entry's bound, whatever the input
