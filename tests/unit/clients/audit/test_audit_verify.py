"""Offline verification of audit exports: a good export passes, every kind of tampering is named."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, create_engine, delete, update
from sqlmodel import SQLModel

from broker.audit import AUDIT_TABLES, AuditEvent, AuditLog, AuditRecord, CheckpointSigner
from broker.audit.tables import entries_table
from broker.errors import VerificationError
from broker.protocol import _merkle, _note
from clients.audit import ExportWriter, verify_export
from clients.audit.verify import UnsignedTail

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
ORIGIN = "isb.test/audit"
CHECKPOINTS = (10, 20, 35, 50)


def event(i: int) -> AuditEvent:
    return AuditEvent(
        event="delivery.delivered",
        actor="spiffe://isb.test/broker/node-1",
        time=T0 + timedelta(seconds=i),
        message_id=f"msg-{i}",
        agency="DE-BKA",
        fields={"recipient": "DE-BKA", "digest": f"{i:064x}"},
    )


@dataclass
class Setup:
    engine: Engine
    log: AuditLog
    signer: CheckpointSigner
    path: Path

    def export(self) -> Path:
        """Write the database's export to `path`, as `isb audit export` would."""
        with self.path.open("wb") as stream, self.engine.connect() as conn:
            writer = ExportWriter(stream, self.signer.origin, self.signer.key_name, self.signer.vkey)
            for item in self.log.export(conn):
                if isinstance(item, AuditRecord):
                    writer.entry(item.index, item.entry, item.leaf_hash)
                else:
                    writer.checkpoint(item.note)
        return self.path

    def lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.path.read_text().splitlines()]

    def write(self, lines: list[dict[str, object]]) -> None:
        self.path.write_text("".join(json.dumps(line) + "\n" for line in lines))

    def line_of_entry(self, lines: list[dict[str, object]], index: int) -> int:
        return next(i for i, line in enumerate(lines) if line["type"] == "entry" and line["index"] == index)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CheckpointSigner]:
    """A database of 50 entries with checkpoints at sizes 10, 20, 35 and 50, built once."""
    path = tmp_path_factory.mktemp("audit") / "audit.db"
    engine = create_engine(f"sqlite:///{path}")
    SQLModel.metadata.create_all(engine, tables=list(AUDIT_TABLES))
    signer = CheckpointSigner(Ed25519PrivateKey.generate(), ORIGIN)
    with engine.connect() as conn:
        log = AuditLog.open(conn)
    done = 0
    for size in CHECKPOINTS:
        with engine.begin() as conn:
            log.append(conn, [event(i) for i in range(done, size)])
            log.sign_checkpoint(conn, signer, T0)
        log.commit()
        done = size
    engine.dispose()
    return path, signer


@pytest.fixture
def setup(pristine: tuple[Path, CheckpointSigner], tmp_path: Path) -> Iterator[Setup]:
    """A private copy of the pristine database, and its export."""
    database = tmp_path / "audit.db"
    shutil.copyfile(pristine[0], database)
    engine = create_engine(f"sqlite:///{database}")
    with engine.connect() as conn:
        log = AuditLog.open(conn)
    result = Setup(engine, log, pristine[1], tmp_path / "audit.jsonl")
    result.export()
    yield result
    engine.dispose()


def entry_line(index: int, content: dict[str, object] | None = None) -> dict[str, object]:
    """A well-formed entry line whose leaf hash matches its content."""
    entry = event(index).to_entry_bytes(index) if content is None else json.dumps(content).encode()
    return {
        "type": "entry",
        "index": index,
        "entry": base64.b64encode(entry).decode(),
        "leaf_hash": _merkle.leaf_hash(entry).hex(),
    }


# -- a good export --------------------------------------------------------------------------------


def test_untampered_export_verifies(setup: Setup) -> None:
    """Every checkpoint verifies and the report says what was proven."""
    report = verify_export(setup.path, setup.signer.vkey)
    assert (report.entries, report.checkpoints, report.tree_size, report.unverified_entries) == (50, 4, 50, 0)
    assert report.root_hash == setup.log.root()


