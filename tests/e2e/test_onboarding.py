"""Onboarding a new agency over real mTLS: `isb pki request/issue/install` make a folder that
connects, and an agency the admin has not registered is refused like on every other call."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import grpc
import pytest

from broker.pki.dev import DevPki
from clients import AgencyClient, RemoteError
from clients.cli import main
from tests.e2e.broker_support import Database, copy_pki


def _issue_new_agency(ca: Path, folder: Path, agency: str = "IT-GDF") -> Path:
    """The agency's key and CSR, the admin's certificate, the agency's ready folder (all via `isb`)."""
    assert main(["pki", "request", "--agency", agency, "--out", str(folder)]) == 0
    assert main(["pki", "issue", str(folder / f"{agency}.csr"), "--ca", str(ca), "--yes"]) == 0
    assert main(["pki", "install", str(folder / f"{agency}.crt"), "--ca-cert", str(ca / "ca.crt")]) == 0
    return folder


@pytest.fixture
def ca(pki: DevPki, tmp_path: Path) -> Path:
    """A private copy of the dev CA, so that issuing here leaves the session PKI as it was."""
    return copy_pki(pki, tmp_path / "ca")


def test_install_lays_out_a_folder_every_command_finds(ca: Path, tmp_path: Path) -> None:
    """After install the folder holds <AGENCY>.crt, the 0600 key, ca.crt and an isb.toml naming the agency."""
    folder = _issue_new_agency(ca, tmp_path / "it-gdf")
    assert {p.name for p in folder.iterdir()} >= {"IT-GDF.crt", "IT-GDF.key", "ca.crt", "isb.toml"}
    assert stat.S_IMODE((folder / "IT-GDF.key").stat().st_mode) == 0o600
    config = (folder / "isb.toml").read_text()
    assert 'agency = "IT-GDF"' in config
    assert 'trust_domain = "isb.dev"' in config


def test_install_refuses_a_certificate_from_another_ca(
    ca: Path, pki: DevPki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A certificate that does not chain to the given ca.crt is one error line, and no folder is made ready."""
    folder = tmp_path / "it-gdf"
    assert main(["pki", "request", "--agency", "IT-GDF", "--out", str(folder)]) == 0
    assert main(["pki", "issue", str(folder / "IT-GDF.csr"), "--ca", str(ca), "--yes"]) == 0
    other = tmp_path / "other-ca"
    assert main(["pki", "init", "--dir", str(other), "--trust-domain", "isb.dev"]) == 0
    capsys.readouterr()
    assert main(["pki", "install", str(folder / "IT-GDF.crt"), "--ca-cert", str(other / "ca.crt")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("isb: error: ")
    assert "does not chain to the CA" in err
    assert len(err.strip().splitlines()) == 1
    assert not (folder / "isb.toml").exists()


def _refusal(database: Database) -> dict[str, Any]:
    entry = database.scalar(
        "SELECT entry FROM audit_entries WHERE event = 'request.rejected' ORDER BY leaf_index DESC LIMIT 1"
    )
    return dict(json.loads(bytes(entry)))


def test_key_bundle_of_an_unregistered_agency_is_refused_and_audited(
    ca: Path,
    tmp_path: Path,
    broker_factory: Any,
    database: Database,
) -> None:
    """PublishKeyBundle from a valid certificate of an agency nobody registered is PERMISSION_DENIED,
    stores no bundle, and leaves an audit entry naming the caller and the RPC."""
    folder = _issue_new_agency(ca, tmp_path / "it-gdf")
    broker = broker_factory(cert_dir=ca)
    with AgencyClient.from_dir(broker.target, folder, "IT-GDF") as newcomer, pytest.raises(RemoteError) as refused:
        newcomer.publish_key()
    assert refused.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert refused.value.message == "agency IT-GDF is not registered with this broker"
    assert database.scalar("SELECT count(*) FROM key_bundles WHERE agency = 'IT-GDF'") == 0
    entry = _refusal(database)
    assert entry["actor"] == "spiffe://isb.dev/agency/IT-GDF"
    assert entry["fields"]["rpc"] == "PublishKeyBundle"
    assert "not registered" in entry["fields"]["reason"]


def test_keys_publish_of_an_unregistered_agency_names_the_register_command(
    ca: Path,
    tmp_path: Path,
    broker_factory: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`isb keys publish` before registration is one line: the cause, and `isb admin register IT-GDF` as the fix."""
    folder = _issue_new_agency(ca, tmp_path / "it-gdf")
    broker = broker_factory(cert_dir=ca)
    capsys.readouterr()
    assert main(["keys", "publish", "--agency", "IT-GDF", "--certs", str(folder), "--broker", broker.target]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "isb: error: PERMISSION_DENIED: agency IT-GDF is not registered with this broker; "
        "an admin registers it with `isb admin register IT-GDF`"
    )
