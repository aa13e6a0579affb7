"""Issue 13 over real mTLS: leaf certificates outside the certificate profile chain to the CA and
pass the TLS handshake, but the broker refuses them on every call (status, message, nothing stored,
audit entry), and the SDK refuses to use one as its own certificate."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from broker.api.v1 import broker_pb2_grpc
from broker.pki.dev import DevPki
from broker.pki.store import CaDirectory
from broker.protocol.keys import EncryptionKey, make_key_bundle
from clients import AgencyClient, CertificateProblem
from tests.certificate_builder import leaf, uri
from tests.e2e.broker_support import Database, RunningBroker

CASES = {
    "CA:TRUE leaf": ({"basic_constraints": x509.BasicConstraints(ca=True, path_length=None)}, "cA TRUE"),
    "leaf without extended key usage": ({"extended_usage": None}, "no extendedKeyUsage"),
}


def _out_of_profile(
    pki: DevPki, tmp: Path, **overrides: Any
) -> tuple[Path, Path, x509.Certificate, ec.EllipticCurvePrivateKey]:
    authority = CaDirectory.open(pki.directory).load_authority()
    cert, key = leaf(authority, [uri(f"spiffe://{pki.trust_domain}/agency/FR-CUSTOMS")], **overrides)
    cert_path, key_path = tmp / "leaf.crt", tmp / "leaf.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return cert_path, key_path, cert, key


@pytest.mark.parametrize(("overrides", "reason"), CASES.values(), ids=CASES.keys())
def test_leaf_outside_the_profile_is_refused_on_every_call_and_audited(
    broker: RunningBroker,
    pki: DevPki,
    database: Database,
    tmp_path: Path,
    overrides: dict[str, Any],
    reason: str,
) -> None:
    """A leaf naming FR-CUSTOMS, signed by the CA but outside the profile, is UNAUTHENTICATED; nothing is stored."""
    cert_path, key_path, cert, key = _out_of_profile(pki, tmp_path, **overrides)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca_cert.read_bytes(),
        private_key=key_path.read_bytes(),
        certificate_chain=cert_path.read_bytes(),
    )
    before = database.scalar("SELECT count(*) FROM audit_entries WHERE event = 'request.rejected'")
    now = dt.datetime.now(dt.UTC)
    bundle = make_key_bundle(
        "FR-CUSTOMS",
        EncryptionKey.generate(),
        identity_key=key,
        certificate=cert,
        not_before=now - dt.timedelta(minutes=1),
        not_after=now + dt.timedelta(days=1),
    )
    with grpc.secure_channel(broker.target, credentials) as channel, pytest.raises(grpc.RpcError) as refused:
        broker_pb2_grpc.BrokerServiceStub(channel).PublishKeyBundle(bundle, timeout=10)
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "client certificate refused" in str(refused.value.details())
    assert reason in str(refused.value.details())
    assert database.scalar("SELECT count(*) FROM key_bundles WHERE agency = 'FR-CUSTOMS'") == 0
    rejected = database.rows("SELECT actor, entry FROM audit_entries WHERE event = 'request.rejected'")
    assert len(rejected) == before + 1
    actor, entry = rejected[-1]
    assert actor == f"spiffe://{pki.trust_domain}/agency/FR-CUSTOMS"
    assert reason in bytes(entry).decode()


@pytest.mark.parametrize(("overrides", "reason"), CASES.values(), ids=CASES.keys())
def test_sdk_refuses_its_own_certificate_outside_the_profile(
    broker: RunningBroker,
    pki: DevPki,
    tmp_path: Path,
    overrides: dict[str, Any],
    reason: str,
) -> None:
    """The SDK checks its own certificate against the same profile before connecting, and says why."""
    cert_path, key_path, _, _ = _out_of_profile(pki, tmp_path, **overrides)
    with pytest.raises(CertificateProblem, match="outside the certificate profile") as refused:
        AgencyClient(broker.target, cert=cert_path, key=key_path, ca=pki.ca_cert)
    assert reason in str(refused.value)
