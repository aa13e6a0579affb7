"""Offline verification of an audit export (`isb audit verify EXPORT --key audit.pub`).

The verifier trusts nothing in the file but the auditor's copy of the broker's audit public key:

1. Each entry must carry the next index (0, 1, 2, ...): a gap or repeat names the first missing or
   misplaced entry. Each entry's content must name that same index, and hash to the leaf hash stored
   with it: a changed, moved or duplicated entry is named exactly.
2. The tree is recomputed from the entries (RFC 9162 hashing).
3. Each checkpoint must be signed by the given key, come from the header's origin, and follow the
   entries it covers (a checkpoint after fewer entries than its size names the first missing entry).
4. Each checkpoint must be consistent with the previous one: a consistency proof generated over the
   recomputed tree is checked against both signed roots with the RFC 9162 verifier.
5. Each checkpoint's root must equal the recomputed root at its size.
7. With a witness policy (`--policy`, C2SP tlog-policy), the last checkpoint must carry enough
   witness cosignatures (docs/protocol.md section 18); earlier ones are covered by consistency.
6. Entries after the last checkpoint are covered by no signature: anyone who can write the file
   could have appended them, so they are a failure (`UnsignedTail`) unless the caller accepts
   them explicitly (`allow_unsigned_tail`, `isb audit verify --allow-unsigned-tail`).

Localisation, and its limit: steps 1 and 3 name the exact entry. If someone changed an entry *and*
rewrote its stored leaf hash (or rewrote several entries consistently), only the signed root tells
them apart, and a root covers many entries: the verifier then names the first entry after the last
checkpoint that matched, and says that the change is among the entries up to the failing
checkpoint's size. Frequent checkpoints make that window small.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.protocol import _merkle, _note
from broker.protocol.errors import VerificationError as ProtocolVerificationError
from broker.protocol.witness_policy import Policy, verify_checkpoint_against_policy
from clients.audit.exportfile import ExportCheckpoint, ExportEntry, ExportHeader, read_export
from clients.errors import VerificationError

Progress = Callable[[int, int], None]
"""`progress(bytes_done, bytes_total)`, called now and then while verifying."""

_PROGRESS_EVERY = 4096


class UnsignedTail(VerificationError):
    """The export holds entries after its last checkpoint, which no signature covers."""


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What a successful verification established."""

    origin: str
    entries: int
    """Entries read and hashed."""
    checkpoints: int
    """Checkpoints whose signature, consistency and root were verified."""
    tree_size: int
    """Size of the last verified checkpoint: entries below it are proven."""
    root_hash: bytes
    unverified_entries: int
    """Entries after the last checkpoint, which no signature covers yet."""
    cosigned_by: tuple[str, ...] = ()
    """With a witness policy: the policy's witnesses whose cosignature on the last checkpoint verified."""


@dataclass(frozen=True, slots=True)
class _Verified:
    size: int
    root: bytes


def _entry_index(entry: bytes) -> object:
    try:
        document = json.loads(entry)
    except (ValueError, RecursionError):  # bad JSON or UTF-8, an over-long integer, deep nesting
        return None
    return document.get("index") if isinstance(document, dict) else None


class _Verifier:
    def __init__(self, header: ExportHeader, key_name: str, public_key: Ed25519PublicKey) -> None:
        self.header = header
        self.key_name = key_name
        self.public_key = public_key
        self.tree = _merkle.MemoryTree()
        self.last: _Verified | None = None
        self.last_note: bytes = b""
        self.checkpoints = 0

    def entry(self, record: ExportEntry) -> None:
        expected = self.tree.size
        # Step 1: position, self-declared index and stored leaf hash.
        if record.index > expected:
            raise VerificationError(
                f"entry {expected} is missing: the export jumps from entry {expected - 1} to {record.index}"
                f" (line {record.line}); entries were deleted or reordered"
            )
        if record.index < expected:
            raise VerificationError(
                f"entry {record.index} appears again at position {expected} (line {record.line});"
                " entries were inserted, duplicated or reordered"
            )
        declared = _entry_index(record.entry)
        if not isinstance(declared, int) or isinstance(declared, bool):
            raise VerificationError(f"entry {expected} (line {record.line}) is not an audit entry")
        if declared < expected:
            raise VerificationError(
                f"entry {expected} (line {record.line}) holds the content of entry {declared}: an entry was"
                " inserted or duplicated before it, or entries were reordered"
            )
        if declared > expected:
            raise VerificationError(
                f"entry {expected} (line {record.line}) holds the content of entry {declared}: entries"
                f" {expected}..{declared - 1} were deleted, or entries were reordered"
            )
        leaf = _merkle.leaf_hash(record.entry)
        if leaf != record.leaf_hash:
            raise VerificationError(
                f"entry {expected} (line {record.line}) was changed: its content does not match its leaf hash"
            )
        # Step 2.
        self.tree.append(leaf)

    def checkpoint(self, record: ExportCheckpoint) -> None:
        # Step 3: signature, origin, position.
        try:
            checkpoint = _note.verify_checkpoint(record.note, self.key_name, self.public_key)
        except ProtocolVerificationError as exc:
            raise VerificationError(f"checkpoint on line {record.line} is not valid: {exc}") from exc
        size = checkpoint.size
        if checkpoint.origin != self.header.origin:
            raise VerificationError(
                f"checkpoint of size {size} (line {record.line}) is for log {checkpoint.origin!r},"
                f" not {self.header.origin!r}"
            )
        if size > self.tree.size:
            raise VerificationError(
                f"entry {self.tree.size} is missing: the checkpoint of size {size} (line {record.line})"
                f" follows only {self.tree.size} entries"
            )
        previous = self.last or _Verified(0, _merkle.EMPTY_ROOT)
        if size < previous.size:
            raise VerificationError(
                f"checkpoint of size {size} (line {record.line}) comes after the larger checkpoint"
                f" of size {previous.size}"
            )
        window = f"one of entries {previous.size}..{size - 1}" if size > previous.size else "no entry"
        # Step 4: consistency with the previous checkpoint, proven over the recomputed tree.
        proof = _merkle.consistency_proof(previous.size, size, self.tree.subtree)
        try:
            _merkle.verify_consistency(previous.size, size, previous.root, checkpoint.root, proof)
        except ProtocolVerificationError as exc:
            raise VerificationError(
                f"checkpoint of size {size} (line {record.line}) is not consistent with the checkpoint of"
                f" size {previous.size} over these entries ({exc}): {window} differs from what was"
                f" signed, starting at the earliest, entry {previous.size}"
            ) from exc
        # Step 5: the signed root is the root of these entries.
        if self.tree.root(size) != checkpoint.root:
            raise VerificationError(
                f"entries do not match the checkpoint of size {size} (line {record.line}): {window} was"
                f" changed, inserted, deleted or reordered, starting at the earliest, entry {previous.size}"
            )
        self.last = _Verified(size, checkpoint.root)
        self.last_note = record.note
        self.checkpoints += 1


