"""tlog-cosignature/v1 (Ed25519) and tlog-policy: known answers, refusals and parser properties."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.protocol import _cosignature, _note
from broker.protocol.errors import ProtocolError, VerificationError
from broker.protocol.witness_policy import parse_policy, verify_checkpoint_against_policy

ORIGIN = "isb.test/audit"
LOG_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
WITNESS_KEYS = [Ed25519PrivateKey.from_private_bytes(bytes([i]) * 32) for i in (1, 2, 3)]
WITNESS_NAMES = ["witness.customs.test/w1", "witness.police.test/w2", "witness.border.test/w3"]
ROOT = hashlib.sha256(b"root").digest()
NOTE = _note.sign_checkpoint(ORIGIN, 42, ROOT, ORIGIN, LOG_KEY, extensions=("timestamp 1700000000",))
TEXT = _note.checkpoint_text(ORIGIN, 42, ROOT, ("timestamp 1700000000",))
PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _vkeys() -> list[str]:
    pairs = zip(WITNESS_NAMES, WITNESS_KEYS, strict=True)
    return [_cosignature.encode_cosigner_vkey(n, k.public_key()) for n, k in pairs]


def _policy(k: str = "2") -> bytes:
    lines = [f"log {_note.encode_vkey(ORIGIN, LOG_KEY.public_key())}"]
    lines += [f"witness w{i + 1} {vkey}" for i, vkey in enumerate(_vkeys())]
    lines += [f"group agencies {k} w1 w2 w3", "quorum agencies"]
    return ("\n".join(lines) + "\n").encode()


def _cosigned(*indices: int, note: bytes = NOTE, text: str = TEXT) -> bytes:
    lines = [_cosignature.cosign(text, WITNESS_NAMES[i], WITNESS_KEYS[i], 1700000100 + i) for i in indices]
    return _cosignature.attach(note, lines)


def test_key_id_is_sha256_of_name_newline_0x04_key() -> None:
    public = WITNESS_KEYS[0].public_key()
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    expected = hashlib.sha256(WITNESS_NAMES[0].encode() + b"\n\x04" + raw).digest()[:4]
    assert _cosignature.cosigner_key_id(WITNESS_NAMES[0], public) == expected
    vkey = _cosignature.encode_cosigner_vkey(WITNESS_NAMES[0], public)
    material = base64.b64encode(b"\x04" + raw).decode()
    assert vkey == f"{WITNESS_NAMES[0]}+{expected.hex()}+{material}"
    assert _cosignature.parse_cosigner_vkey(vkey).raw_public_key == raw


def test_signed_message_and_line_layout() -> None:
    assert _cosignature.signed_message(TEXT, 1679315147) == f"cosignature/v1\ntime 1679315147\n{TEXT}".encode()
    line = _cosignature.cosign(TEXT, WITNESS_NAMES[0], WITNESS_KEYS[0], 1679315147)
    assert line.startswith(f"\u2014 {WITNESS_NAMES[0]} ")
    assert line.endswith("\n")
    blob = base64.b64decode(line.split(" ")[2])
    assert len(blob) == 76
    assert struct.unpack(">Q", blob[4:12]) == (1679315147,)
    WITNESS_KEYS[0].public_key().verify(blob[12:], _cosignature.signed_message(TEXT, 1679315147))


def test_note_key_vkey_is_not_a_cosigner_vkey() -> None:
    with pytest.raises(ProtocolError, match="type 0x04"):
        _cosignature.parse_cosigner_vkey(_note.encode_vkey(WITNESS_NAMES[0], WITNESS_KEYS[0].public_key()))


def test_policy_accepts_two_of_three() -> None:
    verdict = verify_checkpoint_against_policy(_cosigned(0, 2), parse_policy(_policy()))
    assert verdict.checkpoint.size == 42
    assert set(verdict.cosigned) == {"w1", "w3"}
    assert verdict.cosigned["w3"] == 1700000102
    # The log's own signature still verifies alongside the cosignatures.
    assert _note.verify_checkpoint(_cosigned(0, 1, 2), ORIGIN, LOG_KEY.public_key()).size == 42


def test_policy_refuses_one_of_three() -> None:
    with pytest.raises(VerificationError, match=r"lacks the witness quorum.*2 of w1, w2, w3.*from: w2"):
        verify_checkpoint_against_policy(_cosigned(1), parse_policy(_policy()))


def test_cosignature_on_another_checkpoint_does_not_count() -> None:
    other_text = _note.checkpoint_text(ORIGIN, 43, ROOT, ("timestamp 1700000000",))
    line = _cosignature.cosign(other_text, WITNESS_NAMES[1], WITNESS_KEYS[1], 1)
    with pytest.raises(VerificationError, match=r"cosignature of 'witness\.police\.test/w2' does not verify"):
        verify_checkpoint_against_policy(_cosignature.attach(_cosigned(0), [line]), parse_policy(_policy()))


def test_unknown_cosigners_are_ignored() -> None:
    stranger = Ed25519PrivateKey.generate()
    line = _cosignature.cosign(TEXT, "stranger.test/w", stranger, 5)
    verdict = verify_checkpoint_against_policy(_cosignature.attach(_cosigned(0, 1), [line]), parse_policy(_policy()))
    assert set(verdict.cosigned) == {"w1", "w2"}


def test_policy_refuses_a_log_it_does_not_list() -> None:
    rogue = Ed25519PrivateKey.generate()
    note = _note.sign_checkpoint(ORIGIN, 42, ROOT, ORIGIN, rogue, extensions=("timestamp 1700000000",))
    with pytest.raises(VerificationError, match="not signed by a log of the witness policy"):
        verify_checkpoint_against_policy(_cosigned(0, 1, 2, note=note), parse_policy(_policy()))
    with pytest.raises(VerificationError, match="trusts no log 'other/audit'"):
        verify_checkpoint_against_policy(_cosigned(0, 1), parse_policy(_policy()), origin="other/audit")


def test_quorum_none_and_nested_groups() -> None:
    vkeys = _vkeys()
    log_line = f"log {_note.encode_vkey(ORIGIN, LOG_KEY.public_key())} https://log.test/"
    assert verify_checkpoint_against_policy(NOTE, parse_policy(f"{log_line}\nquorum none\n".encode())).cosigned == {}
    nested = (
        f"# two levels\n{log_line}\n\twitness A {vkeys[0]}  https://a.test/\nwitness B {vkeys[1]}\n"
        f"witness C {vkeys[2]}\ngroup AB any A B\ngroup all-of all AB C\nquorum all-of\n"
    ).encode()
    policy = parse_policy(nested)
    assert policy.witnesses["A"].url == "https://a.test/"
    assert policy.groups["all-of"].threshold == 2
    verify_checkpoint_against_policy(_cosigned(1, 2), policy)
    with pytest.raises(VerificationError):
        verify_checkpoint_against_policy(_cosigned(0, 1), policy)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no quorum line"),
        ("quorum x\n", "not defined above"),
        ("quorum none\nquorum none\n", "second quorum"),
        ("witness none {v0}\nquorum none\n", "reserved"),
        ("witness a {v0}\nwitness a {v1}\nquorum a\n", "already defined"),
        ("witness a {v0}\nwitness b {v0}\nquorum a\n", "duplicate key"),
        ("witness a {v0}\ngroup g 2 a\nquorum g\n", "threshold '2'"),
        ("witness a {v0}\ngroup g 0 a\nquorum g\n", "threshold '0'"),
        ("witness a {v0}\ngroup g any a a\nquorum g\n", "more than once"),
        ("group g any a\nwitness a {v0}\nquorum g\n", "not defined above"),
        ("witness a {log}\nquorum a\n", "type 0x04"),
        ("log {v0}\nquorum none\n", "not an Ed25519"),
        ("frobnicate\nquorum none\n", "unknown keyword"),
        ("quorum none\x0d\n", "forbidden octet 0x0d"),
    ],
)
def test_policy_refusals(text: str, message: str) -> None:
    vkeys = _vkeys()
    data = text.format(v0=vkeys[0], v1=vkeys[1], log=_note.encode_vkey("a", LOG_KEY.public_key())).encode()
    with pytest.raises(ProtocolError, match=message):
        parse_policy(data)


# --- properties ------------------------------------------------------------------------------------

_POLICY_PIECES = st.sampled_from(
    [
        b"log ",
        b"witness ",
        b"group ",
        b"quorum ",
        b"none",
        b"any",
        b"all",
        b"2",
        b" ",
        b"\t",
        b"\n",
        b"#",
        b"w1",
        b"g",
        b"\xff",
        _vkeys()[0].encode(),
        _note.encode_vkey(ORIGIN, LOG_KEY.public_key()).encode(),
    ]
)


@PROPERTY_SETTINGS
@given(st.one_of(st.binary(max_size=400), st.lists(_POLICY_PIECES, max_size=25).map(b"".join)))
def test_policy_parser_raises_only_protocol_error(data: bytes) -> None:
    """Whatever the bytes, the parser answers a Policy or a ProtocolError."""
    try:
        policy = parse_policy(data)
    except ProtocolError:
        return
    assert policy.quorum == "none" or policy.quorum in policy.witnesses or policy.quorum in policy.groups


@PROPERTY_SETTINGS
@given(st.integers(1, 3), st.permutations([0, 1, 2]), st.sets(st.integers(0, 2)), st.sampled_from([" ", "\t", " \t "]))
def test_k_of_n_holds_exactly(k: int, order: list[int], signers: set[int], sep: str) -> None:
    """A k-of-3 policy (in any member order and spacing) accepts exactly when k witnesses cosigned."""
    vkeys = _vkeys()
    lines = [f"log{sep}{_note.encode_vkey(ORIGIN, LOG_KEY.public_key())}"]
    lines += [f"witness{sep}w{i}{sep}{vkeys[i]}" for i in order]
    lines += [f"group{sep}g{sep}{k}{sep}" + sep.join(f"w{i}" for i in order), "quorum g"]
    policy = parse_policy("\n".join(lines).encode())
    note = _cosigned(*sorted(signers))
    try:
        verify_checkpoint_against_policy(note, policy)
    except VerificationError:
        assert len(signers) < k
    else:
        assert len(signers) >= k


_LINE_PIECES = st.sampled_from(["\u2014 ", WITNESS_NAMES[0], " ", "\n", "AAAA", "+", "=", "\u00e9", "\x00"])


@PROPERTY_SETTINGS
@given(st.one_of(st.binary(max_size=300), st.lists(_LINE_PIECES, max_size=20).map(lambda p: "".join(p).encode())))
def test_cosignature_parsers_raise_only_verification_error(data: bytes) -> None:
    """A witness response body or a note with extra lines parses or raises VerificationError."""
    cosigner = _cosignature.parse_cosigner_vkey(_vkeys()[0])
    for attempt in (
        lambda: _cosignature.parse_signature_lines(data),
        lambda: _cosignature.verify_cosignatures(NOTE + data, [cosigner]),
    ):
        with contextlib.suppress(VerificationError):
            attempt()


@PROPERTY_SETTINGS
@given(st.integers(0, 2), st.integers(0, _cosignature.MAX_TIMESTAMP), st.integers(0, 75), st.integers(1, 255))
def test_a_flipped_cosignature_bit_never_verifies(i: int, timestamp: int, position: int, flip: int) -> None:
    """Any change to a cosignature's blob (key id, timestamp, signature) stops it counting."""
    line = _cosignature.cosign(TEXT, WITNESS_NAMES[i], WITNESS_KEYS[i], timestamp)
    blob = bytearray(base64.b64decode(line.split(" ")[2]))
    cosigner = _cosignature.parse_cosigner_vkey(_vkeys()[i])
    assert _cosignature.verify_cosignature(TEXT, cosigner, bytes(blob)) == timestamp
    blob[position] ^= flip
    with pytest.raises(VerificationError):
        _cosignature.verify_cosignature(TEXT, cosigner, bytes(blob))
