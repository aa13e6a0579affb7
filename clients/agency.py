"""The agency SDK: connect with a certificate, publish keys, send sealed messages, receive and
acknowledge deliveries with signed receipts, and read back the receipts of what we sent."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final, TypeVar

import grpc
import structlog
from cryptography import x509
from google.protobuf.message import DecodeError

from broker.api.v1 import broker_pb2, broker_pb2_grpc, envelope_pb2
from broker.identity import AGENCY_ID, DEFAULT_TRUST_DOMAIN, Role
from broker.policy.codes import tlp_from_proto
from broker.protocol import _note, validation
from broker.protocol.attachments import attachment_key
from broker.protocol.batch import VerifiedRoots
from broker.protocol.envelope import (
    PROTOCOL_VERSION,
    OpenedMessage,
    new_content_key,
    open_envelope,
    seal,
    sign_envelopes,
    unverified_message_id,
    uuid7,
)
from broker.protocol.forwarding import (
    FORWARDED_CONTENT_TYPE,
    OriginalMessage,
    forwarded_content,
    make_forward_consent,
    verify_forwarded,
)
from broker.protocol.keys import EncryptionKey, make_key_bundle, verify_agency_certificate, verify_key_bundle
from broker.protocol.receipts import make_receipt, new_receipt, sign_receipts, verify_receipt
from broker.protocol.revocation import RevokedCertificate, VerifiedCrl, verify_revocation_list
from broker.protocol.witness_policy import Policy
from clients import attachments as _attachments
from clients._connection import Connection
from clients._stream import StreamReader
from clients._transparency import verify_directory_checkpoint, verify_publication
from clients._trust_state import FILE_NAME as TRUST_STATE_FILE
from clients._trust_state import HeldCheckpoint, TrustState
from clients.attachments import Attachment, Progress, ReceivedAttachment
from clients.erasure import ErasureConfirmation, LocalStore, erasure_reason
from clients.errors import ClientError, ProtocolViolation, VerificationError, protocol_errors
from clients.producer import Producer

log = structlog.get_logger(__name__)

T = TypeVar("T")
X25519 = envelope_pb2.X25519_HKDF_SHA256_AES_256_GCM
MLKEM768_X25519 = envelope_pb2.MLKEM768_X25519_HKDF_SHA256_AES_256_GCM
_RECONNECT_FIRST, _RECONNECT_MAX = 0.2, 5.0  # seconds between attempts to reopen a broken stream


class _Reconnect(enum.Enum):
    """`deliveries` reopens its stream: the broker went away (restart, rotation, network)."""

    SIGNAL = enum.auto()


_RECONNECT: Final = _Reconnect.SIGNAL
CRL_REFRESH_SECONDS = 60.0  # how long a verified CRL is used before it is fetched again
FORWARD_CONSENT_REQUEST = "application/vnd.isb.forward-consent-request+json"
_TLP = {
    "CLEAR": envelope_pb2.TLP_CLEAR,
    "GREEN": envelope_pb2.TLP_GREEN,
    "AMBER": envelope_pb2.TLP_AMBER,
    "AMBER+STRICT": envelope_pb2.TLP_AMBER_STRICT,
    "RED": envelope_pb2.TLP_RED,
}


@dataclass(frozen=True)
class ReceivedMessage:
    """A delivery the SDK has verified and decrypted: plaintext, verified sender, handling."""

    opened: OpenedMessage
    envelope_sha256: bytes
    attempt: int
    sender_certificate: x509.Certificate
    envelope: envelope_pb2.Envelope
    forwarded_from: OriginalMessage | None = None
    """For a forward: the original, verified as written by its original sender."""
    attachments: tuple[ReceivedAttachment, ...] = ()
    """The attachments the signed header references, in order; each `open()`s as a verified stream."""
    erased: str | None = None
    """For a RECALL the SDK honoured: the reason of the ERASED receipt it signed (what each local store
    deleted). The SDK has acknowledged it; `ack()` leaves it alone."""

    @property
    def message_id(self) -> str:
        """The sender-chosen UUIDv7 of the message."""
        return self.opened.message_id

    @property
    def sender(self) -> str:
        """The sender agency, as verified from its certificate and signatures."""
        return self.opened.sender

    @property
    def body(self) -> bytes:
        """The plaintext body."""
        return self.opened.body

    @property
    def content_type(self) -> str:
        """The media type of the body, as signed by the sender."""
        return self.opened.content_type

    @property
    def header(self) -> envelope_pb2.Header:
        """The verified header (kind, handling, priority, times...)."""
        return self.opened.header

    @property
    def tlp(self) -> str:
        """The handling code by name (`"AMBER"`, not the enum number 3)."""
        return tlp_from_proto(self.opened.header.handling.tlp)

    @property
    def kind(self) -> str:
        """The message kind by name (`"ALERT"`)."""
        return envelope_pb2.Kind.Name(self.opened.header.kind)

    @property
    def priority(self) -> str:
        """The priority by name (`"NORMAL"` when the sender left it unspecified)."""
        value = self.opened.header.priority or envelope_pb2.NORMAL
        return envelope_pb2.Priority.Name(value)


@dataclass(frozen=True)
class InvalidDelivery:
    """A delivery the SDK could not parse, validate, verify or open, reported to `deliveries(on_invalid=...)`.

    The SDK has answered it with a signed REJECTED receipt whose reason is `reason` (`receipted`
    says whether the broker took it; if not, the delivery comes back after its lease and is
    reported again). It is never yielded as a message.
    """

    message_id: str
    """The id the header claims (unverified; "" if the header does not parse)."""
    error: ClientError
    reason: str = ""
    attempt: int = 0
    receipted: bool = False


@dataclass(frozen=True)
class RecipientReceipt:
    """One recipient's delivery state, with its receipt verified by the SDK (not the broker)."""

    recipient: str
    state: str
    attempts: int
    receipt: envelope_pb2.Receipt | None


