"""Agency keys: identity signatures, HPKE encryption keys and signed key bundles (DESIGN.md section 3).

An agency signs with its identity key (ECDSA P-256, certified by the CA) and receives with an HPKE
encryption key, published as a `KeyBundle` signed by the identity key. Senders verify bundles
themselves against the recipient's certificate chain (`verify_key_bundle`); they never trust the
broker's directory for keys.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Final, TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric import ec, mlkem, x25519
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import verification as x509_verification
from google.protobuf.message import DecodeError

from broker.api.v1 import envelope_pb2
from broker.errors import ConfigurationError
from broker.identity import Role
from broker.protocol import _pae, validation
from broker.protocol.certificates import spiffe_id_of, verify_leaf_profile
from broker.protocol.errors import VerificationError

__all__ = [
    "HYBRID_SUITE",
    "X25519_SUITE",
    "EncryptionKey",
    "HpkePrivateKey",
    "HpkePublicKey",
    "KeySuite",
    "agency_of_certificate",
    "hpke_suite",
    "identity_public_key",
    "make_key_bundle",
    "public_key_of",
    "sign_identity",
    "verify_agency_certificate",
    "verify_identity_signature",
    "verify_key_bundle",
]

KeySuite: TypeAlias = envelope_pb2.KeySuite.ValueType
HpkePublicKey: TypeAlias = x25519.X25519PublicKey | hpke.MLKEM768X25519PublicKey
HpkePrivateKey: TypeAlias = x25519.X25519PrivateKey | hpke.MLKEM768X25519PrivateKey

X25519_SUITE: Final = envelope_pb2.X25519_HKDF_SHA256_AES_256_GCM
HYBRID_SUITE: Final = envelope_pb2.MLKEM768_X25519_HKDF_SHA256_AES_256_GCM

# Built once: Suite objects are immutable and thread-safe, and the broker and SDK use them per message.
_HPKE_SUITES: Final[dict[int, hpke.Suite]] = {
    X25519_SUITE: hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM),
    HYBRID_SUITE: hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM),
}
_X25519_LEN: Final = 32
_MLKEM768_PUBLIC_LEN: Final = 1184
_MLKEM768_SEED_LEN: Final = 64
_KEY_FILE_FORMAT: Final = "isb-hpke-key-v1"
_ECDSA_SHA256: Final = ec.ECDSA(hashes.SHA256())


def hpke_suite(suite: KeySuite) -> hpke.Suite:
    """The HPKE suite object for a `KeySuite`; raise `VerificationError` for an unknown suite."""
    try:
        return _HPKE_SUITES[suite]
    except KeyError:
        raise VerificationError(f"unsupported key suite {suite}") from None


def _suite_name(suite: KeySuite) -> str:
    return envelope_pb2.KeySuite.Name(suite)


# --- identity signatures ------------------------------------------------------------------------


def sign_identity(identity_key: ec.EllipticCurvePrivateKey, signing_input: bytes) -> bytes:
    """Sign a PAE signing input with an identity key (ECDSA P-256 / SHA-256, DER signature)."""
    return identity_key.sign(signing_input, _ECDSA_SHA256)


# Certificate-derived facts are cached per certificate: the broker and recipients check the same few
# certificates thousands of times a second, and each lookup otherwise re-parses the key or the SAN.
@functools.lru_cache(maxsize=1024)
def certificate_sha256(certificate: x509.Certificate) -> bytes:
    """SHA-256 of the certificate's DER encoding (what headers name as sender_cert_sha256)."""
    return certificate.fingerprint(hashes.SHA256())


@functools.lru_cache(maxsize=1024)
def identity_public_key(certificate: x509.Certificate) -> ec.EllipticCurvePublicKey:
    """The certificate's ECDSA P-256 public key; raise `VerificationError` for any other key type."""
    try:
        key = certificate.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise VerificationError(f"certificate public key is unusable: {exc}") from exc
    # Only P-256 is an identity key in this protocol; refusing others stops algorithm substitution.
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise VerificationError("certificate key is not an ECDSA P-256 identity key")
    return key


