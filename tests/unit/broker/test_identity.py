"""SPIFFE identities of the trust domain."""

from __future__ import annotations

import pytest

from broker.errors import AuthenticationError
from broker.identity import Role, make_spiffe_id, parse_spiffe_id


@pytest.mark.parametrize(
    "uri",
    [
        "spiffe://isb.dev/agency/FR-CUSTOMS",
        "spiffe://isb.dev/auditor/audit-1",
        "spiffe://isb.dev/admin/admin-1",
        "spiffe://isb.dev/broker/node-1",
    ],
)
def test_well_formed_ids_round_trip(uri: str) -> None:
    """A well-formed id of our trust domain parses and prints back unchanged."""
    assert str(parse_spiffe_id(uri, "isb.dev")) == uri


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("spiffe://other.example/agency/FR-CUSTOMS", "not in trust domain"),
        ("spiffe://isb.dev/agency/fr-customs", "malformed"),
        ("spiffe://isb.dev/superuser/root", "malformed"),
        ("spiffe://isb.dev/agency/FR-CUSTOMS/extra", "not of the form"),
        ("https://isb.dev/agency/FR-CUSTOMS", "not in trust domain"),
    ],
)
def test_foreign_or_malformed_ids_are_refused(uri: str, why: str) -> None:
    """Ids of another trust domain, unknown roles and malformed agency ids are authentication errors."""
    with pytest.raises(AuthenticationError, match=why):
        parse_spiffe_id(uri, "isb.dev")


def test_agency_role_requires_an_agency_id() -> None:
    """An agency name must look like FR-CUSTOMS."""
    with pytest.raises(ValueError, match="not an agency id"):
        make_spiffe_id("isb.dev", Role.AGENCY, "customs")


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("spiffe://other.example/agency/FR-CUSTOMS", ("other.example", Role.AGENCY, "FR-CUSTOMS")),
        ("spiffe://isb.dev/auditor/audit-1", ("isb.dev", Role.AUDITOR, "audit-1")),
    ],
)
def test_without_a_trust_domain_any_well_formed_domain_parses(uri: str, expected: tuple[str, Role, str]) -> None:
    """With trust_domain None the id's own domain is taken, and the rest is checked as usual."""
    spiffe_id = parse_spiffe_id(uri, None)
    assert (spiffe_id.trust_domain, spiffe_id.role, spiffe_id.name) == expected


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("https://isb.dev/agency/FR-CUSTOMS", "not a SPIFFE id"),
        ("spiffe://isb.dev", "not a SPIFFE id"),
        ("spiffe://Bad_Domain/agency/FR-CUSTOMS", "malformed"),
        ("spiffe://isb.dev/agency/fr-customs", "malformed"),
        ("spiffe://isb.dev/agency/FR-CUSTOMS/extra", "not of the form"),
    ],
)
def test_without_a_trust_domain_malformed_ids_are_still_refused(uri: str, why: str) -> None:
    """Not naming the trust domain relaxes only the domain, never the form of the id."""
    with pytest.raises(AuthenticationError, match=why):
        parse_spiffe_id(uri, None)
