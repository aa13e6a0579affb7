"""The broker collects cosignatures from three agencies' witnesses over mutual TLS; auditors accept a
checkpoint only with a 2-of-3 quorum; a lying witness cannot make a quorum alone; a forked log is caught."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from broker.api.v1 import audit_pb2, broker_pb2
from broker.metrics import REGISTRY
from broker.pki.dev import DevPki
from broker.protocol import _note
from broker.protocol.witness_policy import load_policy
from clients import AgencyClient
from clients.audit.verify import verify_export
from clients.auditor import AuditorClient
from clients.cli import main
from clients.errors import ClientError, VerificationError
from tests.e2e.broker_support import Database, RunningBroker, broker_config
from tests.e2e.witness_support import RunningWitness, audit_log_key, issue_tls, policy_text, start_witnesses


@pytest.fixture
def witnesses(pki: DevPki, tmp_path: Path) -> Iterator[dict[str, RunningWitness]]:
    running = start_witnesses(pki, tmp_path, lying="DE-BKA")
    yield running
    for witness in running.values():
        witness.stop()


@pytest.fixture
def witness_settings(pki: DevPki, tmp_path: Path, witnesses: dict[str, RunningWitness]) -> dict[str, Any]:
    policy = tmp_path / "witness-policy.txt"
    policy.write_text(policy_text(pki, witnesses, 2))
    cert, key = issue_tls(pki, tmp_path / "submitter", "submitter-node-1")
    return {
        "witness_policy": policy,
        "witness_client_cert": cert,
        "witness_client_key": key,
        "witness_timeout_seconds": 2.0,
    }


def _auditor(pki: DevPki, broker: RunningBroker, policy: Path | None) -> AuditorClient:
    return AuditorClient(
        broker.target,
        cert=pki.directory / "auditor.crt",
        key=pki.directory / "auditor.key",
        ca=pki.ca_cert,
        audit_key=audit_log_key(pki).public_key,
        policy=load_policy(policy) if policy else None,
    )


def _until(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (ClientError, VerificationError, AssertionError, grpc.RpcError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _activity(pki: DevPki, broker: RunningBroker, tmp: Path, agency: str) -> None:
    with AgencyClient.from_dir(broker.target, pki.directory, agency, keystore=tmp / "keys" / agency) as client:
        client.publish_key()


def _cosigned(auditor: AuditorClient, size_above: int = 0) -> tuple[int, tuple[str, ...]]:
    checkpoint = auditor.checkpoint()
    assert checkpoint.size > size_above
    return checkpoint.size, auditor.cosigned_by


def test_broker_collects_a_quorum_survives_a_dead_witness_and_its_restart(
    pki: DevPki,
    database: Database,
    tmp_path: Path,
    witnesses: dict[str, RunningWitness],
    witness_settings: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    broker = RunningBroker(broker_config(pki, database, **witness_settings))
    broker.start()
    try:
        _activity(pki, broker, tmp_path, "FR-CUSTOMS")
        with _auditor(pki, broker, witness_settings["witness_policy"]) as auditor:
            size, cosigned = _until(lambda: _cosigned(auditor))
            assert set(cosigned) >= {"FR-CUSTOMS", "NL-FIOD"}
            # One witness goes down: the broker goes on, counts it, and the other two still make a quorum.
            witnesses["NL-FIOD"].stop()
            _activity(pki, broker, tmp_path, "NL-FIOD")
            new_size, cosigned = _until(lambda: _cosigned(auditor, size))
            assert "NL-FIOD" not in cosigned
            assert len(cosigned) >= 2
            assert (
                REGISTRY.get_sample_value(
                    "isb_witness_submissions_total", {"witness": "NL-FIOD", "outcome": "unreachable"}
                )
                or 0
            ) >= 1
            # Restarted mid-stream on its state file, it takes up again from the size it holds.
            witnesses["NL-FIOD"].start()
            _activity(pki, broker, tmp_path / "restart", "NL-FIOD")
            new_size, cosigned = _until(lambda: _cosigned_by(auditor, new_size, "NL-FIOD"))
            export = tmp_path / "export.jsonl"
            with export.open("wb") as stream:
                auditor.export(stream)
        policy = load_policy(witness_settings["witness_policy"])
        report = verify_export(export, audit_log_key(pki).public_key, policy=policy)
        assert report.tree_size >= new_size
        assert len(report.cosigned_by) >= 2
        assert (
            main(
                [
                    "audit",
                    "verify",
                    str(export),
                    "--key",
                    str(pki.directory / "audit.pub"),
                    "--quiet",
                    "--policy",
                    str(witness_settings["witness_policy"]),
                ]
            )
            == 0
        )

        # `isb audit checkpoint` shows who cosigned, and checks the quorum with --policy.
        # The newest checkpoint may be a moment older than its cosignatures: retry as the hint says.
        def shown_checkpoint() -> dict[str, Any]:
            capsys.readouterr()
            status = main(
                [
                    "audit",
                    "checkpoint",
                    "--broker",
                    broker.target,
                    "--certs",
                    str(pki.directory),
                    "--policy",
                    str(witness_settings["witness_policy"]),
                    "--json",
                ]
            )
            captured = capsys.readouterr()
            assert status == 0, captured.err
            return dict(json.loads(captured.out))

        shown = _until(shown_checkpoint)
        assert witnesses["FR-CUSTOMS"].name in shown["cosignature_lines"]
        assert shown["witness_quorum"].startswith("met: ")
        # A policy file that does not parse is trouble with the input (exit 2), not a failed log.
        bad = tmp_path / "bad-policy.txt"
        bad.write_text("quorum nobody\n")
        assert (
            main(
                [
                    "audit",
                    "verify",
                    str(export),
                    "--key",
                    str(pki.directory / "audit.pub"),
                    "--quiet",
                    "--policy",
                    str(bad),
                ]
            )
            == 2
        )
        assert "quorum 'nobody' is not defined above" in capsys.readouterr().err
    finally:
        broker.stop()


def test_a_lying_witness_alone_is_no_quorum(
    pki: DevPki,
    database: Database,
    tmp_path: Path,
    witnesses: dict[str, RunningWitness],
    witness_settings: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Only the lying witness (DE-BKA) is reachable: it cosigns, but 1 of 3 is refused by auditors."""
    witnesses["FR-CUSTOMS"].stop()
    witnesses["NL-FIOD"].stop()
    broker = RunningBroker(broker_config(pki, database, **witness_settings))
    broker.start()
    try:
        _activity(pki, broker, tmp_path, "FR-CUSTOMS")
        with _auditor(pki, broker, None) as plain:
            _until(lambda: _note_has_line(plain, witnesses["DE-BKA"].name))
        with (
            _auditor(pki, broker, witness_settings["witness_policy"]) as auditor,
            pytest.raises(VerificationError, match=r"lacks the witness quorum.*valid cosignatures from: DE-BKA"),
        ):
            auditor.checkpoint()
        capsys.readouterr()
        assert (
            main(
                [
                    "audit",
                    "checkpoint",
                    "--broker",
                    broker.target,
                    "--certs",
                    str(pki.directory),
                    "--policy",
                    str(witness_settings["witness_policy"]),
                ]
            )
            == 1
        )
        assert "checkpoint refused: checkpoint of size" in capsys.readouterr().err
    finally:
        broker.stop()


