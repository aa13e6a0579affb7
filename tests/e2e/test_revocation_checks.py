"""Issue 13 over real mTLS: the SDK checks revocation and directory freshness itself.

The key substitution of the issue, reproduced: a second DE-BKA certificate is issued, an encryption
key is published under it, the certificate is revoked, and a broker on the same database serves a
CRL from before the revocation. The SDK refuses, because it verifies the CA-signed CRL itself (too
old a CRL number, or past its nextUpdate) and keeps what it has seen in its keystore.
"""

from __future__ import annotations

import datetime as dt
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from broker.api.v1 import broker_pb2, broker_pb2_grpc
from broker.identity import Role, make_spiffe_id
from broker.pki import _files
from broker.pki.authority import generate_identity_key, issue_certificate
from broker.pki.crl import sign_crl
from broker.pki.dev import DevPki
from broker.pki.revocation import revoke
from broker.pki.store import CaDirectory
from broker.protocol.revocation import RevokedCertificate, StaleRevocationList
from clients import AgencyClient, InvalidDelivery, RemoteError, VerificationError
from tests.e2e.broker_support import Database, RunningBroker, copy_pki


@pytest.fixture
def own_pki(pki: DevPki, tmp_path: Path) -> Path:
    """A private copy of the dev PKI: these tests issue and revoke certificates."""
    return copy_pki(pki, tmp_path / "pki")


def _client(broker: RunningBroker, certs: Path, agency: str, tmp: Path, **kwargs: Any) -> AgencyClient:
    kwargs.setdefault("keystore", tmp / "keys" / agency)
    return AgencyClient.from_dir(broker.target, certs, agency, **kwargs)


def _second_certificate(certs: Path, agency: str, tmp: Path) -> tuple[Path, Path, int]:
    """A second, valid certificate for `agency` from the deployment's CA (step 1 of the issue)."""
    ca = CaDirectory.open(certs)
    key = generate_identity_key()
    with ca.locked():
        authority = ca.load_authority()
        cert = issue_certificate(authority, key.public_key(), make_spiffe_id(ca.trust_domain, Role.AGENCY, agency))
        ca.record_issued(cert)
    directory = tmp / "second"
    directory.mkdir()
    cert_path, key_path = directory / f"{agency}.crt", directory / f"{agency}.key"
    _files.write_private_key(key_path, key)
    _files.write_public_file(cert_path, _files.certificate_pem(cert, *authority.chain))
    return cert_path, key_path, cert.serial_number


def _pki_serving(certs: Path, tmp: Path, crl_pem: bytes, name: str) -> Path:
    """A copy of the PKI whose crl.pem is `crl_pem`: what a broker serving an old CRL is given."""
    copy = tmp / name
    shutil.copytree(certs, copy)
    (copy / "crl.pem").write_bytes(crl_pem)
    return copy


def _expired_crl(certs: Path) -> bytes:
    """A CA-signed CRL without revocations, issued eight days ago for seven days: past its nextUpdate."""
    ca = CaDirectory.open(certs)
    crl = sign_crl(
        ca.load_authority(), [], 1, validity=dt.timedelta(days=7), now=dt.datetime.now(dt.UTC) - dt.timedelta(days=8)
    )
    return crl.public_bytes(serialization.Encoding.PEM)


def _substitution_setup(
    broker_factory: Callable[..., RunningBroker], certs: Path, tmp: Path
) -> tuple[RunningBroker, bytes, int]:
    """Steps 1-3 of the issue: DE-BKA's key, a second DE-BKA certificate with its own key, revoked."""
    honest = broker_factory(cert_dir=certs)
    police = _client(honest, certs, "DE-BKA", tmp)
    police.publish_key()
    cert_path, key_path, serial = _second_certificate(certs, "DE-BKA", tmp)
    with AgencyClient(
        honest.target, cert=cert_path, key=key_path, ca=certs / "ca.crt", keystore=tmp / "mallory"
    ) as mallory:
        mallory.publish_key()  # the newest DE-BKA bundle, under the second certificate
    before_revocation = (certs / "crl.pem").read_bytes()
    revoke(CaDirectory.open(certs), serial, "keyCompromise")
    return honest, before_revocation, serial


