"""Properties of the audit export parser and verifier: whatever the file holds, the answer is a
report or a `VerificationError`, never another exception (so `isb audit verify` never shows a
traceback), and nothing appended to a valid export goes unnoticed."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine
from sqlmodel import SQLModel

from broker.audit import AUDIT_TABLES, AuditEvent, AuditLog, AuditRecord, CheckpointSigner
from broker.protocol.errors import VerificationError
from clients.audit import ExportWriter, verify_export
from clients.audit.exportfile import read_export

T0 = datetime(2026, 5, 1, tzinfo=UTC)
SIGNER = CheckpointSigner(Ed25519PrivateKey.generate(), "isb.test/audit")
PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)


def _valid_export() -> bytes:
    engine = create_engine("sqlite://")
    SQLModel.metadata.create_all(engine, tables=list(AUDIT_TABLES))
    stream = io.BytesIO()
    with engine.begin() as conn:
        log = AuditLog.open(conn)
        log.append(conn, [AuditEvent(event="audit.query", actor="auditor", time=T0) for _ in range(5)])
        log.sign_checkpoint(conn, SIGNER, T0)
        writer = ExportWriter(stream, SIGNER.origin, SIGNER.key_name, SIGNER.vkey)
        for item in log.export(conn):
            if isinstance(item, AuditRecord):
                writer.entry(item.index, item.entry, item.leaf_hash)
            else:
                writer.checkpoint(item.note)
    engine.dispose()
    return stream.getvalue()


VALID = _valid_export()
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
# Lines that look like export lines: the right types with arbitrary members.
LINE_OBJECTS = st.fixed_dictionaries(
    {"type": st.sampled_from(["header", "entry", "checkpoint", "other"])},
    optional={
        "format": st.sampled_from(["isb-audit-export/1", "isb-audit-export/2", "x"]) | JSON_VALUES,
        "index": st.integers(min_value=-2, max_value=10) | JSON_VALUES,
        "entry": st.binary(max_size=30).map(lambda b: base64.b64encode(b).decode()) | JSON_VALUES,
        "leaf_hash": st.binary(min_size=32, max_size=32).map(bytes.hex) | JSON_VALUES,
        "note": st.binary(max_size=30).map(lambda b: base64.b64encode(b).decode()) | JSON_VALUES,
        "origin": JSON_VALUES,
        "key_name": JSON_VALUES,
        "vkey": JSON_VALUES,
    },
)
LINES = st.one_of(LINE_OBJECTS.map(lambda d: json.dumps(d).encode() + b"\n"), st.binary(max_size=60))


def _verify(tmp_path: Path, data: bytes, allow_unsigned_tail: bool = False) -> object:
    path = tmp_path / "export.jsonl"
    path.write_bytes(data)
    try:
        return verify_export(path, SIGNER.vkey, allow_unsigned_tail=allow_unsigned_tail)
    except VerificationError:
        return None


def test_the_valid_export_verifies(tmp_path: Path) -> None:
    """The base of the properties below is a good export."""
    assert _verify(tmp_path, VALID) is not None


@PROPERTY_SETTINGS
@given(st.lists(LINES, max_size=6))
def test_arbitrary_lines_parse_or_raise_verification_error(lines: list[bytes]) -> None:
    """read_export yields records or raises VerificationError, whatever the lines."""
    try:
        for _ in read_export(io.BytesIO(b"".join(lines))):
            pass
    except VerificationError:
        pass


@PROPERTY_SETTINGS
@given(st.lists(LINES, min_size=1, max_size=4).filter(lambda lines: b"".join(lines) != b""))
def test_anything_appended_to_a_valid_export_is_refused(tmp_path: Path, lines: list[bytes]) -> None:
    """Appended bytes (entries, checkpoints, headers, garbage) never pass; never another exception."""
    assert _verify(tmp_path, VALID + b"".join(lines)) is None


@PROPERTY_SETTINGS
@given(st.lists(LINES, max_size=4), st.lists(LINES, max_size=4))
def test_arbitrary_files_are_a_report_or_a_verification_error(
    tmp_path: Path, head: list[bytes], tail: list[bytes]
) -> None:
    """Lines around a valid export's body never raise anything but VerificationError."""
    _verify(tmp_path, b"".join(head) + VALID + b"".join(tail), allow_unsigned_tail=True)


@PROPERTY_SETTINGS
@given(st.integers(min_value=0, max_value=len(VALID) - 1), st.integers(min_value=0, max_value=255))
def test_any_changed_byte_is_refused_or_harmless(tmp_path: Path, position: int, value: int) -> None:
    """A changed byte fails verification, unless it only changes JSON layout the verifier does not read."""
    changed = VALID[:position] + bytes([value]) + VALID[position + 1 :]
    report = _verify(tmp_path, changed)
    if report is not None:
        assert report == _verify(tmp_path, VALID)


@pytest.mark.parametrize("lines", [[b""], [b"\n"], [b"{}\n"]])
def test_empty_and_trivial_files_are_refused(tmp_path: Path, lines: list[bytes]) -> None:
    """An empty file, an empty line or an empty object is a VerificationError."""
    assert _verify(tmp_path, b"".join(lines)) is None
