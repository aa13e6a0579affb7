"""Key transparency checks of the agency SDK (docs/protocol.md section 18.4): the directory's checkpoint
under a witness policy, never smaller or forked, and each bundle's publication proven into it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from broker.api.v1 import broker_pb2, envelope_pb2
from broker.audit.events import KEYBUNDLE_PUBLISHED, AuditEvent
from broker.directory import publication_fields
from broker.protocol import _cosignature, _merkle, _note
from broker.protocol.witness_policy import Policy, parse_policy
from clients._transparency import verify_directory_checkpoint, verify_publication
from clients._trust_state import CheckpointFork, HeldCheckpoint, TrustState, TrustStateError
from clients.errors import ProtocolViolation, VerificationError

ORIGIN = "isb.test/audit"
LOG_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
WITNESSES = {
    name: Ed25519PrivateKey.from_private_bytes(bytes([n + 1]) * 32)
    for n, name in enumerate(("w.fr.test/w1", "w.de.test/w1", "w.nl.test/w1"))
}
WHEN = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SIGNED = envelope_pb2.SignedKeyBundle(bundle=b"\x0a\x02FR-the bundle bytes", signature=b"s", certificate=b"c")


def _policy(k: int = 2) -> Policy:
    lines = [f"log {_note.encode_vkey(ORIGIN, LOG_KEY.public_key())}"]
    lines += [
        f"witness w{n} {_cosignature.encode_cosigner_vkey(name, key.public_key())}"
        for n, (name, key) in enumerate(WITNESSES.items())
    ]
    lines += [f"group all3 {k} w0 w1 w2", "quorum all3"]
    return parse_policy(("\n".join(lines) + "\n").encode())


class Log:
    """A log in memory whose entry 3 publishes `SIGNED` for FR-CUSTOMS."""

    def __init__(self, salt: str = "") -> None:
        self.entries: list[bytes] = []
        self.tree = _merkle.MemoryTree()
        for _ in range(3):
            self.add(AuditEvent("agency.registered", f"spiffe://isb.test/admin/a{salt}", WHEN, agency="X"))
        self.add(
            AuditEvent(
                KEYBUNDLE_PUBLISHED,
                "spiffe://isb.test/agency/FR-CUSTOMS",
                WHEN,
                agency="FR-CUSTOMS",
                fields=publication_fields("k1", "X25519", SIGNED.bundle),
            )
        )

    def add(self, event: AuditEvent) -> None:
        entry = event.to_entry_bytes(len(self.entries))
        self.entries.append(entry)
        self.tree.append(_merkle.leaf_hash(entry))

    def grow(self, n: int) -> None:
        for _ in range(n):
            self.add(AuditEvent("audit.query", "spiffe://isb.test/auditor/a", WHEN))

    def note(self, cosigners: int = 2) -> bytes:
        note = _note.sign_checkpoint(
            ORIGIN, self.tree.size, self.tree.root(), ORIGIN, LOG_KEY, extensions=("timestamp 1767225600",)
        )
        text = note.decode().split("\n\n")[0] + "\n"
        lines = [_cosignature.cosign(text, name, key, 1767225601) for name, key in list(WITNESSES.items())[:cosigners]]
        return _cosignature.attach(note, lines)

    def checkpoint(self) -> _note.Checkpoint:
        return verify_directory_checkpoint(self.note(), [], policy=_policy(), origin=ORIGIN, held=None)

    def proof(self, index: int = 3) -> broker_pb2.KeyBundleProof:
        path = _merkle.inclusion_proof(index, self.tree.size, self.tree.subtree)
        return broker_pb2.KeyBundleProof(entry=self.entries[index], inclusion_path=path)

    def consistency(self, old: int) -> list[bytes]:
        return _merkle.consistency_proof(old, self.tree.size, self.tree.subtree)


def test_a_proven_publication_is_accepted() -> None:
    log = Log()
    log.grow(4)
    verify_publication(SIGNED, "k1", "FR-CUSTOMS", 3, log.proof(), log.checkpoint())


@pytest.mark.parametrize(
    ("key_id", "agency", "index", "bundle", "reason"),
    [
        ("k2", "FR-CUSTOMS", 3, SIGNED.bundle, "is not the publication of FR-CUSTOMS's key bundle k2"),
        ("k1", "DE-BKA", 3, SIGNED.bundle, "is not the publication of DE-BKA's key bundle"),
        ("k1", "FR-CUSTOMS", 4, SIGNED.bundle, "is for entry 3, not the stated audit index 4"),
        ("k1", "FR-CUSTOMS", 3, b"another key", "is not the publication of FR-CUSTOMS's key bundle k1"),
    ],
)
def test_a_publication_of_something_else_is_refused(
    key_id: str, agency: str, index: int, bundle: bytes, reason: str
) -> None:
    log = Log()
    log.grow(2)
    signed = envelope_pb2.SignedKeyBundle(bundle=bundle)
    with pytest.raises(VerificationError, match=reason):
        verify_publication(signed, key_id, agency, index, log.proof(), log.checkpoint())


def test_an_entry_the_checkpoint_does_not_include_is_refused() -> None:
    """The broker's other branch holds the publication; the witnessed checkpoint does not."""
    witnessed, other = Log(), Log(salt="B")
    witnessed.grow(3)
    other.grow(3)
    with pytest.raises(VerificationError, match="inclusion proof"):
        verify_publication(SIGNED, "k1", "FR-CUSTOMS", 3, other.proof(), witnessed.checkpoint())
    tampered = witnessed.proof()
    tampered.inclusion_path[0] = bytes(32)
    with pytest.raises(VerificationError, match="inclusion proof"):
        verify_publication(SIGNED, "k1", "FR-CUSTOMS", 3, tampered, witnessed.checkpoint())


