"""`isb audit verify`: exit statuses, messages, key formats and the progress bar."""

from __future__ import annotations

import base64
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
