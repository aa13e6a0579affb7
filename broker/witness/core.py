"""add-checkpoint semantics (c2sp.org/tlog-witness), transport-free, over an SQLite state file.

The witness follows the logs of its policy file (`log` lines: the key name is the origin) and keeps,
per origin, the latest checkpoint it cosigned. Checking the old size and storing the new checkpoint
happen in one `BEGIN IMMEDIATE` transaction, so two concurrent submissions cannot roll it back.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from broker.protocol import _cosignature, _merkle, _note
from broker.protocol.errors import VerificationError

log = structlog.get_logger("isb.witness")

SIZE_CONTENT_TYPE = "text/x.tlog.size"
MAX_BODY_BYTES = 1 << 20
MAX_PROOF_LINES = 63
_OLD = re.compile(r"old (0|[1-9][0-9]{0,19})")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS witness_checkpoints (
    origin TEXT PRIMARY KEY,
    tree_size INTEGER NOT NULL,
    root_hash BLOB NOT NULL,
    note BLOB NOT NULL,
    updated_at INTEGER NOT NULL
)
"""


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP-shaped answer: status, content type and body."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"

    @classmethod
    def refuse(cls, status: int, reason: str) -> Reply:
        """A refusal with a one-line reason."""
        return cls(status, f"{reason}\n".encode())


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed add-checkpoint body."""

    old_size: int
    proof: list[bytes]
    note: bytes


class BadRequest(Exception):
    """The body does not follow the add-checkpoint grammar."""


def parse_request(body: bytes) -> Request:
    """`old <n>\\n`, up to 63 base64 hash lines, an empty line, then the checkpoint note."""
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest("request body is larger than 1 MiB")
    position = 0
    lines: list[bytes] = []
    while True:
        end = body.find(b"\n", position)
        if end < 0:
            raise BadRequest("request body has no empty line before the checkpoint")
        line = body[position:end]
        position = end + 1
        if not line:
            break
        lines.append(line)
        if len(lines) > MAX_PROOF_LINES + 1:
            raise BadRequest(f"more than {MAX_PROOF_LINES} consistency proof lines")
    if not lines:
        raise BadRequest("request body has no old size line")
    match = _OLD.fullmatch(lines[0].decode("ascii", errors="replace"))
    if match is None:
        raise BadRequest("the first line must be `old <size>` in decimal without leading zeros")
    proof = []
    for number, line in enumerate(lines[1:], start=1):
        try:
            digest = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadRequest(f"consistency proof line {number} is not base64") from exc
        if len(digest) != _merkle.HASH_SIZE:
            raise BadRequest(f"consistency proof line {number} is not a 32-byte hash")
        proof.append(digest)
    return Request(int(match.group(1)), proof, body[position:])


def request_body(old_size: int, proof: list[bytes], note: bytes) -> bytes:
    """The add-checkpoint body a client sends."""
    lines = [f"old {old_size}", *(base64.b64encode(h).decode() for h in proof)]
    return ("".join(f"{line}\n" for line in lines) + "\n").encode() + note


def _origin_of(note: bytes) -> str | None:
    first = note.split(b"\n", 1)[0]
    try:
        return first.decode("utf-8")
    except UnicodeDecodeError:
        return None


Decision = Callable[[tuple[int, bytes] | None], tuple["Reply", _note.Checkpoint | None]]
"""`decide(latest)`: the reply, and the checkpoint to store (None: store nothing)."""


class WitnessState:
    """The latest cosigned checkpoint per origin, in an SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not path.exists()
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        if fresh:
            os.chmod(path, 0o600)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute(_SCHEMA)
        self._lock = threading.Lock()

    def latest(self, origin: str) -> tuple[int, bytes] | None:
        """(size, root) of the latest cosigned checkpoint of `origin`."""
        row = self._conn.execute(
            "SELECT tree_size, root_hash FROM witness_checkpoints WHERE origin = ?", (origin,)
        ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def transaction(self, origin: str, decide: Decision) -> Reply:
        """Run `decide(latest)` and store the checkpoint it accepts, atomically."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                reply, accepted = decide(self.latest(origin))
                if accepted is not None:
                    self._conn.execute(
                        "INSERT INTO witness_checkpoints (origin, tree_size, root_hash, note, updated_at)"
                        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (origin) DO UPDATE SET tree_size = excluded.tree_size,"
                        " root_hash = excluded.root_hash, note = excluded.note, updated_at = excluded.updated_at",
                        (origin, accepted.size, accepted.root, accepted.note, int(time.time())),
                    )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return reply

    def close(self) -> None:
        """Close the database."""
        self._conn.close()


class Witness:
    """A witness named `name` with an Ed25519 key, following the logs `logs` (origin -> key)."""

    def __init__(
        self,
        name: str,
        private_key: Ed25519PrivateKey,
        logs: Mapping[str, Ed25519PublicKey],
        state: WitnessState,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self._key = private_key
        self.logs = dict(logs)
        self.state = state
        self._clock = clock
        self.vkey = _cosignature.encode_cosigner_vkey(name, private_key.public_key())

    def add_checkpoint(self, body: bytes) -> Reply:
        """The tlog-witness add-checkpoint call: the status and body to answer."""
        try:
            request = parse_request(body)
        except BadRequest as exc:
            return Reply.refuse(400, str(exc))
        origin = _origin_of(request.note)
        if origin is None or origin not in self.logs:
            return Reply.refuse(404, f"unknown log origin {(origin or '')[:100]!r}")
        try:
            checkpoint = _note.verify_checkpoint(request.note, origin, self.logs[origin])
        except VerificationError as exc:
            return Reply.refuse(403, f"no trusted signature on the checkpoint: {exc}")
        if request.old_size > checkpoint.size:
            return Reply.refuse(
                400, f"old size {request.old_size} is larger than the checkpoint size {checkpoint.size}"
            )
        if request.old_size == 0 and request.proof:
            return Reply.refuse(400, "the consistency proof must be empty when the old size is 0")
        return self.state.transaction(origin, lambda latest: self._decide(origin, request, checkpoint, latest))

    def _decide(
        self, origin: str, request: Request, checkpoint: _note.Checkpoint, latest: tuple[int, bytes] | None
    ) -> tuple[Reply, _note.Checkpoint | None]:
        held_size, held_root = latest if latest is not None else (0, _merkle.EMPTY_ROOT)
        if request.old_size != held_size:
            reply = Reply(409, f"{held_size}\n".encode(), SIZE_CONTENT_TYPE)
            return reply, None
        if checkpoint.size == held_size and latest is not None:
            if checkpoint.root != held_root:
                log.warning("witness.fork", origin=origin, size=held_size)
                return Reply.refuse(
                    409,
                    f"checkpoint of size {held_size} has another root hash than the one"
                    " this witness cosigned: the log forked",
                ), None
        elif held_size > 0:
            try:
                _merkle.verify_consistency(held_size, checkpoint.size, held_root, checkpoint.root, request.proof)
            except VerificationError as exc:
                log.warning("witness.inconsistent", origin=origin, old=held_size, new=checkpoint.size)
                return Reply.refuse(
                    422, f"consistency proof from size {held_size} to {checkpoint.size} does not verify: {exc}"
                ), None
        line = _cosignature.cosign(checkpoint_text(checkpoint), self.name, self._key, int(self._clock()))
        log.info("witness.cosigned", origin=origin, size=checkpoint.size)
        return Reply(200, line.encode()), checkpoint


def checkpoint_text(checkpoint: _note.Checkpoint) -> str:
    """The note text of a verified checkpoint (what cosignatures cover)."""
    text, _ = _cosignature.split_note(checkpoint.note)
    return text