def test_a_checkpoint_without_quorum_is_refused() -> None:
    log = Log()
    with pytest.raises(VerificationError, match="lacks the witness quorum"):
        verify_directory_checkpoint(log.note(cosigners=1), [], policy=_policy(), origin=ORIGIN, held=None)
    with pytest.raises(VerificationError, match="carries no checkpoint"):
        verify_directory_checkpoint(b"", [], policy=_policy(), origin=ORIGIN, held=None)


def test_an_extension_is_accepted_and_a_rollback_or_fork_is_refused() -> None:
    log = Log()
    log.grow(2)
    held = (log.tree.size, log.tree.root())
    log.grow(5)
    newer = verify_directory_checkpoint(
        log.note(), log.consistency(held[0]), policy=_policy(), origin=ORIGIN, held=held
    )
    assert newer.size == held[0] + 5
    with pytest.raises(VerificationError, match=r"smaller than the one of size 11 .* rolls it back"):
        verify_directory_checkpoint(Log().note(), [], policy=_policy(), origin=ORIGIN, held=(newer.size, newer.root))
    fork = Log(salt="B")
    fork.grow(7)
    with pytest.raises(VerificationError, match=r"not consistent with the one of size 6 .* \(a fork\)"):
        verify_directory_checkpoint(fork.note(), fork.consistency(held[0]), policy=_policy(), origin=ORIGIN, held=held)
    same_size = Log(salt="B")
    same_size.grow(2)
    with pytest.raises(VerificationError, match="a fork"):
        verify_directory_checkpoint(same_size.note(), [], policy=_policy(), origin=ORIGIN, held=held)


@given(st.binary(max_size=300), st.lists(st.binary(max_size=40), max_size=4), st.integers(0, 20))
def test_publication_check_never_crashes(entry: bytes, path: list[bytes], index: int) -> None:
    """Whatever the broker sends as a proof, the answer is a refusal of the SDK's own type."""
    log = Log()
    with pytest.raises(ProtocolViolation):
        verify_publication(
            SIGNED,
            "k1",
            "FR-CUSTOMS",
            index,
            broker_pb2.KeyBundleProof(entry=entry, inclusion_path=path),
            log.checkpoint(),
        )


def test_the_largest_checkpoint_is_kept_and_a_same_size_fork_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "trust-state.json"
    one, other = TrustState(path), TrustState(path)
    one.saw_checkpoint(HeldCheckpoint(10, bytes(32), b"note 10"))
    one.saw_checkpoint(HeldCheckpoint(5, b"\x01" * 32, b"note 5"))  # smaller: not kept
    assert TrustState(path).checkpoint == HeldCheckpoint(10, bytes(32), b"note 10")
    assert path.stat().st_mode & 0o777 == 0o600
    other.saw_checkpoint(HeldCheckpoint(12, b"\x02" * 32, b"note 12"))
    one.reload()
    assert one.checkpoint is not None
    assert one.checkpoint.tree_size == 12
    with pytest.raises(CheckpointFork, match="a fork"):
        one.saw_checkpoint(HeldCheckpoint(12, b"\x03" * 32, b"forked note"))


@pytest.mark.parametrize(
    "member",
    [
        {"tree_size": -1, "root_hash": "AA==", "note": ""},
        {"tree_size": 3, "root_hash": "AA==", "note": ""},
        {"tree_size": 3, "root_hash": "not base64!", "note": ""},
        {"tree_size": True, "root_hash": "", "note": ""},
        "a string",
    ],
)
def test_a_malformed_checkpoint_member_is_an_error_not_a_reset(tmp_path: Path, member: object) -> None:
    path = tmp_path / "trust-state.json"
    path.write_text(
        json.dumps(
            {"format": "isb-sdk-trust-state/1", "crl_number": 1, "key_bundle_audit_index": {}, "checkpoint": member}
        )
    )
    with pytest.raises(TrustStateError):
        TrustState(path)


@given(st.binary(max_size=400), st.lists(st.binary(max_size=40), max_size=4), st.integers(0, 10))
def test_directory_checkpoint_check_never_crashes(note: bytes, consistency: list[bytes], held_size: int) -> None:
    """Whatever the broker sends as the checkpoint and consistency path, the answer is the SDK's refusal."""
    with pytest.raises(ProtocolViolation):
        verify_directory_checkpoint(note, consistency, policy=_policy(), origin=ORIGIN, held=(held_size, bytes(32)))