def verify_identity_signature(
    public_key: ec.EllipticCurvePublicKey, signature: bytes, signing_input: bytes, *, what: str
) -> None:
    """Verify an identity signature over a PAE signing input; raise `VerificationError` naming `what`."""
    try:
        public_key.verify(signature, signing_input, _ECDSA_SHA256)
    except InvalidSignature:
        raise VerificationError(f"{what} signature does not verify") from None


# --- certificates -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def agency_of_certificate(certificate: x509.Certificate) -> str:
    """The agency id named by the certificate's single `spiffe://<td>/agency/<id>` URI SAN.

    The trust domain is not checked here (see `verify_agency_certificate` for the full check); this is
    the cheap per-message binding between a header's sender and the certificate that signed it.
    """
    spiffe_id = spiffe_id_of(certificate, None)
    if spiffe_id.role is not Role.AGENCY:
        raise VerificationError(f"certificate identity {str(spiffe_id)!r} is not an agency SPIFFE id")
    return spiffe_id.name


def verify_agency_certificate(
    certificate: x509.Certificate,
    *,
    trust_roots: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate] = (),
    expected_agency: str,
    trust_domain: str,
    now: dt.datetime,
) -> None:
    """Verify that `certificate` chains to a trust root at `now` and names `expected_agency`.

    Uses `cryptography.x509.verification` (RFC 5280 path building with the Web PKI profile for
    client certificates: signatures, validity, basic constraints, key usage, clientAuth EKU), then
    requires the single URI SAN `spiffe://<trust_domain>/agency/<expected_agency>`, the leaf
    profile of `broker.protocol.certificates` and a P-256 key. Revocation is the caller's check
    (`broker.protocol.revocation`), against a CRL it has verified itself.
    """
    validation.require_aware(now, "now")
    if not trust_roots:
        raise VerificationError("no trust roots given to verify the certificate against")
    verifier = (
        x509_verification.PolicyBuilder()
        .store(x509_verification.Store(list(trust_roots)))
        .time(now)
        .build_client_verifier()
    )
    try:
        verifier.verify(certificate, list(intermediates))
    except x509_verification.VerificationError as exc:
        raise VerificationError(f"certificate of {expected_agency} does not chain to the CA: {exc}") from exc
    expected = f"spiffe://{trust_domain}/agency/{expected_agency}"
    uri = str(spiffe_id_of(certificate, None))
    if uri != expected:
        raise VerificationError(f"certificate identity is {uri!r}, expected {expected!r}")
    verify_leaf_profile(certificate, trust_domain, role=Role.AGENCY)
    identity_public_key(certificate)


# --- HPKE encryption keys -----------------------------------------------------------------------