def resolve_key(key: Ed25519PublicKey | str, header: ExportHeader) -> tuple[str, Ed25519PublicKey]:
    """The audit key's signed-note name and public key: from a vkey line, or a bare key named by the header."""
    if isinstance(key, str):
        return _note.parse_vkey(key)
    # A bare public key carries no name; the name in the header only selects the signature line,
    # the key id binds it to the key, so a wrong name can only make verification fail.
    return header.key_name, key


def verify_export(
    path: Path,
    key: Ed25519PublicKey | str,
    progress: Progress | None = None,
    *,
    allow_unsigned_tail: bool = False,
    policy: Policy | None = None,
    on_entry: Callable[[ExportEntry], None] | None = None,
) -> VerifyReport:
    """Verify an export file against the broker's audit key (a public key or a vkey string).

    Raises `VerificationError` naming the first problem; `UnsignedTail` when entries follow the
    last checkpoint, unless `allow_unsigned_tail` (then the report counts them as unverified).
    `on_entry` sees each entry once its index and leaf hash have been checked, in the same pass:
    what it computes holds only if this function then returns (the whole file verified).
    """
    total = path.stat().st_size
    with path.open("rb") as stream:
        records = read_export(stream)
        first = next(records, None)
        if first is None or not isinstance(first[1], ExportHeader):
            raise VerificationError("export does not start with a header line")
        header = first[1]
        key_name, public_key = resolve_key(key, header)
        verifier = _Verifier(header, key_name, public_key)
        for count, (done, record) in enumerate(records):
            if isinstance(record, ExportEntry):
                verifier.entry(record)
                if on_entry is not None:
                    on_entry(record)
            elif isinstance(record, ExportCheckpoint):
                verifier.checkpoint(record)
            else:
                raise VerificationError("export holds a second header")
            if progress is not None and count % _PROGRESS_EVERY == 0:
                progress(done, total)
    if progress is not None:
        progress(total, total)
    if verifier.last is None:
        raise VerificationError(
            f"export holds {verifier.tree.size} entries but no checkpoint: nothing signed to verify against"
        )
    unverified = verifier.tree.size - verifier.last.size
    if unverified and not allow_unsigned_tail:
        # Step 6.
        raise UnsignedTail(
            f"{unverified} entries after the last checkpoint (entries {verifier.last.size}.."
            f"{verifier.tree.size - 1}) are covered by no signed checkpoint: anyone could have appended them;"
            " export up to a checkpoint (`isb audit export` does), or pass --allow-unsigned-tail to accept"
            " them unverified"
        )
    cosigned_by: tuple[str, ...] = ()
    if policy is not None:
        # Step 7: the last checkpoint, which every earlier one is consistent with, meets the quorum.
        try:
            verdict = verify_checkpoint_against_policy(verifier.last_note, policy, origin=header.origin)
        except ProtocolVerificationError as exc:
            raise VerificationError(
                f"the last checkpoint (size {verifier.last.size}) does not meet the witness policy: {exc}"
            ) from exc
        cosigned_by = tuple(sorted(verdict.cosigned))
    return VerifyReport(
        cosigned_by=cosigned_by,
        origin=header.origin,
        entries=verifier.tree.size,
        checkpoints=verifier.checkpoints,
        tree_size=verifier.last.size,
        root_hash=verifier.last.root,
        unverified_entries=unverified,
    )