def test_broker_serving_a_crl_older_than_one_seen_cannot_substitute_a_revoked_key(
    broker_factory: Callable[..., RunningBroker],
    own_pki: Path,
    tmp_path: Path,
    database: Database,
) -> None:
    """After seeing the CRL that revokes the second DE-BKA certificate, the sender refuses a broker serving the
    older CRL (which would offer the revoked key as DE-BKA's newest): nothing is sealed, nothing stored."""
    honest, old_crl, _ = _substitution_setup(broker_factory, own_pki, tmp_path)
    with _client(honest, own_pki, "FR-CUSTOMS", tmp_path) as customs:
        sent = customs.send(["DE-BKA"], b"to the real DE-BKA key")  # sees the CRL with the revocation
    assert sent.queued_for == ["DE-BKA"]
    seen = customs.revocation_list().number
    honest.stop()
    stale = broker_factory(cert_dir=_pki_serving(own_pki, tmp_path, old_crl, "stale-pki"))
    with _client(stale, own_pki, "NL-FIOD", tmp_path) as observer:
        [entry] = (
            broker_pb2_grpc.BrokerServiceStub(observer.channel)
            .GetDirectory(broker_pb2.GetDirectoryRequest(agencies=["DE-BKA"]), timeout=10)
            .agencies
        )
    assert len(entry.key_bundles) == 2, "the stale broker offers the bundle under the revoked certificate"
    messages = database.scalar("SELECT count(*) FROM messages")
    with (
        _client(stale, own_pki, "FR-CUSTOMS", tmp_path) as customs_again,
        pytest.raises(StaleRevocationList) as refused,
    ):
        customs_again.send(["DE-BKA"], b"would go to the revoked key")
    assert f"older than number {seen} already seen" in str(refused.value)
    assert database.scalar("SELECT count(*) FROM messages") == messages


def test_broker_serving_a_crl_past_its_next_update_is_refused_with_the_fix(
    broker_factory: Callable[..., RunningBroker],
    own_pki: Path,
    tmp_path: Path,
    database: Database,
) -> None:
    """A sender that never saw the revocation still refuses a CRL past its nextUpdate, and the message names
    `isb pki crl`; the key under the revoked certificate is not used, nothing is stored."""
    honest, _, _ = _substitution_setup(broker_factory, own_pki, tmp_path)
    honest.stop()
    stale = broker_factory(cert_dir=_pki_serving(own_pki, tmp_path, _expired_crl(own_pki), "expired-pki"))
    with (
        _client(stale, own_pki, "FR-CUSTOMS", tmp_path / "fresh-keystore") as customs,
        pytest.raises(StaleRevocationList) as refused,
    ):
        customs.send(["DE-BKA"], b"would go to the revoked key")
    assert "expired at" in str(refused.value)
    assert "isb pki crl" in str(refused.value)
    assert database.scalar("SELECT count(*) FROM messages") == 0


def test_bundle_under_a_revoked_certificate_is_skipped_by_the_sdk_on_a_fresh_crl(
    broker_factory: Callable[..., RunningBroker],
    own_pki: Path,
    tmp_path: Path,
    database: Database,
) -> None:
    """With a current CRL that lists the second certificate, the SDK encrypts to DE-BKA's valid key only,
    even when the broker (whose own filter we bypass) offers the revoked one."""
    honest, _, serial = _substitution_setup(broker_factory, own_pki, tmp_path)
    assert honest.broker is not None

    def lax(certificate_der: bytes) -> bool:  # a broker that skips its own revocation filter
        return False

    honest.broker.auth.is_revoked_der = lax  # type: ignore[method-assign]
    with _client(honest, own_pki, "FR-CUSTOMS", tmp_path) as customs:
        keys = customs.recipient_keys(["DE-BKA"])
    police_cert = x509.load_pem_x509_certificate((own_pki / "DE-BKA.crt").read_bytes())
    assert police_cert.serial_number != serial
    assert keys["DE-BKA"].agency == "DE-BKA"
    with _client(honest, own_pki, "DE-BKA", tmp_path) as police:
        assert keys["DE-BKA"].key_id in police.decryption_keys


