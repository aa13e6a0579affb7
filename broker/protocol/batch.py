"""Merkle batch signatures (docs/protocol.md section 21): one identity signature for many structures.

A signer with several structures to sign at once (the headers of one `SendStream` message, the
receipts of one `Ack`) builds the RFC 9162 Merkle tree over their leaves, signs the tree head once,
and gives each structure its leaf index and inclusion path (a `BatchSignature`). Each structure still
verifies on its own, for recipients, auditors and in exports; a verifier that sees several of one
batch checks the root's signature once and remembers it in `VerifiedRoots`, so the next ones cost
a few SHA-256 computations instead of an ECDSA verification. This is the batch signing of the TLS
batch-signing draft (draft-ietf-tls-batch-signing) and of Merkle Tree Certificates.

A leaf is the SHA-256 of the structure's *single* signing input (`PAE("isb.v1.header", header)`),
so a leaf can only be that structure for that purpose; the root is signed under its own type string
with the tree size, so a root of one purpose or size never verifies as another.
"""

from __future__ import annotations

import collections
import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec

from broker.api.v1 import envelope_pb2
from broker.protocol import _merkle, _pae, validation
from broker.protocol.errors import VerificationError
from broker.protocol.keys import sign_identity, verify_identity_signature
from broker.protocol.validation import MAX_BATCH_SIZE

__all__ = [
    "HEADER",
    "MAX_BATCH_SIZE",
    "RECEIPT",
    "Purpose",
    "VerifiedRoots",
    "batch_of",
    "leaf_hash",
    "root_signing_input",
    "sign_batch",
    "verify_signed",
]

DEFAULT_CACHED_ROOTS: Final = 4096


@dataclass(frozen=True, slots=True)
class Purpose:
    """What a signature is for: the PAE type of its single signing input, and a name for messages."""

    single: str
    what: str

    @property
    def batch(self) -> str:
        """The PAE type of the root signing input: the single type with `-batch` appended."""
        return f"{self.single}-batch"


HEADER: Final = Purpose(_pae.HEADER, "envelope header")
RECEIPT: Final = Purpose(_pae.RECEIPT, "receipt")

_RootKey = tuple[str, bytes, int, bytes, bytes]


class VerifiedRoots:
    """A bounded, thread-safe LRU set of batch roots whose signature verified.

    Keyed by purpose, signer certificate digest, tree size, root and the signature bytes: a hit
    proves that exactly this signature by exactly this certificate over exactly this tree head was
    verified before, so an envelope carrying other signature bytes is still checked in full.
    """

    def __init__(self, maxsize: int = DEFAULT_CACHED_ROOTS) -> None:
        """An empty cache holding at most `maxsize` roots (the least recently used goes first)."""
        if maxsize < 1:
            raise ValueError("a root cache holds at least one root")
        self._maxsize = maxsize
        self._roots: collections.OrderedDict[_RootKey, None] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._roots)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            if key not in self._roots:
                return False
            self._roots.move_to_end(key)  # type: ignore[arg-type]  # found, so it is a key
            return True

    def add(self, key: _RootKey) -> None:
        """Remember a verified root."""
        with self._lock:
            self._roots[key] = None
            self._roots.move_to_end(key)
            while len(self._roots) > self._maxsize:
                self._roots.popitem(last=False)


def leaf_hash(purpose: Purpose, signed: bytes) -> bytes:
    """`SHA-256(0x00 || SHA-256(PAE(purpose.single, signed)))`: the leaf of one structure."""
    return _merkle.leaf_hash(hashlib.sha256(_pae.pae(purpose.single, signed)).digest())


def root_signing_input(purpose: Purpose, tree_size: int, root: bytes) -> bytes:
    """`PAE(purpose.batch, ASCII(tree_size), root)`: what the batch signature covers."""
    return _pae.pae(purpose.batch, _pae.encode_int(tree_size), root)


def sign_batch(
    purpose: Purpose, items: Sequence[bytes], identity_key: ec.EllipticCurvePrivateKey
) -> list[envelope_pb2.BatchSignature]:
    """One signature over the tree of `items` (2 to `MAX_BATCH_SIZE` serialized structures), and
    each item's `BatchSignature`, in order."""
    n = len(items)
    if not 2 <= n <= MAX_BATCH_SIZE:
        raise ValueError(f"a batch has 2 to {MAX_BATCH_SIZE} items, not {n} (sign one item alone)")
    root, paths = _merkle.all_inclusion_proofs([leaf_hash(purpose, item) for item in items])
    signature = sign_identity(identity_key, root_signing_input(purpose, n, root))
    return [
        envelope_pb2.BatchSignature(signature=signature, tree_size=n, leaf_index=i, path=path)
        for i, path in enumerate(paths)
    ]


def verify_signed(
    purpose: Purpose,
    signed: bytes,
    signature: bytes,
    batch: envelope_pb2.BatchSignature | None,
    *,
    public_key: ec.EllipticCurvePublicKey,
    signer_sha256: bytes,
    roots: VerifiedRoots | None = None,
) -> None:
    """Verify `signed` (the exact bytes received) under its single `signature` or its `batch`
    signature, whichever it carries; raise `VerificationError` naming what did not match.

    `signer_sha256` is the digest of the certificate whose `public_key` this is (the cache key);
    with `roots`, a batch root verified before is not verified again.
    """
    # 1. Exactly one way of signing.
    if batch is None:
        verify_identity_signature(public_key, signature, _pae.pae(purpose.single, signed), what=purpose.what)
        return
    if signature:
        raise VerificationError(f"{purpose.what} carries both a signature and a batch signature")
    # 2. The batch signature's fields within their limits, then the root the path leads to.
    with validation.verifying():
        validation.check_batch_signature(batch, f"{purpose.what} batch signature")
    try:
        root = _merkle.root_from_inclusion(leaf_hash(purpose, signed), batch.leaf_index, batch.tree_size, batch.path)
    except VerificationError as exc:
        raise VerificationError(f"{purpose.what} batch path: {exc}") from None
    # 3. The signature over that root and size, once per root.
    key: _RootKey = (purpose.batch, signer_sha256, batch.tree_size, root, batch.signature)
    if roots is not None and key in roots:
        return
    verify_identity_signature(
        public_key, batch.signature, root_signing_input(purpose, batch.tree_size, root), what=f"{purpose.what} batch"
    )
    if roots is not None:
        roots.add(key)


def batch_of(message: envelope_pb2.Envelope | envelope_pb2.SignedReceipt) -> envelope_pb2.BatchSignature | None:
    """The message's batch signature, or None when it carries none (proto3 presence)."""
    return message.batch_signature if message.HasField("batch_signature") else None
