"""tests/vectors/crl-freshness.json: each CRL is accepted or refused as the vector says, and the
accepted CRL revokes exactly the certificates it lists (docs/protocol.md section 16)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from broker.protocol.errors import VerificationError
from broker.protocol.revocation import StaleRevocationList, VerifiedCrl, verify_revocation_list
from tests.unit.protocol.vector_support import assert_leaf_profile, certificate, load, unhex

VECTOR = load("crl-freshness")
CA = certificate(VECTOR["ca_certificate_pem"])


def _verify(case: dict[str, Any]) -> VerifiedCrl:
    now = dt.datetime.fromisoformat(case.get("verification_time", VECTOR["verification_time"]))
    return verify_revocation_list(
        unhex(case["crl_der_hex"]), trust_roots=[CA], now=now, min_number=VECTOR["highest_crl_number_seen"]
    )


def _cases(expect: str) -> list[dict[str, Any]]:
    return [c for c in VECTOR["crls"] if c["expect"] == expect]


@pytest.mark.parametrize("case", _cases("accept"), ids=lambda c: c["description"])
def test_accepted_crls_verify_with_their_number_and_serials(case: dict[str, Any]) -> None:
    """A current CRL of the anchor, numbered at least as high as the one seen, is accepted as recorded."""
    crl = _verify(case)
    assert crl.number == case["crl_number"]
    assert sorted(crl.revoked) == case["revoked_serials"]


@pytest.mark.parametrize("case", _cases("stale") + _cases("rolled-back"), ids=lambda c: c["description"])
def test_stale_and_rolled_back_crls_are_refused_as_stale(case: dict[str, Any]) -> None:
    """Past nextUpdate, or below the highest number seen: StaleRevocationList (fail closed)."""
    with pytest.raises(StaleRevocationList):
        _verify(case)


@pytest.mark.parametrize("case", _cases("invalid"), ids=lambda c: c["description"])
def test_invalid_crls_are_refused(case: dict[str, Any]) -> None:
    """Wrong signer, unknown issuer, no CRL number, issued in the future: VerificationError."""
    with pytest.raises(VerificationError):
        _verify(case)


@pytest.mark.parametrize("entry", VECTOR["certificates"], ids=lambda c: c["description"])
def test_accepted_crl_revokes_exactly_the_listed_certificates(entry: dict[str, Any]) -> None:
    """Under the first accepted CRL, serial 401 is revoked and 402 is not; both are in the leaf profile."""
    crl = _verify(_cases("accept")[0])
    cert = certificate(entry["certificate_pem"])
    assert_leaf_profile(cert, CA)
    assert cert.serial_number == entry["serial"]
    if entry["revoked"]:
        with pytest.raises(VerificationError, match="has been revoked"):
            crl.verify_not_revoked(cert, who="DE-BKA")
    else:
        crl.verify_not_revoked(cert, who="DE-BKA")


def test_every_expectation_is_covered() -> None:
    """The vector has cases of each kind, so a client checking it checks every rule."""
    assert {c["expect"] for c in VECTOR["crls"]} == {"accept", "stale", "rolled-back", "invalid"}