def test_delivery_from_a_revoked_sender_is_rejected_with_a_signed_receipt(
    broker_factory: Callable[..., RunningBroker],
    own_pki: Path,
    tmp_path: Path,
    database: Database,
) -> None:
    """A message accepted before FR-CUSTOMS's certificate was revoked is refused by the recipient after it:
    reported as invalid, answered with a REJECTED receipt (audited), never yielded."""
    broker = broker_factory(cert_dir=own_pki)
    police = _client(broker, own_pki, "DE-BKA", tmp_path)
    police.publish_key()
    with _client(broker, own_pki, "FR-CUSTOMS", tmp_path) as customs:
        sent = customs.send(["DE-BKA"], b"sent before the revocation")
    customs_cert = x509.load_pem_x509_certificate((own_pki / "FR-CUSTOMS.crt").read_bytes())
    revoke(CaDirectory.open(own_pki), customs_cert.serial_number, "keyCompromise")
    invalid: list[InvalidDelivery] = []
    received = list(police.deliveries(timeout=2, on_invalid=invalid.append))
    assert received == []
    assert [i.message_id for i in invalid] == [sent.message_id]
    assert isinstance(invalid[0].error, RevokedCertificate)
    assert "of sender FR-CUSTOMS has been revoked" in str(invalid[0].error)
    [entry] = database.rows(
        "SELECT entry FROM audit_entries WHERE event = 'receipt.received' AND message_id = :m", m=sent.message_id
    )
    assert b'"REJECTED"' in bytes(entry[0])
    assert (
        database.scalar("SELECT state FROM deliveries WHERE message_id = :m", m=sent.message_id)
        == broker_pb2.ACKNOWLEDGED
    )
    police.close()


def test_recipient_with_a_stale_crl_neither_accepts_nor_rejects(
    broker_factory: Callable[..., RunningBroker],
    own_pki: Path,
    tmp_path: Path,
    database: Database,
) -> None:
    """Past the CRL's nextUpdate, deliveries() stops with the fix in its message and the delivery stays queued."""
    broker = broker_factory(cert_dir=own_pki)
    police = _client(broker, own_pki, "DE-BKA", tmp_path)
    police.publish_key()
    with _client(broker, own_pki, "FR-CUSTOMS", tmp_path) as customs:
        sent = customs.send(["DE-BKA"], b"waits for a fresh CRL")
    police.close()
    broker.stop()
    stale = broker_factory(cert_dir=_pki_serving(own_pki, tmp_path, _expired_crl(own_pki), "expired-pki"))
    with (
        _client(stale, own_pki, "DE-BKA", tmp_path / "fresh-keystore") as police_again,
        pytest.raises(StaleRevocationList, match="isb pki crl"),
    ):
        list(police_again.deliveries(timeout=2))
    assert database.scalar("SELECT count(*) FROM audit_entries WHERE event = 'receipt.received'") == 0
    assert (
        database.scalar("SELECT state FROM deliveries WHERE message_id = :m", m=sent.message_id)
        != broker_pb2.ACKNOWLEDGED
    )


