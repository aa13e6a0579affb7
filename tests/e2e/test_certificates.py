"""Issue 5 over real mTLS: revocation bites on the next call and closes open streams; AdminService
issues from CSRs and refuses what it must; the broker's certificate rotates without a restart."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from broker.api.v1 import admin_pb2, admin_pb2_grpc
from broker.identity import Role, make_spiffe_id
from broker.pki.authority import generate_identity_key
from broker.pki.csr import create_csr, csr_pem
from broker.pki.dev import DevPki
from broker.pki.inspect import serial_hex
from broker.pki.issuance import renew
from broker.pki.revocation import revoke
from broker.pki.store import CaDirectory
from clients import AgencyClient, ClientError, ConnectionFailed, RemoteError
from tests.e2e.broker_support import Database, RunningBroker, copy_pki
from tests.e2e.pki_support import raw_csr


@pytest.fixture
def own_pki(pki: DevPki, tmp_path: Path) -> Path:
    """A private copy of the dev PKI, so that revocations and rotations stay in this test."""
    return copy_pki(pki, tmp_path / "pki")


def _client(broker: RunningBroker, certs: Path, agency: str, tmp: Path) -> AgencyClient:
    return AgencyClient.from_dir(broker.target, certs, agency, keystore=tmp / "keys" / agency)


def _serial(cert_path: Path) -> int:
    return x509.load_pem_x509_certificate(cert_path.read_bytes()).serial_number


def _admin_stub(broker: RunningBroker, certs: Path, who: str = "admin") -> Any:
    creds = grpc.ssl_channel_credentials(
        root_certificates=(certs / "ca.crt").read_bytes(),
        private_key=(certs / f"{who}.key").read_bytes(),
        certificate_chain=(certs / f"{who}.crt").read_bytes(),
    )
    return admin_pb2_grpc.AdminServiceStub(grpc.secure_channel(broker.target, creds))


def test_revoked_sender_is_refused_on_next_send_and_others_keep_working(
    broker_factory: Any,
    own_pki: Path,
    tmp_path: Path,
    database: Database,
) -> None:
    """After `pki revoke`, the revoked agency's next send is UNAUTHENTICATED; another agency still sends."""
    broker = broker_factory(cert_dir=own_pki)
    customs, police, partner = (_client(broker, own_pki, a, tmp_path) for a in ("FR-CUSTOMS", "DE-BKA", "NL-FIOD"))
    police.publish_key()
    customs.send(["DE-BKA"], b"before revocation")
    revoke(CaDirectory.open(own_pki), _serial(own_pki / "FR-CUSTOMS.crt"), "keyCompromise")
    with pytest.raises(RemoteError) as refused:
        customs.send(["DE-BKA"], b"after revocation")
    assert refused.value.code is grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in refused.value.message
    assert partner.send(["DE-BKA"], b"partner unaffected").queued_for == ["DE-BKA"]
    assert database.scalar("SELECT count(*) FROM messages") == 2
    assert (
        database.scalar(
            "SELECT count(*) FROM audit_entries WHERE event = 'request.rejected' AND actor LIKE '%FR-CUSTOMS'"
        )
        >= 1
    )


def test_open_subscription_of_revoked_agency_ends_within_one_second(
    broker_factory: Any,
    own_pki: Path,
    tmp_path: Path,
) -> None:
    """An open Subscribe of an agency whose certificate is revoked is closed with UNAUTHENTICATED in under 1 s."""
    broker = broker_factory(cert_dir=own_pki)
    police = _client(broker, own_pki, "DE-BKA", tmp_path)
    police.publish_key()
    outcome: dict[str, Any] = {}

    def listen() -> None:
        try:
            for _ in police.deliveries(timeout=10):
                pass
            outcome["ended"] = "idle"
        except RemoteError as exc:
            outcome["ended"] = exc
        outcome["at"] = time.monotonic()

    thread = threading.Thread(target=listen)
    thread.start()
    time.sleep(0.5)  # the stream is open and waiting
    admin = _admin_stub(broker, own_pki)
    revoked_at = time.monotonic()
    admin.RevokeCertificate(
        admin_pb2.RevokeCertificateRequest(serial=f"{_serial(own_pki / 'DE-BKA.crt'):x}", reason="keyCompromise"),
        timeout=5,
    )
    thread.join(5)
    error = outcome["ended"]
    assert isinstance(error, RemoteError)
    assert error.code is grpc.StatusCode.UNAUTHENTICATED
    assert outcome["at"] - revoked_at < 1.0
    partner = _client(broker, own_pki, "NL-FIOD", tmp_path)
    with pytest.raises(ClientError, match="no valid key bundle published by DE-BKA"):
        partner.send(["DE-BKA"], b"x")  # the directory no longer offers keys signed under a revoked identity


