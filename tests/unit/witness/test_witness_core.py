"""add-checkpoint semantics (C2SP tlog-witness) over the SQLite state, without a transport."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.protocol import _cosignature, _merkle, _note
from broker.witness.core import SIZE_CONTENT_TYPE, BadRequest, Witness, WitnessState, parse_request, request_body
from clients.cli import main
from clients.cli.witness_cmd import load_witness_key

ORIGIN = "isb.test/audit"
LOG_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
WITNESS_KEY = Ed25519PrivateKey.from_private_bytes(bytes([9]) * 32)
NAME = "witness.customs.test/w1"


class Log:
    """A log in memory that signs checkpoints on demand."""

    def __init__(self, key: Ed25519PrivateKey = LOG_KEY, salt: bytes = b"") -> None:
        self.tree = _merkle.MemoryTree()
        self.key = key
        self.salt = salt

    def grow(self, n: int) -> None:
        for _ in range(n):
            self.tree.append(_merkle.leaf_hash(self.salt + str(self.tree.size).encode()))

    def note(self, size: int | None = None) -> bytes:
        size = self.tree.size if size is None else size
        return _note.sign_checkpoint(
            ORIGIN, size, self.tree.root(size), ORIGIN, self.key, extensions=("timestamp 1700000000",)
        )

    def body(self, old: int, size: int | None = None) -> bytes:
        size = self.tree.size if size is None else size
        proof = _merkle.consistency_proof(old, size, self.tree.subtree) if old else []
        return request_body(old, proof, self.note(size))


@pytest.fixture
def witness(tmp_path: Path) -> Witness:
    return Witness(
        NAME, WITNESS_KEY, {ORIGIN: LOG_KEY.public_key()}, WitnessState(tmp_path / "w.db"), clock=lambda: 1700000500
    )


def test_first_checkpoint_is_cosigned_and_stored(witness: Witness) -> None:
    log = Log()
    log.grow(5)
    reply = witness.add_checkpoint(log.body(0))
    assert reply.status == 200
    cosigner = _cosignature.parse_cosigner_vkey(witness.vkey)
    note = _cosignature.attach(log.note(), [reply.body.decode()])
    assert _cosignature.verify_cosignatures(note, [cosigner]) == {(NAME, cosigner.key_id): 1700000500}
    assert witness.state.latest(ORIGIN) == (5, log.tree.root())


def test_extension_with_a_proof_then_size_mismatch_tells_the_size(witness: Witness) -> None:
    log = Log()
    log.grow(3)
    assert witness.add_checkpoint(log.body(0)).status == 200
    log.grow(4)
    assert witness.add_checkpoint(log.body(3)).status == 200
    stale = witness.add_checkpoint(log.body(3))
    assert (stale.status, stale.content_type, stale.body) == (409, SIZE_CONTENT_TYPE, b"7\n")
    same = witness.add_checkpoint(log.body(7))
    assert same.status == 200  # the same checkpoint again is cosigned again


def test_refusals(witness: Witness) -> None:
    log = Log()
    log.grow(4)
    assert witness.add_checkpoint(log.body(0)).status == 200
    log.grow(4)
    other_origin = _note.sign_checkpoint("other.test/audit", 8, log.tree.root(), "other.test/audit", LOG_KEY)
    assert witness.add_checkpoint(request_body(0, [], other_origin)).status == 404
    forged = Log(Ed25519PrivateKey.generate())
    forged.grow(8)
    reply = witness.add_checkpoint(forged.body(4))
    assert reply.status == 403
    assert b"no trusted signature" in reply.body
    reply = witness.add_checkpoint(request_body(9, [], log.note()))
    assert reply.status == 400
    assert b"old size 9 is larger than the checkpoint size 8" in reply.body
    bad_proof = request_body(4, [bytes(32)] * 2, log.note())
    reply = witness.add_checkpoint(bad_proof)
    assert reply.status == 422
    assert b"does not verify" in reply.body
    assert witness.state.latest(ORIGIN) == (4, log.tree.root(4))


def test_a_fork_is_refused(witness: Witness) -> None:
    branch_a, branch_b = Log(), Log(salt=b"B")
    branch_a.grow(6)
    branch_b.grow(6)
    assert witness.add_checkpoint(branch_a.body(0)).status == 200
    same_size = witness.add_checkpoint(branch_b.body(6))
    assert same_size.status == 409
    assert b"the log forked" in same_size.body
    branch_b.grow(2)
    assert witness.add_checkpoint(branch_b.body(6)).status == 422
    assert witness.state.latest(ORIGIN) == (6, branch_a.tree.root())


def test_state_survives_a_restart(tmp_path: Path) -> None:
    log = Log()
    log.grow(3)
    first = Witness(NAME, WITNESS_KEY, {ORIGIN: LOG_KEY.public_key()}, WitnessState(tmp_path / "w.db"))
    assert first.add_checkpoint(log.body(0)).status == 200
    first.state.close()
    assert (tmp_path / "w.db").stat().st_mode & 0o777 == 0o600
    again = Witness(NAME, WITNESS_KEY, {ORIGIN: LOG_KEY.public_key()}, WitnessState(tmp_path / "w.db"))
    assert again.add_checkpoint(log.body(0)).body == b"3\n"


def test_concurrent_submissions_never_roll_back(witness: Witness) -> None:
    """Many threads race from size 0 to different sizes: the stored size only grows, one wins each step."""
    log = Log()
    log.grow(40)
    assert witness.add_checkpoint(log.body(0, 1)).status == 200
    results: list[int] = []

    def submit(size: int) -> None:
        held = witness.state.latest(ORIGIN)
        assert held is not None
        old = min(held[0], size)  # a newer size may have won meanwhile: then 409 tells the size
        results.append(witness.add_checkpoint(log.body(old, size)).status)

    threads = [threading.Thread(target=submit, args=(size,)) for size in range(2, 41)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    held = witness.state.latest(ORIGIN)
    assert held is not None
    assert set(results) <= {200, 409}
    assert held == (held[0], log.tree.root(held[0]))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.lists(
            st.sampled_from(
                [b"old ", b"0", b"12", b"\n", b"\n\n", b"AAAA", b"=", base64.b64encode(bytes(32)), b"\xff", b" "]
            ),
            max_size=20,
        ).map(b"".join),
    )
)
def test_request_parser_and_witness_never_crash(witness: Witness, data: bytes) -> None:
    """Any body parses or raises BadRequest; the witness answers a 4xx for any garbage."""
    with contextlib.suppress(BadRequest):
        parse_request(data)
    assert witness.add_checkpoint(data).status in {400, 403, 404}


def test_keygen_writes_a_0600_key_and_prints_its_vkey(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "witness.key"
    assert main(["witness", "keygen", "--name", NAME, "--out", str(out), "--json"]) == 0
    assert out.stat().st_mode & 0o777 == 0o600
    record = json.loads(capsys.readouterr().out)
    assert _cosignature.parse_cosigner_vkey(record["vkey"]).public_key == load_witness_key(out).public_key()
    assert main(["witness", "keygen", "--name", NAME, "--out", str(out)]) != 0  # never overwrites
