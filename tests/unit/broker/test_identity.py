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
