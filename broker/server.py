"""Assembling and running the broker: store, audit log, writer, policy, PKI checks, gRPC server.

Only mutual TLS is ever offered: there is no insecure port and no flag for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from types import FrameType
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
import sqlalchemy as sa
import structlog
from cryptography import x509
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from sqlalchemy.engine import Engine

from broker.api.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    broker_pb2,
    broker_pb2_grpc,
    watchlist_pb2_grpc,
)
from broker.attachments.blobs import open_blob_store
from broker.attachments.desk import AttachmentDesk
from broker.audit import AuditLog, CheckpointSigner
from broker.audit.witnessed import WitnessedCheckpoints
from broker.config import DEV_POLICY_FILE, BrokerConfig, check_pki_files
from broker.delivery.backlog import Backlog
from broker.delivery.certificates import PeerCertificates
from broker.delivery.dispatcher import Dispatcher
from broker.delivery.exchange import Exchange
from broker.delivery.operations import UNSETTLED, refusal_record
from broker.delivery.routing import Router
from broker.directory import AgencyRecord, KeyDirectory, RegisterAgency, Registry
from broker.errors import ConfigurationError, StorageUnavailable
from broker.health import HEALTH_FILE_INTERVAL_SECONDS, write_health_file
from broker.metrics import CERTIFICATE_EXPIRY, CHECKPOINT_TIME, serve_metrics, unwatch_queue_depth, watch_queue_depth
from broker.pki.ledger import CaLedger
from broker.pki.online import OnlineCa
from broker.pki.revocation import RevocationList
from broker.pki.trust import TrustRoots
from broker.policy import RunningPolicy
from broker.protocol.attachments import MAX_CHUNK_SIZE
from broker.protocol.errors import ProtocolError
from broker.protocol.witness_policy import Policy, load_policy
from broker.retention import RetentionJob
from broker.store import tables
from broker.store.binding import Deployment, bind_deployment
from broker.store.db import WriterLock, create_engine, storage_fault, writer_lock
from broker.store.reads import Reader
from broker.store.replication import ReplicaListener
from broker.store.schema import upgrade_schema
from broker.store.writer import Writer
from broker.transport.admin_servicer import APPLIED_POLICY, AdminServicer
from broker.transport.audit_servicer import AuditServicer
from broker.transport.auth import Authenticator
from broker.transport.credentials import ReloadingServerCredentials
from broker.transport.reflection import enable_server_reflection
from broker.transport.rpc import CallInterceptor
from broker.transport.servicers import BrokerServicer
from broker.watchlists.desk import WatchlistDesk
from broker.watchlists.review import ReviewNotifier, notice_period
from broker.watchlists.servicer import SERVICE_NAME as WATCHLIST_SERVICE
from broker.watchlists.servicer import WatchlistServicer
from broker.witness.collector import WitnessCollector
from broker.witness.submit import client_context

log = structlog.get_logger(__name__)

_HEALTH_SERVICES = ("", "isb.v1.BrokerService")
# Headroom over the envelope limit for the request framing around it (SendRequest, batches).
_FRAME_SLACK = 64 * 1024
# Seconds `Broker.stop` gives, past the grace, to the last calls and then to the writer's queue.
STOP_BOUND_SECONDS = 10.0


class Broker:
    """A running broker; `start()` builds its parts and binds the port, `stop()` drains and closes everything.

    `start()` is the composition root: every part is built there, in dependency order, from the
    configuration and the parts built before it, and each gets what it uses as constructor arguments.
    """

    # Built by start(): the store, the PKI checks, the domain and the gRPC server.
    engine: Engine
    writer: Writer
    trust: TrustRoots
    signer: CheckpointSigner
    revocations: RevocationList
    auth: Authenticator
    router: Router
    dispatcher: Dispatcher
    attachments: AttachmentDesk
    ca_ledger: CaLedger
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    credentials: ReloadingServerCredentials

    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.port = 0
        self.metrics: WSGIServer | None = None
        self.witness_policy: Policy | None = None
        self.witnesses: WitnessCollector | None = None
        self._lock: WriterLock | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._health_updates: set[asyncio.Task[None]] = set()
        self._serving = False
        self.stop_overran: list[str] = []

    async def start(self) -> None:
        """Open the store, load PKI and policy, and start serving on `config.listen`."""
        config = self.config
        check_pki_files(config)  # names a missing or unreadable key before anything else starts
        ca_dir = config.ca_dir or config.cert_dir
        self.trust = TrustRoots(config.path("ca_bundle"), ca_dir)
        self.signer = CheckpointSigner.from_pem_file(config.path("audit_key"), origin=f"{config.trust_domain}/audit")
        self.witness_policy = self._load_witness_policy(config)
        self.witnesses = self._witness_collector(config, self.witness_policy)
        self.engine = create_engine(config.database_url)
        self._lock = writer_lock(self.engine)
        try:
            await self._start(config, ca_dir)
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise

    async def _open_store(self, config: BrokerConfig) -> AuditLog:
        # Bring the schema up, check the deployment binding, open the log; retry while the database
        # cannot be reached (a broker started before its database), one log line per attempt.
        deployment = Deployment.of(config.trust_domain, self.trust(), self.signer.vkey)
        where = _redact(config.database_url)

        def open_store() -> AuditLog:
            upgrade_schema(self.engine)
            with self.engine.begin() as conn:
                bind_deployment(conn, deployment, where)
                return AuditLog.open(conn)

        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await asyncio.to_thread(open_store)
            except sa.exc.SQLAlchemyError as exc:
                if storage_fault(exc) is None:
                    raise
                waited = time.monotonic() - started
                pause = min(0.5 * 2 ** (attempt - 1), 5.0)
                cause = _first_line(exc)
                if waited + pause > config.database_wait_seconds:
                    raise StorageUnavailable(
                        f"database {where} could not be reached in {attempt} attempts over {waited:.0f} s "
                        f"(database_wait_seconds = {config.database_wait_seconds:g}): {cause}"
                    ) from None
                log.warning("broker.database_unavailable", attempt=attempt, retry_in=pause, database=where, error=cause)
                self.engine.dispose()
                await asyncio.sleep(pause)

    async def _start(self, config: BrokerConfig, ca_dir: Path) -> None:
        audit_log = await self._open_store(config)
        self.writer = Writer(self.engine, audit_log, node=config.node)
        self.writer.start()
        registry = Registry()
        registry.load(self.engine)
        # An admin's ApplyPolicy wrote the broker's own copy: it outlives a restart. Otherwise the
        # configured file (which the broker watches, and never rewrites).
        applied = config.state_path(APPLIED_POLICY)
        policy_file = applied if applied.exists() else (config.policy_file or DEV_POLICY_FILE)
        policy = RunningPolicy.load(policy_file)
        log.info("policy.loaded", path=str(policy_file), applied=policy_file == applied)
        # check_interval=0: one stat per call, so a revocation bites on the very next call.
        self.revocations = RevocationList(ca_dir / "crl.pem", self.trust.crl_issuer(), check_interval=0)
        self.auth = Authenticator(config.trust_domain, self.revocations)
        self.server = _grpc_server(config, self.writer)
        await self._add_services(config, registry, policy, ca_dir, applied)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        enable_server_reflection(
            [
                broker_pb2.DESCRIPTOR.services_by_name["BrokerService"].full_name,
                WATCHLIST_SERVICE,
                audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
                admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            ],
            self.server,
        )
        self.credentials = ReloadingServerCredentials(
            config.path("server_cert"), config.path("server_key"), config.path("ca_bundle")
        )
        try:
            self.port = self.server.add_secure_port(config.listen, self.credentials.credentials())
        except RuntimeError:  # grpcio raises where older versions returned 0
            self.port = 0
        if self.port == 0:
            await self.writer.stop()
            raise ConfigurationError(f"cannot listen on {config.listen}: the address is taken or not this host's")
        await self.server.start()
        if config.metrics_listen:
            self._watch_certificates()
            watch_queue_depth(self._queue_depths)
            # Same certificate and CA as the gRPC port: a scraper needs a certificate of this CA.
            self.metrics = serve_metrics(
                config.metrics_listen,
                cert=config.path("server_cert"),
                key=config.path("server_key"),
                ca=config.path("ca_bundle"),
            )
        await self._set_health(self.writer.healthy)
        self.writer.on_health.append(self._writer_health)
        self.run_in_background(self._checkpoints(), "isb-checkpoints")
        self.run_in_background(self._watch_policy(), "isb-policy-watch")
        self.run_in_background(self.ca_ledger.run(), "isb-ca-ledger")
        if config.health_file is not None:
            self.run_in_background(self._health_heartbeat(), "isb-health-file")
        if self.engine.dialect.name == "postgresql":
            listener = ReplicaListener(self.engine, config.node, self.dispatcher)
            self.run_in_background(listener.run_forever(), "isb-replica-listen")
        log.info(
            "broker.started",
            listen=config.listen,
            port=self.port,
            database=_redact(config.database_url),
            audit_size=audit_log.size,
            agencies=len(registry.all()),
        )

    async def _add_services(
        self, config: BrokerConfig, registry: Registry, policy: RunningPolicy, ca_dir: Path, applied: Path
    ) -> None:
        # The domain, each part built from the ones before it, and the four services over it.
        writer, auth = self.writer, self.auth
        reader = Reader(self.engine)
        certificates = PeerCertificates()
        self.router = router = Router(policy, registry, reader, writer)
        backlog = Backlog(reader, writer, certificates, config.node)
        self.dispatcher = Dispatcher(
            backlog.load, backlog.envelope, config.lease_seconds, backlog.delivered, backlog.expired
        )
        blobs = open_blob_store(config.blob_store, self.engine, config.database_url, config.blob_dir)
        exchange = Exchange(config, reader, writer, registry, router, self.dispatcher, certificates, blobs)
        self.dispatcher.start()
        await self._seed_agencies(registry)
        self.attachments = AttachmentDesk(config, self.engine, writer, blobs)
        self.run_in_background(self.attachments.sweep_forever(), "isb-attachment-sweep")
        retention = RetentionJob(
            self.engine,
            writer,
            policy,
            self.revocations,
            lambda: blobs,
            self.dispatcher.acknowledged,
            node=config.node,
            interval_seconds=config.retention_interval_seconds,
        )
        self.run_in_background(retention.run_forever(), "isb-retention")
        witnessed = WitnessedCheckpoints(lambda: writer.audit_log, self.witness_policy, self.signer.origin)
        keys = KeyDirectory(
            registry, reader, writer, policy, self.trust, config.trust_domain, auth, router.consultation, witnessed
        )
        self.ca_ledger = CaLedger(ca_dir, writer)
        online_ca = OnlineCa(ca_dir, self.ca_ledger.lock, writer, self.revocations)
        desk = WatchlistDesk(config, reader, writer, registry, policy, certificates)
        # Owners are told ahead of their watchlist entries' review dates (broker.watchlists.review).
        notifier = ReviewNotifier(
            self.engine,
            writer,
            notice=notice_period(config.review_notice),
            interval_seconds=config.review_notice_interval_seconds,
            node=config.node,
        )
        self.run_in_background(notifier.run_forever(), "isb-review-notices")
        server = self.server
        broker_pb2_grpc.add_BrokerServiceServicer_to_server(
            BrokerServicer(auth, exchange, backlog, keys, self.attachments, self.revocations, self.trust), server
        )
        audit_pb2_grpc.add_AuditServiceServicer_to_server(
            AuditServicer(auth, reader, writer, router.consultation, self.sign_checkpoint), server
        )
        admin_pb2_grpc.add_AdminServiceServicer_to_server(
            AdminServicer(auth, writer, registry, policy, online_ca, retention, applied), server
        )
        watchlist_pb2_grpc.add_WatchlistServiceServicer_to_server(WatchlistServicer(auth, desk), server)

    def _watch_certificates(self) -> None:
        # Expiry of what an outage would follow from: the broker's own certificate and the CA's.
        server = x509.load_pem_x509_certificates(self.config.path("server_cert").read_bytes())[0]
        CERTIFICATE_EXPIRY.labels("broker").set(server.not_valid_after_utc.timestamp())
        for number, root in enumerate(self.trust()):
            CERTIFICATE_EXPIRY.labels(f"ca-{number}").set(root.not_valid_after_utc.timestamp())

    def _queue_depths(self) -> dict[str, int]:
        d = tables.deliveries
        query = sa.select(d.c.recipient, sa.func.count()).where(UNSETTLED).group_by(d.c.recipient)
        with self.engine.connect() as conn:
            return {str(agency): int(depth) for agency, depth in conn.execute(query)}

    def run_in_background(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run `work` until the broker stops (a periodic job)."""
        self._tasks.append(asyncio.get_running_loop().create_task(work, name=name))

    async def _seed_agencies(self, registry: Registry) -> None:
        # A dev PKI lists its sample agencies; register those not yet known (audited like any registration).
        listing = self.config.cert_dir / "agencies.json"
        if not listing.exists():
            return
        for item in json.loads(listing.read_text()):
            if item["agency"] not in registry:
                await self.writer.submit(
                    RegisterAgency(
                        AgencyRecord(
                            item["agency"],
                            item.get("display_name", ""),
                            item.get("country", ""),
                            item.get("contact", ""),
                        ),
                        actor=f"broker:{self.config.node}",
                        registry=registry,
                    )
                )

    async def _set_health(self, healthy: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if healthy else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in _HEALTH_SERVICES:
            await self.health.set(service, status)
        self._serving = healthy
        self._write_health_file()

    def _write_health_file(self) -> None:
        # What the gRPC health service says, with a time: a stale file means a stuck or dead broker.
        path = self.config.health_file
        if path is None:
            return
        document = {
            "status": "SERVING" if self._serving else "NOT_SERVING",
            "updated": time.time(),
            "pid": os.getpid(),
            "listen": self.config.listen,
        }
        try:
            write_health_file(path, document)
        except OSError as exc:
            log.warning("health_file.unwritable", path=str(path), error=exc.strerror)

    async def _health_heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_FILE_INTERVAL_SECONDS)
            self._write_health_file()

    def _writer_health(self, healthy: bool) -> None:
        # NOT_SERVING while the writer cannot commit (load balancers and clients route elsewhere).
        task = asyncio.get_running_loop().create_task(self._set_health(healthy))
        self._health_updates.add(task)
        task.add_done_callback(self._health_updates.discard)

    @staticmethod
    def _load_witness_policy(config: BrokerConfig) -> Policy | None:
        if config.witness_policy is None:
            return None
        try:
            return load_policy(config.witness_policy)
        except ProtocolError as exc:
            raise ConfigurationError(str(exc)) from exc

    @staticmethod
    def _witness_collector(config: BrokerConfig, policy: Policy | None) -> WitnessCollector | None:
        if policy is None:
            return None
        if config.witness_client_cert is None or config.witness_client_key is None:
            raise ConfigurationError(
                "witness_policy needs witness_client_cert and witness_client_key"
                " (a witness-role client certificate of the deployment CA)"
            )
        try:
            context = client_context(config.path("ca_bundle"), config.witness_client_cert, config.witness_client_key)
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot load the witness client certificate: {exc}") from exc
        collector = WitnessCollector(policy, context, config.trust_domain, timeout=config.witness_timeout_seconds)
        if not collector.witnesses:
            raise ConfigurationError(f"{config.witness_policy} names no witness with a URL to send checkpoints to")
        return collector

    async def collect_cosignatures(self) -> None:
        """Send the latest checkpoint to the witnesses that have not cosigned it; attach what they give."""
        collector = self.witnesses
        if collector is None:
            return
        audit_log = self.writer.audit_log
        latest = await self.writer.run_in_thread(audit_log.latest_checkpoint)
        if latest is None:
            return

        def proof(old: int, new: int) -> list[bytes]:
            with self.engine.connect() as conn:
                return audit_log.consistency_proof(conn, old, new)

        size = latest.tree_size
        lines = await asyncio.to_thread(collector.collect, latest.note, size, proof)
        if lines:
            await self.writer.run_in_thread(lambda conn: audit_log.attach_cosignatures(conn, size, lines))

    async def _checkpoints(self) -> None:
        # Sign a checkpoint every few seconds while entries arrive (DESIGN.md section 8).
        while True:
            await asyncio.sleep(self.config.checkpoint_interval_seconds)
            if not self.writer.healthy:
                continue  # the writer's probe reports the outage; nothing new can be signed
            try:
                await self.sign_checkpoint()
            except Exception:  # keep signing later; the failure is logged with its cause
                log.exception("audit.checkpoint_failed")
                continue
            try:
                await self.collect_cosignatures()
            except Exception:  # a witness problem never stops the broker
                log.exception("witness.collect_failed")

    async def _watch_policy(self) -> None:
        # Sends also look at the file (see Router.route); this catches edits while no one sends.
        while True:
            await asyncio.sleep(1.0)
            self.router.reload_policy()

    async def sign_checkpoint(self) -> None:
        """Sign a checkpoint of the committed log now (no-op when nothing changed)."""
        # The log is looked up inside the transaction: catching up with other replicas replaces it.
        await self.writer.run_in_thread(lambda conn: self.writer.audit_log.sign_checkpoint(conn, self.signer))
        CHECKPOINT_TIME.set(time.time())

    async def stop(self, grace: float = 2.0, bound: float = STOP_BOUND_SECONDS) -> None:
        """Stop accepting calls, finish queued writes, close the store: within `grace` + 2 * `bound` seconds.

        The calls still running after `grace` are cancelled; the gRPC server is given `bound` more
        seconds for them to end, then the writer `bound` seconds to commit what is queued. A part
        that overruns is logged (`broker.stop_overran`, with where each task and thread waits),
        named in `stop_overran`, and left behind: a stop that could hang would leave an operator
        with a broker that neither serves nor exits.
        """
        for task in self._tasks:
            task.cancel()
        if self.metrics is not None:
            self.metrics.shutdown()
            self.metrics.server_close()
            unwatch_queue_depth()
        await self.health.enter_graceful_shutdown()
        if self.config.health_file is not None:
            self._serving = False
            self._write_health_file()
        if not await _bounded("grpc_server", self.server.stop(grace), grace + bound):
            self.stop_overran.append("grpc_server")
        await self.dispatcher.stop()
        if not await _bounded("writer", self.writer.stop(), bound):
            self.stop_overran.append("writer")
        self.engine.dispose()
        if self._lock is not None:
            self._lock.release()
        log.info("broker.stopped")


