"""Properties of the CRL parser and the SDK's trust state file: whatever the bytes, the answer is a
verified CRL or a `VerificationError` (a state file: its state or a `TrustStateError`), never another
exception, and no change to a signed CRL is accepted as a different CRL."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.protocol.errors import VerificationError
from broker.protocol.revocation import VerifiedCrl, verify_revocation_list
from clients._trust_state import TrustState, TrustStateError
from tests.unit.protocol.vector_support import certificate, load, unhex

VECTOR = load("crl-freshness")
CA = certificate(VECTOR["ca_certificate_pem"])
NOW = dt.datetime.fromisoformat(VECTOR["verification_time"])
GOOD = unhex(VECTOR["crls"][0]["crl_der_hex"])
PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)


def _outcome(data: bytes) -> VerifiedCrl | None:
    try:
        return verify_revocation_list(data, trust_roots=[CA], now=NOW, min_number=0)
    except VerificationError:
        return None


def test_the_base_crl_is_accepted() -> None:
    """The properties below start from a CRL that verifies."""
    assert _outcome(GOOD) is not None


@PROPERTY_SETTINGS
@given(st.binary(max_size=400))
def test_arbitrary_bytes_are_a_verification_error(data: bytes) -> None:
    """Random bytes (DER or PEM-looking) never raise anything but VerificationError, and never verify."""
    assert _outcome(data) is None
    assert _outcome(b"-----BEGIN X509 CRL-----\n" + data) is None


@PROPERTY_SETTINGS
@given(st.integers(min_value=0, max_value=len(GOOD) - 1), st.integers(min_value=0, max_value=255))
def test_any_changed_byte_of_a_signed_crl_is_refused(position: int, value: int) -> None:
    """A changed byte is refused, or (DER that re-encodes the same content) yields the same CRL."""
    changed = GOOD[:position] + bytes([value]) + GOOD[position + 1 :]
    outcome = _outcome(changed)
    base = _outcome(GOOD)
    assert outcome is None or (base is not None and (outcome.number, outcome.revoked) == (base.number, base.revoked))


_JSON_VALUES = st.recursive(
    st.none() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
)


@PROPERTY_SETTINGS
@given(
    st.binary(max_size=200)
    | st.text(max_size=200).map(str.encode)
    | _JSON_VALUES.map(
        lambda value: json.dumps(
            {"format": "isb-sdk-trust-state/1", "crl_number": value, "key_bundle_audit_index": value}
        ).encode()
    )
    | _JSON_VALUES.map(
        lambda value: json.dumps(
            {"format": "isb-sdk-trust-state/1", "crl_number": 1, "key_bundle_audit_index": {}, "checkpoint": value}
        ).encode()
    )
)
def test_trust_state_files_load_or_raise_trust_state_error(tmp_path: Path, data: bytes) -> None:
    """A state file (CRL number, bundle indexes, held checkpoint) either loads with well-typed marks or
    is refused with TrustStateError (never reset)."""
    path = tmp_path / "trust-state.json"
    path.write_bytes(data)
    try:
        state = TrustState(path)
    except TrustStateError:
        return
    assert isinstance(state.crl_number, int)
    assert all(isinstance(k, str) and isinstance(v, int) for k, v in state.bundle_index.items())
    assert state.checkpoint is None or len(state.checkpoint.root_hash) == 32