@dataclass
class _Keyring:
    keys: dict[str, EncryptionKey] = field(default_factory=dict)

    def load(self, directory: Path | None) -> None:
        if directory is None or not directory.exists():
            return
        for path in sorted(directory.glob("*.hpke")):
            key = EncryptionKey.load(path)
            self.keys[key.key_id] = key


class AgencyClient(Connection):
    """An agency's connection to the broker.

    `AgencyClient(target, cert=..., key=..., ca=...)`; `keystore` is a folder holding this agency's
    HPKE private keys (written 0600), so messages sealed to an older key stay readable. `operator`
    is the agency's opaque identifier of the person acting (never a name): every send and directory
    lookup carries it unless a call passes its own, and the broker records it as asserted by us.
    `local_stores` are where received messages are kept (`clients.erasure`): a RECALL erases its
    message from each, and the SDK confirms with a signed ERASED receipt.
    `witness_policy` (a C2SP tlog-policy, `broker.protocol.witness_policy.load_policy`) turns on key
    transparency: only bundles whose publication a witnessed checkpoint includes are used, and the
    largest checkpoint seen is kept in the keystore (docs/protocol.md section 18.4).
    """

    def __init__(
        self,
        target: str,
        *,
        cert: Path,
        key: Path,
        ca: Path,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
        keystore: Path | None = None,
        server_name: str | None = None,
        timeout: float = 10.0,
        operator: str = "",
        local_stores: Sequence[LocalStore] = (),
        witness_policy: Policy | None = None,
    ) -> None:
        super().__init__(
            target,
            cert=cert,
            key=key,
            ca=ca,
            role=Role.AGENCY,
            trust_domain=trust_domain,
            server_name=server_name,
            timeout=timeout,
        )
        self.agency = self.identity.spiffe_id.name
        self.operator = operator
        self.local_stores = list(local_stores)
        self._keystore = keystore
        self._keyring = _Keyring()
        self._keyring.load(keystore)
        self._stub = broker_pb2_grpc.BrokerServiceStub(self._channel)
        self._bundles: dict[str, tuple[float, envelope_pb2.KeyBundle, x509.Certificate]] = {}
        # What this agency has seen and must never go back from (CRL number, bundle indexes).
        self._trust = TrustState(keystore / TRUST_STATE_FILE if keystore is not None else None)
        self._crl: VerifiedCrl | None = None
        self._crl_refresh_at = 0.0
        self._groups: dict[str, list[str]] = {}
        self._groups_until = 0.0
        self._senders: dict[bytes, tuple[x509.Certificate, str]] = {}
        self.witness_policy = witness_policy
        """With a policy, key bundles count only if a checkpoint it accepts includes their publication."""
        # Batch roots verified once each (protocol section 21): deliveries and receipts of one batch.
        self._roots = VerifiedRoots()

    @classmethod
    def from_dir(cls, target: str, cert_dir: Path, agency: str, **kwargs: Any) -> AgencyClient:
        """A client from a PKI folder laid out like `certs/dev/` (`<AGENCY>.crt`, `<AGENCY>.key`, `ca.crt`)."""
        if not AGENCY_ID.fullmatch(agency):
            raise ClientError(f"{agency!r} is not an agency id")
        kwargs.setdefault("keystore", cert_dir / "keys" / agency)
        return cls(
            target, cert=cert_dir / f"{agency}.crt", key=cert_dir / f"{agency}.key", ca=cert_dir / "ca.crt", **kwargs
        )

    @property
    def decryption_keys(self) -> dict[str, EncryptionKey]:
        """This agency's HPKE private keys by key id (old and new, during rotation)."""
        return self._keyring.keys

    # -- keys ----------------------------------------------------------------------------------
    def publish_key(
        self, suite: envelope_pb2.KeySuite.ValueType = X25519, *, lifetime: dt.timedelta = dt.timedelta(days=30)
    ) -> str:
        """Generate an encryption key, keep it in the keystore, publish its signed bundle; return its id."""
        key = EncryptionKey.generate(suite)
        if self._keystore is not None:
            self._keystore.mkdir(parents=True, exist_ok=True, mode=0o700)
            key.save(self._keystore / f"{key.key_id}.hpke")
        self._keyring.keys[key.key_id] = key
        now = dt.datetime.now(dt.UTC)
        signed = make_key_bundle(
            self.agency,
            key,
            identity_key=self.identity.private_key,
            certificate=self.identity.certificate,
            not_before=now - dt.timedelta(minutes=5),
            not_after=now + lifetime,
        )
        response = self._call(self._stub.PublishKeyBundle, signed)
        return str(response.key_id)

    def revocation_list(self, *, refresh: bool = False) -> VerifiedCrl:
        """The CA's CRL, fetched through the broker and verified here against our trust anchor.

        Refused (`StaleRevocationList`, fail closed) when past its nextUpdate or older than a CRL
        this agency has already seen (the highest CRL number is kept in the keystore). Fetched
        again every `CRL_REFRESH_SECONDS`, and whenever the one held passes its nextUpdate.
        """
        now = dt.datetime.now(dt.UTC)
        held = self._crl
        if refresh or held is None or time.monotonic() >= self._crl_refresh_at or not held.is_current(now):
            reply = self._call(self._stub.GetRevocationList, broker_pb2.GetRevocationListRequest())
            try:
                chain = [x509.load_der_x509_certificate(der) for der in reply.issuer_chain]
            except (ValueError, x509.InvalidVersion) as exc:  # InvalidVersion is no ValueError
                raise VerificationError("the CRL's issuer chain from the broker does not parse") from exc
            held = verify_revocation_list(
                reply.crl,
                trust_roots=self.identity.trust_roots,
                issuer_chain=[*chain, *self.identity.chain],
                now=now,
                min_number=self._trust.crl_number,
            )
            self._trust.saw_crl(held.number)
            self._crl, self._crl_refresh_at = held, time.monotonic() + CRL_REFRESH_SECONDS
        return held

    def recipient_keys(self, agencies: Iterable[str], *, refresh: bool = False) -> dict[str, envelope_pb2.KeyBundle]:
        """A verified current key bundle for each agency, fetched from the directory and checked here
        (the broker is not trusted for keys): chain to the CA, certificate profile, not revoked on a
        fresh CRL, and never older than a bundle of that agency already seen (by audit index)."""
        wanted = sorted(set(agencies))
        crl = self.revocation_list()
        now = time.monotonic()
        for agency in wanted:
            cached = self._bundles.get(agency)
            if cached is not None and cached[2].serial_number in crl.revoked:
                del self._bundles[agency]
        missing = [a for a in wanted if refresh or a not in self._bundles or self._bundles[a][0] < now]
        skipped: dict[str, str] = {}  # why an agency has no usable bundle
        if missing:
            bounds = {a: self._trust.bundle_index[a] for a in missing if a in self._trust.bundle_index}
            request = broker_pb2.GetDirectoryRequest(agencies=missing, min_audit_index=bounds, operator=self.operator)
            if self.witness_policy is not None:
                self._trust.reload()
                request.known_tree_size = self._trust.checkpoint.tree_size if self._trust.checkpoint else 0
            directory = self._call(self._stub.GetDirectory, request)
            checkpoint = self._witnessed(directory)
            when = dt.datetime.now(dt.UTC)
            for entry in directory.agencies:
                if entry.agency not in missing:
                    continue
                best = self._best_bundle(entry, crl, checkpoint, when, skipped)
                if best is not None:
                    self._accept_bundle(entry.agency, best[0])
                    self._bundles[entry.agency] = (now + 60.0, best[2], best[3])
        absent = [a for a in wanted if a not in self._bundles]
        if absent:
            why = "; ".join(skipped[a] for a in absent if a in skipped)
            raise ClientError(
                f"no valid key bundle published by {', '.join(absent)}; "
                f"each must publish one first (`isb keys publish --agency {absent[0]}`)" + (f" ({why})" if why else "")
            )
        return {a: self._bundles[a][1] for a in wanted}

    def _best_bundle(
        self,
        entry: broker_pb2.DirectoryEntry,
        crl: VerifiedCrl,
        checkpoint: _note.Checkpoint | None,
        when: dt.datetime,
        skipped: dict[str, str],
    ) -> tuple[int, dt.datetime, envelope_pb2.KeyBundle, x509.Certificate] | None:
        """Of an agency's bundles, the usable one with the highest publication index (then `not_before`).

        A bundle that does not verify, or whose publication proof does not, raises; a revoked or (with
        a witness policy) not yet witnessed one is skipped, its reason kept in `skipped`.
        """
        best: tuple[int, dt.datetime, envelope_pb2.KeyBundle, x509.Certificate] | None = None
        indexes = list(entry.key_bundle_audit_index)
        proofs = entry.key_bundle_proofs
        for position, signed in enumerate(entry.key_bundles):
            with protocol_errors():
                bundle = verify_key_bundle(
                    signed,
                    trust_roots=self.identity.trust_roots,
                    expected_agency=entry.agency,
                    trust_domain=self.trust_domain,
                    now=when,
                )
            certificate = x509.load_der_x509_certificate(signed.certificate)  # verified just above
            try:
                crl.verify_not_revoked(certificate, who=entry.agency)
            except RevokedCertificate as exc:
                skipped[entry.agency] = str(exc)
                continue
            index = indexes[position] if position < len(indexes) else 0
            if checkpoint is not None:
                if position >= len(proofs) or not proofs[position].entry:
                    skipped[entry.agency] = (
                        f"key {bundle.key_id} is not yet in a witnessed checkpoint"
                        f" (of size {checkpoint.size}); retry in a few seconds"
                    )
                    continue
                verify_publication(signed, bundle.key_id, entry.agency, index, proofs[position], checkpoint)
            candidate = (index, bundle.not_before.ToDatetime(dt.UTC), bundle, certificate)
            if best is None or candidate[:2] > best[:2]:
                best = candidate
        return best

    def _witnessed(self, directory: broker_pb2.Directory) -> _note.Checkpoint | None:
        """The directory's checkpoint under the witness policy, consistent with the one held (then held)."""
        if self.witness_policy is None:
            return None
        held = self._trust.checkpoint
        checkpoint = verify_directory_checkpoint(
            directory.checkpoint,
            list(directory.consistency_path),
            policy=self.witness_policy,
            origin=f"{self.trust_domain}/audit",
            held=(held.tree_size, held.root_hash) if held else None,
        )
        self._trust.saw_checkpoint(HeldCheckpoint(checkpoint.size, checkpoint.root, checkpoint.note))
        return checkpoint

    def _accept_bundle(self, agency: str, audit_index: int) -> None:
        seen = self._trust.bundle_index.get(agency, 0)
        if audit_index < seen:
            raise VerificationError(
                f"the broker offers a key bundle of {agency} published at audit index {audit_index}, older than the"
                f" one at index {seen} already used: it withholds the newer key (a stale replica or a copy of the"
                " database?); refusing to encrypt to the older key"
            )
        self._trust.saw_bundle(agency, audit_index)

    def groups(self, *, refresh: bool = False) -> dict[str, list[str]]:
        """Group membership as the broker's directory publishes it (cached for a minute)."""
        if refresh or time.monotonic() >= self._groups_until:
            directory = self._call(
                self._stub.GetDirectory, broker_pb2.GetDirectoryRequest(agencies=[self.agency], operator=self.operator)
            )
            self._groups = {g.name: list(g.members) for g in directory.groups}
            self._groups_until = time.monotonic() + 60.0
        return self._groups

    def expand(self, recipients: Sequence[str]) -> list[str]:
        """Agency ids behind `recipients` (groups expanded with the directory's membership)."""
        # Groups and agencies share one namespace: EU-CUSTOMS has the shape of an agency id.
        groups = self.groups()
        agencies: set[str] = set()
        for r in recipients:
            if r in groups:
                agencies.update(m for m in groups[r] if m != self.agency)
            elif AGENCY_ID.fullmatch(r):
                agencies.add(r)
            else:
                raise ClientError(f"{r!r} is neither an agency id nor a known group")
        return sorted(agencies)

    # -- sending -------------------------------------------------------------------------------
    def seal(
        self,
        recipients: Sequence[str],
        body: bytes,
        *,
        content_type: str = "application/octet-stream",
        kind: envelope_pb2.Kind.ValueType = envelope_pb2.ALERT,
        tlp: str = "AMBER",
        priority: envelope_pb2.Priority.ValueType = envelope_pb2.NORMAL,
        expires: dt.datetime | None = None,
        handling: envelope_pb2.Handling | None = None,
        attachments: Sequence[Path | BinaryIO | Attachment | str] = (),
        progress: Progress | None = None,
        sign: bool = True,
        **header: Any,
    ) -> envelope_pb2.Envelope:
        """Seal `body` for `recipients` (agency ids and/or groups) without sending it.

        `legal_basis` (a code of the deployment's list), `case_reference` and `operator` (default:
        the client's) justify the disclosure; the policy may require the first two.
        `attachments` are encrypted and uploaded first (resuming after a dropped connection), since
        the envelope references them; `progress(done, total)` is called as each one uploads.
        With `sign=False` the envelope has no outer signature yet: submit it to a `producer()` (or
        `send_many`), which signs each batch it sends with one batch signature (protocol section 21).
        """
        repeated = sorted({r for r in recipients if list(recipients).count(r) > 1})
        if repeated:
            raise ClientError(f"recipient {', '.join(repeated)} is named more than once; name each recipient once")
        if handling is None:
            if tlp not in _TLP:
                raise ClientError(f"unknown TLP code {tlp!r}; use one of {', '.join(_TLP)}")
            handling = envelope_pb2.Handling(tlp=_TLP[tlp])
        if self.operator:
            header.setdefault("operator", self.operator)
        keys = self.recipient_keys(self.expand(recipients))
        if attachments:
            header.setdefault("message_id", uuid7())
            content_key = new_content_key()
            header["content_key"] = content_key
            header["attachments"] = [
                _attachments.upload(
                    self._stub,
                    self.translate_error,
                    key=attachment_key(content_key, PROTOCOL_VERSION, header["message_id"], index),
                    message_id=header["message_id"],
                    index=index,
                    attachment=_attachments.as_attachment(item),
                    progress=progress,
                )
                for index, item in enumerate(attachments)
            ]
        try:
            return seal(
                sender=self.agency,
                identity_key=self.identity.private_key,
                certificate=self.identity.certificate,
                recipients=list(recipients),
                recipient_keys=keys,
                kind=kind,
                body=body,
                content_type=content_type,
                handling=handling,
                priority=priority,
                expires=expires,
                sign=sign,
                **header,
            )
        except ValueError as exc:  # arguments that cannot make a valid envelope
            raise ClientError(f"cannot seal this message: {exc}") from exc

    def send_envelope(self, envelope: envelope_pb2.Envelope) -> broker_pb2.SendResponse:
        """Send an already sealed envelope (sending the same one again is idempotent)."""
        if not envelope.header_signature and not envelope.HasField("batch_signature"):
            raise ClientError(
                "this envelope has no outer signature: seal it with sign=True, or send it through "
                "producer() or send_many(), which batch-sign"
            )
        response: broker_pb2.SendResponse = self._call(self._stub.Send, broker_pb2.SendRequest(envelope=envelope))
        return response

    def send(self, recipients: Sequence[str], body: bytes, **options: Any) -> broker_pb2.SendResponse:
        """Seal and send; returns the broker's acceptance with the audit log index."""
        return self.send_envelope(self.seal(recipients, body, **options))

    def forward(
        self, message: ReceivedMessage, recipients: Sequence[str], **justification: str
    ) -> broker_pb2.SendResponse:
        """Pass a received message on, with its original signatures inside and its handling unchanged;
        `legal_basis=`, `case_reference=`, `operator=` justify this disclosure (a new one)."""
        header = message.header
        return self.send(
            recipients,
            forwarded_content(message.envelope, message.opened, message.sender_certificate),
            content_type=FORWARDED_CONTENT_TYPE,
            kind=header.kind,
            handling=header.handling,
            priority=header.priority,
            references=header.message_id,
            **justification,
        )

    def recall(
        self, message_id: str, recipients: Sequence[str] | None = None, *, tlp: str = "AMBER", **justification: str
    ) -> broker_pb2.SendResponse:
        """Recall a message we sent: undelivered copies are dropped, and each recipient's SDK erases its
        local copies and confirms (`erasure_status`). `recipients` default to the message's recipients."""
        targets = list(recipients) if recipients is not None else [r.recipient for r in self.status(message_id)]
        return self.send(targets, b"", kind=envelope_pb2.RECALL, tlp=tlp, references=message_id, **justification)

    def erasure_status(self, message_id: str) -> list[ErasureConfirmation]:
        """Per recipient of our RECALLs of `message_id`: did its SDK confirm erasure? Each ERASED receipt
        is verified here (recipient's signature, and its reason names `message_id`); the latest
        confirmation counts, else the latest RECALL asked."""
        _, recalls = self._status(message_id)
        answers: dict[str, ErasureConfirmation] = {}
        for recall_id in recalls:
            for r in self.status(recall_id):
                receipt = r.receipt
                if (
                    receipt is not None
                    and receipt.status == envelope_pb2.ERASED
                    and receipt.reason.split(":", 1)[0] != message_id
                ):
                    raise VerificationError(
                        f"the ERASED receipt of {r.recipient} for RECALL {recall_id} names "
                        f"another message than {message_id}"
                    )
                answer = ErasureConfirmation(r.recipient, recall_id, r.state, receipt)
                if answer.confirmed or not answers.get(r.recipient, answer).confirmed:
                    answers[r.recipient] = answer
        return [answers[r] for r in sorted(answers)]

    def request_forward_consent(
        self, message: ReceivedMessage, recipients: Sequence[str], reason: str = ""
    ) -> broker_pb2.SendResponse:
        """Ask the original sender, with a REQUEST in reply to its message, to let us forward it."""
        body = json.dumps(
            {"forward_consent_request": message.message_id, "recipients": sorted(recipients), "reason": reason}
        ).encode()
        return self.send(
            [message.sender],
            body,
            content_type=FORWARD_CONSENT_REQUEST,
            kind=envelope_pb2.REQUEST,
            handling=message.header.handling,
            in_reply_to=message.message_id,
        )

    def grant_forward_consent(
        self,
        message_id: str,
        forwarder: str,
        recipients: Sequence[str],
        *,
        valid_for: dt.timedelta = dt.timedelta(days=7),
    ) -> int:
        """As the original sender, let `forwarder` forward our message to `recipients`; returns the audit index."""
        signed = make_forward_consent(
            message_id=message_id,
            forwarder=forwarder,
            recipients=recipients,
            not_after=dt.datetime.now(dt.UTC) + valid_for,
            identity_key=self.identity.private_key,
        )
        reply: broker_pb2.GrantForwardConsentResponse = self._call(self._stub.GrantForwardConsent, signed)
        return reply.audit_index

    def producer(
        self, *, linger: float = 0.001, batch_size: int = 64, max_pending: int = 4096, max_in_flight: int = 4
    ) -> Producer:
        """A producer for high rates: envelopes submitted within `linger` seconds share one stream
        message (see `clients.producer`), and those sealed with `sign=False` share one batch
        signature per stream message. Close it, or use it as a context manager."""
        return Producer(
            self._stub.SendStream,
            self.translate_error,
            linger=linger,
            batch_size=batch_size,
            max_pending=max_pending,
            max_in_flight=max_in_flight,
            sign=lambda envelopes: sign_envelopes(envelopes, self.identity.private_key),
        )

    def send_many(
        self, envelopes: Sequence[envelope_pb2.Envelope], batch_size: int = 64
    ) -> list[broker_pb2.SendResponse | ClientError]:
        """Send many sealed envelopes over one stream; per envelope, in order, the broker's
        acceptance or the error that refused it (one refusal does not stop the others)."""
        with self.producer(linger=0.0, batch_size=batch_size) as producer:
            futures = [producer.submit(envelope) for envelope in envelopes]
        outcomes: list[broker_pb2.SendResponse | ClientError] = []
        for future in futures:
            error = future.exception()
            outcomes.append(future.result() if error is None else _as_client_error(error))
        return outcomes

    # -- receiving -----------------------------------------------------------------------------
    def deliveries(
        self,
        *,
        max_in_flight: int = 64,
        timeout: float | None = None,
        on_invalid: Callable[[InvalidDelivery], None] | None = None,
        reconnect: bool = True,
    ) -> Iterator[ReceivedMessage]:
        """Verified, decrypted deliveries for this agency, in the broker's order; runs until `timeout`
        seconds pass without a delivery (None: forever).

        The SDK never stalls on one bad delivery: one it cannot parse, validate, verify or open is
        answered with a signed REJECTED receipt naming the reason (the sender sees it in
        `status()`), reported to `on_invalid` as an `InvalidDelivery`, never yielded, and the
        stream moves on to the next one.

        If the broker goes away (restart, rotation, network), the stream is opened again with a
        growing pause, unless `reconnect` is False; nothing is lost, since unacknowledged
        deliveries come back (at-least-once). A refusal (revoked certificate...) is raised at once.
        """
        pause = _RECONNECT_FIRST
        last_seen = time.monotonic()
        while True:
            call = self._stub.Subscribe(broker_pb2.SubscribeRequest(max_in_flight=max_in_flight))
            reader: StreamReader[broker_pb2.DeliveryBatch] = StreamReader(call, "isb-subscribe")
            try:
                # 1. Read batches until the stream ends (None) or the broker goes away (_RECONNECT).
                while (batch := self._next_batch(reader, timeout, reconnect, last_seen, pause)) is not _RECONNECT:
                    if batch is None:
                        return
                    pause, last_seen = _RECONNECT_FIRST, time.monotonic()
                    # 2. Verify and open each delivery; reject the ones that fail.
                    yield from self._verified(batch, on_invalid)
            finally:
                call.cancel()
            # 3. Open the stream again after a growing pause.
            time.sleep(pause)
            pause = min(pause * 2, _RECONNECT_MAX)

    def _next_batch(
        self,
        reader: StreamReader[broker_pb2.DeliveryBatch],
        timeout: float | None,
        reconnect: bool,
        last_seen: float,
        pause: float,
    ) -> broker_pb2.DeliveryBatch | _Reconnect | None:
        """The next batch; None once the stream ends (timeout, cancelled); `_RECONNECT` when the broker
        went away and the stream should be opened again. A refusal is raised as the SDK's error."""
        try:
            return reader.next(timeout)
        except grpc.RpcError as exc:
            if exc.code() is grpc.StatusCode.CANCELLED:
                return None
            waited_out = timeout is not None and time.monotonic() - last_seen >= timeout
            if not reconnect or exc.code() is not grpc.StatusCode.UNAVAILABLE or waited_out:
                raise self.translate_error(exc) from exc
            log.warning("subscribe.reconnecting", pause=pause, error=exc.details())
            return _RECONNECT

    def _verified(
        self, batch: broker_pb2.DeliveryBatch, on_invalid: Callable[[InvalidDelivery], None] | None
    ) -> Iterator[ReceivedMessage]:
        """The batch's deliveries that verify and open (a verified RECALL erases first); the others
        are answered with a REJECTED receipt and reported to `on_invalid`, never yielded."""
        # Outside the per-delivery handling on purpose: without a fresh CRL nothing is
        # accepted *or* rejected (fail closed); the deliveries stay queued at the broker.
        crl = self.revocation_list()
        for delivery in batch.deliveries:
            try:
                opened = self._open(delivery, crl)
            except ClientError as exc:  # VerificationError and ProtocolViolation included
                invalid = self._reject(delivery, exc)
                if on_invalid is not None:
                    on_invalid(invalid)
                continue
            if opened.header.kind == envelope_pb2.RECALL and opened.header.references:
                opened = self._erase(opened)
            yield opened

    def _sender(self, der: bytes, agency: str, created: dt.datetime, crl: VerifiedCrl) -> x509.Certificate:
        """The sender's certificate, verified to chain to the CA and name `agency` at `created`, not revoked.

        The chain is verified once per certificate; later messages only check that they were
        created within its validity (path building is a quarter of the receive cost otherwise).
        """
        cached = self._senders.get(der)
        if (
            cached is not None
            and cached[1] == agency
            and cached[0].not_valid_before_utc <= created < cached[0].not_valid_after_utc
        ):
            crl.verify_not_revoked(cached[0], who=f"sender {agency}")
            return cached[0]
        try:
            cert = x509.load_der_x509_certificate(der)
        except (ValueError, x509.InvalidVersion) as exc:  # InvalidVersion is no ValueError
            raise VerificationError("delivery carries a sender certificate that does not parse") from exc
        verify_agency_certificate(
            cert,
            trust_roots=self.identity.trust_roots,
            expected_agency=agency,
            trust_domain=self.trust_domain,
            now=created,
        )
        # Revoked now means refused now, whatever the message's claimed creation time: a stolen key
        # can claim any time.
        crl.verify_not_revoked(cert, who=f"sender {agency}")
        if len(self._senders) >= 1024:
            self._senders.clear()
        self._senders[der] = (cert, agency)
        return cert

    def _open(self, delivery: broker_pb2.Delivery, crl: VerifiedCrl) -> ReceivedMessage:
        """Verify and open one delivery; every failure is a `ClientError` (one helper, no raw ValueError)."""
        with protocol_errors():
            try:
                return self._open_checked(delivery, crl)
            except (ValueError, TypeError) as exc:  # a library's parse failure on bytes we were sent
                raise ProtocolViolation(f"delivery does not parse: {exc}"[:500]) from exc

    def _open_checked(self, delivery: broker_pb2.Delivery, crl: VerifiedCrl) -> ReceivedMessage:
        try:
            # Parsed unverified only to find the sender; open_envelope verifies it below.
            header = envelope_pb2.Header.FromString(delivery.envelope.header)
        except DecodeError as exc:
            raise VerificationError("delivered envelope header does not parse") from exc
        # Every field in range before any is used (a created time past year 9999 used to raise
        # ValueError here on every redelivery, and the stream never moved on).
        validation.check_header(header)
        sender_cert = self._sender(delivery.sender_certificate, header.sender, header.created.ToDatetime(dt.UTC), crl)
        opened = open_envelope(
            delivery.envelope,
            recipient=self.agency,
            keys=self._keyring.keys,
            sender_certificate=sender_cert,
            roots=self._roots,
        )
        original = None
        if opened.content_type == FORWARDED_CONTENT_TYPE:
            original = verify_forwarded(
                opened.body,
                forward_header=opened.header,
                trust_roots=self.identity.trust_roots,
                trust_domain=self.trust_domain,
            )
        digest = hashlib.sha256(delivery.envelope.SerializeToString()).digest()
        attachments = tuple(
            ReceivedAttachment(
                self._stub, self.translate_error, opened.message_id, index, ref, opened.attachment_key(index)
            )
            for index, ref in enumerate(opened.attachments)
        )
        return ReceivedMessage(opened, digest, delivery.attempt, sender_cert, delivery.envelope, original, attachments)

    def _reject(self, delivery: broker_pb2.Delivery, error: ClientError) -> InvalidDelivery:
        """Answer a delivery we cannot use with a signed REJECTED receipt naming why; never raise, so
        that the stream moves on (if the receipt is refused too, the delivery comes back after its lease)."""
        message_id = unverified_message_id(delivery.envelope)
        reason = str(error)[:500]
        log.warning("delivery.rejected", message_id=message_id[:64], error=reason)
        receipted = False
        try:
            receipt = make_receipt(
                message_id=message_id,
                envelope_sha256=hashlib.sha256(delivery.envelope.SerializeToString()).digest(),
                recipient=self.agency,
                status=envelope_pb2.REJECTED,
                identity_key=self.identity.private_key,
                reason=reason,
            )
            self._call(self._stub.Ack, broker_pb2.AckRequest(receipts=[receipt]))
            receipted = True
        except (ClientError, ValueError) as exc:
            log.warning("delivery.reject_failed", message_id=message_id[:64], error=str(exc)[:500])
        return InvalidDelivery(message_id, error, reason=reason, attempt=delivery.attempt, receipted=receipted)

    def _erase(self, recall: ReceivedMessage) -> ReceivedMessage:
        """Honour a verified RECALL: erase the recalled message from every local store, then confirm with
        a signed ERASED receipt. If a store fails, nothing is confirmed and the RECALL comes back after
        its lease (the erasure is tried again)."""
        target = recall.header.references
        counts = []
        try:
            for store in self.local_stores:
                counts.append((store.name, store.erase(target, recall.sender)))
        except (OSError, ClientError) as exc:
            log.warning("erasure.failed", message_id=target, recall_id=recall.message_id, error=str(exc)[:500])
            return recall
        reason = erasure_reason(target, counts)
        receipt = make_receipt(
            message_id=recall.message_id,
            envelope_sha256=recall.envelope_sha256,
            recipient=self.agency,
            status=envelope_pb2.ERASED,
            identity_key=self.identity.private_key,
            reason=reason,
        )
        try:
            self._call(self._stub.Ack, broker_pb2.AckRequest(receipts=[receipt]))
        except ClientError as exc:  # erased, not confirmed: the RECALL comes back and is confirmed then
            log.warning("erasure.unconfirmed", message_id=target, recall_id=recall.message_id, error=str(exc)[:500])
            return recall
        log.info("erasure.confirmed", message_id=target, recall_id=recall.message_id, stores=len(counts))
        return dataclasses.replace(recall, erased=reason)

    def ack(
        self,
        messages: ReceivedMessage | Sequence[ReceivedMessage],
        status: envelope_pb2.ReceiptStatus.ValueType = envelope_pb2.DELIVERED,
    ) -> int:
        """Acknowledge deliveries with signed receipts, several under one batch signature (protocol
        section 21); the broker takes them off our queue. RECALLs the SDK has already confirmed as
        ERASED are left out, and a message given twice (a copy redelivered after its lease ran out)
        is acknowledged once: the broker refuses an Ack naming one message twice."""
        given = [messages] if isinstance(messages, ReceivedMessage) else messages
        batch = list({m.message_id: m for m in given if m.erased is None}.values())
        if not batch:
            return 0
        receipts = sign_receipts(
            [
                new_receipt(
                    message_id=m.message_id, envelope_sha256=m.envelope_sha256, recipient=self.agency, status=status
                )
                for m in batch
            ],
            self.identity.private_key,
        )
        reply: broker_pb2.AckResponse = self._call(self._stub.Ack, broker_pb2.AckRequest(receipts=receipts))
        return reply.acknowledged

    # -- status --------------------------------------------------------------------------------
    def status(self, message_id: str) -> list[RecipientReceipt]:
        """Each recipient's state of a message we sent, receipts verified against their certificates."""
        return self._status(message_id)[0]

    def _status(self, message_id: str) -> tuple[list[RecipientReceipt], list[str]]:
        """`status`, and the ids of the RECALLs we sent of the message."""
        reply = self._call(self._stub.GetStatus, broker_pb2.GetStatusRequest(message_id=message_id))
        result = []
        for r in reply.recipients:
            receipt = None
            if r.receipt.receipt:
                with protocol_errors():
                    try:
                        cert = x509.load_der_x509_certificate(r.recipient_certificate)
                    except ValueError as exc:
                        raise VerificationError(f"certificate of {r.recipient} does not parse") from exc
                    verify_agency_certificate(
                        cert,
                        trust_roots=self.identity.trust_roots,
                        expected_agency=r.recipient,
                        trust_domain=self.trust_domain,
                        now=dt.datetime.now(dt.UTC),
                    )
                    receipt = verify_receipt(r.receipt, cert, expected_recipient=r.recipient, roots=self._roots)
                if receipt.message_id != message_id:
                    raise VerificationError(f"receipt of {r.recipient} is for message {receipt.message_id}")
            result.append(RecipientReceipt(r.recipient, broker_pb2.DeliveryState.Name(r.state), r.attempts, receipt))
        return result, list(reply.recalls)


def _as_client_error(error: BaseException) -> ClientError:
    return error if isinstance(error, ClientError) else ClientError(str(error))


__all__ = [
    "MLKEM768_X25519",
    "X25519",
    "AgencyClient",
    "Attachment",
    "ErasureConfirmation",
    "InvalidDelivery",
    "LocalStore",
    "ReceivedAttachment",
    "ReceivedMessage",
    "RecipientReceipt",
]