async def _bounded(part: str, work: Coroutine[Any, Any, None], seconds: float) -> bool:
    """Await `work` for at most `seconds`; True if it finished. If not, log where the broker's tasks
    and threads wait and return False (the work goes on in the background)."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if done:
        task.result()
        return True
    here = asyncio.current_task()
    tasks = sorted(_innermost(t.get_name(), _top(t.get_stack())) for t in asyncio.all_tasks() if t is not here)
    frames = sys._current_frames()  # the one way to see where a thread waits
    threads = sorted(
        _innermost(t.name, frames.get(t.ident or 0)) for t in threading.enumerate() if t.name.startswith("isb-")
    )
    log.error("broker.stop_overran", part=part, seconds=seconds, tasks=tasks[:50], threads=threads)
    return False


def _top(stack: list[FrameType]) -> FrameType | None:
    return stack[-1] if stack else None


def _innermost(name: str, frame: FrameType | None) -> str:
    """`name at file:line` of a task's or thread's innermost frame."""
    return name if frame is None else f"{name} at {frame.f_code.co_filename}:{frame.f_lineno}"


def _grpc_server(config: BrokerConfig, writer: Writer) -> grpc.aio.Server:
    # Every call runs in its refusal scope; refusals' entries go through the writer.
    return grpc.aio.server(
        interceptors=[CallInterceptor(refusal_record(writer))],
        options=[
            ("grpc.max_receive_message_length", _max_message(config)),
            ("grpc.max_send_message_length", _max_message(config)),
            # No bandwidth-delay probing: on a loaded host the probe's round trip stretches and the
            # receive window grows with it, so a fast uploader could park ~100 MiB in the transport
            # (measured on a 2 GiB upload). The fixed default window keeps it to a few chunks.
            ("grpc.http2.bdp_probe", 0),
            ("grpc.max_connection_age_ms", int(config.max_connection_age_seconds * 1000)),
            ("grpc.max_connection_age_grace_ms", 30_000),
            ("grpc.keepalive_time_ms", 60_000),
            # A taken port is an error at start, never a second broker silently sharing it.
            ("grpc.so_reuseport", 0),
        ],
    )


def _max_message(config: BrokerConfig) -> int:
    # An attachment chunk is one gRPC message too, whatever the envelope limit.
    return max(config.max_envelope_bytes, MAX_CHUNK_SIZE + 16) + _FRAME_SLACK


def _first_line(exc: BaseException) -> str:
    cause = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
    lines = str(cause).strip().splitlines()
    return lines[0] if lines else type(cause).__name__


def _redact(url: str) -> str:
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def _freeze_startup_heap() -> None:
    """Leave what start-up made (modules, protobuf descriptors, PKI, policy, SQLAlchemy's caches)
    out of every later garbage collection: a full collection walks every tracked object, and over
    the start-up heap it paused the event loop (and every delivery) for tens of milliseconds.
    Young objects are collected every 10,000 allocations instead of 700: each envelope makes
    hundreds, and collecting every 700 took about 4 % of the broker's CPU, every 10,000 under 2 %
    (bench/README.md, issue 19)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000)


async def serve(config: BrokerConfig) -> None:
    """Run a broker until SIGINT or SIGTERM."""
    broker = Broker(config)
    await broker.start()
    _freeze_startup_heap()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await broker.stop()
    if broker.stop_overran:
        # What overran may hold a thread (a writer waiting for its database) that would keep the
        # interpreter from exiting: exit now, the reason logged (broker.stop_overran).
        sys.stderr.flush()
        os._exit(1)
