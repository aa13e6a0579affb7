"""The directory-proof vector (docs/protocol.md section 18.4): the valid case passes the agency SDK's
checks, recomputing the bundle digest and the leaf, and each changed case is refused."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from broker.api.v1 import broker_pb2, envelope_pb2
from broker.protocol import _merkle
from broker.protocol.errors import VerificationError
from broker.protocol.witness_policy import parse_policy
from clients._transparency import verify_directory_checkpoint, verify_publication
from tests.unit.protocol.vector_support import load, unhex

VECTOR = load("directory-proof")


def _check(case: dict[str, Any]) -> None:
    checkpoint = verify_directory_checkpoint(
        case["checkpoint_note"].encode(),
        [unhex(h) for h in case["consistency_path_hex"]],
        policy=parse_policy(VECTOR["policy"].encode()),
        origin=VECTOR["origin"],
        held=(case["held_tree_size"], unhex(case["held_root_hash_hex"])),
    )
    proof = broker_pb2.KeyBundleProof(
        entry=case["entry_utf8"].encode(), inclusion_path=[unhex(h) for h in case["inclusion_path_hex"]]
    )
    signed = envelope_pb2.SignedKeyBundle.FromString(unhex(case["signed_key_bundle_hex"]))
    verify_publication(signed, case["key_id"], case["agency"], case["key_bundle_audit_index"], proof, checkpoint)


def test_the_valid_case_recomputes_and_verifies() -> None:
    case = VECTOR["valid"]
    signed = envelope_pb2.SignedKeyBundle.FromString(unhex(case["signed_key_bundle_hex"]))
    assert hashlib.sha256(signed.bundle).hexdigest() == case["bundle_sha256_hex"]
    entry = json.loads(case["entry_utf8"])
    assert entry["fields"]["bundle_sha256"] == case["bundle_sha256_hex"]
    assert _merkle.leaf_hash(case["entry_utf8"].encode()).hex() == case["leaf_hash_hex"]
    _check(case)


@pytest.mark.parametrize("refused", VECTOR["must_be_refused"], ids=lambda c: c["description"])
def test_each_changed_case_is_refused(refused: dict[str, Any]) -> None:
    with pytest.raises(VerificationError):
        _check({**VECTOR["valid"], **refused["changes"]})
