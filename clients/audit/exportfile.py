"""The audit export file: what `isb audit export` writes and `isb audit verify` reads.

Format: JSON Lines (UTF-8, one JSON object per line, `\\n`-terminated), in this order:

1. One header, first:
   `{"type": "header", "format": "isb-audit-export/1", "origin": ORIGIN, "key_name": NAME, "vkey": VKEY}`
   `format` is `isb-audit-export/<version>`; this code writes and reads version 1 and refuses any
   other version by name (docs/protocol.md, "Audit export files").
   `origin` is the log's checkpoint origin, `key_name` the name its checkpoints are signed under and
   `vkey` the C2SP verifier key the broker claims. The header is informational: the verifier trusts
   only the key the auditor passes it, never the `vkey` found in the file.
2. Entries, in log order from index 0, each exactly once:
   `{"type": "entry", "index": N, "entry": BASE64(entry bytes), "leaf_hash": HEX(SHA-256(0x00 || entry))}`
   `entry` is the canonical JSON of the audit event exactly as hashed into leaf N; `leaf_hash` is
   what the broker stored, so a stored entry changed after the fact shows as a mismatch.
3. Checkpoints, interleaved: `{"type": "checkpoint", "note": BASE64(C2SP tlog-checkpoint note)}`.
   A checkpoint of tree size S comes after entry S-1 and before entry S. An export normally ends at
   its last checkpoint: later entries cannot be verified, and `isb audit verify` fails on them unless
   told `--allow-unsigned-tail`.

An export must start at index 0 to be verifiable offline: the tree is recomputed from its first leaf.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from clients.errors import VerificationError

FORMAT_NAME = "isb-audit-export"
FORMAT_VERSION = 1
FORMAT = f"{FORMAT_NAME}/{FORMAT_VERSION}"
_FORMAT = re.compile(r"isb-audit-export/([1-9][0-9]{0,8})")


@dataclass(frozen=True, slots=True)
class ExportHeader:
    """The first line: which log this is and the key the broker says it signs with."""

    origin: str
    key_name: str
    vkey: str


@dataclass(frozen=True, slots=True)
class ExportEntry:
    """One entry line."""

    line: int
    index: int
    entry: bytes
    leaf_hash: bytes


@dataclass(frozen=True, slots=True)
class ExportCheckpoint:
    """One checkpoint line (the note is not verified yet)."""

    line: int
    note: bytes


class ExportWriter:
    """Writes an export file, header first; the caller adds entries and checkpoints in log order."""

    def __init__(self, stream: IO[bytes], origin: str, key_name: str, vkey: str) -> None:
        """Start an export on a binary stream."""
        self._stream = stream
        self._write({"type": "header", "format": FORMAT, "origin": origin, "key_name": key_name, "vkey": vkey})

    def _write(self, document: dict[str, Any]) -> None:
        self._stream.write(json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode() + b"\n")

    def entry(self, index: int, entry: bytes, leaf_hash: bytes) -> None:
        """Add the entry at `index`."""
        self._write(
            {
                "type": "entry",
                "index": index,
                "entry": base64.b64encode(entry).decode(),
                "leaf_hash": leaf_hash.hex(),
            }
        )

    def checkpoint(self, note: bytes) -> None:
        """Add a signed checkpoint; it covers the entries written before it."""
        self._write({"type": "checkpoint", "note": base64.b64encode(note).decode()})


def _field(document: dict[str, Any], name: str, kind: type, line: int) -> Any:
    value = document.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise VerificationError(f"export line {line}: field {name!r} is missing or not a {kind.__name__}")
    return value


def _check_format(value: object, line: int) -> None:
    # The format names its version so that a later layout is refused by name, never misread.
    match = _FORMAT.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise VerificationError(f"export line {line}: header format {value!r} is not {FORMAT_NAME}/<version>")
    version = int(match.group(1))
    if version != FORMAT_VERSION:
        raise VerificationError(
            f"export line {line}: export format version {version} is not supported (this verifier reads version"
            f" {FORMAT_VERSION}); verify it with the isb release that wrote it, or a newer one"
        )


def _parse_line(raw: bytes, line: int) -> ExportHeader | ExportEntry | ExportCheckpoint:
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, an over-long integer, deep nesting
        raise VerificationError(f"export line {line} is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise VerificationError(f"export line {line} is not a JSON object")
    kind = document.get("type")
    try:
        if kind == "entry":
            return ExportEntry(
                line,
                _field(document, "index", int, line),
                base64.b64decode(_field(document, "entry", str, line), validate=True),
                bytes.fromhex(_field(document, "leaf_hash", str, line)),
            )
        if kind == "checkpoint":
            note = base64.b64decode(_field(document, "note", str, line), validate=True)
            return ExportCheckpoint(line, note)
    except (binascii.Error, ValueError) as exc:
        raise VerificationError(f"export line {line}: bad base64 or hex encoding ({exc})") from exc
    if kind == "header":
        _check_format(document.get("format"), line)
        return ExportHeader(
            _field(document, "origin", str, line),
            _field(document, "key_name", str, line),
            _field(document, "vkey", str, line),
        )
    raise VerificationError(f"export line {line} has unknown type {kind!r}")


def read_export(stream: IO[bytes]) -> Iterator[tuple[int, ExportHeader | ExportEntry | ExportCheckpoint]]:
    """Parse an export stream line by line; yields (bytes consumed so far, record)."""
    consumed = 0
    for line, raw in enumerate(stream, start=1):
        consumed += len(raw)
        if not raw.strip():
            raise VerificationError(f"export line {line} is empty")
        yield consumed, _parse_line(raw, line)