def test_export_verifies_with_a_bare_public_key(setup: Setup) -> None:
    """A PEM-loaded public key works too, with the key name taken from the header."""
    assert verify_export(setup.path, setup.signer.public_key).checkpoints == 4


def test_progress_is_reported_to_completion(setup: Setup) -> None:
    """The progress callback ends at (total, total)."""
    calls: list[tuple[int, int]] = []
    verify_export(setup.path, setup.signer.vkey, lambda done, total: calls.append((done, total)))
    assert calls[-1] == (setup.path.stat().st_size, setup.path.stat().st_size)


def test_entries_after_the_last_checkpoint_are_counted_as_unverified(setup: Setup) -> None:
    """With allow_unsigned_tail, trailing entries do not fail verification but are reported as not covered."""
    lines = setup.lines()
    lines += [entry_line(50), entry_line(51)]
    setup.write(lines)
    assert verify_export(setup.path, setup.signer.vkey, allow_unsigned_tail=True).unverified_entries == 2


def test_entries_after_the_last_checkpoint_fail_by_default_with_their_count(setup: Setup) -> None:
    """A fabricated, well-formed entry appended after the last checkpoint is refused, counted and located."""
    setup.write([*setup.lines(), entry_line(50)])
    with pytest.raises(UnsignedTail, match=r"1 entries after the last checkpoint \(entries 50\.\.50\)"):
        verify_export(setup.path, setup.signer.vkey)


def test_export_of_another_format_version_is_refused_by_name(setup: Setup) -> None:
    """A header of format version 2 is refused as unsupported, not misread as version 1."""
    lines = setup.lines()
    lines[0]["format"] = "isb-audit-export/2"
    setup.write(lines)
    with pytest.raises(VerificationError, match="export format version 2 is not supported"):
        verify_export(setup.path, setup.signer.vkey)


@pytest.mark.parametrize("value", ["isb-audit-export", "isb-audit-export/01", "other/1", 1, None])
def test_export_header_without_a_format_version_is_refused(setup: Setup, value: object) -> None:
    """The header's format must be isb-audit-export/<version>."""
    lines = setup.lines()
    lines[0]["format"] = value
    setup.write(lines)
    with pytest.raises(VerificationError, match="is not isb-audit-export/<version>"):
        verify_export(setup.path, setup.signer.vkey)


# -- tampering with an export ---------------------------------------------------------------------


def test_changed_entry_is_named(setup: Setup) -> None:
    """Changing an entry's content (keeping its stored leaf hash) names that entry."""
    lines = setup.lines()
    position = setup.line_of_entry(lines, 23)
    entry = base64.b64decode(str(lines[position]["entry"])).replace(b"DE-BKA", b"FR-DGDDI")
    lines[position]["entry"] = base64.b64encode(entry).decode()
    setup.write(lines)
    with pytest.raises(VerificationError, match=r"^entry 23 \(line \d+\) was changed"):
        verify_export(setup.path, setup.signer.vkey)


def test_changed_entry_with_rewritten_leaf_hash_fails_at_its_checkpoint(setup: Setup) -> None:
    """A consistent rewrite of entry and leaf hash is caught by the next checkpoint, window named."""
    lines = setup.lines()
    position = setup.line_of_entry(lines, 23)
    content = json.loads(base64.b64decode(str(lines[position]["entry"])))
    content["agency"] = "FR-DGDDI"
    lines[position] = entry_line(23, content)
    setup.write(lines)
    with pytest.raises(VerificationError, match=r"size 35 .*entries 20\.\.34 .*entry 20"):
        verify_export(setup.path, setup.signer.vkey)


def test_deleted_entry_is_named(setup: Setup) -> None:
    """Deleting an entry names it as missing."""
    lines = setup.lines()
    del lines[setup.line_of_entry(lines, 23)]
    setup.write(lines)
    with pytest.raises(VerificationError, match=r"^entry 23 is missing"):
        verify_export(setup.path, setup.signer.vkey)


