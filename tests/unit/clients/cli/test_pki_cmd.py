"""`isb pki ...` end to end through the argument parser, as an admin and an agency would type it."""

from __future__ import annotations

import argparse
import io
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from broker.identity import Role
from broker.pki.store import CaDirectory, CertificateRecord, list_certificates
from clients.cli import main
from clients.cli.pki_cmd import register, render_certificate_table
from tests.openssl_support import OpenSsl

TRUST_DOMAIN = "isb.test"


@pytest.fixture
def ca_path(tmp_path: Path) -> Path:
    """A CA created with `pki init --intermediate`."""
    path = tmp_path / "ca"
    assert main(["pki", "init", "--dir", str(path), "--trust-domain", TRUST_DOMAIN, "--intermediate"]) == 0
    return path


def _request(out: Path, agency: str = "FR-CUSTOMS", trust_domain: str = TRUST_DOMAIN) -> Path:
    assert main(["pki", "request", "--agency", agency, "--trust-domain", trust_domain, "--out", str(out)]) == 0
    return out / f"{agency}.csr"


def test_register_adds_every_pki_subcommand() -> None:
    """register() gives the isb parser a pki command with all eight subcommands."""
    parser = argparse.ArgumentParser(prog="isb")
    register(parser.add_subparsers(dest="command"))
    for command in ("init", "dev", "request", "issue", "list", "revoke", "renew", "crl"):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(["pki", command, "--help"])
        assert exit_info.value.code == 0


def test_request_writes_a_0600_key_and_a_csr(tmp_path: Path) -> None:
    """pki request leaves the key (mode 0600) and the CSR in --out."""
    csr = _request(tmp_path / "agency")
    key = tmp_path / "agency" / "FR-CUSTOMS.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert csr.read_bytes().startswith(b"-----BEGIN CERTIFICATE REQUEST-----")


def test_request_refuses_to_overwrite_a_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A second pki request for the same agency fails and keeps the first key."""
    _request(tmp_path)
    key_before = (tmp_path / "FR-CUSTOMS.key").read_bytes()
    assert (
        main(
            [
                "pki",
                "request",
                "--agency",
                "FR-CUSTOMS",
                "--trust-domain",
                TRUST_DOMAIN,
                "--out",
                str(tmp_path),
            ]
        )
        == 1
    )
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (tmp_path / "FR-CUSTOMS.key").read_bytes() == key_before


def test_issue_with_yes_writes_a_chain_openssl_verifies(ca_path: Path, tmp_path: Path, openssl: OpenSsl) -> None:
    """pki issue --yes writes leaf+intermediate that openssl verifies against ca.crt."""
    csr = _request(tmp_path / "agency")
    out = tmp_path / "agency.crt"
    assert main(["pki", "issue", str(csr), "--ca", str(ca_path), "--out", str(out), "--yes"]) == 0
    result = openssl("verify", "-CAfile", ca_path / "ca.crt", "-untrusted", out, out)
    assert result.returncode == 0, result.stdout + result.stderr


def test_issue_shows_the_request_and_stops_when_declined(
    ca_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Answering 'n' at the prompt issues nothing, after the SPIFFE id was shown."""
    csr = _request(tmp_path / "agency")
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert main(["pki", "issue", str(csr), "--ca", str(ca_path)]) == 1
    assert f"spiffe://{TRUST_DOMAIN}/agency/FR-CUSTOMS" in capsys.readouterr().out
    assert list_certificates(CaDirectory.open(ca_path)) == []
    assert not csr.with_suffix(".crt").exists()


