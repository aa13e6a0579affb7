"""Issue 12: malformed bytes to every method of every service, found through server reflection, with each
role's certificate. Nothing a client sends may be answered with UNKNOWN or INTERNAL, nothing is stored,
every refusal is audited (the `database` fixture checks one entry per refusal), and the broker is still
SERVING afterwards."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from broker.config import DEV_POLICY_FILE
from broker.pki.dev import DevPki
from tests.e2e.broker_support import Database, RunningBroker

# Bytes that do not parse as any message: an invalid wire type, a truncated varint, a truncated
# length-delimited field, a group that never ends, invalid UTF-8 in field 1 (a string in most
# requests), a field number 0; then random bytes (most do not parse either), and the empty message,
# which parses as the default request and must be refused cleanly where it is not valid.
FIXED = [b"\x0f", b"\x08", b"\x0a\x05ab", b"\x0b", b"\x0a\x02\xff\xfe", b"\x00\x01", b"\x12\x03\xc3\x28\x41", b""]
RANDOM_PAYLOADS = 6
FORBIDDEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
# A request that happens to parse may open a stream that waits for work: its deadline ends it.
DEADLINE = 1.0


def _raw(data: bytes) -> bytes:
    """Bytes sent and returned as they are (what no serializer does, typed)."""
    return data


def _payloads(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return FIXED + [rng.randbytes(rng.randint(1, 64)) for _ in range(RANDOM_PAYLOADS)]


def _channel(broker: RunningBroker, pki: DevPki, cert: Path, key: Path) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca_cert.read_bytes(), private_key=key.read_bytes(), certificate_chain=cert.read_bytes()
    )
    return grpc.secure_channel(broker.target, credentials)


def _methods(channel: grpc.Channel) -> list[tuple[str, bool, bool]]:
    """(path, client streaming, server streaming) of every method the broker's reflection lists."""
    database = ProtoReflectionDescriptorDatabase(channel)
    pool = descriptor_pool.DescriptorPool(database)
    methods = []
    for name in database.get_services():
        service = pool.FindServiceByName(name)
        for method in service.methods:
            methods.append((f"/{service.full_name}/{method.name}", method.client_streaming, method.server_streaming))
    return methods


def _call(
    channel: grpc.Channel, path: str, client_streaming: bool, server_streaming: bool, payload: bytes
) -> grpc.StatusCode:
    """The status of one call carrying `payload` (raw bytes, no serializer)."""
    try:
        if client_streaming and server_streaming:
            for _ in channel.stream_stream(path, _raw, _raw)(iter([payload]), timeout=DEADLINE):
                pass
        elif client_streaming:
            channel.stream_unary(path, _raw, _raw)(iter([payload]), timeout=DEADLINE)
        elif server_streaming:
            for _ in channel.unary_stream(path, _raw, _raw)(payload, timeout=DEADLINE):
                pass
        else:
            channel.unary_unary(path, _raw, _raw)(payload, timeout=DEADLINE)
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        if code in FORBIDDEN:
            pytest.fail(f"{path} answered {code.name} to {payload!r}: {exc.details()}")
        return code
    return grpc.StatusCode.OK


def _stored(database: Database) -> tuple[Any, ...]:
    return tuple(
        database.scalar(f"SELECT count(*) FROM {table}")
        for table in ("messages", "deliveries", "key_bundles", "watchlist_lists", "forward_consents")
    )


@pytest.fixture
def roles(pki: DevPki) -> dict[str, tuple[Path, Path]]:
    """The certificate and key of an agency, an auditor and an admin."""
    return {"agency": pki.agency("FR-CUSTOMS"), "auditor": pki.auditor, "admin": pki.admin}


@pytest.mark.slow
@pytest.mark.timeout(600)  # ~1,700 calls: 30 s idle, over the default 120 s at load 20
def test_malformed_bytes_to_every_method_get_clean_statuses_and_store_nothing(
    broker_factory: Any,
    pki: DevPki,
    database: Database,
    roles: dict[str, tuple[Path, Path]],
    tmp_path: Path,
) -> None:
    """Every method of every service, every role: no UNKNOWN or INTERNAL, nothing stored, SERVING after."""
    # A private copy of the policy: an empty ApplyPolicy (b"" parses) may replace the running file.
    policy = tmp_path / "policy.toml"
    shutil.copyfile(DEV_POLICY_FILE, policy)
    broker: RunningBroker = broker_factory(policy_file=policy)
    before = _stored(database)
    seen: dict[grpc.StatusCode, int] = {}
    calls = 0
    for seed, (_, (cert, key)) in enumerate(sorted(roles.items())):
        with _channel(broker, pki, cert, key) as channel:
            methods = _methods(channel)
            assert any(p.startswith("/isb.v1.BrokerService/") for p, _, _ in methods)
            assert any(p.startswith("/grpc.health.v1.Health/") for p, _, _ in methods)
            for path, client_streaming, server_streaming in methods:
                for payload in _payloads(seed * 1000 + len(path)):
                    code = _call(channel, path, client_streaming, server_streaming, payload)
                    seen[code] = seen.get(code, 0) + 1
                    calls += 1
    assert seen.get(grpc.StatusCode.INVALID_ARGUMENT, 0) > calls // 2, seen
    assert _stored(database) == before
    admin_cert, admin_key = roles["admin"]
    with _channel(broker, pki, admin_cert, admin_key) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]  # stub lacks methods
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert status.status == health_pb2.HealthCheckResponse.SERVING


def test_request_that_does_not_parse_is_invalid_argument_audited_with_the_caller(
    broker: RunningBroker,
    pki: DevPki,
    database: Database,
    roles: dict[str, tuple[Path, Path]],
) -> None:
    """Bytes that are not a SendRequest: INVALID_ARGUMENT naming the message type, audited with the caller."""
    cert, key = roles["agency"]
    with _channel(broker, pki, cert, key) as channel, pytest.raises(grpc.RpcError) as refused:
        channel.unary_unary("/isb.v1.BrokerService/Send", _raw, _raw)(b"\x0a\x05ab", timeout=5)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "request does not parse as isb.v1.SendRequest" in str(refused.value.details())
    entry = database.rows("SELECT actor, entry FROM audit_entries WHERE event = 'request.rejected'")
    assert [row[0] for row in entry] == ["spiffe://isb.dev/agency/FR-CUSTOMS"]
    assert b'"rpc":"Send"' in bytes(entry[0][1])


def test_send_stream_with_a_corrupt_batch_ends_with_an_error_not_ok(
    broker: RunningBroker,
    pki: DevPki,
    database: Database,
    roles: dict[str, tuple[Path, Path]],
) -> None:
    """A SendStream whose second batch does not parse ends with INVALID_ARGUMENT (it used to end with OK)."""
    cert, key = roles["agency"]
    with _channel(broker, pki, cert, key) as channel, pytest.raises(grpc.RpcError) as refused:
        list(channel.stream_stream("/isb.v1.BrokerService/SendStream", _raw, _raw)(iter([b"", b"\x0f"]), timeout=5))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "request does not parse as isb.v1.SendBatch" in str(refused.value.details())
    assert database.scalar("SELECT count(*) FROM messages") == 0
    entry = database.rows("SELECT entry FROM audit_entries WHERE event = 'request.rejected'")
    assert len(entry) == 1
    assert b'"rpc":"SendStream"' in bytes(entry[0][0])
