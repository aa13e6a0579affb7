"""Policy documents that do not validate are refused with every problem and its line."""

from __future__ import annotations

import hashlib

import grpc
import pytest

from broker.errors import BrokerError
from broker.policy import Policy, PolicyError

# Lines 1-12: two agencies and a group; each test appends what it needs from line 13 on.
BASE = """\
[[agencies]]
id = "FR-CUSTOMS"
country = "FR"
kind = "customs"
[[agencies]]
id = "DE-BKA"
country = "DE"
kind = "police"

[[groups]]
name = "EU-CUSTOMS"
members = ["FR-CUSTOMS"]
"""


def rule(name: str = "eu-alerts", **fields: str) -> str:
    """A [[rules]] table; `fields` override the default TOML values, given as TOML text."""
    values = {
        "senders": '["EU-CUSTOMS"]',
        "kinds": '["ALERT"]',
        "handling": '["AMBER"]',
        "recipients": '["EU-CUSTOMS"]',
        **fields,
    }
    body = "".join(f"{key} = {value}\n" for key, value in values.items())
    return f'[[rules]]\nname = "{name}"\n{body}'


def errors_of(text: str, source: str = "policy.toml") -> list[str]:
    """The error lines `Policy.parse` raises for `text`."""
    with pytest.raises(PolicyError) as info:
        Policy.parse(text, source)
    return info.value.errors


def test_base_document_is_valid() -> None:
    """The fixture document itself validates (so each failure below is the one introduced)."""
    Policy.parse(BASE + rule())


def test_unknown_group_names_its_line_and_suggests_the_group() -> None:
    """A misspelt group in a rule is reported at its line, with the nearest group name."""
    text = BASE + rule(recipients='["EU-CUSTOM"]')  # rule starts at 13; recipients is line 18
    assert errors_of(text) == [
        "policy.toml:18: rule 'eu-alerts': 'recipients': unknown group 'EU-CUSTOM' (did you mean 'EU-CUSTOMS'?)"
    ]


def test_unknown_agency_in_group_names_the_element_line() -> None:
    """An unknown member in a multi-line array is reported at the line of that element."""
    text = BASE + '[[groups]]\nname = "G7-CT"\nmembers = [\n  "DE-BKA",\n  "US-CBP",\n]\n'
    assert errors_of(text) == ["policy.toml:17: group 'G7-CT': unknown agency or group 'US-CBP'"]


def test_bad_tlp_names_its_line() -> None:
    """A handling code that is not TLP 2.0 is reported at its line, with the valid codes."""
    text = BASE + rule(handling='["AMBER", "WHITE"]')
    (error,) = errors_of(text)
    assert error.startswith("policy.toml:17: rule 'eu-alerts': unknown handling code 'WHITE'")
    assert "TLP 2.0 renamed WHITE to CLEAR" in error


def test_bad_kind_names_its_line() -> None:
    """A message kind that does not exist is reported at its line."""
    text = BASE + rule(kinds='["ALERT", "GOSSIP"]')
    (error,) = errors_of(text)
    assert error.startswith("policy.toml:16: rule 'eu-alerts': unknown kind 'GOSSIP'")


def test_duplicate_rule_name_names_both_lines() -> None:
    """A second rule with the same name is reported at its name, pointing to the first."""
    text = BASE + rule() + rule()  # second rule's name is line 20
    assert errors_of(text) == ["policy.toml:20: rule 'eu-alerts': duplicate rule name (first at line 14)"]


def test_toml_syntax_error_names_its_line() -> None:
    """Malformed TOML is reported at the line the TOML parser stopped."""
    text = BASE + '[[rules]]\nname = "broken\n'
    (error,) = errors_of(text)
    assert error.startswith("policy.toml:14: TOML syntax error: ")


def test_toml_error_at_end_of_document_names_the_last_line() -> None:
    """An unterminated value at the end of the file is reported at its last line."""
    (error,) = errors_of('a = """\nnever closed')
    assert error.startswith("policy.toml:2: TOML syntax error: ")


def test_every_error_is_reported_in_line_order() -> None:
    """All problems of a document come back together, sorted by line, with the source name."""
    text = BASE + rule(kinds='["GOSSIP"]', recipients='["NOWHERE"]')
    errors = errors_of(text, source="etc/isb/policy.toml")
    assert [e.split(":")[1] for e in errors] == ["16", "18"]
    assert all(e.startswith("etc/isb/policy.toml:") for e in errors)


def test_policy_error_is_a_broker_error_mapped_to_invalid_argument() -> None:
    """PolicyError carries the lines and maps to INVALID_ARGUMENT."""
    with pytest.raises(BrokerError) as info:
        Policy.parse(BASE + rule(kinds='["GOSSIP"]'))
    assert isinstance(info.value, PolicyError)
    assert info.value.status is grpc.StatusCode.INVALID_ARGUMENT
    assert str(info.value) == "\n".join(info.value.errors)


def test_misspelt_key_is_refused_not_ignored() -> None:
    """An unknown key (a typo that would otherwise fall back to a default) is an error."""
    text = BASE + rule().replace("recipients =", "recipents =")
    errors = errors_of(text)
    assert "policy.toml:18: rule 'eu-alerts': unknown key 'recipents' (did you mean 'recipients'?)" in errors
    assert "policy.toml:13: rule 'eu-alerts': missing 'recipients'" in errors


