"""The parse-failure rule (as sigstore-python keeps it): whatever bytes or field values a parser is
given, it fails with the project's own error (`ProtocolError`, `VerificationError`), never a raw
`ValueError`, `DecodeError` or anything else. Hypothesis drives headers, key bundles, receipts and
forward consents, signed by a valid key so that parsing and validation are reached."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.api.v1 import envelope_pb2
from broker.audit import AuditEvent
from broker.protocol import _pae, validation
from broker.protocol.envelope import uuid7
from broker.protocol.errors import ProtocolError, VerificationError
from broker.protocol.forwarding import verify_forward_consent
from broker.protocol.keys import sign_identity, verify_key_bundle
from broker.protocol.receipts import verify_receipt
from tests.unit.protocol.protocol_testpki import NOW, TRUST_DOMAIN, Pki

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
TEXT = st.text(max_size=80)


def _only_protocol_errors(parse: Callable[[], object]) -> None:
    try:
        parse()
    except ProtocolError:
        pass  # the project's own error: fine (VerificationError is one)
    except Exception as exc:  # the rule under test: nothing else may escape
        pytest.fail(f"a parser raised {type(exc).__name__}: {exc}")


headers = st.builds(
    envelope_pb2.Header,
    version=st.just(1),
    message_id=st.one_of(TEXT, st.uuids(version=4).map(str), st.builds(lambda _: uuid7(), st.none())),
    sender=st.one_of(st.just("FR-CUSTOMS"), TEXT),
    sender_cert_sha256=st.binary(max_size=40),
    recipients=st.lists(st.one_of(st.just("DE-BKA"), TEXT), max_size=5),
    kind=INT32,
    priority=INT32,
    handling=st.builds(
        envelope_pb2.Handling, tlp=INT32, classification=TEXT, source_reliability=INT32, information_accuracy=INT32
    ),
    created=st.builds(lambda s, n: envelope_pb2.Header().created.__class__(seconds=s, nanos=n), INT64, INT32),
    in_reply_to=TEXT,
    watchlist_id=TEXT,
    watchlist_version=st.integers(min_value=0, max_value=2**64 - 1),
    ciphertext_sha256=st.binary(max_size=40),
    wrapped_keys_sha256=st.binary(max_size=40),
)


@SETTINGS
@given(header=headers)
def test_any_header_field_values_are_refused_with_a_protocol_error_or_accepted_in_range(
    header: envelope_pb2.Header,
) -> None:
    """check_header on arbitrary field values: a ProtocolError, or a header whose times convert."""
    try:
        validation.check_header(header)
    except ProtocolError:
        return
    header.created.ToDatetime(dt.UTC)  # accepted means usable: no ValueError later


@SETTINGS
@given(raw=st.binary(max_size=300))
def test_any_header_bytes_parse_or_fail_with_a_protocol_error(raw: bytes) -> None:
    """parse_header on arbitrary bytes never raises anything but ProtocolError."""
    _only_protocol_errors(lambda: validation.parse_header(envelope_pb2.Envelope(header=raw)))


def _bundle_bytes() -> st.SearchStrategy[bytes]:
    ts = st.builds(lambda s, n: envelope_pb2.KeyBundle().not_after.__class__(seconds=s, nanos=n), INT64, INT32)
    structured = st.builds(
        envelope_pb2.KeyBundle,
        agency=st.just("DE-BKA"),
        key_id=TEXT,
        suite=INT32,
        public_key=st.binary(max_size=64),
        not_before=ts,
        not_after=ts,
    )
    return st.one_of(st.binary(max_size=200), structured.map(lambda b: b.SerializeToString()))


@SETTINGS
@given(raw=_bundle_bytes())
def test_any_signed_key_bundle_fails_only_with_a_protocol_error(pki: Pki, raw: bytes) -> None:
    """A validly signed bundle of arbitrary bytes or field values: VerificationError, never ValueError."""
    agency = pki.agency("DE-BKA")
    signed = envelope_pb2.SignedKeyBundle(
        bundle=raw,
        signature=sign_identity(agency.identity_key, _pae.key_bundle_signing_input(raw)),
        certificate=agency.signed_bundle.certificate,
    )
    _only_protocol_errors(
        lambda: verify_key_bundle(
            signed, trust_roots=[pki.ca_certificate], expected_agency="DE-BKA", trust_domain=TRUST_DOMAIN, now=NOW
        )
    )


def _receipt_bytes() -> st.SearchStrategy[bytes]:
    ts = st.builds(lambda s, n: envelope_pb2.Receipt().time.__class__(seconds=s, nanos=n), INT64, INT32)
    structured = st.builds(
        envelope_pb2.Receipt,
        message_id=TEXT,
        envelope_sha256=st.binary(max_size=40),
        recipient=st.just("DE-BKA"),
        time=ts,
        status=INT32,
        reason=st.text(max_size=2000),
    )
    return st.one_of(st.binary(max_size=200), structured.map(lambda r: r.SerializeToString()))


@SETTINGS
@given(raw=_receipt_bytes())
def test_any_signed_receipt_fails_only_with_a_protocol_error(pki: Pki, raw: bytes) -> None:
    """A validly signed receipt of arbitrary bytes or field values: VerificationError, never ValueError."""
    agency = pki.agency("DE-BKA")
    signed = envelope_pb2.SignedReceipt(
        receipt=raw, signature=sign_identity(agency.identity_key, _pae.receipt_signing_input(raw))
    )
    _only_protocol_errors(lambda: verify_receipt(signed, agency.certificate, expected_recipient="DE-BKA"))


def _consent_bytes() -> st.SearchStrategy[bytes]:
    ts = st.builds(lambda s, n: envelope_pb2.ForwardConsent().not_after.__class__(seconds=s, nanos=n), INT64, INT32)
    structured = st.builds(
        envelope_pb2.ForwardConsent,
        message_id=TEXT,
        forwarder=TEXT,
        recipients=st.lists(TEXT, max_size=4),
        not_after=ts,
    )
    return st.one_of(st.binary(max_size=200), structured.map(lambda c: c.SerializeToString()))


@SETTINGS
@given(raw=_consent_bytes())
def test_any_signed_forward_consent_fails_only_with_a_protocol_error(pki: Pki, raw: bytes) -> None:
    """A validly signed consent of arbitrary bytes or field values: VerificationError, never ValueError."""
    agency = pki.agency("FR-CUSTOMS")
    signed = envelope_pb2.SignedForwardConsent(
        consent=raw, signature=sign_identity(agency.identity_key, _pae.forward_consent_signing_input(raw))
    )
    _only_protocol_errors(lambda: verify_forward_consent(signed, agency.certificate))


@SETTINGS
@given(raw=st.binary(max_size=300))
def test_any_audit_entry_bytes_fail_only_with_a_verification_error(raw: bytes) -> None:
    """AuditEvent.from_entry_bytes on arbitrary bytes: VerificationError or an entry, nothing else."""
    with contextlib.suppress(VerificationError):
        AuditEvent.from_entry_bytes(raw)


def test_verifying_turns_a_field_error_into_a_verification_error_naming_the_field() -> None:
    """Inside `verifying()` a `ProtocolError` becomes a `VerificationError` with its message and field;
    a `VerificationError` and any other exception pass unchanged."""
    with pytest.raises(VerificationError, match=r"header\.kind is unknown") as caught, validation.verifying():
        raise ProtocolError("header.kind is unknown (99)", field="header.kind")
    assert type(caught.value) is VerificationError
    assert caught.value.field == "header.kind"
    original = VerificationError("root mismatch")
    with pytest.raises(VerificationError) as passed, validation.verifying():
        raise original
    assert passed.value is original
    with pytest.raises(KeyError), validation.verifying():
        raise KeyError("x")
    with validation.verifying():
        pass  # no exception: nothing raised