def _sender(
    pki: DevPki,
    broker: RunningBroker,
    keystore: Path,
    policy: Path,
    agency: str = "FR-CUSTOMS",
) -> AgencyClient:
    """An agency SDK that checks key transparency under `policy`, its trust state in `keystore`."""
    return AgencyClient.from_dir(
        broker.target, pki.directory, agency, keystore=keystore, witness_policy=load_policy(policy)
    )


def test_directory_bundles_arrive_with_proofs_the_sdk_checks(
    pki: DevPki,
    database: Database,
    tmp_path: Path,
    witnesses: dict[str, RunningWitness],
    witness_settings: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Under a 2-of-3 policy (one witness lying), a sender uses a bundle only with its publication
    proven to a witnessed checkpoint, and keeps that checkpoint in its keystore."""
    broker = RunningBroker(broker_config(pki, database, **witness_settings))
    broker.start()
    try:
        _activity(pki, broker, tmp_path, "DE-BKA")
        keystore = tmp_path / "sender"
        with _sender(pki, broker, keystore, witness_settings["witness_policy"]) as sender:
            bundles = _until(lambda: sender.recipient_keys(["DE-BKA"], refresh=True))
            first = _held_size(keystore)
            assert first > sender._trust.bundle_index["DE-BKA"]
            # What the broker sent: the bundle's publication entry and its inclusion path.
            directory = sender._stub.GetDirectory(broker_pb2.GetDirectoryRequest(agencies=["DE-BKA"]), timeout=10)
            proven = [p for p in directory.agencies[0].key_bundle_proofs if p.entry]
            assert proven
            assert all(p.inclusion_path for p in proven)
            assert bundles["DE-BKA"].key_id in {json.loads(p.entry)["fields"]["key_id"] for p in proven}
            assert sender.send(["DE-BKA"], b"witnessed keys only").audit_index > 0

            # The next lookup proves consistency from the held checkpoint to the broker's newer one.
            def newer() -> None:
                sender.recipient_keys(["DE-BKA"], refresh=True)
                assert _held_size(keystore) > first

            _activity(pki, broker, tmp_path / "again", "DE-BKA")
            _until(newer)
        # `isb send --witness-policy`: a policy that does not parse stops the command before it connects.
        bad = tmp_path / "bad-policy.txt"
        bad.write_text("quorum nobody\n")
        assert (
            main(
                [
                    "send",
                    "--broker",
                    broker.target,
                    "--certs",
                    str(pki.directory),
                    "--agency",
                    "FR-CUSTOMS",
                    "--to",
                    "DE-BKA",
                    "--text",
                    "x",
                    "--witness-policy",
                    str(bad),
                ]
            )
            == 1
        )
        assert "quorum 'nobody' is not defined above" in capsys.readouterr().err
    finally:
        broker.stop()


def _held_size(keystore: Path) -> int:
    return int(json.loads((keystore / "trust-state.json").read_text())["checkpoint"]["tree_size"])


def _cosigned_by(auditor: AuditorClient, size_above: int, witness: str) -> tuple[int, tuple[str, ...]]:
    size, cosigned = _cosigned(auditor, size_above)
    assert witness in cosigned
    return size, cosigned


def _note_has_line(auditor: AuditorClient, name: str) -> None:
    reply = auditor._stub.GetCheckpoint(audit_pb2.GetCheckpointRequest(), timeout=10)
    assert f"\u2014 {name} ".encode() in reply.note


def test_fork_from_two_database_copies_is_caught(
    pki: DevPki,
    database: Database,
    tmp_path: Path,
    witnesses: dict[str, RunningWitness],
    witness_settings: dict[str, Any],
) -> None:
    """Branch A and branch B share a prefix; the witnesses cosign A; B is refused by the two honest
    witnesses, only the liar cosigns it, and B's export fails `isb audit verify --policy`. Agency SDKs
    that looked keys up on A refuse B's checkpoint: no quorum under 2-of-3, and, for an SDK whose
    policy the liar alone satisfies, not consistent with the checkpoint of A it holds (a fork)."""
    if database.kind != "sqlite":
        pytest.skip("the fork is built from two copies of an SQLite file")
    policy_path = witness_settings["witness_policy"]
    config = broker_config(pki, database, **witness_settings)
    # The common prefix, cosigned by all three.
    a = RunningBroker(config)
    a.start()
    _activity(pki, a, tmp_path, "FR-CUSTOMS")
    with _auditor(pki, a, policy_path) as auditor:
        prefix, _ = _until(lambda: _cosigned(auditor))
    a.stop()
    copy = tmp_path / "branch-b.db"
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{database.path}{suffix}")
        if source.exists():
            shutil.copy(source, f"{copy}{suffix}")
    # Branch A grows and is cosigned.
    # An SDK whose policy any one witness satisfies: the liar's cosignature is enough for it.
    naive_policy = tmp_path / "any-witness-policy.txt"
    naive_policy.write_text(policy_text(pki, witnesses, 1))
    strict_keys, naive_keys = tmp_path / "strict-sender", tmp_path / "naive-sender"
    a = RunningBroker(config)
    a.start()
    _activity(pki, a, tmp_path / "a", "DE-BKA")
    with _auditor(pki, a, policy_path) as auditor:
        size_a, cosigned = _until(lambda: _cosigned(auditor, prefix))
        assert {"FR-CUSTOMS", "NL-FIOD"} <= set(cosigned)
    for keystore, policy in ((strict_keys, policy_path), (naive_keys, naive_policy)):
        with _sender(pki, a, keystore, policy) as sender:
            _until(lambda sender=sender: sender.recipient_keys(["DE-BKA"]))  # type: ignore[misc]
    held_a = _held_size(naive_keys)
    assert held_a > prefix
    a.stop()
    # Branch B: the same broker key, another history from the same prefix; its operator serves the
    # checkpoints only the liar cosigned (a policy of any one witness).
    b = RunningBroker(dataclasses.replace(config, database_url=f"sqlite:///{copy}", witness_policy=naive_policy))
    b.start()
    try:
        for n in range(3):
            _activity(pki, b, tmp_path / f"b{n}", ("NL-FIOD", "FR-CUSTOMS", "NL-FIOD")[n])
        with _auditor(pki, b, None) as plain:
            _until(lambda: _latest_cosigned_by(plain, witnesses["DE-BKA"].name, prefix))
            time.sleep(1.5)  # let the honest witnesses answer (and refuse)
            refused = [
                REGISTRY.get_sample_value("isb_witness_submissions_total", {"witness": name, "outcome": outcome}) or 0
                for name in ("FR-CUSTOMS", "NL-FIOD")
                for outcome in ("refused 409", "refused 422")
            ]
            assert sum(refused) >= 2
            export = tmp_path / "branch-b.jsonl"
            with export.open("wb") as stream:
                plain.export(stream)
        with _auditor(pki, b, policy_path) as auditor, pytest.raises(VerificationError, match="witness quorum"):
            auditor.checkpoint()
        # Without the policy B's export verifies (one key signed both branches); with it, it fails.
        assert verify_export(export, audit_log_key(pki).public_key).tree_size > prefix
        with pytest.raises(VerificationError, match="does not meet the witness policy"):
            verify_export(export, audit_log_key(pki).public_key, policy=load_policy(policy_path))
        assert (
            main(
                [
                    "audit",
                    "verify",
                    str(export),
                    "--key",
                    str(pki.directory / "audit.pub"),
                    "--quiet",
                    "--policy",
                    str(policy_path),
                ]
            )
            == 1
        )
        with _sender(pki, b, strict_keys, policy_path) as strict:
            _until(lambda: _refused(strict, "lacks the witness quorum"))
        with _sender(pki, b, naive_keys, naive_policy) as naive:
            _until(
                lambda: _refused(
                    naive,
                    r"not consistent with the one of size \d+ this agency has already seen: .*"
                    r" \(a fork\)",
                )
            )
        assert _held_size(naive_keys) == held_a  # branch B's checkpoint was not kept
    finally:
        b.stop()
    # The honest witness stayed on branch A: what it holds is one of A's checkpoints, at or after the
    # one the auditor saw cosigned (A went on signing while the senders looked keys up), never B's.
    held = witnesses["FR-CUSTOMS"].server
    assert held is not None
    latest = held.witness.state.latest("isb.dev/audit")
    assert latest is not None
    size, root = latest
    assert size >= size_a
    on_a = database.scalar("SELECT root_hash FROM audit_checkpoints WHERE tree_size = :size", size=size)
    assert on_a is not None
    assert bytes(on_a) == bytes(root)


def _refused(sender: AgencyClient, reason: str) -> None:
    # Raises AssertionError (retried by _until) while branch B still serves the prefix checkpoint.
    with pytest.raises(VerificationError) as refusal:
        sender.recipient_keys(["NL-FIOD"], refresh=True)
    assert re.search(reason, str(refusal.value)), str(refusal.value)


def _latest_cosigned_by(auditor: AuditorClient, name: str, size: int) -> None:
    assert auditor.checkpoint().size > size
    _note_has_line(auditor, name)


def test_vkey_of_the_log_matches_the_policy(pki: DevPki, tmp_path: Path, witnesses: dict[str, RunningWitness]) -> None:
    text = policy_text(pki, witnesses)
    assert _note.encode_vkey("isb.dev/audit", audit_log_key(pki).public_key) in text