def test_deleted_entry_just_before_a_checkpoint_is_named(setup: Setup) -> None:
    """Deleting the last entry a checkpoint covers names it."""
    lines = setup.lines()
    del lines[setup.line_of_entry(lines, 49)]
    setup.write(lines)
    with pytest.raises(VerificationError, match=r"^entry 49 is missing: the checkpoint of size 50"):
        verify_export(setup.path, setup.signer.vkey)


def test_reordered_entries_are_named(setup: Setup) -> None:
    """Swapping two entry lines names the first position out of order."""
    lines = setup.lines()
    a, b = setup.line_of_entry(lines, 23), setup.line_of_entry(lines, 24)
    lines[a], lines[b] = lines[b], lines[a]
    setup.write(lines)
    with pytest.raises(VerificationError, match=r"^entry 23 is missing"):
        verify_export(setup.path, setup.signer.vkey)


def test_reordered_entries_with_renumbered_lines_are_named(setup: Setup) -> None:
    """Swapping two entries' contents while keeping the line indices names the first one."""
    lines = setup.lines()
    a, b = setup.line_of_entry(lines, 23), setup.line_of_entry(lines, 24)
    for key in ("entry", "leaf_hash"):
        lines[a][key], lines[b][key] = lines[b][key], lines[a][key]
    setup.write(lines)
    with pytest.raises(VerificationError, match=r"^entry 23 .*holds the content of entry 24"):
        verify_export(setup.path, setup.signer.vkey)


def test_duplicated_entry_is_named(setup: Setup) -> None:
    """Inserting a copy of an entry names the repeated index."""
    lines = setup.lines()
    position = setup.line_of_entry(lines, 23)
    lines.insert(position + 1, dict(lines[position]))
    setup.write(lines)
    with pytest.raises(VerificationError, match=r"^entry 23 appears again at position 24"):
        verify_export(setup.path, setup.signer.vkey)


def test_inserted_forged_entry_is_named(setup: Setup) -> None:
    """Inserting a new entry at 23 and renumbering the lines after it is caught at the next entry."""
    lines = setup.lines()
    position = setup.line_of_entry(lines, 23)
    for line in lines[position:]:
        if line["type"] == "entry":
            line["index"] = int(str(line["index"])) + 1
    lines.insert(position, entry_line(23, json.loads(event(999).to_entry_bytes(23))))
    setup.write(lines)
    with pytest.raises(VerificationError, match=r"^entry 24 .*holds the content of entry 23: an entry was inserted"):
        verify_export(setup.path, setup.signer.vkey)


def test_checkpoint_signed_by_another_key_fails(setup: Setup) -> None:
    """A checkpoint with the right root but another key's signature is refused."""
    lines = setup.lines()
    impostor = CheckpointSigner(Ed25519PrivateKey.generate(), ORIGIN)
    tree = _merkle.MemoryTree()
    for line in lines:
        if line["type"] == "entry":
            tree.append(bytes.fromhex(str(line["leaf_hash"])))
    position = next(i for i, line in enumerate(lines) if line["type"] == "checkpoint")
    lines[position]["note"] = base64.b64encode(impostor.sign(10, tree.root(10), T0)).decode()
    setup.write(lines)
    with pytest.raises(VerificationError, match=r"checkpoint on line 12 is not valid: .*no signature by key"):
        verify_export(setup.path, setup.signer.vkey)


def test_two_inconsistent_checkpoints_fail(setup: Setup) -> None:
    """A later checkpoint signed over a forked history is not consistent with the earlier one."""
    forked = [_merkle.leaf_hash(event(i).to_entry_bytes(i)) for i in range(35)]
    forked[15] = _merkle.leaf_hash(b"a rewritten history")
    lines = setup.lines()
    position = next(
        i
        for i, line in enumerate(lines)
        if line["type"] == "checkpoint" and b"\n35\n" in base64.b64decode(str(line["note"]))
    )
    lines[position]["note"] = base64.b64encode(setup.signer.sign(35, _merkle.root_from_leaves(forked))).decode()
    setup.write(lines)
    with pytest.raises(VerificationError, match=r"size 35 .*not consistent with the checkpoint of size 20"):
        verify_export(setup.path, setup.signer.vkey)


