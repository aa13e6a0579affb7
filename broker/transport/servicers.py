"""The agency-facing gRPC servicer: translation between protobuf and the domain, nothing more.

Each method authenticates its caller, hands the request's values to the domain (the exchange, the key
directory, the attachment desk) and turns the answer into its response message; refusals are the
domain's, audited by it or by the RPC layer (`broker.transport.rpc`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import structlog

from broker.api.v1 import broker_pb2, broker_pb2_grpc, envelope_pb2
from broker.attachments.desk import AttachmentDesk
from broker.attachments.operations import Upload
from broker.audit.refusals import bounded
from broker.delivery.backlog import Backlog
from broker.delivery.exchange import Exchange, MessageState
from broker.delivery.operations import Accepted, QueuedDelivery
from broker.directory import DirectoryView, KeyDirectory
from broker.errors import REFUSALS, InvalidRequest, status_of
from broker.identity import Role
from broker.metrics import DELIVERY_LATENCY, REFUSALS_ANSWERED
from broker.pki.revocation import RevocationList
from broker.pki.trust import TrustRoots
from broker.protocol import validation
from broker.protocol.envelope import unverified_message_id
from broker.store.db import now_us
from broker.transport.auth import Authenticator
from broker.transport.rpc import Context
from broker.transport.timestamps import timestamp

log = structlog.get_logger(__name__)

MAX_BATCH_ENVELOPES = 256
# Batches of one SendStream being checked or committed at once; more wait in the transport.
MAX_BATCHES_IN_FLIGHT = 16
# Deliveries sent in one Subscribe stream message at most (ready ones only; nothing waits to batch).
MAX_DELIVERY_BATCH = 64
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


def _send_result(envelope: envelope_pb2.Envelope, outcome: Accepted | BaseException) -> broker_pb2.SendResult:
    if isinstance(outcome, Accepted):
        return broker_pb2.SendResult(message_id=outcome.message_id, response=_send_response(outcome))
    if isinstance(outcome, REFUSALS):  # audited by the exchange
        REFUSALS_ANSWERED.inc()
        return broker_pb2.SendResult(
            message_id=bounded(unverified_message_id(envelope), 64),
            code=status_of(outcome).value[0],
            error=bounded(str(outcome)),
        )
    log.error("send_stream.failed", error=repr(outcome))
    return broker_pb2.SendResult(
        message_id=unverified_message_id(envelope), code=grpc.StatusCode.INTERNAL.value[0], error="internal error"
    )


def _message_status(message_id: str, found: MessageState) -> broker_pb2.MessageStatus:
    status = broker_pb2.MessageStatus(message_id=message_id, purged_under=found.purged_under, recalls=found.recalls)
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


def _directory(view: DirectoryView) -> broker_pb2.Directory:
    directory = broker_pb2.Directory()
    for listing in view.listings:
        record = listing.agency
        entry = directory.agencies.add(
            agency=record.agency_id, display_name=record.display_name, country=record.country
        )
        for b in listing.bundles:
            entry.key_bundles.add(bundle=b.bundle, signature=b.signature, certificate=b.certificate)
            entry.key_bundle_audit_index.append(b.audit_index)
        if listing.bundles:
            entry.certificate = listing.bundles[0].certificate
    for name, members in view.groups.items():
        directory.groups.add(name=name, members=members)
    proofs = view.proofs
    if proofs is not None:  # each bundle's publication proof, and the checkpoint they lead to (protocol 18.4)
        directory.checkpoint = proofs.checkpoint.note
        directory.consistency_path.extend(proofs.consistency)
        for entry in directory.agencies:
            for index in entry.key_bundle_audit_index:
                publication = proofs.publications.get(index)
                proof = entry.key_bundle_proofs.add()
                if publication is not None:
                    proof.entry = publication.entry
                    proof.inclusion_path.extend(publication.path)
    return directory


class BrokerServicer(broker_pb2_grpc.BrokerServiceServicer):
    """BrokerService over the exchange, the key directory and the attachment desk; every call
    authenticates its caller first."""

    def __init__(
        self,
        auth: Authenticator,
        exchange: Exchange,
        backlog: Backlog,
        keys: KeyDirectory,
        attachments: AttachmentDesk,
        revocations: RevocationList,
        trust: TrustRoots,
    ) -> None:
        self._auth = auth
        self._exchange = exchange
        self._backlog = backlog
        self._keys = keys
        self._attachments = attachments
        self._revocations = revocations
        self._trust = trust

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
        outcomes = await self._exchange.send_batch(caller, [(e, e.ByteSize()) for e in batch.envelopes])
        return broker_pb2.SendBatchResult(
            results=[_send_result(e, outcome) for e, outcome in zip(batch.envelopes, outcomes, strict=True)]
        )

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
                if items:
                    yield await self._deliveries(items)
        finally:
            stream.close()
            log.info("subscribe.closed", agency=caller.name)

    async def _deliveries(self, items: list[QueuedDelivery]) -> broker_pb2.DeliveryBatch:
        batch = broker_pb2.DeliveryBatch()
        handed_us = now_us()
        for item in items:
            if item.attempts <= 1:
                DELIVERY_LATENCY.observe(max(0, handed_us - item.accepted_us) / 1e6)
            batch.deliveries.add(
                delivery_id=f"{item.message_id}/{item.recipient}",
                envelope=item.envelope,
                attempt=item.attempts,
                sender_certificate=await self._backlog.sender_certificate(item),
                accepted_at=timestamp(item.accepted_us),
            )
        return batch

    async def Ack(self, request: broker_pb2.AckRequest, context: Context) -> broker_pb2.AckResponse:
        caller = self._auth.authenticate(context)
        count = await self._exchange.acknowledge(caller, request.receipts)
        return broker_pb2.AckResponse(acknowledged=count)

    async def GetStatus(self, request: broker_pb2.GetStatusRequest, context: Context) -> broker_pb2.MessageStatus:
        caller = self._auth.authenticate(context)
        if not request.message_id:
            raise InvalidRequest("GetStatus needs the message_id of a message you sent")
        validation.check_message_id(request.message_id, "message_id", uuid7=False)
        return _message_status(request.message_id, await self._exchange.status(caller, request.message_id))

    async def PublishKeyBundle(
        self, request: envelope_pb2.SignedKeyBundle, context: Context
    ) -> broker_pb2.PublishKeyBundleResponse:
        caller = self._auth.require(context, Role.AGENCY)
        key_id, index = await self._keys.publish(caller, request)
        return broker_pb2.PublishKeyBundleResponse(key_id=key_id, audit_index=index)

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
        # The CRL this broker enforces, with its issuer's certificate when an intermediate signs it.
        return broker_pb2.RevocationList(crl=self._revocations.der, issuer_chain=self._trust.crl_chain())

    async def GetDirectory(self, request: broker_pb2.GetDirectoryRequest, context: Context) -> broker_pb2.Directory:
        caller = self._auth.authenticate(context)
        validation.check_directory_request(request)
        view = await self._keys.lookup(
            caller,
            list(request.agencies),
            dict(request.min_audit_index),
            request.known_tree_size,
            legal_basis=request.legal_basis,
            case_reference=request.case_reference,
            operator=request.operator,
        )
        return _directory(view)

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