def test_country_must_be_iso_3166() -> None:
    """A country that is not ISO 3166-1 alpha-2 is refused (with a hint for UK)."""
    (error,) = errors_of(BASE.replace('country = "DE"', 'country = "UK"'))
    assert error == (
        "policy.toml:7: agency 'DE-BKA': country 'UK' is not an ISO 3166-1 alpha-2 code "
        "(the ISO code of the United Kingdom is GB)"
    )


def test_agency_kind_must_be_known() -> None:
    """An agency kind outside the five of the design is refused."""
    (error,) = errors_of(BASE.replace('kind = "police"', 'kind = "army"'))
    assert error.startswith("policy.toml:8: agency 'DE-BKA': unknown kind 'army'")


def test_agency_id_must_match_the_identity_format() -> None:
    """An agency id that no certificate could carry is refused."""
    (error,) = errors_of(BASE.replace('"DE-BKA"', '"de-bka"'))
    assert error.startswith("policy.toml:6: agency 'de-bka': not an agency id")


def test_duplicate_agency_is_refused() -> None:
    """The same agency defined twice is refused at the second definition."""
    text = BASE + '[[agencies]]\nid = "DE-BKA"\ncountry = "DE"\nkind = "police"\n'
    assert errors_of(text) == ["policy.toml:14: agency 'DE-BKA': defined twice (first at line 6)"]


def test_group_cannot_share_a_name_with_an_agency() -> None:
    """Agencies and groups share one namespace, so an address always means one thing."""
    text = BASE + '[[groups]]\nname = "DE-BKA"\nmembers = []\n'
    assert errors_of(text) == ["policy.toml:14: group 'DE-BKA': an agency has this id already"]


def test_group_membership_cycle_is_refused() -> None:
    """Nested groups that contain each other are refused."""
    text = BASE + '[[groups]]\nname = "A-GRP"\nmembers = ["B-GRP"]\n[[groups]]\nname = "B-GRP"\nmembers = ["A-GRP"]\n'
    errors = errors_of(text)
    assert errors == ["policy.toml:18: group 'B-GRP': membership cycle A-GRP -> B-GRP -> A-GRP"]


def test_star_cannot_be_a_group_member() -> None:
    """A group of everyone must be written out, so that no group silently grows."""
    text = BASE.replace('members = ["FR-CUSTOMS"]', 'members = ["*"]')
    (error,) = errors_of(text)
    assert error.startswith("policy.toml:12: group 'EU-CUSTOMS': '*' cannot be a member")


def test_empty_rule_list_is_refused() -> None:
    """A rule whose recipients are empty allows nothing and is reported as a mistake."""
    (error,) = errors_of(BASE + rule(recipients="[]"))
    assert error == "policy.toml:18: rule 'eu-alerts': 'recipients' is empty, so the rule allows nothing"


def test_wrong_value_type_is_refused() -> None:
    """A string where an array is expected is reported with the key's line."""
    (error,) = errors_of(BASE + rule(kinds='"ALERT"'))
    assert error == "policy.toml:16: rule 'eu-alerts': 'kinds' must be an array of strings"


def test_handling_range_expands_in_tlp_order() -> None:
    """`CLEAR..AMBER` stands for CLEAR, GREEN and AMBER."""
    policy = Policy.parse(BASE + rule(handling='["CLEAR..AMBER"]'))
    assert policy.rules[0].handling == frozenset({"CLEAR", "GREEN", "AMBER"})


def test_backwards_handling_range_is_refused() -> None:
    """`RED..CLEAR` is refused rather than read as empty."""
    (error,) = errors_of(BASE + rule(handling='["RED..CLEAR"]'))
    assert error == "policy.toml:17: rule 'eu-alerts': handling range 'RED..CLEAR' runs backwards (write CLEAR..RED)"


def test_forward_none_cannot_be_combined() -> None:
    """`forward = ["none", ...]` is contradictory and refused."""
    (error,) = errors_of(BASE + rule(forward='["none", "DE-BKA"]'))
    assert error == "policy.toml:19: rule 'eu-alerts': 'none' cannot be combined"


def test_forward_to_unknown_agency_is_refused() -> None:
    """A forward target that is not an agency or group is reported at its line."""
    (error,) = errors_of(BASE + rule(forward='["same-organisation", "DE-BKAA"]'))
    assert error == "policy.toml:19: rule 'eu-alerts': 'forward': unknown agency 'DE-BKAA' (did you mean 'DE-BKA'?)"


def test_rules_written_inline_report_the_rules_key_line() -> None:
    """Rules written as an inline array still get a line: the `rules =` key's."""
    text = BASE.replace('[[agencies]]\nid = "FR-CUSTOMS"', 'rules = [{name = "x"}]\n[[agencies]]\nid = "FR-CUSTOMS"', 1)
    errors = errors_of(text)
    assert errors[0].startswith("policy.toml:1: rule 'x': missing 'senders'")


def test_unsupported_version_is_refused() -> None:
    """A document for a future schema version is refused instead of half-understood."""
    assert errors_of("version = 2\n" + BASE) == ["policy.toml:1: policy: unsupported version 2 (expected 1)"]


def test_digest_is_sha256_of_the_text() -> None:
    """`digest` is the SHA-256 of the document exactly as written."""
    text = BASE + rule()
    assert Policy.parse(text).digest == hashlib.sha256(text.encode()).hexdigest()
