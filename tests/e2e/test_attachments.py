"""Attachments over real mTLS (issue 15): end-to-end encrypted, streamed, resumable, purged on recall,
every transfer and deletion audited, every refusal a clear status that stores nothing."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa

from broker.api.v1 import broker_pb2, envelope_pb2
from broker.pki.dev import DevPki
from broker.protocol import _stream
from broker.protocol.attachments import MIN_CHUNK_SIZE, AttachmentEncryptor
from broker.protocol.envelope import PROTOCOL_VERSION, new_content_key, seal, uuid7
from clients import AgencyClient, RemoteError, VerificationError
from clients.attachments import Attachment
from tests.e2e.broker_support import Database, RunningBroker
from tests.e2e.tcp_cut import CuttableRelay

MARKER = b"PLAINTEXT-MARKER-ARCHEO bronze statuette inventory 4711 "


def _file(tmp_path: Path, size: int, name: str = "photo.jpg") -> Path:
    path = tmp_path / name
    with path.open("wb") as out:
        block = (MARKER * (65536 // len(MARKER) + 1))[:65536]
        written = 0
        while written < size:
            piece = block[: size - written]
            out.write(piece)
            written += len(piece)
    return path


def _sha(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _first(client: AgencyClient, timeout: float = 10) -> Any:
    for message in client.deliveries(timeout=timeout):
        return message
    return None


def _entries(database: Database, event: str) -> list[dict[str, Any]]:
    rows = database.rows("SELECT entry FROM audit_entries WHERE event = :e ORDER BY leaf_index", e=event)
    return [json.loads(bytes(r[0])) for r in rows]


def _events(database: Database) -> list[str]:
    return [r[0] for r in database.rows("SELECT event FROM audit_entries ORDER BY leaf_index")]


def _blob_bytes(database: Database, broker: RunningBroker) -> int:
    """Bytes the blob store holds (files of the directory backend, or chunk rows)."""
    assert broker.broker is not None
    blobs = broker.broker.attachments.blobs
    if blobs.kind == "database":
        return int(database.scalar("SELECT coalesce(sum(length(data)), 0) FROM blob_chunks"))
    root: Path = blobs.root  # type: ignore[attr-defined]
    return sum(p.stat().st_size for p in root.iterdir() if p.suffix == ".data")


def _state(database: Database, broker: RunningBroker) -> tuple[Any, ...]:
    return (
        database.scalar("SELECT count(*) FROM messages"),
        database.scalar("SELECT count(*) FROM attachments"),
        _blob_bytes(database, broker),
    )


def _refused(
    database: Database,
    broker: RunningBroker,
    call: Any,
    code: grpc.StatusCode,
    message: str,
    rpc: str,
    actor: str = "FR-CUSTOMS",
) -> None:
    """The call fails with `code` and `message`, changes nothing stored, and leaves a refusal entry."""
    before = _state(database, broker)
    with pytest.raises(RemoteError) as refused:
        call()
    assert refused.value.code is code, refused.value.message
    assert message in refused.value.message
    assert _state(database, broker) == before
    entry = _entries(database, "request.rejected")[-1]
    assert (entry["fields"]["rpc"], entry["actor"]) == (rpc, f"spiffe://isb.dev/agency/{actor}")
    assert message in entry["fields"]["reason"]


def _upload_raw(
    client: AgencyClient,
    message_id: str,
    index: int,
    size: int,
    chunks: Iterator[tuple[int, bytes]],
    *,
    chunk_size: int = MIN_CHUNK_SIZE,
    media_type: str = "image/jpeg",
    first_chunk: int = 0,
) -> broker_pb2.UploadResponse:
    """Upload chunks as given (a misbehaving sender), through the SDK's error translation."""

    def requests() -> Iterator[broker_pb2.UploadRequest]:
        yield broker_pb2.UploadRequest(
            start=broker_pb2.UploadStart(
                key=broker_pb2.UploadKey(message_id=message_id, attachment=index),
                size=size,
                chunk_size=chunk_size,
                media_type=media_type,
                first_chunk=first_chunk,
            )
        )
        for i, data in chunks:
            yield broker_pb2.UploadRequest(chunk=broker_pb2.AttachmentChunk(index=i, data=data))

    response: broker_pb2.UploadResponse = client._call(client._stub.UploadAttachment, requests())
    return response