def test_checkpoint_of_another_log_fails(setup: Setup) -> None:
    """A checkpoint for a different origin, even validly signed, is refused."""
    other = CheckpointSigner(setup.signer._private_key, "other.example/log", setup.signer.key_name)
    lines = setup.lines()
    position = next(i for i, line in enumerate(lines) if line["type"] == "checkpoint")
    lines[position]["note"] = base64.b64encode(other.sign(10, setup.log.root())).decode()
    setup.write(lines)
    with pytest.raises(VerificationError, match=r"is for log 'other.example/log'"):
        verify_export(setup.path, setup.signer.vkey)


def test_export_without_checkpoints_fails(setup: Setup) -> None:
    """Entries with nothing signed over them prove nothing."""
    setup.write([line for line in setup.lines() if line["type"] != "checkpoint"])
    with pytest.raises(VerificationError, match="no checkpoint"):
        verify_export(setup.path, setup.signer.vkey)


def test_wrong_verifier_key_fails(setup: Setup) -> None:
    """Verifying against another key's vkey fails on the first checkpoint."""
    other = _note.encode_vkey(ORIGIN, Ed25519PrivateKey.generate().public_key())
    with pytest.raises(VerificationError, match="no signature by key"):
        verify_export(setup.path, other)


def test_garbage_lines_are_verification_errors(setup: Setup) -> None:
    """A line that is not JSON is reported with its line number."""
    setup.path.write_text(setup.path.read_text() + "not json\n")
    with pytest.raises(VerificationError, match="line 56 is not JSON"):
        verify_export(setup.path, setup.signer.vkey)


# -- tampering with the database, then exporting ----------------------------------------------------


def test_entry_changed_in_the_database_is_named(setup: Setup) -> None:
    """Rewriting a stored entry directly in the database names it in the next export."""
    forged = event(23).to_entry_bytes(23).replace(b"DE-BKA", b"NL-FIOD")
    with setup.engine.begin() as conn:
        conn.execute(update(entries_table).where(entries_table.c.leaf_index == 23).values(entry=forged))
    setup.export()
    with pytest.raises(VerificationError, match=r"^entry 23 \(line \d+\) was changed"):
        verify_export(setup.path, setup.signer.vkey)


def test_entry_deleted_from_the_database_is_named(setup: Setup) -> None:
    """Deleting a stored entry names it in the next export."""
    with setup.engine.begin() as conn:
        conn.execute(delete(entries_table).where(entries_table.c.leaf_index == 23))
    setup.export()
    with pytest.raises(VerificationError, match=r"^entry 23 is missing"):
        verify_export(setup.path, setup.signer.vkey)


def test_entries_reordered_in_the_database_are_named(setup: Setup) -> None:
    """Swapping the positions of two stored entries names the first."""
    with setup.engine.begin() as conn:
        for old, new in ((23, -1), (24, 23), (-1, 24)):
            conn.execute(update(entries_table).where(entries_table.c.leaf_index == old).values(leaf_index=new))
    setup.export()
    with pytest.raises(VerificationError, match=r"^entry 23 .*holds the content of entry 24"):
        verify_export(setup.path, setup.signer.vkey)


def test_entry_inserted_in_the_database_is_named(setup: Setup) -> None:
    """Shifting stored entries up and inserting a forged one at 23 is named."""
    forged = event(999).to_entry_bytes(23)
    with setup.engine.begin() as conn:
        for index in range(49, 22, -1):
            conn.execute(update(entries_table).where(entries_table.c.leaf_index == index).values(leaf_index=index + 1))
        conn.execute(
            entries_table.insert().values(
                leaf_index=23,
                time_us=event(999).time_us,
                event="delivery.delivered",
                actor="x",
                entry=forged,
                leaf_hash=_merkle.leaf_hash(forged),
            )
        )
    setup.export()
    with pytest.raises(VerificationError, match="holds the content of entry 23"):
        verify_export(setup.path, setup.signer.vkey)
