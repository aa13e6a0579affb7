"""`isb audit verify`: exit statuses, messages, key formats and the progress bar."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import create_engine
from sqlmodel import SQLModel

from broker.audit import AUDIT_TABLES, AuditEvent, AuditLog, AuditRecord, CheckpointSigner
from clients.audit import ExportWriter
from clients.cli import audit_cmd, main

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def run(argv: list[str]) -> int:
    return main(argv)


@pytest.fixture(scope="module")
def signer() -> CheckpointSigner:
    return CheckpointSigner(Ed25519PrivateKey.generate(), "isb.test/audit")


@pytest.fixture
def export(tmp_path: Path, signer: CheckpointSigner) -> Path:
    """An export of 12 entries with one checkpoint, written from an in-memory database."""
    engine = create_engine("sqlite://")
    SQLModel.metadata.create_all(engine, tables=list(AUDIT_TABLES))
    with engine.begin() as conn:
        log = AuditLog.open(conn)
        log.append(conn, [AuditEvent(event="audit.query", actor="auditor", time=T0) for _ in range(12)])
        log.sign_checkpoint(conn, signer, T0)
        path = tmp_path / "audit.jsonl"
        with path.open("wb") as stream:
            writer = ExportWriter(stream, signer.origin, signer.key_name, signer.vkey)
            for item in log.export(conn):
                if isinstance(item, AuditRecord):
                    writer.entry(item.index, item.entry, item.leaf_hash)
                else:
                    writer.checkpoint(item.note)
    log.commit()
    return path


@pytest.fixture
def vkey_file(tmp_path: Path, signer: CheckpointSigner) -> Path:
    path = tmp_path / "audit.pub"
    path.write_text(signer.vkey + "\n")
    return path


def test_verify_succeeds_with_a_vkey_file(export: Path, vkey_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A good export exits 0 and prints the verified size."""
    assert run(["audit", "verify", str(export), "--key", str(vkey_file)]) == 0
    assert "OK: isb.test/audit: 12 entries, 1 checkpoints verified; tree size 12" in capsys.readouterr().out


def test_verify_accepts_a_pem_public_key(tmp_path: Path, export: Path, signer: CheckpointSigner) -> None:
    """A PEM SubjectPublicKeyInfo key file works as well as a vkey."""
    pem = tmp_path / "audit.pem"
    pem.write_bytes(signer.public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    assert run(["audit", "verify", str(export), "--key", str(pem), "--quiet"]) == 0


def test_verify_of_a_tampered_export_exits_1_naming_the_entry(
    export: Path, vkey_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A deleted entry makes the command fail and say which."""
    lines = export.read_text().splitlines(keepends=True)
    del lines[6]  # entry 5
    export.write_text("".join(lines))
    assert run(["audit", "verify", str(export), "--key", str(vkey_file)]) == 1
    assert "FAILED: entry 5 is missing" in capsys.readouterr().err


def test_non_ascii_byte_in_a_checkpoint_signature_line_fails_in_one_line(
    export: Path, vkey_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint whose signature line holds a non-ASCII byte is a verification failure, not a traceback."""
    lines = export.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if '"checkpoint"' in line)
    note = base64.b64decode(json.loads(lines[at])["note"]).decode()
    tampered = (note[:-3] + "\u00e9" + note[-2:]).encode()
    lines[at] = json.dumps({"type": "checkpoint", "note": base64.b64encode(tampered).decode()}) + "\n"
    export.write_text("".join(lines))
    assert run(["audit", "verify", str(export), "--key", str(vkey_file)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("isb: error: FAILED: ")
    assert "not base64" in err


def test_unreadable_inputs_exit_2(tmp_path: Path, export: Path, vkey_file: Path) -> None:
    """A missing export, missing key or garbage key is trouble, not a verdict."""
    assert run(["audit", "verify", str(tmp_path / "nope.jsonl"), "--key", str(vkey_file)]) == 2
    assert run(["audit", "verify", str(export), "--key", str(tmp_path / "nope.pub")]) == 2
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    assert run(["audit", "verify", str(export), "--key", str(garbage)]) == 2


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_on_a_terminal_only() -> None:
    """The bar draws on a tty, ends with a newline at 100%, and stays silent otherwise."""
    tty, pipe = _Tty(), io.StringIO()
    for stream in (tty, pipe):
        bar = audit_cmd.ProgressBar(stream, "verifying", width=10)
        bar(50, 100)
        bar(100, 100)
    assert tty.getvalue().endswith("[##########] 100.0%\n")
    assert pipe.getvalue() == ""


def _fabricated_entry(index: int) -> str:
    entry = AuditEvent(event="audit.query", actor="auditor", time=T0).to_entry_bytes(index)
    line = {
        "type": "entry",
        "index": index,
        "entry": base64.b64encode(entry).decode(),
        "leaf_hash": hashlib.sha256(b"\x00" + entry).hexdigest(),
    }
    return json.dumps(line) + "\n"


def test_fabricated_unsigned_entry_appended_to_an_export_fails_with_the_count(
    export: Path, vkey_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An entry appended after the last checkpoint (well formed, right index and leaf hash) is exit 1, one line."""
    with export.open("a") as stream:
        stream.write(_fabricated_entry(12))
    assert run(["audit", "verify", str(export), "--key", str(vkey_file)]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("isb: error: FAILED: 1 entries after the last checkpoint")
    assert "--allow-unsigned-tail" in captured.err
    assert "OK" not in captured.out


def test_allow_unsigned_tail_accepts_and_reports_trailing_entries(
    export: Path, vkey_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --allow-unsigned-tail the same export is OK, and the output says what was not verified."""
    with export.open("a") as stream:
        stream.write(_fabricated_entry(12))
    assert run(["audit", "verify", str(export), "--key", str(vkey_file), "--allow-unsigned-tail"]) == 0
    out = capsys.readouterr().out
    assert "OK:" in out
    assert "1 entries after the last checkpoint are covered by no signature" in out


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff\xfe not utf-8\n",
        b"[" * 100_000 + b"\n",
        b"1" * 5000 + b"\n",
        b'{"type": "entry", "index": 0, "entry": "\xc3\xa9", "leaf_hash": "00"}\n',
    ],
)
def test_garbage_lines_fail_in_one_line_never_a_traceback(
    export: Path, vkey_file: Path, capsys: pytest.CaptureFixture[str], garbage: bytes
) -> None:
    """Invalid UTF-8, deep nesting, an over-long integer, a non-ASCII base64: one FAILED line, exit 1."""
    with export.open("ab") as stream:
        stream.write(garbage)
    assert run(["audit", "verify", str(export), "--key", str(vkey_file)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("isb: error: FAILED: ")
    assert "Traceback" not in err
    assert err.count("\n") == 1


def test_unreadable_key_is_a_failed_line_with_exit_2(
    tmp_path: Path, export: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Trouble reading the inputs is also one FAILED line (exit 2: no verdict on the log)."""
    assert run(["audit", "verify", str(export), "--key", str(tmp_path / "nope.pub")]) == 2
    assert capsys.readouterr().err.startswith("isb: error: FAILED: cannot read the key")
