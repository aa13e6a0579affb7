"""ApplyPolicy against operator slips (issue 12): a policy that names no agency or cuts a registered agency
off is refused unless forced, the applied policy goes to the broker's own file, never a tracked example,
and validation errors name the file that was checked."""

from __future__ import annotations

import hashlib
from pathlib import Path

import grpc
import pytest

from broker.config import DEV_POLICY_FILE
from broker.pki.dev import DevPki
from clients import AgencyClient, RemoteError
from clients.admin import AdminClient
from clients.cli import main as isb
from tests.e2e.broker_support import Database, RunningBroker

EXAMPLE = DEV_POLICY_FILE
# Every dev agency is named, but only customs and FIOD may exchange anything: the BKA is cut off.
WITHOUT_BKA = (
    EXAMPLE.read_text().split("[[groups]]", 1)[0]
    + """
[[rules]]
name = "customs-only"
senders = ["FR-CUSTOMS", "NL-FIOD"]
recipients = ["FR-CUSTOMS", "NL-FIOD"]
kinds = ["ALERT"]
handling = ["CLEAR", "GREEN"]
"""
)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _admin(broker: RunningBroker, pki: DevPki) -> AdminClient:
    cert, key = pki.admin
    return AdminClient(broker.target, cert=cert, key=key, ca=pki.ca_cert)


def test_empty_policy_is_refused_unless_forced_and_never_rewrites_the_example(
    broker: RunningBroker,
    agencies: dict[str, AgencyClient],
    pki: DevPki,
    database: Database,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An empty document is FAILED_PRECONDITION naming the cause; sends still pass; `policy-apply --force` applies
    it into the broker's own policy.toml in its state directory; examples/policy-dev.toml is untouched throughout."""
    example = _digest(EXAMPLE)
    admin = _admin(broker, pki)
    with pytest.raises(RemoteError) as refused:
        admin.apply_policy("")
    assert refused.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert "names no agency" in refused.value.message
    assert "--force" in refused.value.message
    assert agencies["FR-CUSTOMS"].send(["DE-BKA"], b"still allowed").audit_index > 0
    empty = database.tmp / "empty.toml"
    empty.write_text("version = 1\n")
    online = ["--broker", broker.target, "--certs", str(pki.directory)]
    assert isb(["admin", "policy-apply", str(empty), *online]) != 0
    assert isb(["admin", "policy-apply", "--force", str(empty), *online]) == 0
    capsys.readouterr()
    own = database.tmp / "state" / "policy.toml"  # the broker's state_dir
    assert own.read_text() == "version = 1\n"
    with pytest.raises(RemoteError) as denied:
        agencies["FR-CUSTOMS"].send(["DE-BKA"], b"now denied")
    assert denied.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert _digest(EXAMPLE) == example


def test_policy_cutting_off_a_registered_agency_is_refused_naming_it(
    broker: RunningBroker,
    agencies: dict[str, AgencyClient],
    pki: DevPki,
) -> None:
    """A policy under which DE-BKA (registered) could neither send nor receive is refused naming DE-BKA only;
    with force it applies."""
    admin = _admin(broker, pki)
    with pytest.raises(RemoteError) as refused:
        admin.apply_policy(WITHOUT_BKA)
    assert refused.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert "cut off DE-BKA " in refused.value.message
    assert "FR-CUSTOMS" not in refused.value.message.split("cut off", 1)[1].split("(")[0]
    assert agencies["DE-BKA"].send(["FR-CUSTOMS"], b"still allowed").audit_index > 0
    admin.apply_policy(WITHOUT_BKA, force=True)
    with pytest.raises(RemoteError) as denied:
        agencies["DE-BKA"].send(["FR-CUSTOMS"], b"now denied")
    assert denied.value.code is grpc.StatusCode.PERMISSION_DENIED


def test_policy_validate_errors_name_the_file_checked(
    broker: RunningBroker,
    pki: DevPki,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`isb admin policy-validate FILE` prints errors labelled with FILE, not the running policy's name."""
    bad = tmp_path / "proposed-change.toml"
    bad.write_text(EXAMPLE.read_text().replace('kind = "police"', 'kind = "gossip"'))
    assert isb(["admin", "policy-validate", str(bad), "--broker", broker.target, "--certs", str(pki.directory)]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err
    assert "policy-dev.toml" not in err
