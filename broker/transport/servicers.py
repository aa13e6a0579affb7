"""The agency-facing gRPC servicer: translation between protobuf and the exchange, nothing more."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable, Sequence

import grpc
import structlog
from cryptography import x509

from broker.api.v1 import broker_pb2, broker_pb2_grpc, envelope_pb2
from broker.attachments.desk import AttachmentDesk
from broker.attachments.operations import Upload
from broker.audit import AuditEvent
from broker.audit.refusals import bounded
from broker.audit.witnessed import WitnessedCheckpoints
from broker.delivery.exchange import Exchange
from broker.delivery.operations import Accepted, RecordEvent
from broker.directory import PublishBundle, Registry, current_bundles
from broker.errors import REFUSALS, FailedPrecondition, InvalidRequest, PermissionDenied, status_of
from broker.identity import Role
from broker.metrics import DELIVERY_LATENCY, REFUSALS_ANSWERED
from broker.policy import RunningPolicy
from broker.protocol import validation
from broker.protocol.envelope import unverified_message_id
from broker.protocol.keys import verify_key_bundle
from broker.store.db import now_us
from broker.store.writer import Writer
from broker.transport.auth import Authenticator
from broker.transport.rpc import Context
from broker.transport.timestamps import timestamp

log = structlog.get_logger(__name__)

MAX_BATCH_ENVELOPES = 256
# Batches of one SendStream being checked or committed at once; more wait in the transport.
MAX_BATCHES_IN_FLIGHT = 16
# Deliveries sent in one Subscribe stream message at most (ready ones only; nothing waits to batch).
MAX_DELIVERY_BATCH = 64
MAX_DIRECTORY_QUERY = 1000
# A Subscribe stream re-checks its caller's certificate at least this often, so that a revocation
# closes open streams within a second (DESIGN.md section 2).
REAUTH_SECONDS = 0.25


def _send_response(accepted: Accepted) -> broker_pb2.SendResponse:
    return broker_pb2.SendResponse(
        message_id=accepted.message_id,
        accepted_at=timestamp(accepted.accepted_us),
        audit_index=accepted.audit_index,
        duplicate=accepted.duplicate,
        queued_for=accepted.recipients,
    )


class BrokerServicer(broker_pb2_grpc.BrokerServiceServicer):
    """BrokerService over the exchange; every call authenticates its caller first."""

    def __init__(
        self,
        auth: Authenticator,
        exchange: Exchange,
        writer: Writer,
        registry: Registry,
        policy: RunningPolicy,
        trust_roots: Callable[[], Sequence[x509.Certificate]],
        trust_domain: str,
        attachments: AttachmentDesk,
        *,
        revocation_list: Callable[[], broker_pb2.RevocationList] | None = None,
        witnessed: WitnessedCheckpoints | None = None,
    ) -> None:
        self._witnessed = witnessed
        self._attachments = attachments
        self._auth = auth
        self._exchange = exchange
        self._writer = writer
        self._registry = registry
        self._policy = policy
        self._trust_roots = trust_roots
        self._trust_domain = trust_domain
        self._revocation_list = revocation_list

    async def Send(self, request: broker_pb2.SendRequest, context: Context) -> broker_pb2.SendResponse:
        caller = self._auth.authenticate(context)
        accepted = await self._exchange.send(caller, request.envelope, request.envelope.ByteSize())
        log.info(
            "envelope.accepted",
            message_id=accepted.message_id,
            sender=caller.name,
            recipients=len(accepted.recipients),
            duplicate=accepted.duplicate,
        )
        return _send_response(accepted)

    async def SendStream(
        self, request_iterator: AsyncIterator[broker_pb2.SendBatch], context: Context
    ) -> AsyncIterator[broker_pb2.SendBatchResult]:
        """Batches in, results out in the same order; a refused envelope fails alone, not its batch.

        Batches are pipelined: the next batch is read and checked while earlier ones wait for their
        group commit, so one stream can fill several commits (a stream that waited for each commit
        before reading on would be limited to one batch per fsync).
        """
        in_order: asyncio.Queue[asyncio.Future[broker_pb2.SendBatchResult] | None] = asyncio.Queue(
            maxsize=MAX_BATCHES_IN_FLIGHT
        )

        async def read() -> None:
            try:
                async for batch in request_iterator:
                    await in_order.put(asyncio.ensure_future(self._send_batch(context, batch)))
            except Exception as exc:  # noqa: BLE001 - a batch that does not parse ends the stream with its refusal
                failed: asyncio.Future[broker_pb2.SendBatchResult] = asyncio.get_running_loop().create_future()
                failed.set_exception(exc)
                await in_order.put(failed)
            finally:
                await in_order.put(None)

        reader = asyncio.ensure_future(read())
        try:
            # A refused batch (or one that does not parse) ends the stream with its status, never OK.
            while (next_result := await in_order.get()) is not None:
                yield await next_result
        finally:
            reader.cancel()
            while not in_order.empty():
                leftover = in_order.get_nowait()
                if leftover is not None:
                    leftover.cancel()

    async def _send_batch(self, context: Context, batch: broker_pb2.SendBatch) -> broker_pb2.SendBatchResult:
        caller = self._auth.authenticate(context)  # every batch: revocation bites mid-stream too
        if len(batch.envelopes) > MAX_BATCH_ENVELOPES:
            raise InvalidRequest(f"{len(batch.envelopes)} envelopes in one batch, over {MAX_BATCH_ENVELOPES}")
        outcomes = await asyncio.gather(
            *(self._exchange.send(caller, e, e.ByteSize()) for e in batch.envelopes), return_exceptions=True
        )
        results = []
        for envelope, outcome in zip(batch.envelopes, outcomes, strict=True):
            if isinstance(outcome, Accepted):
                results.append(broker_pb2.SendResult(message_id=outcome.message_id, response=_send_response(outcome)))
            elif isinstance(outcome, REFUSALS):  # audited by the exchange
                REFUSALS_ANSWERED.inc()
                results.append(
                    broker_pb2.SendResult(
                        message_id=bounded(unverified_message_id(envelope), 64),
                        code=status_of(outcome).value[0],
                        error=bounded(str(outcome)),
                    )
                )
            else:
                log.error("send_stream.failed", error=repr(outcome))
                results.append(
                    broker_pb2.SendResult(
                        message_id=unverified_message_id(envelope),
                        code=grpc.StatusCode.INTERNAL.value[0],
                        error="internal error",
                    )
                )
        return broker_pb2.SendBatchResult(results=results)

    async def Subscribe(
        self, request: broker_pb2.SubscribeRequest, context: Context
    ) -> AsyncIterator[broker_pb2.DeliveryBatch]:
        caller = self._auth.authenticate(context)
        stream = await self._exchange.open_stream(caller, request.max_in_flight)
        log.info("subscribe.opened", agency=caller.name)
        try:
            while True:
                self._auth.authenticate(context)
                items = await stream.next_batch(REAUTH_SECONDS, MAX_DELIVERY_BATCH)
                if not items:
                    continue
                batch = broker_pb2.DeliveryBatch()
                handed_us = now_us()
                for item in items:
                    if item.attempts <= 1:
                        DELIVERY_LATENCY.observe(max(0, handed_us - item.accepted_us) / 1e6)
                    batch.deliveries.add(
                        delivery_id=f"{item.message_id}/{item.recipient}",
                        envelope=item.envelope,
                        attempt=item.attempts,
                        sender_certificate=await self._exchange.sender_certificate(item),
                        accepted_at=timestamp(item.accepted_us),
                    )
                yield batch
        finally:
            stream.close()
            log.info("subscribe.closed", agency=caller.name)

    async def Ack(self, request: broker_pb2.AckRequest, context: Context) -> broker_pb2.AckResponse:
        caller = self._auth.authenticate(context)
        count = await self._exchange.acknowledge(caller, request.receipts)
        return broker_pb2.AckResponse(acknowledged=count)

    async def GetStatus(self, request: broker_pb2.GetStatusRequest, context: Context) -> broker_pb2.MessageStatus:
        caller = self._auth.authenticate(context)
        if not request.message_id:
            raise InvalidRequest("GetStatus needs the message_id of a message you sent")
        validation.check_message_id(request.message_id, "message_id", uuid7=False)
        found = await self._exchange.status(caller, request.message_id)
        status = broker_pb2.MessageStatus(
            message_id=request.message_id, purged_under=found.purged_under, recalls=found.recalls
        )
        if found.purged_us is not None:
            status.purged_at.CopyFrom(timestamp(found.purged_us))
        for state, cert in found.recipients:
            item = status.recipients.add(
                recipient=state.recipient,
                state=state.state,
                attempts=state.attempts,
                updated_at=timestamp(state.updated_us),
            )
            if state.receipt is not None and state.receipt_signature is not None:
                item.receipt.receipt = state.receipt
                item.receipt.signature = state.receipt_signature
                if state.receipt_batch is not None:
                    item.receipt.batch_signature.ParseFromString(state.receipt_batch)
                item.recipient_certificate = cert or b""
        return status

    async def PublishKeyBundle(
        self, request: envelope_pb2.SignedKeyBundle, context: Context
    ) -> broker_pb2.PublishKeyBundleResponse:
        caller = self._auth.require(context, Role.AGENCY)
        if caller.name not in self._registry:
            # As for every other call: an agency the admin has not registered publishes nothing.
            raise PermissionDenied(f"agency {caller.name} is not registered with this broker")
        if len(request.bundle) > 8192 or len(request.certificate) > 16384 or len(request.signature) > 256:
            raise InvalidRequest("key bundle is larger than any valid bundle")
        if request.certificate != caller.certificate_der:
            raise PermissionDenied("a key bundle must be signed with the certificate of the calling agency")
        bundle = verify_key_bundle(
            request,
            trust_roots=self._trust_roots(),
            expected_agency=caller.name,
            trust_domain=self._trust_domain,
            now=dt.datetime.now(dt.UTC),
        )
        index = await self._writer.submit(
            PublishBundle(
                agency=caller.name,
                key_id=bundle.key_id,
                bundle=request.bundle,
                signature=request.signature,
                certificate=request.certificate,
                not_after=bundle.not_after.ToDatetime(dt.UTC),
                actor=str(caller),
                suite=envelope_pb2.KeySuite.Name(bundle.suite),
            )
        )
        log.info("keybundle.published", agency=caller.name, key_id=bundle.key_id)
        return broker_pb2.PublishKeyBundleResponse(key_id=bundle.key_id, audit_index=index)

    async def GrantForwardConsent(
        self, request: envelope_pb2.SignedForwardConsent, context: Context
    ) -> broker_pb2.GrantForwardConsentResponse:
        caller = self._auth.authenticate(context)
        index = await self._exchange.grant_forward_consent(caller, request)
        return broker_pb2.GrantForwardConsentResponse(audit_index=index)

    async def GetRevocationList(
        self, request: broker_pb2.GetRevocationListRequest, context: Context
    ) -> broker_pb2.RevocationList:
        self._auth.authenticate(context)
        if self._revocation_list is None:
            raise FailedPrecondition("this broker serves no CRL")
        return self._revocation_list()

    async def GetDirectory(self, request: broker_pb2.GetDirectoryRequest, context: Context) -> broker_pb2.Directory:
        caller = self._auth.authenticate(context)
        if len(request.agencies) > MAX_DIRECTORY_QUERY:
            raise InvalidRequest(f"at most {MAX_DIRECTORY_QUERY} agencies per directory query")
        validation.check_directory_request(request)
        justification = self._exchange.consultation(
            str(caller.spiffe_id), request.legal_basis, request.case_reference, request.operator
        )
        wanted = list(request.agencies)
        # No agencies named: every registered agency, as the proto documents.
        found = [self._registry.get(a) for a in wanted] if wanted else self._registry.all()
        unknown = [a for a, r in zip(wanted, found, strict=True) if r is None] if wanted else []
        records = [r for r in found if r is not None]
        if unknown:
            raise InvalidRequest(f"not registered: {', '.join(unknown[:5])}")
        bounds = dict(request.min_audit_index)
        unasked = sorted(set(bounds) - set(wanted))
        if unasked:
            raise InvalidRequest(f"freshness bound for an agency not asked for: {', '.join(unasked[:5])}")
        bundles = await self._exchange.read(lambda conn: current_bundles(conn, wanted, now_us()))
        directory = broker_pb2.Directory()
        for record in records:
            entry = directory.agencies.add(
                agency=record.agency_id, display_name=record.display_name, country=record.country
            )
            for b in bundles.get(record.agency_id, []):
                if self._auth.is_revoked_der(b.certificate):
                    continue  # a key signed under a revoked identity is not offered to senders
                entry.key_bundles.add(bundle=b.bundle, signature=b.signature, certificate=b.certificate)
                entry.key_bundle_audit_index.append(b.audit_index)
                if not entry.certificate:
                    entry.certificate = b.certificate
            newest = max(entry.key_bundle_audit_index, default=0)
            bound = bounds.get(record.agency_id, 0)
            if newest < bound:
                # The caller has used a bundle published later than anything this broker holds:
                # it is behind (a stale replica, a copy of the database) or withholds that bundle.
                raise FailedPrecondition(
                    f"this broker holds no current key bundle of {record.agency_id} published at or after"
                    f" audit index {bound} (newest: {newest}); ask an up-to-date broker"
                )
        for name, members in sorted(self._policy.current.groups.items()):
            directory.groups.add(name=name, members=sorted(members))
        await self._prove_publications(directory, request.known_tree_size)
        # A consultation like any other (docs/protocol.md section 22, Justification): who looked up whom, and why.
        # Recorded, not required first, as for auditors' queries: a full disk does not stop senders.
        await self._writer.record(
            RecordEvent(
                AuditEvent(
                    event="directory.lookup",
                    actor=str(caller.spiffe_id),
                    time=dt.datetime.now(dt.UTC),
                    agency=caller.name if caller.role is Role.AGENCY else None,
                    fields={"asked": len(wanted), "agencies": wanted[:64], **justification},
                )
            )
        )
        return directory

    async def _prove_publications(self, directory: broker_pb2.Directory, known_size: int) -> None:
        """Attach each bundle's publication proof and the checkpoint they lead to (protocol 18.4)."""
        witnessed = self._witnessed
        if witnessed is None:
            return
        indexes = [i for entry in directory.agencies for i in entry.key_bundle_audit_index]
        proofs = await self._exchange.read(lambda conn: witnessed.prove(conn, indexes, known_size))
        if proofs is None:
            return  # nothing signed yet: bundles go without proofs, and a checking SDK waits
        directory.checkpoint = proofs.checkpoint.note
        directory.consistency_path.extend(proofs.consistency)
        for entry in directory.agencies:
            for index in entry.key_bundle_audit_index:
                publication = proofs.publications.get(index)
                proof = entry.key_bundle_proofs.add()
                if publication is not None:
                    proof.entry = publication.entry
                    proof.inclusion_path.extend(publication.path)

    async def UploadAttachment(
        self, request_iterator: AsyncIterator[broker_pb2.UploadRequest], context: Context
    ) -> broker_pb2.UploadResponse:
        caller = self._auth.require(context, Role.AGENCY)
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.HasField("start"):
            raise InvalidRequest("the first UploadRequest of a stream must carry start")
        start = first.start
        upload = Upload(
            caller.name, start.key.message_id, start.key.attachment, start.size, start.chunk_size, start.media_type
        )

        async def chunks() -> AsyncIterator[tuple[int, bytes]]:
            async for request in request_iterator:
                if request.HasField("start"):
                    raise InvalidRequest("start may only be the first request of an upload stream")
                yield request.chunk.index, request.chunk.data

        uploaded = await self._attachments.upload(caller, upload, start.first_chunk, chunks())
        return broker_pb2.UploadResponse(
            sha256=uploaded.sha256, chunks=uploaded.chunks, audit_index=uploaded.audit_index
        )

    async def GetUpload(self, request: broker_pb2.UploadKey, context: Context) -> broker_pb2.UploadStatus:
        caller = self._auth.require(context, Role.AGENCY)
        progress = await self._attachments.progress(caller, request.message_id, request.attachment)
        return broker_pb2.UploadStatus(
            next_chunk=progress.next_chunk, complete=progress.complete, sha256=progress.sha256
        )

    async def DownloadAttachment(
        self, request: broker_pb2.DownloadRequest, context: Context
    ) -> AsyncIterator[broker_pb2.AttachmentChunk]:
        caller = self._auth.require(context, Role.AGENCY)
        download = await self._attachments.authorise_download(
            caller, request.message_id, request.attachment, request.first_chunk
        )
        async for index, data in self._attachments.chunks(download):
            yield broker_pb2.AttachmentChunk(index=index, data=data)