def test_trust_state_is_written_0600_in_the_keystore(
    broker_factory: Callable[..., RunningBroker],
    own_pki: Path,
    tmp_path: Path,
) -> None:
    """The CRL number and bundle indexes seen are kept in <keystore>/trust-state.json, mode 0600."""
    broker = broker_factory(cert_dir=own_pki)
    with _client(broker, own_pki, "DE-BKA", tmp_path) as police:
        police.publish_key()
    with _client(broker, own_pki, "FR-CUSTOMS", tmp_path) as customs:
        customs.send(["DE-BKA"], b"hello")
    state = tmp_path / "keys" / "FR-CUSTOMS" / "trust-state.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert '"DE-BKA"' in state.read_text()


# --- directory freshness ------------------------------------------------------------------------


def test_directory_behind_the_sender_is_refused_by_the_broker_and_audited(
    broker_factory: Callable[..., RunningBroker],
    own_pki: Path,
    tmp_path: Path,
    database: Database,
) -> None:
    """A sender that used DE-BKA's bundle at index N asks with that bound; a directory that lost the bundle
    (a copy of the database from before) answers FAILED_PRECONDITION, audited; nothing is sent."""
    broker = broker_factory(cert_dir=own_pki)
    police = _client(broker, own_pki, "DE-BKA", tmp_path)
    police.publish_key()
    customs = _client(broker, own_pki, "FR-CUSTOMS", tmp_path)
    customs.send(["DE-BKA"], b"first")
    newest = police.publish_key()
    customs.recipient_keys(["DE-BKA"], refresh=True)
    _drop_bundle(database, "DE-BKA", newest)
    customs._bundles.clear()  # the minute's cache over: the next send asks the directory again
    messages = database.scalar("SELECT count(*) FROM messages")
    with pytest.raises(RemoteError) as refused:
        customs.send(["DE-BKA"], b"second")
    assert refused.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert "no current key bundle of DE-BKA published at or after audit index" in refused.value.message
    assert database.scalar("SELECT count(*) FROM messages") == messages
    [reason] = database.rows("SELECT entry FROM audit_entries WHERE event = 'request.rejected'")
    assert b"GetDirectory" in bytes(reason[0])
    assert b"FR-CUSTOMS" in bytes(reason[0])


class _IgnoresFreshnessBound:
    """The broker's stub as a broker that ignores the freshness bound would answer."""

    def __init__(self, stub: Any) -> None:
        self._stub = stub

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stub, name)

    def GetDirectory(self, request: broker_pb2.GetDirectoryRequest, **kwargs: Any) -> Any:
        return self._stub.GetDirectory(broker_pb2.GetDirectoryRequest(agencies=request.agencies), **kwargs)


def test_sdk_refuses_a_bundle_older_than_one_already_used(
    broker_factory: Callable[..., RunningBroker],
    own_pki: Path,
    tmp_path: Path,
    database: Database,
) -> None:
    """Against a broker that ignores the bound and offers only an older bundle, the SDK refuses to encrypt."""
    broker = broker_factory(cert_dir=own_pki)
    police = _client(broker, own_pki, "DE-BKA", tmp_path)
    police.publish_key()
    newest = police.publish_key()
    with _client(broker, own_pki, "FR-CUSTOMS", tmp_path) as customs:
        customs.recipient_keys(["DE-BKA"])
    _drop_bundle(database, "DE-BKA", newest)
    messages = database.scalar("SELECT count(*) FROM messages")
    with _client(broker, own_pki, "FR-CUSTOMS", tmp_path) as customs_again:
        customs_again._stub = _IgnoresFreshnessBound(customs_again._stub)  # type: ignore[assignment]
        with pytest.raises(VerificationError, match="withholds the newer key"):
            customs_again.send(["DE-BKA"], b"would go to the older key")
    assert database.scalar("SELECT count(*) FROM messages") == messages


def _drop_bundle(database: Database, agency: str, key_id: str) -> None:
    with database.engine.begin() as conn:
        conn.exec_driver_sql(
            "DELETE FROM key_bundles WHERE agency = %s AND key_id = %s"
            if database.kind == "postgresql"
            else "DELETE FROM key_bundles WHERE agency = ? AND key_id = ?",
            (agency, key_id),
        )