def _encrypted(
    content_key: bytes, message_id: str, data: bytes, chunk_size: int = MIN_CHUNK_SIZE
) -> tuple[list[tuple[int, bytes]], envelope_pb2.AttachmentRef]:
    key = _stream.attachment_key(content_key, PROTOCOL_VERSION, message_id, 0)
    encryptor = AttachmentEncryptor(key, io.BytesIO(data), len(data), chunk_size=chunk_size, media_type="image/jpeg")
    chunks = list(encryptor.encrypted_chunks())
    return chunks, encryptor.reference()


def _send_with(
    client: AgencyClient, content_key: bytes, message_id: str, refs: list[envelope_pb2.AttachmentRef]
) -> broker_pb2.SendResponse:
    """Seal and send an envelope with these references, as a sender that uploaded by hand would."""
    keys = client.recipient_keys(["DE-BKA"])
    sealed = seal(
        sender=client.agency,
        identity_key=client.identity.private_key,
        certificate=client.identity.certificate,
        recipients=["DE-BKA"],
        recipient_keys=keys,
        kind=envelope_pb2.ALERT,
        body=b"see attachment",
        content_type="text/plain",
        handling=envelope_pb2.Handling(tlp=envelope_pb2.TLP_AMBER),
        message_id=message_id,
        content_key=content_key,
        attachments=refs,
    )
    return client.send_envelope(sealed)


# --- round trips --------------------------------------------------------------------------------


def test_attachment_round_trips_and_the_broker_holds_only_ciphertext(
    agencies: dict[str, AgencyClient],
    database: Database,
    broker: RunningBroker,
    tmp_path: Path,
) -> None:
    """A 3 MiB photo goes from customs to police bit-identical; no plaintext is in the broker's storage."""
    customs, police = agencies["FR-CUSTOMS"], agencies["DE-BKA"]
    photo = _file(tmp_path, 3 * 1024 * 1024 + 123)
    sent = customs.send(["DE-BKA"], b"see photo", attachments=[photo])
    message = _first(police)
    assert message.message_id == sent.message_id
    [attachment] = message.attachments
    assert (attachment.size, attachment.media_type) == (photo.stat().st_size, "image/jpeg")
    out = tmp_path / "received.jpg"
    assert attachment.save(out) == photo.stat().st_size
    assert _sha(out) == _sha(photo)
    assert out.stat().st_mode & 0o777 == 0o600
    assert attachment.open().read(len(MARKER)) == MARKER
    police.ack(message)
    # The broker stored ciphertext only.
    assert broker.broker is not None
    blobs = broker.broker.attachments.blobs
    if blobs.kind == "directory":
        stored = b"".join(p.read_bytes() for p in blobs.root.iterdir())  # type: ignore[attr-defined]
    else:
        stored = b"".join(bytes(r[0]) for r in database.rows("SELECT data FROM blob_chunks"))
    assert len(stored) >= photo.stat().st_size
    assert MARKER[:24] not in stored
    [uploaded] = _entries(database, "attachment.uploaded")
    assert uploaded["actor"] == "spiffe://isb.dev/agency/FR-CUSTOMS"
    assert (uploaded["message_id"], uploaded["fields"]["size"]) == (sent.message_id, photo.stat().st_size)
    downloads = _entries(database, "attachment.downloaded")
    assert len(downloads) == 2
    assert {d["fields"]["recipient"] for d in downloads} == {"DE-BKA"}
    assert all(d["time"] for d in downloads)


def test_several_attachments_and_an_empty_one_keep_their_order(
    agencies: dict[str, AgencyClient],
    tmp_path: Path,
) -> None:
    """Attachments are delivered in the order sent, an empty file included, with their media types."""
    customs, police = agencies["FR-CUSTOMS"], agencies["DE-BKA"]
    first, empty = _file(tmp_path, 40_000, "scan.pdf"), tmp_path / "empty.txt"
    empty.write_bytes(b"")
    customs.send(["DE-BKA"], b"two files", attachments=[first, Attachment(io.BytesIO(b"manifest"), "text/csv"), empty])
    message = _first(police)
    assert [a.media_type for a in message.attachments] == ["application/pdf", "text/csv", "text/plain"]
    assert message.attachments[0].open().read() == first.read_bytes()
    assert message.attachments[1].open().read() == b"manifest"
    assert message.attachments[2].open().read() == b""


