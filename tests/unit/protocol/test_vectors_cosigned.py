"""The cosigned-checkpoint vector: witnesses' key ids, signed messages, lines, and the 2-of-3 policy."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.protocol import _cosignature
from broker.protocol.errors import VerificationError
from broker.protocol.witness_policy import parse_policy, verify_checkpoint_against_policy
from tests.unit.protocol.vector_support import load, unhex

VECTOR = load("cosigned-checkpoint")


def test_witness_blocks_agree_byte_for_byte() -> None:
    """Key id, vkey, signed message and signature line recomputed from first principles."""
    text = VECTOR["checkpoint_text"]
    for witness in VECTOR["witnesses"]:
        raw = unhex(witness["ed25519_public_key_hex"])
        name = witness["name"]
        key_id = hashlib.sha256(name.encode() + b"\n\x04" + raw).digest()[:4]
        assert key_id.hex() == witness["key_id_hex"]
        material = base64.b64encode(b"\x04" + raw).decode()
        assert witness["vkey"] == f"{name}+{key_id.hex()}+{material}"
        message = f"cosignature/v1\ntime {witness['timestamp']}\n{text}"
        assert witness["signed_message"] == message
        Ed25519PublicKey.from_public_bytes(raw).verify(unhex(witness["signature_hex"]), message.encode())
        blob = key_id + struct.pack(">Q", witness["timestamp"]) + unhex(witness["signature_hex"])
        assert witness["signature_line"] == f"\u2014 {name} {base64.b64encode(blob).decode()}\n"


def test_valid_cases_meet_the_policy() -> None:
    policy = parse_policy(VECTOR["policy"].encode())
    for case in VECTOR["valid"]:
        verdict = verify_checkpoint_against_policy(case["note"].encode(), policy)
        assert sorted(verdict.cosigned) == case["cosigned_by"], case["description"]
        assert verdict.checkpoint.origin == VECTOR["audit_key"]["origin"]


@pytest.mark.parametrize("case", VECTOR["must_be_refused"], ids=lambda c: c["description"])
def test_refused_cases_fail(case: dict[str, str]) -> None:
    with pytest.raises(VerificationError):
        verify_checkpoint_against_policy(case["note"].encode(), parse_policy(VECTOR["policy"].encode()))


def test_cosigner_vkeys_parse() -> None:
    for witness in VECTOR["witnesses"]:
        assert _cosignature.parse_cosigner_vkey(witness["vkey"]).name == witness["name"]
