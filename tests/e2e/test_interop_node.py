"""The Node.js conformance client (tests/interop, written from docs/protocol.md and proto/ only)
against the vectors, and against a real broker over mutual TLS with the Python SDK on the other side.

Missing node or node_modules is a failure, not a skip: `.ci/run` and `make test` run `npm ci` in
tests/interop, so CI always has them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from broker.pki.dev import DevPki
from clients import AgencyClient
from clients.agency import MLKEM768_X25519
from clients.audit.verify import verify_export
from clients.cli.audit_cmd import load_audit_key
from tests.e2e.broker_support import REPO, RunningBroker

INTEROP = REPO / "tests" / "interop"
X_WING_SUITE = "2"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed; .ci/run installs Node.js 20 (apt nodejs)")
    if not (INTEROP / "node_modules").is_dir():
        pytest.fail("tests/interop/node_modules is missing: run `npm ci` in tests/interop (make test and .ci/run do)")
    return node


def _run(args: list[str], env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        args, cwd=INTEROP, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout


def _passed_all(tap: str, expected: int) -> None:
    summary = dict(line[2:].split(" ", 1) for line in tap.splitlines() if line.startswith("# ") and " " in line[2:])
    assert (summary.get("pass"), summary.get("fail"), summary.get("skipped")) == (str(expected), "0", "0"), tap[-3000:]


def test_node_client_checks_every_vector() -> None:
    """The Node client recomputes and verifies every vector in tests/vectors and refuses every refused one."""
    _passed_all(_run([_node(), "--test", "test/vectors.test.mjs"]), 22)


def test_node_client_interoperates_with_the_python_sdk(broker: RunningBroker, pki: DevPki, tmp_path: Path) -> None:
    """Node publishes an X-Wing key and opens what the Python SDK seals to it; the Python SDK opens what
    Node seals to a group (X25519) and an agency (X-Wing); the receipt Node signs verifies in the Python
    SDK, Node checks the directory's key bundle proofs (protocol 18.4), and Node's audit export verifies in
    Python's verifier."""
    node = _node()
    work = tmp_path / "interop"
    work.mkdir()
    keys = tmp_path / "keys"
    with (
        AgencyClient.from_dir(broker.target, pki.directory, "FR-CUSTOMS", keystore=keys / "FR-CUSTOMS") as customs,
        AgencyClient.from_dir(broker.target, pki.directory, "DE-BKA", keystore=keys / "DE-BKA") as police,
    ):
        customs.publish_key()
        police.publish_key(MLKEM768_X25519)
        # 1. Node generates NL-FIOD's X-Wing key and publishes its bundle; the Python SDK verifies it and seals to it.
        published = json.loads(
            _run(
                [
                    node,
                    "bin/publish-key.mjs",
                    broker.target,
                    str(pki.directory),
                    "NL-FIOD",
                    X_WING_SUITE,
                    str(work / "node-key.json"),
                ]
            )
        )
        bundle = customs.recipient_keys(["NL-FIOD"])["NL-FIOD"]
        assert bundle.key_id == published["key_id"]
        body = b'{"category": "IED_PRECURSOR", "from": "python"}'
        sent = customs.send(["NL-FIOD"], body, content_type="application/json", tlp="AMBER")
        (work / "python-sent.json").write_text(
            json.dumps({"message_id": sent.message_id, "body_hex": body.hex(), "content_type": "application/json"})
        )
        # 2. Node opens it and acknowledges, seals an alert to DE-BKA, and verifies checkpoint, proof and export.
        env = {
            "ISB_INTEROP_TARGET": broker.target,
            "ISB_INTEROP_CERTS": str(pki.directory),
            "ISB_INTEROP_TRUST_DOMAIN": "isb.dev",
            "ISB_INTEROP_WORK": str(work),
        }
        _passed_all(_run([node, "--test", "test/live.test.mjs"], env), 4)
        # 3. Both Python recipients open Node's alert (DE-BKA by name, X-Wing; FR-CUSTOMS through EU-CUSTOMS, X25519).
        node_sent = json.loads((work / "node-sent.json").read_text())
        for client in (police, customs):
            received = next(iter(client.deliveries(timeout=10)))
            assert (received.message_id, received.sender, received.body.hex()) == (
                node_sent["message_id"],
                "NL-FIOD",
                node_sent["body_hex"],
            )
            assert received.content_type == "application/json"
            assert list(received.header.recipients) == ["EU-CUSTOMS", "DE-BKA"]
            assert received.envelope_sha256.hex() == node_sent["envelope_sha256_hex"]
            client.ack(received)
        # 4. The receipt Node signed as NL-FIOD verifies in the Python SDK.
        [status] = customs.status(sent.message_id)
        assert (status.recipient, status.state) == ("NL-FIOD", "ACKNOWLEDGED")
        assert status.receipt is not None
        assert status.receipt.recipient == "NL-FIOD"
    # 5. The export Node wrote verifies with the Python verifier.
    report = verify_export(work / "node-export.jsonl", load_audit_key(pki.audit_pub))
    assert report.entries > node_sent["audit_index"]