def test_transfer_interrupted_halfway_resumes_and_is_bit_identical(
    broker: RunningBroker,
    pki: DevPki,
    database: Database,
    tmp_path: Path,
) -> None:
    """Dropping the connection in the middle of the upload and of the download loses nothing."""
    relay = CuttableRelay(("127.0.0.1", int(broker.target.rsplit(":", 1)[1])))
    try:
        customs = AgencyClient.from_dir(
            relay.address, pki.directory, "FR-CUSTOMS", keystore=tmp_path / "k1", server_name="localhost"
        )
        police = AgencyClient.from_dir(
            relay.address, pki.directory, "DE-BKA", keystore=tmp_path / "k2", server_name="localhost"
        )
        customs.publish_key()
        police.publish_key()
        photo = _file(tmp_path, 40 * 1024 * 1024 + 5)
        cut_at = photo.stat().st_size // 2

        def cut_once(done: int, _total: int, cut: list[bool] = [False]) -> None:  # noqa: B006 - per test
            if done >= cut_at and not cut[0]:
                cut[0] = True
                relay.cut()

        customs.send(["DE-BKA"], b"big scan", attachments=[photo], progress=cut_once)
        assert relay.cuts == 1
        [uploaded] = _entries(database, "attachment.uploaded")
        assert uploaded["fields"]["resumed_from_chunk"] > 0
        message = _first(police)
        out = tmp_path / "out.bin"
        cut_download: list[bool] = [False]
        message.attachments[0].save(out, progress=lambda d, t: cut_once(d, t, cut_download))
        assert relay.cuts == 2
        assert _sha(out) == _sha(photo)
        downloads = _entries(database, "attachment.downloaded")
        assert len(downloads) == 2
        assert downloads[0]["fields"]["first_chunk"] == 0 < downloads[1]["fields"]["first_chunk"]
        customs.close()
        police.close()
    finally:
        relay.close()


# --- recall and expiry --------------------------------------------------------------------------


def test_recall_purges_the_attachment_and_every_step_is_audited(
    agencies: dict[str, AgencyClient],
    database: Database,
    broker: RunningBroker,
    tmp_path: Path,
) -> None:
    """After a recall the blob is gone, the recipient can no longer download it, and the log tells it all."""
    customs, police = agencies["FR-CUSTOMS"], agencies["DE-BKA"]
    sent = customs.send(["DE-BKA"], b"see photo", attachments=[_file(tmp_path, 100_000)])
    message = _first(police)
    assert _blob_bytes(database, broker) > 0
    customs.send(["DE-BKA"], b"withdrawn", kind=envelope_pb2.RECALL, references=sent.message_id)
    assert database.scalar("SELECT count(*) FROM attachments") == 0
    assert _blob_bytes(database, broker) == 0
    _refused(
        database,
        broker,
        lambda: message.attachments[0].open().read(),
        grpc.StatusCode.NOT_FOUND,
        f"no attachment 0 of message {sent.message_id} for DE-BKA",
        "DownloadAttachment",
        "DE-BKA",
    )
    events = [e for e in _events(database) if e.startswith(("attachment.", "envelope."))]
    # The recall's own acceptance entry comes after what it did, in the same transaction.
    assert events == [
        "attachment.uploaded",
        "envelope.accepted",
        "envelope.recalled",
        "attachment.deleted",
        "envelope.accepted",
    ]
    [deleted] = _entries(database, "attachment.deleted")
    assert (deleted["message_id"], deleted["fields"]["reason"]) == (sent.message_id, "recalled")


