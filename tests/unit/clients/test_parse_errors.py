"""The SDK's parse-failure rule (as sigstore-python keeps it): whatever bytes reach the SDK, from a file
or from the broker, a parse or verification failure surfaces as a `ClientError` (here: a trust state
file, the directory's checkpoint with its consistency proof, and a key bundle's publication proof),
never a raw `ValueError`, `KeyError`, `TypeError` or anything else. The protocol's own parsers keep
the same rule with their errors (tests/unit/protocol/test_parse_errors.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from broker.api.v1 import broker_pb2
from clients._transparency import verify_directory_checkpoint, verify_publication
from clients._trust_state import FORMAT, TrustState
from clients.errors import ClientError
from tests.unit.clients.test_transparency import ORIGIN, SIGNED, Log, _policy

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
HASHES = st.lists(st.one_of(st.binary(min_size=32, max_size=32), st.binary(max_size=40)), max_size=6)


def _only_client_errors(parse: Callable[[], object]) -> None:
    try:
        parse()
    except ClientError:
        pass  # the SDK's own error: fine (VerificationError and ProtocolViolation are ones)
    except Exception as exc:  # the rule under test: nothing else may escape
        pytest.fail(f"the SDK raised {type(exc).__name__}: {exc}")


@SETTINGS
@given(raw=st.binary(max_size=400))
@example(raw=b"[" * 100_000)  # nesting deeper than the JSON parser's recursion limit
@example(raw=b'{"format": "isb-sdk-trust-state/1"}')
def test_any_trust_state_file_loads_or_fails_with_a_client_error(tmp_path: Path, raw: bytes) -> None:
    """Arbitrary bytes in the trust state file: loaded, or refused as a ClientError."""
    path = tmp_path / "trust-state.json"
    path.write_bytes(raw)
    _only_client_errors(lambda: TrustState(path))


@SETTINGS
@given(crl_number=JSON, bundles=JSON, checkpoint=JSON)
def test_any_trust_state_document_loads_or_fails_with_a_client_error(
    tmp_path: Path, crl_number: object, bundles: object, checkpoint: object
) -> None:
    """A trust state document of the right format with members of any JSON type and value."""
    path = tmp_path / "trust-state.json"
    document = {"format": FORMAT, "crl_number": crl_number, "key_bundle_audit_index": bundles, "checkpoint": checkpoint}
    path.write_text(json.dumps(document))
    _only_client_errors(lambda: TrustState(path))


LOG = Log()
LOG.grow(6)
POLICY = _policy()


@SETTINGS
@given(
    note=st.one_of(st.binary(max_size=300), st.just(LOG.note())),
    consistency=HASHES,
    held_size=st.integers(min_value=-(2**63), max_value=2**63),
    held_root=st.binary(max_size=40),
)
def test_any_directory_checkpoint_and_consistency_fail_only_with_a_client_error(
    note: bytes, consistency: list[bytes], held_size: int, held_root: bytes
) -> None:
    """Any note, and for the witnessed one any consistency proof against any held checkpoint."""
    _only_client_errors(
        lambda: verify_directory_checkpoint(
            note, consistency, policy=POLICY, origin=ORIGIN, held=(held_size, held_root)
        )
    )


@SETTINGS
@given(
    entry=st.one_of(st.binary(max_size=300), st.just(LOG.proof().entry)),
    path=HASHES,
    audit_index=st.integers(min_value=-(2**63), max_value=2**63),
)
def test_any_publication_proof_fails_only_with_a_client_error(
    entry: bytes, path: list[bytes], audit_index: int
) -> None:
    """Any entry bytes, inclusion path and stated index for a key bundle's publication."""
    checkpoint = LOG.checkpoint()
    proof = broker_pb2.KeyBundleProof(entry=entry, inclusion_path=path)
    _only_client_errors(lambda: verify_publication(SIGNED, "k1", "FR-CUSTOMS", audit_index, proof, checkpoint))
