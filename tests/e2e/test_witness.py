"""Witnesses over real mutual TLS (C2SP tlog-witness add-checkpoint): every status with its message,
nothing stored on a refusal, the TLS identity checks, a restart mid-stream."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.identity import Role
from broker.pki.dev import DevPki
from broker.protocol import _cosignature, _merkle, _note
from broker.protocol.errors import VerificationError
from broker.witness.submit import add_checkpoint, client_context, cosignature_lines
from tests.e2e.witness_support import RunningWitness, issue_tls, start_witnesses

ORIGIN = "isb.dev/audit"


def _audit_key(pki: DevPki) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pki.audit_key.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


class Log:
    """A log signed with the dev audit key, grown in memory."""

    def __init__(self, pki: DevPki, salt: bytes = b"") -> None:
        self.key = _audit_key(pki)
        self.tree = _merkle.MemoryTree()
        self.salt = salt

    def grow(self, n: int) -> None:
        for _ in range(n):
            self.tree.append(_merkle.leaf_hash(self.salt + str(self.tree.size).encode()))

    def note(self, size: int | None = None, key: Ed25519PrivateKey | None = None) -> bytes:
        size = self.tree.size if size is None else size
        return _note.sign_checkpoint(
            ORIGIN, size, self.tree.root(size), ORIGIN, key or self.key, extensions=("timestamp 1700000000",)
        )

    def proof(self, old: int) -> list[bytes]:
        return _merkle.consistency_proof(old, self.tree.size, self.tree.subtree) if old else []


@pytest.fixture
def witnesses(pki: DevPki, tmp_path: Path) -> Iterator[dict[str, RunningWitness]]:
    running = start_witnesses(pki, tmp_path)
    yield running
    for witness in running.values():
        witness.stop()


@pytest.fixture
def submitter(pki: DevPki, tmp_path: Path) -> ssl.SSLContext:
    """The broker's submitter identity: a witness-role client certificate of the deployment CA."""
    cert, key = issue_tls(pki, tmp_path / "submitter", "submitter-node-1")
    return client_context(pki.ca_cert, cert, key)


def test_add_checkpoint_statuses_over_mtls(
    pki: DevPki, witnesses: dict[str, RunningWitness], submitter: ssl.SSLContext
) -> None:
    witness = witnesses["FR-CUSTOMS"]
    log = Log(pki)
    log.grow(5)

    def submit(old: int, proof: list[bytes], note: bytes) -> tuple[int, str, bytes]:
        answer = add_checkpoint(witness.url, submitter, old, proof, note, trust_domain=pki.trust_domain)
        return answer.status, answer.content_type, answer.body

    # 200: the first checkpoint, from size 0; the line verifies with the pinned vkey.
    answer = add_checkpoint(witness.url, submitter, 0, [], log.note(), trust_domain=pki.trust_domain)
    assert answer.status == 200
    lines = cosignature_lines(answer, witness.cosigner, log.note())
    cosigned = _cosignature.attach(log.note(), lines)
    found = _cosignature.verify_cosignatures(cosigned, [witness.cosigner])
    assert list(found) == [(witness.name, witness.cosigner.key_id)]
    log.grow(3)
    # 409 text/x.tlog.size: the submitter's idea of the witness's size is stale; the body tells the size.
    assert submit(0, [], log.note()) == (409, "text/x.tlog.size", b"5\n")
    # 404: an origin the witness does not follow.
    other = _note.sign_checkpoint("other.isb/audit", 8, log.tree.root(), "other.isb/audit", log.key)
    status, _, body = submit(0, [], other)
    assert (status, body) == (404, b"unknown log origin 'other.isb/audit'\n")
    # 403: no signature by the log's key.
    status, _, body = submit(5, log.proof(5), log.note(key=Ed25519PrivateKey.generate()))
    assert status == 403
    assert body.startswith(b"no trusted signature on the checkpoint: signed note carries no signature by key")
    # 400: old size larger than the checkpoint's.
    status, _, body = submit(9, [], log.note())
    assert (status, body) == (400, b"old size 9 is larger than the checkpoint size 8\n")
    # 400: a body that does not parse.
    status, _, body = submit(5, [], b"garbage")
    assert status == 404  # the note's first line is an unknown origin
    # 422: a proof that does not verify.
    status, _, body = submit(5, [bytes(32)] * len(log.proof(5)), log.note())
    assert status == 422
    assert body.startswith(b"consistency proof from size 5 to 8 does not verify")
    # Nothing above was stored: the witness still holds size 5, and extends with a good proof.
    assert witness.server is not None
    assert witness.server.witness.state.latest(ORIGIN) == (5, log.tree.root(5))
    assert submit(5, log.proof(5), log.note())[0] == 200
    assert witness.server.witness.state.latest(ORIGIN) == (8, log.tree.root())


def test_fork_is_refused_and_restart_keeps_state(
    pki: DevPki, witnesses: dict[str, RunningWitness], submitter: ssl.SSLContext
) -> None:
    witness = witnesses["DE-BKA"]
    branch_a, branch_b = Log(pki), Log(pki, salt=b"B")
    branch_a.grow(4)
    branch_b.grow(4)
    assert add_checkpoint(witness.url, submitter, 0, [], branch_a.note(), trust_domain=pki.trust_domain).status == 200
    witness.stop()
    witness.start()  # restarted mid-stream, same port and state file
    same = add_checkpoint(witness.url, submitter, 4, [], branch_b.note(), trust_domain=pki.trust_domain)
    assert same.status == 409
    assert same.reason == (
        "checkpoint of size 4 has another root hash than the one this witness cosigned: the log forked"
    )
    branch_b.grow(2)
    longer = add_checkpoint(
        witness.url, submitter, 4, branch_b.proof(4), branch_b.note(), trust_domain=pki.trust_domain
    )
    assert longer.status == 422


def test_tls_identity_checks(pki: DevPki, witnesses: dict[str, RunningWitness], tmp_path: Path) -> None:
    witness = witnesses["NL-FIOD"]
    log = Log(pki)
    log.grow(1)
    # No client certificate: the handshake fails.
    bare = ssl.create_default_context(cafile=str(pki.ca_cert))
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        add_checkpoint(witness.url, bare, 0, [], log.note(), trust_domain=pki.trust_domain)
    # A broker-role certificate (serverAuth only) cannot be a client: refused by the witness's TLS.
    broker_client = ssl.create_default_context(cafile=str(pki.ca_cert))
    broker_client.load_cert_chain(pki.broker_cert, pki.broker_key)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        add_checkpoint(witness.url, broker_client, 0, [], log.note(), trust_domain=pki.trust_domain)
    # A server that is not a witness (the witness answers with a broker-role certificate's chain? no:
    # here, the trust domain differs): the submitter refuses to talk to it.
    cert, key = issue_tls(pki, tmp_path / "sub", "submitter-x")
    with pytest.raises(VerificationError, match=r"is not a witness of other\.dev"):
        add_checkpoint(witness.url, client_context(pki.ca_cert, cert, key), 0, [], log.note(), trust_domain="other.dev")
    # An agency certificate (clientAuth) is a valid client: submission needs no role, the note's signature counts.
    agency = client_context(pki.ca_cert, pki.directory / "DE-BKA.crt", pki.directory / "DE-BKA.key")
    assert add_checkpoint(witness.url, agency, 0, [], log.note(), trust_domain=pki.trust_domain).status == 200
    assert Role.WITNESS.value == "witness"
