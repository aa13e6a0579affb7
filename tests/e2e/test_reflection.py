"""Server reflection over mutual TLS, in both protocol versions: grpc.reflection.v1 and v1alpha."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from broker.pki.dev import DevPki
from tests.e2e.broker_support import RunningBroker

VERSIONS = ["grpc.reflection.v1", "grpc.reflection.v1alpha"]


def _ask(broker: RunningBroker, pki: DevPki, version: str, **request: Any) -> reflection_pb2.ServerReflectionResponse:
    cert, key = pki.agency("FR-CUSTOMS")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca_cert.read_bytes(), private_key=key.read_bytes(), certificate_chain=cert.read_bytes()
    )
    with grpc.secure_channel(broker.target, credentials) as channel:
        # v1 and v1alpha messages are identical on the wire; only the method path differs.
        call = channel.stream_stream(
            f"/{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        [answer] = list(call(iter([reflection_pb2.ServerReflectionRequest(**request)]), timeout=10))
    return answer


@pytest.mark.parametrize("version", VERSIONS)
def test_reflection_lists_every_service_in_both_versions(broker: RunningBroker, pki: DevPki, version: str) -> None:
    """list_services answers on v1 and v1alpha with the ISB services and both reflection services."""
    answer = _ask(broker, pki, version, list_services="")
    names = {s.name for s in answer.list_services_response.service}
    assert {
        "isb.v1.BrokerService",
        "isb.v1.AuditService",
        "isb.v1.AdminService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names


@pytest.mark.parametrize("version", VERSIONS)
def test_reflection_describes_the_broker_service(broker: RunningBroker, pki: DevPki, version: str) -> None:
    """file_containing_symbol returns broker.proto with GetRevocationList, on both versions."""
    answer = _ask(broker, pki, version, file_containing_symbol="isb.v1.BrokerService")
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in answer.file_descriptor_response.file_descriptor_proto
    ]
    [broker_file] = [f for f in files if f.name == "broker/api/v1/broker.proto"]
    methods = {m.name for s in broker_file.service for m in s.method}
    assert {"Send", "GetDirectory", "GetRevocationList"} <= methods


def test_reflection_v1_describes_itself(broker: RunningBroker, pki: DevPki) -> None:
    """The v1 reflection service has a descriptor of its own package, not v1alpha's."""
    answer = _ask(broker, pki, "grpc.reflection.v1", file_containing_symbol="grpc.reflection.v1.ServerReflection")
    [file] = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in answer.file_descriptor_response.file_descriptor_proto
    ]
    assert (file.name, file.package) == ("grpc/reflection/v1/reflection.proto", "grpc.reflection.v1")
    [method] = file.service[0].method
    assert method.input_type == ".grpc.reflection.v1.ServerReflectionRequest"