def test_unreferenced_upload_and_attachments_of_expired_messages_are_deleted(
    broker_factory: Any,
    pki: DevPki,
    database: Database,
    tmp_path: Path,
) -> None:
    """An upload never sent expires; so do the attachments of a message past its expiry. Both audited."""
    broker = broker_factory(upload_ttl_seconds=0.5)
    customs = AgencyClient.from_dir(broker.target, pki.directory, "FR-CUSTOMS", keystore=tmp_path / "k1")
    police = AgencyClient.from_dir(broker.target, pki.directory, "DE-BKA", keystore=tmp_path / "k2")
    police.publish_key()
    content_key, abandoned = new_content_key(), uuid7()
    chunks, _ = _encrypted(content_key, abandoned, b"x" * 1000)
    _upload_raw(customs, abandoned, 0, 1000, iter(chunks))
    customs.send(
        ["DE-BKA"],
        b"short-lived",
        attachments=[_file(tmp_path, 2000)],
        expires=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1.5),
    )
    time.sleep(2.0)
    assert broker.broker is not None
    assert broker.call(broker.broker.attachments.sweep()) == 2
    assert database.scalar("SELECT count(*) FROM attachments") == 0
    assert _blob_bytes(database, broker) == 0
    reasons = sorted(e["fields"]["reason"] for e in _entries(database, "attachment.deleted"))
    assert reasons == ["message expired", "upload expired unreferenced"]
    customs.close()
    police.close()


# --- refusals -----------------------------------------------------------------------------------


def test_attachment_over_the_size_limit_is_refused(
    broker_factory: Any,
    pki: DevPki,
    database: Database,
    tmp_path: Path,
) -> None:
    """An upload declaring more than max_attachment_bytes is INVALID_ARGUMENT before any chunk."""
    broker = broker_factory(max_attachment_bytes=100_000)
    customs = AgencyClient.from_dir(broker.target, pki.directory, "FR-CUSTOMS", keystore=tmp_path / "k")
    _refused(
        database,
        broker,
        lambda: _upload_raw(customs, uuid7(), 0, 100_001, iter([])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "over the limit of 100000 bytes",
        "UploadAttachment",
    )
    customs.close()


def test_attachment_over_the_agency_quota_is_refused(
    broker_factory: Any,
    pki: DevPki,
    database: Database,
    tmp_path: Path,
) -> None:
    """Uploads past the agency's quota are RESOURCE_EXHAUSTED and store nothing."""
    broker = broker_factory(attachment_quota_bytes=50_000)
    customs = AgencyClient.from_dir(broker.target, pki.directory, "FR-CUSTOMS", keystore=tmp_path / "k")
    content_key, message_id = new_content_key(), uuid7()
    chunks, _ = _encrypted(content_key, message_id, b"y" * 30_000)
    _upload_raw(customs, message_id, 0, 30_000, iter(chunks))
    _refused(
        database,
        broker,
        lambda: _upload_raw(customs, uuid7(), 0, 30_000, iter([])),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "would exceed its quota of 50000 bytes",
        "UploadAttachment",
    )
    customs.close()


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("reordered", "chunk 1 out of sequence: expected chunk 0"),
        ("short chunk", "chunk 0 is 16000 bytes; it must be 16400"),
        ("extra chunk", "chunk 3 after the last chunk 2"),
    ],
)
def test_misframed_upload_chunk_is_refused_as_it_arrives(
    agencies: dict[str, AgencyClient],
    database: Database,
    broker: RunningBroker,
    what: str,
    message: str,
) -> None:
    """A chunk out of sequence, of the wrong length, or past the last is INVALID_ARGUMENT and not stored."""
    customs = agencies["FR-CUSTOMS"]
    content_key, message_id = new_content_key(), uuid7()
    data = os.urandom(2 * MIN_CHUNK_SIZE + 1000)
    chunks, _ = _encrypted(content_key, message_id, data)
    tampered = {
        "reordered": [chunks[1], chunks[0], chunks[2]],
        "short chunk": [(0, chunks[0][1][:16000])],
        "extra chunk": [*chunks, (3, chunks[2][1])],
    }[what]
    before_bytes = _blob_bytes(database, broker)
    with pytest.raises(RemoteError) as refused:
        _upload_raw(customs, message_id, 0, len(data), iter(tampered))
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert message in refused.value.message
    entry = _entries(database, "request.rejected")[-1]
    assert (entry["fields"]["rpc"], message in entry["fields"]["reason"]) == ("UploadAttachment", True)
    stored_chunks = {"reordered": 0, "short chunk": 0, "extra chunk": 3}[what]
    assert _blob_bytes(database, broker) - before_bytes == sum(len(c) for _, c in chunks[:stored_chunks])
    assert not _entries(database, "attachment.uploaded") or what == "extra chunk"