class EncryptionKey:
    """The private side of an agency's HPKE encryption key: suite, key id and private key.

    Keep it local: it is written only by `save` (mode 0600) and never logged (`repr` omits it).
    """

    __slots__ = ("_mlkem", "_x25519", "key_id", "private_key", "public_key_bytes", "suite")

    suite: KeySuite
    key_id: str
    private_key: HpkePrivateKey
    public_key_bytes: bytes

    def __init__(
        self,
        suite: KeySuite,
        x25519_key: x25519.X25519PrivateKey,
        mlkem_key: mlkem.MLKEM768PrivateKey | None = None,
        key_id: str | None = None,
    ) -> None:
        """Assemble a key from its parts; most callers want `generate`, `from_bytes` or `load`."""
        x25519_public = x25519_key.public_key().public_bytes_raw()
        if suite == X25519_SUITE:
            if mlkem_key is not None:
                raise ValueError("the X25519 suite takes no ML-KEM key")
            self.private_key = x25519_key
            self.public_key_bytes = x25519_public
        elif suite == HYBRID_SUITE:
            if mlkem_key is None:
                raise ValueError("the hybrid suite needs an ML-KEM-768 key")
            self.private_key = hpke.MLKEM768X25519PrivateKey(mlkem_key, x25519_key)
            # Bundle layout of the proto: ML-KEM-768 encapsulation key || X25519 public key.
            self.public_key_bytes = mlkem_key.public_key().public_bytes_raw() + x25519_public
        else:
            raise ValueError(f"unsupported key suite {suite}")
        self.suite = suite
        self._x25519 = x25519_key
        self._mlkem = mlkem_key
        # Default id: derived from the public key, so it is stable and distinct for every key.
        self.key_id = key_id if key_id is not None else hashlib.sha256(self.public_key_bytes).hexdigest()[:32]

    def __repr__(self) -> str:
        return f"EncryptionKey(suite={_suite_name(self.suite)}, key_id={self.key_id!r})"

    @classmethod
    def generate(cls, suite: KeySuite = X25519_SUITE, key_id: str | None = None) -> EncryptionKey:
        """Generate a fresh key for `suite` (X25519 by default, or the ML-KEM-768+X25519 hybrid)."""
        mlkem_key = mlkem.MLKEM768PrivateKey.generate() if suite == HYBRID_SUITE else None
        return cls(suite, x25519.X25519PrivateKey.generate(), mlkem_key, key_id)

    def public_key(self) -> HpkePublicKey:
        """The HPKE public key object, as senders obtain it from the bundle."""
        return self.private_key.public_key()

    def to_bytes(self) -> bytes:
        """Serialize for local storage (JSON; the secret is the X25519 key and, if hybrid, ML-KEM seed)."""
        secret = self._x25519.private_bytes_raw()
        if self._mlkem is not None:
            secret = self._mlkem.private_bytes_raw() + secret
        document = {
            "format": _KEY_FILE_FORMAT,
            "suite": _suite_name(self.suite),
            "key_id": self.key_id,
            "private_key": secret.hex(),
        }
        return json.dumps(document, sort_keys=True).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> EncryptionKey:
        """Parse `to_bytes` output; raise `ConfigurationError` if it is not a usable key file."""
        try:
            document = json.loads(data)
            if document["format"] != _KEY_FILE_FORMAT:
                raise ConfigurationError(f"unknown key file format {document['format']!r}")
            suite = envelope_pb2.KeySuite.Value(document["suite"])
            key_id = document["key_id"]
            secret = bytes.fromhex(document["private_key"])
            if not isinstance(key_id, str):
                raise ConfigurationError("key file key_id is not a string")
            if suite == HYBRID_SUITE:
                if len(secret) != _MLKEM768_SEED_LEN + _X25519_LEN:
                    raise ConfigurationError("hybrid key file secret has the wrong length")
                mlkem_key: mlkem.MLKEM768PrivateKey | None = mlkem.MLKEM768PrivateKey.from_seed_bytes(
                    secret[:_MLKEM768_SEED_LEN]
                )
                secret = secret[_MLKEM768_SEED_LEN:]
            else:
                mlkem_key = None
            return cls(suite, x25519.X25519PrivateKey.from_private_bytes(secret), mlkem_key, key_id)
        except (ValueError, KeyError, TypeError) as exc:
            # json.JSONDecodeError and UnicodeDecodeError are ValueErrors; never echo key material.
            raise ConfigurationError(f"not a valid encryption key file: {type(exc).__name__}") from None

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the key to a new file with mode 0600; refuse to overwrite an existing file."""
        # O_EXCL: a key file is never silently replaced (rotation keeps old keys under new names).
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EncryptionKey:
        """Read a key written by `save`."""
        return cls.from_bytes(Path(path).read_bytes())


def public_key_of(bundle: envelope_pb2.KeyBundle) -> HpkePublicKey:
    """The HPKE public key object of a bundle, for its suite; raise `VerificationError` if malformed."""
    data = bundle.public_key
    try:
        if bundle.suite == X25519_SUITE:
            if len(data) != _X25519_LEN:
                raise VerificationError(f"X25519 public key of {bundle.agency} is {len(data)} bytes, not 32")
            return x25519.X25519PublicKey.from_public_bytes(data)
        if bundle.suite == HYBRID_SUITE:
            if len(data) != _MLKEM768_PUBLIC_LEN + _X25519_LEN:
                raise VerificationError(f"hybrid public key of {bundle.agency} has the wrong length")
            return hpke.MLKEM768X25519PublicKey(
                mlkem.MLKEM768PublicKey.from_public_bytes(data[:_MLKEM768_PUBLIC_LEN]),
                x25519.X25519PublicKey.from_public_bytes(data[_MLKEM768_PUBLIC_LEN:]),
            )
    except ValueError as exc:
        raise VerificationError(f"public key of {bundle.agency} is malformed: {exc}") from exc
    raise VerificationError(f"key bundle of {bundle.agency} has unsupported suite {bundle.suite}")


# --- key bundles --------------------------------------------------------------------------------


def make_key_bundle(
    agency: str,
    key: EncryptionKey,
    *,
    identity_key: ec.EllipticCurvePrivateKey,
    certificate: x509.Certificate,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> envelope_pb2.SignedKeyBundle:
    """Publish `key` for `agency` between `not_before` and `not_after`, signed with the identity key."""
    validation.require_aware(not_before, "not_before")
    validation.require_aware(not_after, "not_after")
    if not_after <= not_before:
        raise ValueError("key bundle not_after must be later than not_before")
    bundle = envelope_pb2.KeyBundle(agency=agency, key_id=key.key_id, suite=key.suite, public_key=key.public_key_bytes)
    bundle.not_before.FromDatetime(not_before)
    bundle.not_after.FromDatetime(not_after)
    bundle_bytes = bundle.SerializeToString()
    return envelope_pb2.SignedKeyBundle(
        bundle=bundle_bytes,
        signature=sign_identity(identity_key, _pae.key_bundle_signing_input(bundle_bytes)),
        certificate=certificate.public_bytes(Encoding.DER),
    )


def verify_key_bundle(
    signed: envelope_pb2.SignedKeyBundle,
    *,
    trust_roots: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate] = (),
    expected_agency: str,
    trust_domain: str,
    now: dt.datetime,
) -> envelope_pb2.KeyBundle:
    """Verify a signed key bundle of `expected_agency` and return the bundle; raise `VerificationError`."""
    # 1. The signing certificate chains to the CA and names the expected agency.
    try:
        certificate = x509.load_der_x509_certificate(signed.certificate)
    except (ValueError, x509.InvalidVersion) as exc:  # InvalidVersion is no ValueError
        raise VerificationError(f"key bundle certificate of {expected_agency} is malformed") from exc
    verify_agency_certificate(
        certificate,
        trust_roots=trust_roots,
        intermediates=intermediates,
        expected_agency=expected_agency,
        trust_domain=trust_domain,
        now=now,
    )
    # 2. The identity key signed these exact bundle bytes (parsed only after this check).
    verify_identity_signature(
        identity_public_key(certificate),
        signed.signature,
        _pae.key_bundle_signing_input(signed.bundle),
        what=f"key bundle of {expected_agency}",
    )
    try:
        bundle = envelope_pb2.KeyBundle.FromString(signed.bundle)
    except DecodeError as exc:
        raise VerificationError(f"key bundle of {expected_agency} does not parse") from exc
    # 3. The bundle is for the agency we asked for (a valid bundle of another agency is not a substitute).
    if bundle.agency != expected_agency:
        raise VerificationError(f"key bundle is for {bundle.agency!r}, expected {expected_agency!r}")
    if not bundle.key_id:
        raise VerificationError(f"key bundle of {expected_agency} has no key id")
    # 4. The public key is well formed for its suite.
    public_key_of(bundle)
    # 5. The bundle is within its validity window.
    if not (bundle.HasField("not_before") and bundle.HasField("not_after")):
        raise VerificationError(f"key bundle of {expected_agency} has no validity window")
    with validation.verifying():  # times in range before they become datetimes
        validation.check_key_bundle(bundle)
    not_before = bundle.not_before.ToDatetime(dt.UTC)
    not_after = bundle.not_after.ToDatetime(dt.UTC)
    if now < not_before:
        raise VerificationError(f"key bundle {bundle.key_id} of {expected_agency} is not valid before {not_before}")
    if now >= not_after:
        raise VerificationError(f"key bundle {bundle.key_id} of {expected_agency} expired at {not_after}")
    return bundle
