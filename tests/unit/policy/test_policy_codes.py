"""Kinds and handling codes: the policy's names agree with the protobuf enums."""

from __future__ import annotations

import pytest

from broker.api.v1 import envelope_pb2
from broker.errors import InvalidRequest
from broker.policy import KINDS, TLP_CODES, kind_from_proto, tlp_code, tlp_from_proto


def test_kinds_follow_the_kind_enum() -> None:
    """Every isb.v1.Kind value except UNSPECIFIED maps to the kind of the same name."""
    for value in envelope_pb2.Kind.values():
        if value == envelope_pb2.KIND_UNSPECIFIED:
            continue
        assert kind_from_proto(value) == envelope_pb2.Kind.Name(value)
    assert len(KINDS) == len(envelope_pb2.Kind.values()) - 1


def test_tlp_codes_follow_the_tlp_enum() -> None:
    """Every isb.v1.Tlp value except UNSPECIFIED maps to its TLP 2.0 code."""
    for value in envelope_pb2.Tlp.values():
        if value == envelope_pb2.TLP_UNSPECIFIED:
            continue
        assert tlp_code(envelope_pb2.Tlp.Name(value)) == tlp_from_proto(value)
    assert tlp_from_proto(envelope_pb2.TLP_AMBER_STRICT) == "AMBER+STRICT"
    assert len(TLP_CODES) == len(envelope_pb2.Tlp.values()) - 1


@pytest.mark.parametrize("value", [envelope_pb2.TLP_UNSPECIFIED, 99])
def test_unspecified_tlp_enum_is_invalid(value: int) -> None:
    """An unset or unknown handling code on the wire is a malformed request."""
    with pytest.raises(InvalidRequest):
        tlp_from_proto(value)


def test_unspecified_kind_enum_is_invalid() -> None:
    """An unset kind on the wire is a malformed request."""
    with pytest.raises(InvalidRequest):
        kind_from_proto(envelope_pb2.KIND_UNSPECIFIED)


def test_tlp_1_white_means_clear() -> None:
    """TLP 1.0's WHITE, still common in agency tooling, is read as CLEAR in requests."""
    assert tlp_code("TLP:WHITE") == "CLEAR"
