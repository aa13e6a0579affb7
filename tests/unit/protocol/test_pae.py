"""The pre-authentication encoding and the protocol inputs built with it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.api.v1 import envelope_pb2
from broker.protocol import _pae


def test_pae_matches_the_documented_layout() -> None:
    """PAE is prefix, length and type, then space, length, space and bytes for each field."""
    assert _pae.pae("isb.v1.header", b"abc", b"") == b"ISBv1 13 isb.v1.header 3 abc 0 "


def test_pae_without_fields_is_prefix_and_type() -> None:
    """A PAE with no fields ends right after the type."""
    assert _pae.pae("t") == b"ISBv1 1 t"


def test_pae_type_strings_are_distinct() -> None:
    """Each protocol purpose has its own type string."""
    types = [
        _pae.HEADER,
        _pae.CONTENT,
        _pae.CONTENT_AAD,
        _pae.KEY_WRAP,
        _pae.WRAPPED_KEY,
        _pae.KEY_BUNDLE,
        _pae.RECEIPT,
    ]
    assert len(set(types)) == len(types)


@given(st.lists(st.binary(max_size=20), max_size=4), st.lists(st.binary(max_size=20), max_size=4))
def test_pae_is_injective_for_equal_field_counts(a: list[bytes], b: list[bytes]) -> None:
    """Different field lists of one length never encode to the same bytes (no concatenation ambiguity)."""
    if len(a) == len(b) and a != b:
        assert _pae.pae("t", *a) != _pae.pae("t", *b)


@given(st.lists(st.binary(max_size=20), max_size=5), st.lists(st.binary(max_size=20), max_size=5))
def test_encoded_lists_are_injective(a: list[bytes], b: list[bytes]) -> None:
    """Different lists encode differently, whatever bytes the items contain."""
    if a != b:
        assert _pae.encode_list(a) != _pae.encode_list(b)


def test_encode_list_layout() -> None:
    """Each item is length, space, item, space."""
    assert _pae.encode_list([b"DE-BKA", b""]) == b"6 DE-BKA 0  "


def test_recipients_sort_only_when_asked() -> None:
    """The inner signature's recipient set is order-free; the associated data keeps header order."""
    assert _pae.encode_recipients(["NL-FIOD", "DE-BKA"], sort=True) == _pae.encode_list([b"DE-BKA", b"NL-FIOD"])
    assert _pae.encode_recipients(["NL-FIOD", "DE-BKA"], sort=False) == _pae.encode_list([b"NL-FIOD", b"DE-BKA"])


def test_timestamp_encoding_distinguishes_unset() -> None:
    """A set timestamp is seconds.nanoseconds; an unset one is empty, not the epoch."""
    timestamp = envelope_pb2.Header().created
    timestamp.seconds, timestamp.nanos = 1700000000, 5000
    assert _pae.encode_timestamp(timestamp) == b"1700000000.000005000"
    assert _pae.encode_timestamp(timestamp, present=False) == b""


def test_negative_integers_are_refused() -> None:
    """PAE integers are non-negative."""
    with pytest.raises(ValueError, match="non-negative"):
        _pae.encode_int(-1)


def test_key_wrap_info_binds_version_message_and_recipient() -> None:
    """The HPKE info is the key-wrap PAE of version, message id and recipient."""
    assert _pae.key_wrap_info(1, "m", "DE-BKA") == b"ISBv1 15 isb.v1.key-wrap 1 1 1 m 6 DE-BKA"


def test_wrapped_keys_digest_ignores_wire_order() -> None:
    """The wrapped-keys digest sorts by recipient, so the broker may store keys in any order."""
    keys = [envelope_pb2.WrappedKey(recipient=r, key_id="k", enc=b"e") for r in ("NL-FIOD", "DE-BKA")]
    assert _pae.wrapped_keys_sha256(keys) == _pae.wrapped_keys_sha256(reversed(keys))


def test_content_aad_changes_with_every_routing_field() -> None:
    """Changing any non-digest header field changes the associated data."""
    base = envelope_pb2.Header(
        version=1, message_id="m", sender="FR-CUSTOMS", recipients=["DE-BKA"], kind=envelope_pb2.ALERT
    )
    base.created.seconds = 1
    changes = {
        "version": 2,
        "message_id": "n",
        "sender": "ES-AEAT",
        "sender_cert_sha256": b"x",
        "kind": 2,
        "priority": 3,
        "in_reply_to": "r",
        "watchlist_id": "w",
        "watchlist_version": 1,
        "references": "o",
    }
    for name, value in changes.items():
        header = envelope_pb2.Header()
        header.CopyFrom(base)
        setattr(header, name, value)
        assert _pae.content_aad(header) != _pae.content_aad(base), name
    for mutate in (
        lambda h: h.recipients.append("NL-FIOD"),
        lambda h: setattr(h.handling, "tlp", 5),
        lambda h: setattr(h.handling, "classification", "SECRET"),
        lambda h: setattr(h.created, "nanos", 1),
        lambda h: setattr(h.expires, "seconds", 0),  # setting the field at all
    ):
        header = envelope_pb2.Header()
        header.CopyFrom(base)
        mutate(header)
        assert _pae.content_aad(header) != _pae.content_aad(base)