def test_envelope_referencing_an_incomplete_upload_is_refused(
    agencies: dict[str, AgencyClient],
    database: Database,
    broker: RunningBroker,
) -> None:
    """A truncated upload is refused; an envelope referencing it is FAILED_PRECONDITION and not stored."""
    customs = agencies["FR-CUSTOMS"]
    content_key, message_id = new_content_key(), uuid7()
    data = os.urandom(3 * MIN_CHUNK_SIZE)
    chunks, ref = _encrypted(content_key, message_id, data)
    with pytest.raises(RemoteError, match="ended before chunk 2 of 3: resume from chunk 2"):
        _upload_raw(customs, message_id, 0, len(data), iter(chunks[:2]))
    status = customs._stub.GetUpload(broker_pb2.UploadKey(message_id=message_id, attachment=0), timeout=5)
    assert (status.next_chunk, status.complete) == (2, False)
    _refused(
        database,
        broker,
        lambda: _send_with(customs, content_key, message_id, [ref]),
        grpc.StatusCode.FAILED_PRECONDITION,
        "has not been uploaded completely",
        "Send",
    )


def test_envelope_referencing_another_digest_than_uploaded_is_refused(
    agencies: dict[str, AgencyClient],
    database: Database,
    broker: RunningBroker,
) -> None:
    """A header whose reference does not match the stored upload is FAILED_PRECONDITION."""
    customs = agencies["FR-CUSTOMS"]
    content_key, message_id = new_content_key(), uuid7()
    chunks, ref = _encrypted(content_key, message_id, b"z" * 5000)
    _upload_raw(customs, message_id, 0, 5000, iter(chunks))
    forged = envelope_pb2.AttachmentRef()
    forged.CopyFrom(ref)
    forged.sha256 = bytes(32)
    _refused(
        database,
        broker,
        lambda: _send_with(customs, content_key, message_id, [forged]),
        grpc.StatusCode.FAILED_PRECONDITION,
        "differs from the upload",
        "Send",
    )


def test_download_by_an_agency_that_is_not_a_recipient_is_not_found(
    agencies: dict[str, AgencyClient],
    database: Database,
    broker: RunningBroker,
    tmp_path: Path,
) -> None:
    """Only recipients of the referencing message may download; others learn nothing (NOT_FOUND)."""
    customs, police, fiod = agencies["FR-CUSTOMS"], agencies["DE-BKA"], agencies["NL-FIOD"]
    sent = customs.send(["DE-BKA"], b"for the police only", attachments=[_file(tmp_path, 1000)])
    message = _first(police)

    def steal() -> None:
        request = broker_pb2.DownloadRequest(message_id=sent.message_id, attachment=0)
        try:
            list(fiod._stub.DownloadAttachment(request, timeout=5))
        except grpc.RpcError as exc:
            raise fiod.translate_error(exc) from exc

    _refused(
        database,
        broker,
        steal,
        grpc.StatusCode.NOT_FOUND,
        f"no attachment 0 of message {sent.message_id} for NL-FIOD",
        "DownloadAttachment",
        "NL-FIOD",
    )
    assert message.attachments[0].open().read() == _file(tmp_path, 1000).read_bytes()