def test_crl_published_by_the_broker_verifies_with_openssl(broker_factory: Any, own_pki: Path, tmp_path: Path) -> None:
    """The CRL fetched through the broker lists the revoked serial and `openssl crl -verify` accepts it."""
    broker = broker_factory(cert_dir=own_pki)
    serial = _serial(own_pki / "NL-FIOD.crt")
    revoke(CaDirectory.open(own_pki), serial, "cessationOfOperation")
    crl = _admin_stub(broker, own_pki, "auditor").GetCrl(admin_pb2.GetCrlRequest(), timeout=5)
    parsed = x509.load_der_x509_crl(crl.der)
    assert parsed.get_revoked_certificate_by_serial_number(serial) is not None
    (tmp_path / "crl.der").write_bytes(crl.der)
    result = subprocess.run(
        [
            "openssl",
            "crl",
            "-inform",
            "DER",
            "-in",
            str(tmp_path / "crl.der"),
            "-CAfile",
            str(own_pki / "ca.crt"),
            "-verify",
            "-noout",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "verify OK" in result.stderr + result.stdout


def _csr(trust_domain: str, role: Role, name: str) -> bytes:
    key = generate_identity_key()
    return csr_pem(create_csr(key, make_spiffe_id(trust_domain, role, name)))


def test_admin_issues_certificate_from_csr_and_registers_the_agency(
    broker_factory: Any,
    own_pki: Path,
    tmp_path: Path,
    database: Database,
) -> None:
    """IssueCertificate returns a certificate that openssl verifies, registers the agency and is audited."""
    broker = broker_factory(cert_dir=own_pki)
    admin = _admin_stub(broker, own_pki)
    issued = admin.IssueCertificate(
        admin_pb2.IssueCertificateRequest(
            csr_pem=_csr("isb.dev", Role.AGENCY, "IT-GDF"),
            agency=admin_pb2.RegisterAgencyRequest(agency="IT-GDF", display_name="Guardia di Finanza", country="IT"),
        ),
        timeout=10,
    )
    assert issued.record.spiffe_id == "spiffe://isb.dev/agency/IT-GDF"
    (tmp_path / "it.crt").write_bytes(issued.certificate_pem)
    check = subprocess.run(
        ["openssl", "verify", "-CAfile", str(own_pki / "ca.crt"), str(tmp_path / "it.crt")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    assert database.scalar("SELECT country FROM agencies WHERE agency_id = 'IT-GDF'") == "IT"
    assert (
        database.scalar(
            "SELECT count(*) FROM audit_entries WHERE event = 'certificate.issued' "
            "AND actor = 'spiffe://isb.dev/admin/admin-1'"
        )
        == 1
    )


@pytest.mark.parametrize(
    ("role", "name", "trust_domain", "message"),
    [
        (Role.AGENCY, "FR-CUSTOMS2", "evil.example", "trust domain"),
        (Role.AGENCY, "not-an-id", "isb.dev", "not an agency id"),
    ],
)
def test_admin_refuses_csr_outside_trust_domain_or_malformed(
    broker_factory: Any,
    own_pki: Path,
    role: Role,
    name: str,
    trust_domain: str,
    message: str,
    database: Database,
) -> None:
    """A CSR for another trust domain or a malformed id is INVALID_ARGUMENT, issues nothing, and is audited."""
    broker = broker_factory(cert_dir=own_pki)
    admin = _admin_stub(broker, own_pki)
    if name == "not-an-id":
        pem = raw_csr(generate_identity_key(), f"spiffe://{trust_domain}/agency/{name}")
    else:
        pem = _csr(trust_domain, role, name)
    with pytest.raises(grpc.RpcError) as refused:
        admin.IssueCertificate(admin_pb2.IssueCertificateRequest(csr_pem=pem), timeout=10)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert message in str(refused.value.details())
    assert (
        database.scalar(
            "SELECT count(*) FROM audit_entries WHERE event = 'certificate.issued' "
            "AND actor = 'spiffe://isb.dev/admin/admin-1'"
        )
        == 0
    )
    assert database.scalar("SELECT count(*) FROM audit_entries WHERE event = 'request.rejected'") == 1


def test_admin_refuses_csr_whose_signature_does_not_match(broker_factory: Any, own_pki: Path) -> None:
    """A CSR whose signature was made by another key than the one it carries is refused."""
    broker = broker_factory(cert_dir=own_pki)
    pem = _csr("isb.dev", Role.AGENCY, "ES-AEAT")
    csr = x509.load_pem_x509_csr(pem)
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature
    bad = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(grpc.RpcError) as refused:
        _admin_stub(broker, own_pki).IssueCertificate(admin_pb2.IssueCertificateRequest(csr_pem=bad), timeout=10)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "signature" in str(refused.value.details())


def test_revoked_admin_cannot_issue(broker_factory: Any, own_pki: Path) -> None:
    """An admin whose certificate was revoked is UNAUTHENTICATED on its next call."""
    broker = broker_factory(cert_dir=own_pki)
    revoke(CaDirectory.open(own_pki), _serial(own_pki / "admin.crt"), "affiliationChanged")
    with pytest.raises(grpc.RpcError) as refused:
        _admin_stub(broker, own_pki).IssueCertificate(
            admin_pb2.IssueCertificateRequest(csr_pem=_csr("isb.dev", Role.AGENCY, "PT-AT")), timeout=10
        )
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in str(refused.value.details())


def test_agency_and_auditor_get_permission_denied_on_admin_calls(broker_factory: Any, own_pki: Path) -> None:
    """Only admin certificates may administer: an agency and an auditor are PERMISSION_DENIED."""
    broker = broker_factory(cert_dir=own_pki)
    for who in ("FR-CUSTOMS", "auditor"):
        with pytest.raises(grpc.RpcError) as refused:
            _admin_stub(broker, own_pki, who).ListCertificates(admin_pb2.ListCertificatesRequest(), timeout=5)
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED


def test_agency_certificate_presented_as_server_certificate_is_refused_by_clients(
    broker_factory: Any,
    own_pki: Path,
    tmp_path: Path,
) -> None:
    """A broker serving with an agency certificate (clientAuth only) fails the clients' handshake."""
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(own_pki / "FR-CUSTOMS.crt", served / "broker.crt")
    shutil.copy(own_pki / "FR-CUSTOMS.key", served / "broker.key")
    broker = broker_factory(cert_dir=own_pki, server_cert=served / "broker.crt", server_key=served / "broker.key")
    client = _client(broker, own_pki, "DE-BKA", tmp_path)
    with pytest.raises(ConnectionFailed) as failed:
        client.publish_key()
    assert "is not trusted" in str(failed.value)
    assert "unsuitable certificate purpose" in str(failed.value)


def test_rotated_broker_certificate_keeps_streaming_without_losing_deliveries(
    broker_factory: Any,
    own_pki: Path,
    tmp_path: Path,
) -> None:
    """The broker certificate is renewed on disk mid-stream: new connections use it, nothing is lost."""
    broker = broker_factory(cert_dir=own_pki)
    customs, police = _client(broker, own_pki, "FR-CUSTOMS", tmp_path), _client(broker, own_pki, "DE-BKA", tmp_path)
    police.publish_key()
    sent = [customs.send(["DE-BKA"], b"m%d" % i).message_id for i in range(5)]
    got: list[str] = []
    stream = police.deliveries(timeout=3)
    for message in stream:
        got.append(message.message_id)
        police.ack(message)
        if len(got) == 2:
            old = _serial(own_pki / "broker.crt")
            cert, _ = renew(CaDirectory.open(own_pki), old, lifetime_days=30)
            (own_pki / "broker.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            sent += [customs.send(["DE-BKA"], b"after %d" % i).message_id for i in range(3)]
        if len(got) == len(sent):
            break
    assert sorted(got) == sorted(sent)
    fresh = _client(broker, own_pki, "NL-FIOD", tmp_path)
    fresh.publish_key()  # a new connection handshakes with the renewed certificate
    assert broker.broker is not None
    assert broker.broker.credentials.reloads >= 1


def _certificate_events(database: Database, serial: str) -> list[tuple[str, str]]:
    rows = database.rows("SELECT event, actor, entry FROM audit_entries WHERE event LIKE 'certificate.%'")
    return [(r.event, r.actor) for r in rows if json.loads(bytes(r.entry))["fields"].get("serial") == serial]


def test_offline_issuance_and_revocation_reach_the_audit_log_once(
    broker_factory: Any,
    own_pki: Path,
    database: Database,
) -> None:
    """`isb pki` work done offline is audited by the broker (actor: the CA); AdminService work only once."""
    broker = broker_factory(cert_dir=own_pki)
    offline = serial_hex(_serial(own_pki / "NL-FIOD.crt"))
    revoke(CaDirectory.open(own_pki), offline, "superseded")
    deadline = time.monotonic() + 5
    while ("certificate.revoked", "ca:pki") not in _certificate_events(database, offline):
        assert time.monotonic() < deadline, "the offline revocation was not audited"
        time.sleep(0.1)
    assert _certificate_events(database, offline) == [
        ("certificate.issued", "ca:pki"),
        ("certificate.revoked", "ca:pki"),
    ]
    online = serial_hex(_serial(own_pki / "DE-BKA.crt"))
    _admin_stub(broker, own_pki).RevokeCertificate(
        admin_pb2.RevokeCertificateRequest(serial=online, reason="keyCompromise"), timeout=5
    )
    time.sleep(2.5)  # the ledger looks every second: it must not audit the online revocation again
    assert _certificate_events(database, online) == [
        ("certificate.issued", "ca:pki"),
        ("certificate.revoked", "spiffe://isb.dev/admin/admin-1"),
    ]
