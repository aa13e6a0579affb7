"""The PAE, key-bundle, receipt and forward-consent vectors: valid objects verify, refused ones are refused."""

from __future__ import annotations

import datetime as dt
import importlib.util
from typing import Any

import pytest
from google.protobuf import timestamp_pb2

from broker.api.v1 import envelope_pb2
from broker.errors import VerificationError
from broker.protocol import _pae
from broker.protocol.forwarding import verify_forward_consent
from broker.protocol.keys import verify_key_bundle
from broker.protocol.receipts import verify_receipt
from tests.unit.protocol.vector_support import VECTOR_DIR, assert_leaf_profile, certificate, load, unhex

PAE = load("pae")
BUNDLES = load("key-bundle")
RECEIPTS = load("receipt")
CONSENTS = load("forward-consent")


def _timestamp(seconds: int, nanos: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


def test_pae_cases_recompute() -> None:
    """PAE, lists, recipients, integers, timestamps and handling encode as recorded."""
    for case in PAE["pae"]:
        fields = [unhex(f) for f in case["inputs"]["fields_hex"]]
        assert _pae.pae(case["inputs"]["type"], *fields).hex() == case["output_hex"]
    for case in PAE["list"]:
        assert _pae.encode_list(i.encode() for i in case["inputs"]["items"]).hex() == case["output_hex"]
    for case in PAE["recipients"]:
        encoded = _pae.encode_recipients(case["inputs"]["recipients"], sort=case["inputs"]["sort"])
        assert encoded.hex() == case["output_hex"]
    for case in PAE["integer"]:
        assert _pae.encode_int(int(case["inputs"]["decimal"])).hex() == case["output_hex"]
    for case in PAE["timestamp"]:
        inputs = case["inputs"]
        present = inputs["seconds"] is not None
        value = _timestamp(inputs["seconds"] or 0, inputs["nanos"] or 0)
        assert _pae.encode_timestamp(value, present=present).hex() == case["output_hex"]
    for case in PAE["handling"]:
        handling = envelope_pb2.Handling(**case["inputs"])
        assert _pae.encode_handling(handling).hex() == case["output_hex"]


def _bundle_now() -> dt.datetime:
    return dt.datetime.fromisoformat(BUNDLES["verification_time"])


def test_key_bundle_vectors_verify() -> None:
    """Each valid bundle verifies against the vector CA and carries the recorded key."""
    ca = certificate(BUNDLES["ca_certificate_pem"])
    for case in BUNDLES["valid"]:
        assert_leaf_profile(certificate(case["certificate_pem"]), ca)
        signed = envelope_pb2.SignedKeyBundle.FromString(unhex(case["signed_key_bundle_hex"]))
        bundle = verify_key_bundle(
            signed,
            trust_roots=[ca],
            expected_agency=case["agency"],
            trust_domain=BUNDLES["trust_domain"],
            now=_bundle_now(),
        )
        assert signed.bundle.hex() == case["bundle_hex"]
        assert _pae.key_bundle_signing_input(signed.bundle).hex() == case["signing_input_hex"]
        assert bundle.public_key.hex() == case["hpke_public_key_hex"]
        assert envelope_pb2.KeySuite.Name(bundle.suite) == case["suite"]


@pytest.mark.parametrize("case", BUNDLES["must_be_refused"], ids=lambda c: c["description"])
def test_key_bundle_vectors_refused(case: dict[str, Any]) -> None:
    """Each bundle under must_be_refused fails verification."""
    signed = envelope_pb2.SignedKeyBundle.FromString(unhex(case["signed_key_bundle_hex"]))
    with pytest.raises(VerificationError):
        verify_key_bundle(
            signed,
            trust_roots=[certificate(BUNDLES["ca_certificate_pem"])],
            expected_agency=case["expected_agency"],
            trust_domain=BUNDLES["trust_domain"],
            now=_bundle_now(),
        )


def test_receipt_vectors_verify() -> None:
    """Each valid receipt verifies with the signer's certificate and says what is recorded."""
    signer = RECEIPTS["signer"]
    assert_leaf_profile(certificate(signer["certificate_pem"]), certificate(RECEIPTS["ca_certificate_pem"]))
    for case in RECEIPTS["valid"]:
        signed = envelope_pb2.SignedReceipt.FromString(unhex(case["signed_receipt_hex"]))
        receipt = verify_receipt(signed, certificate(signer["certificate_pem"]), expected_recipient=signer["agency"])
        assert _pae.receipt_signing_input(signed.receipt).hex() == case["signing_input_hex"]
        assert envelope_pb2.ReceiptStatus.Name(receipt.status) == case["status"]
        assert receipt.envelope_sha256.hex() == case["envelope_sha256_hex"]


@pytest.mark.parametrize("case", RECEIPTS["must_be_refused"], ids=lambda c: c["description"])
def test_receipt_vectors_refused(case: dict[str, Any]) -> None:
    """Each receipt under must_be_refused fails verification with the signer's certificate."""
    signed = envelope_pb2.SignedReceipt.FromString(unhex(case["signed_receipt_hex"]))
    with pytest.raises(VerificationError):
        verify_receipt(
            signed, certificate(RECEIPTS["signer"]["certificate_pem"]), expected_recipient=RECEIPTS["signer"]["agency"]
        )


def test_forward_consent_vectors_verify() -> None:
    """The valid consent verifies with the original sender's certificate."""
    signer = CONSENTS["signer"]
    for case in CONSENTS["valid"]:
        signed = envelope_pb2.SignedForwardConsent.FromString(unhex(case["signed_forward_consent_hex"]))
        consent = verify_forward_consent(signed, certificate(signer["certificate_pem"]))
        assert _pae.forward_consent_signing_input(signed.consent).hex() == case["signing_input_hex"]
        assert (consent.message_id, consent.forwarder, list(consent.recipients)) == (
            case["message_id"],
            case["forwarder"],
            case["recipients"],
        )


@pytest.mark.parametrize("case", CONSENTS["must_be_refused"], ids=lambda c: c["description"])
def test_forward_consent_vectors_refused(case: dict[str, Any]) -> None:
    """Each consent under must_be_refused fails verification."""
    signed = envelope_pb2.SignedForwardConsent.FromString(unhex(case["signed_forward_consent_hex"]))
    with pytest.raises(VerificationError):
        verify_forward_consent(signed, certificate(CONSENTS["signer"]["certificate_pem"]))


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("make_vectors", VECTOR_DIR.parents[1] / "scripts" / "make_vectors.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_deterministic_vectors_match_the_generator() -> None:
    """Every vector without HPKE randomness is exactly what scripts/make_vectors.py writes today, so a
    protocol change cannot leave the checked-in vectors behind."""
    generator = _generator()
    built = [
        generator.pae_vector(),
        generator.key_bundle_vector(),
        generator.receipt_vector(),
        generator.forward_consent_vector(),
        generator.audit_entries_vector(),
        generator.checkpoint_vector(),
    ]
    log_vector, export = generator.audit_log_vectors()
    for vector in [*built, log_vector]:
        stale = f"tests/vectors/{vector['name']}.json is stale: run scripts/make_vectors.py"
        assert vector == load(vector["name"]), stale
    assert export == (VECTOR_DIR / "audit-export.jsonl").read_bytes()