def test_upload_with_a_malformed_start_is_refused(
    agencies: dict[str, AgencyClient],
    database: Database,
    broker: RunningBroker,
) -> None:
    """A bad media type or chunk size is INVALID_ARGUMENT before anything is stored."""
    customs = agencies["FR-CUSTOMS"]
    _refused(
        database,
        broker,
        lambda: _upload_raw(customs, uuid7(), 0, 10, iter([]), media_type="jpeg"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "is not type/subtype",
        "UploadAttachment",
    )
    _refused(
        database,
        broker,
        lambda: _upload_raw(customs, uuid7(), 0, 10, iter([]), chunk_size=100),
        grpc.StatusCode.INVALID_ARGUMENT,
        "chunk_size 100 is outside",
        "UploadAttachment",
    )
    _refused(
        database,
        broker,
        lambda: _upload_raw(customs, "not-a-uuid", 0, 10, iter([])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "is not a lowercase canonical UUID",
        "UploadAttachment",
    )


# --- tampering the broker cannot see: the recipient refuses it ----------------------------------


@pytest.mark.parametrize(("what", "bad_chunk"), [("flipped", 1), ("swapped", 1), ("reordered", 0)])
def test_tampered_chunks_are_refused_by_the_recipient(
    agencies: dict[str, AgencyClient],
    tmp_path: Path,
    what: str,
    bad_chunk: int,
) -> None:
    """Chunks altered, swapped or reordered before upload (the broker cannot tell) fail the recipient's reader."""
    customs, police = agencies["FR-CUSTOMS"], agencies["DE-BKA"]
    content_key, message_id = new_content_key(), uuid7()
    data = os.urandom(3 * MIN_CHUNK_SIZE)
    chunks, _ = _encrypted(content_key, message_id, data)
    if what == "flipped":
        bad = bytearray(chunks[1][1])
        bad[100] ^= 0x01
        tampered = [chunks[0], (1, bytes(bad)), chunks[2]]
    elif what == "swapped":
        tampered = [chunks[0], (1, chunks[0][1]), chunks[2]]  # chunk 0's ciphertext again at index 1
    else:
        tampered = [(0, chunks[1][1]), (1, chunks[0][1]), chunks[2]]  # chunks 0 and 1 change places
    uploaded = _upload_raw(customs, message_id, 0, len(data), iter(tampered))
    # The sender signs what the broker stored, as a malicious or broken sender would.
    ref = envelope_pb2.AttachmentRef(
        sha256=uploaded.sha256, size=len(data), chunk_size=MIN_CHUNK_SIZE, media_type="image/jpeg"
    )
    _send_with(customs, content_key, message_id, [ref])
    message = _first(police)
    reader = message.attachments[0].open()
    genuine = bad_chunk * MIN_CHUNK_SIZE  # the chunks before the bad one read as sent
    assert not genuine or reader.read(genuine) == data[:genuine]
    with pytest.raises(VerificationError, match=f"chunk {bad_chunk} does not authenticate"):
        reader.read()
    out = tmp_path / "refused.bin"
    with pytest.raises(VerificationError):
        message.attachments[0].save(out)
    assert not out.exists()
    assert not out.with_name("refused.bin.part").exists()


def test_stored_chunk_corrupted_on_disk_is_refused_by_the_broker(
    agencies: dict[str, AgencyClient],
    database: Database,
    broker: RunningBroker,
    tmp_path: Path,
) -> None:
    """The broker re-checks each stored chunk's hash before serving it: bit rot is DATA_LOSS, not data."""
    customs, police = agencies["FR-CUSTOMS"], agencies["DE-BKA"]
    customs.send(["DE-BKA"], b"x", attachments=[_file(tmp_path, 100_000)])
    assert broker.broker is not None
    blobs = broker.broker.attachments.blobs
    if blobs.kind == "directory":
        [data] = [p for p in blobs.root.iterdir() if p.suffix == ".data"]  # type: ignore[attr-defined]
        raw = bytearray(data.read_bytes())
        raw[10] ^= 0x01
        data.write_bytes(bytes(raw))
    else:
        with database.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE blob_chunks SET data = overlay(data placing '\\x00'::bytea from 11 for 1) WHERE idx = 0"
                )
            )
    message = _first(police)
    with pytest.raises(RemoteError) as refused:
        message.attachments[0].open().read()
    assert refused.value.code is grpc.StatusCode.DATA_LOSS
    assert "stored chunk 0 does not match its recorded hash" in refused.value.message


# --- the producer is not blocked ------------------------------------------------------------


def test_producer_keeps_sending_while_a_large_attachment_uploads(
    agencies: dict[str, AgencyClient],
    tmp_path: Path,
) -> None:
    """Small envelopes submitted after a 48 MiB attachment are answered before its upload ends."""
    customs = agencies["FR-CUSTOMS"]
    big = _file(tmp_path, 48 * 1024 * 1024)
    with customs.producer() as producer:
        large = producer.submit_later(lambda: customs.seal(["DE-BKA"], b"big", attachments=[big]))
        small = [producer.submit(customs.seal(["DE-BKA"], b"small %d" % i)) for i in range(20)]
        for future in small:
            future.result(timeout=30)
        assert not large.done()
        assert large.result(timeout=120).message_id
    assert len({f.result().message_id for f in small}) == 20