def test_issue_proceeds_when_confirmed(ca_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Answering 'y' issues the certificate next to the CSR."""
    csr = _request(tmp_path / "agency")
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    assert main(["pki", "issue", str(csr), "--ca", str(ca_path)]) == 0
    assert csr.with_suffix(".crt").is_file()


def test_issue_refuses_a_csr_of_another_trust_domain(
    ca_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CSR for spiffe://other.test is refused with a message naming the trust domain."""
    csr = _request(tmp_path / "agency", trust_domain="other.test")
    assert main(["pki", "issue", str(csr), "--ca", str(ca_path), "--yes"]) == 1
    assert "not in trust domain 'isb.test'" in capsys.readouterr().err


def test_init_refuses_an_existing_ca(ca_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """pki init on an existing CA directory fails with a clear message."""
    assert main(["pki", "init", "--dir", str(ca_path), "--trust-domain", TRUST_DOMAIN]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err


def test_revoke_updates_list_and_crl(
    ca_path: Path, tmp_path: Path, openssl: OpenSsl, capsys: pytest.CaptureFixture[str]
) -> None:
    """pki revoke marks the certificate revoked in pki list and in an openssl-verified CRL."""
    csr = _request(tmp_path / "agency")
    assert main(["pki", "issue", str(csr), "--ca", str(ca_path), "--yes"]) == 0
    serial = list_certificates(CaDirectory.open(ca_path))[0].serial
    assert main(["pki", "revoke", serial.upper(), "--ca", str(ca_path), "--reason", "keyCompromise"]) == 0
    capsys.readouterr()
    assert main(["pki", "list", "--ca", str(ca_path)]) == 0
    [row] = [line for line in capsys.readouterr().out.splitlines() if serial in line]
    assert row.split()[:2] == ["agency", "revoked"]
    result = openssl("crl", "-in", ca_path / "crl.pem", "-CAfile", ca_path / "ca-chain.pem", "-verify", "-text")
    assert result.returncode == 0, result.stderr
    assert serial.upper() in result.stdout
    assert "Key Compromise" in result.stdout


def test_revoke_with_unknown_reason_is_refused(ca_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A reason outside RFC 5280 is refused and the message lists the accepted ones."""
    assert main(["pki", "revoke", "01", "--ca", str(ca_path), "--reason", "oops"]) == 1
    assert "keyCompromise" in capsys.readouterr().err


def test_renew_writes_a_successor(ca_path: Path, tmp_path: Path) -> None:
    """pki renew --yes issues a new serial for the same SPIFFE id."""
    csr = _request(tmp_path / "agency")
    assert main(["pki", "issue", str(csr), "--ca", str(ca_path), "--yes"]) == 0
    first = list_certificates(CaDirectory.open(ca_path))[0]
    out = tmp_path / "renewed.crt"
    assert main(["pki", "renew", first.serial, "--ca", str(ca_path), "--out", str(out), "--yes"]) == 0
    records = list_certificates(CaDirectory.open(ca_path))
    assert [r.spiffe_id for r in records] == [first.spiffe_id] * 2
    assert records[1].renewed_from == first.serial


def test_crl_command_exports_der(ca_path: Path, tmp_path: Path, openssl: OpenSsl) -> None:
    """pki crl --der --out writes a DER CRL openssl reads."""
    out = tmp_path / "crl.der"
    assert main(["pki", "crl", "--ca", str(ca_path), "--out", str(out), "--der"]) == 0
    assert openssl("crl", "-inform", "DER", "-in", out, "-noout").returncode == 0


def test_dev_command_creates_the_dev_pki_once(tmp_path: Path) -> None:
    """pki dev twice leaves the same files."""
    directory = tmp_path / "dev"
    assert main(["pki", "dev", "--dir", str(directory)]) == 0
    before = {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}
    assert main(["pki", "dev", "--dir", str(directory)]) == 0
    assert {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()} == before
    assert json.loads((directory / "ca.json").read_text())["trust_domain"] == "isb.dev"


def _record(days_left: float, *, revoked: bool = False) -> CertificateRecord:
    now = datetime.now(UTC)
    return CertificateRecord(
        serial="0a",
        fingerprint_sha256="ab" * 32,
        spiffe_id=f"spiffe://{TRUST_DOMAIN}/agency/FR-CUSTOMS",
        role=Role.AGENCY,
        name="FR-CUSTOMS",
        not_before=now - timedelta(days=1),
        not_after=now + timedelta(days=days_left),
        issued_at=now - timedelta(days=1),
        revoked_at=now if revoked else None,
    )


@pytest.mark.parametrize(
    ("days_left", "revoked", "colour"),
    [(10, False, "\033[33m"), (-1, False, "\033[31m"), (10, True, "\033[2m")],
)
def test_list_colours_expiring_expired_and_revoked(days_left: float, revoked: bool, colour: str) -> None:
    """Expiring within 30 days is yellow, expired red, revoked dimmed."""
    table = render_certificate_table([_record(days_left, revoked=revoked)], colour=True)
    assert table.splitlines()[1].startswith(colour)


def test_list_has_no_colour_for_a_certificate_far_from_expiry() -> None:
    """A certificate with 60 days left is printed without escape codes."""
    assert "\033[" not in render_certificate_table([_record(60)], colour=True)


def test_list_without_colour_has_no_escape_codes() -> None:
    """When stdout is not a terminal, no escape codes are written even for an expiring certificate."""
    assert "\033[" not in render_certificate_table([_record(1)], colour=False)


def test_issue_warns_and_asks_when_the_id_already_holds_a_valid_certificate(
    ca_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second certificate for FR-CUSTOMS is named as such, with the first one's serial, and declining stops it."""
    first = _request(tmp_path / "first")
    assert main(["pki", "issue", str(first), "--ca", str(ca_path), "--yes"]) == 0
    serial = list_certificates(CaDirectory.open(ca_path))[0].serial
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert main(["pki", "issue", str(_request(tmp_path / "second")), "--ca", str(ca_path)]) == 1
    captured = capsys.readouterr()
    assert "already holds 1 valid certificate" in captured.err
    assert serial in captured.err
    assert f"issue a second valid certificate for spiffe://{TRUST_DOMAIN}/agency/FR-CUSTOMS?" in captured.out
    assert len(list_certificates(CaDirectory.open(ca_path))) == 1


def test_issue_of_a_first_certificate_gives_no_warning(
    ca_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a valid certificate for the id, issuance asks the usual question only."""
    assert main(["pki", "issue", str(_request(tmp_path / "agency")), "--ca", str(ca_path), "--yes"]) == 0
    assert "already holds" not in capsys.readouterr().err


def test_crl_command_signs_with_the_requested_validity(ca_path: Path) -> None:
    """pki crl --days 2 makes a CRL whose nextUpdate is two days away; the default is seven."""

    def next_update_days() -> float:
        crl = x509.load_pem_x509_crl((ca_path / "crl.pem").read_bytes())
        assert crl.next_update_utc is not None
        return (crl.next_update_utc - datetime.now(UTC)).total_seconds() / 86400

    assert main(["pki", "crl", "--ca", str(ca_path), "--days", "2"]) == 0
    assert 1.9 < next_update_days() <= 2
    assert main(["pki", "crl", "--ca", str(ca_path)]) == 0
    assert 6.9 < next_update_days() <= 7


def test_crl_command_refuses_a_validity_out_of_bounds(ca_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A zero or over-long validity is an error, not a CRL."""
    assert main(["pki", "crl", "--ca", str(ca_path), "--days", "0"]) == 1
    assert "--days must be" in capsys.readouterr().err
