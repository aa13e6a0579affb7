"""A subscriber's local replica of one watchlist (DESIGN.md section 7).

The replica holds the decrypted, verified entries in a local SQLite file (created 0600: it holds
personal data in clear), applies versions strictly in order, and survives restarts. Every version
is checked before it touches the file:

1. the owner certificate that came with it chains to our CA and names the owner we pinned when
   the replica was created (never the owner the broker claims);
2. `open_envelope` verifies the outer signature (header) and the inner signature (plaintext and
   its context) with that certificate, and decrypts with our key;
3. the signed header and the signed payload agree on watchlist id, version and kind, and with
   what the broker said it was serving;
4. a delta must be exactly the next version (a gap is refused: sync again), a snapshot may jump
   ahead and replaces everything; a version we already hold is skipped.

Entries past their review date drop out: they are deleted when the replica opens, after every
version, and before every screening.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import hashlib
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import grpc
from cryptography import x509
from google.protobuf.message import DecodeError

from broker.api.v1 import envelope_pb2, payload_pb2, watchlist_pb2
from broker.errors import VerificationError
from broker.protocol.envelope import open_envelope
from broker.protocol.keys import EncryptionKey, verify_agency_certificate
from clients._stream import StreamReader
from clients.agency import AgencyClient
from clients.errors import ClientError
from clients.watchlist.payloads import WATCHLIST_UPDATE_CONTENT_TYPE
from clients.watchlist.screening import DEFAULT_MIN_SCORE, Hit, ScreeningIndex, ScreeningRecord, date_text
from clients.watchlist.service import watchlist_stub

__all__ = ["SyncResult", "VerifiedUpdate", "VersionGap", "VersionOpener", "WatchlistReplica"]

# The version of the screening keys stored beside each entry; a replica written with other keys
# recomputes them from its entries when it opens.
_INDEX_FORMAT: Final = "6"
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS replica_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS replica_entries (
    entry_id TEXT PRIMARY KEY, entry BLOB NOT NULL, review_date TEXT NOT NULL, index_keys TEXT NOT NULL,
    index_digests BLOB NOT NULL DEFAULT x'');
CREATE INDEX IF NOT EXISTS replica_entries_review ON replica_entries (review_date) WHERE review_date != '';
CREATE TABLE IF NOT EXISTS replica_versions (
    version INTEGER PRIMARY KEY, message_id TEXT NOT NULL, envelope_sha256 BLOB NOT NULL,
    snapshot INTEGER NOT NULL, upserts INTEGER NOT NULL, removals INTEGER NOT NULL, applied_us INTEGER NOT NULL);
"""


class VersionGap(ClientError):
    """A delta that does not follow the version the replica holds; sync again from that version."""


@dataclass(frozen=True)
class VerifiedUpdate:
    """A watchlist version whose signatures, sender and numbering have been verified."""

    update: payload_pb2.WatchlistUpdate
    message_id: str
    envelope_sha256: bytes


@dataclass(frozen=True)
class VersionOpener:
    """What a subscriber needs to verify and open versions: its id, its keys, the CA."""

    recipient: str
    keys: Mapping[str, EncryptionKey]
    trust_roots: Sequence[x509.Certificate]
    trust_domain: str

    @classmethod
    def for_client(cls, client: AgencyClient) -> VersionOpener:
        """The opener of `client`'s agency (its keystore keys, its CA)."""
        keys = client.decryption_keys
        return cls(client.agency, keys, client.identity.trust_roots, client.trust_domain)

    def open(self, item: watchlist_pb2.WatchlistVersion, *, watchlist_id: str, owner: str) -> VerifiedUpdate:
        """Verify and decrypt one served version of `watchlist_id`, which only `owner` may sign."""
        try:
            certificate = x509.load_der_x509_certificate(item.sender_certificate)
            claimed = envelope_pb2.Header.FromString(item.envelope.header)
        except (ValueError, DecodeError) as exc:
            raise VerificationError(f"version {item.version} of {watchlist_id} does not parse") from exc
        # 1. The certificate is the pinned owner's, valid when the version was created.
        verify_agency_certificate(
            certificate,
            trust_roots=self.trust_roots,
            expected_agency=owner,
            trust_domain=self.trust_domain,
            now=claimed.created.ToDatetime(dt.UTC),
        )
        # 2. Outer and inner signatures, and decryption.
        opened = open_envelope(item.envelope, recipient=self.recipient, keys=self.keys, sender_certificate=certificate)
        header = opened.header
        # 3. Signed header, signed payload and the broker's framing agree.
        if header.kind != envelope_pb2.WATCHLIST_UPDATE:
            raise VerificationError(
                f"version {item.version} is a {envelope_pb2.Kind.Name(header.kind)}, not a WATCHLIST_UPDATE"
            )
        if header.watchlist_id != watchlist_id or header.watchlist_version != item.version:
            raise VerificationError(
                f"signed header names {header.watchlist_id} version {header.watchlist_version}; "
                f"the broker served it as {watchlist_id} version {item.version}"
            )
        if opened.content_type != WATCHLIST_UPDATE_CONTENT_TYPE:
            raise VerificationError(f"version {item.version} carries {opened.content_type!r}, not a watchlist update")
        try:
            update = payload_pb2.WatchlistUpdate.FromString(opened.body)
        except DecodeError as exc:
            raise VerificationError(f"version {item.version} payload does not parse") from exc
        if update.watchlist_id != watchlist_id or update.version != item.version:
            raise VerificationError(
                f"signed payload names {update.watchlist_id} version {update.version}, "
                f"its header {watchlist_id} version {item.version}"
            )
        if update.snapshot != item.snapshot:
            raise VerificationError(
                f"the broker served version {item.version} as a {'snapshot' if item.snapshot else 'delta'}, "
                f"the owner signed a {'snapshot' if update.snapshot else 'delta'}"
            )
        digest = hashlib.sha256(item.envelope.SerializeToString()).digest()
        return VerifiedUpdate(update, opened.message_id, digest)


@dataclass(frozen=True)
class SyncResult:
    """What one sync did."""

    applied: int
    version: int


def _review_text(date: payload_pb2.Date) -> str:
    # A partial date runs to the end of its year or month.
    text = date_text(date)
    if len(text) == 4:
        return text + "-12-31"
    if len(text) == 7:
        return text + "-31"
    return text


def _open_private(path: Path) -> None:
    # The file holds decrypted entries: create it owner-only before SQLite opens it.
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


class WatchlistReplica:
    """The local replica of one watchlist: `sync` it, `screen` records against it.

    `owner` is pinned in the file on first use: versions signed by anyone else are refused, and so
    is reopening the file for another watchlist or owner. With `create=False` a missing file is an
    error instead of a new, empty replica.
    """

    def __init__(
        self,
        path: Path,
        *,
        watchlist_id: str,
        owner: str,
        today: Callable[[], dt.date] = lambda: dt.datetime.now(dt.UTC).date(),
        create: bool = True,
    ) -> None:
        if not create and not path.is_file():
            # Screening against a replica that was never synced would find nothing and say nothing.
            raise ClientError(
                f"no replica file at {path}: check --replica, or create it with `isb watchlist sync "
                f"--id {watchlist_id} --owner {owner} --replica {path}`"
            )
        _open_private(path)
        self.path = path
        self.watchlist_id = watchlist_id
        self.owner = owner
        self._today = today
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            meta = dict(self._db.execute("SELECT key, value FROM replica_meta").fetchall())
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ClientError(f"{path} is not a watchlist replica ({exc}): check --replica") from None
        self._lock = threading.Lock()
        self._index: ScreeningIndex | None = None
        if not meta:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT INTO replica_meta VALUES (?, ?)",
                    [("watchlist_id", watchlist_id), ("owner", owner), ("version", "0")],
                )
        elif (meta["watchlist_id"], meta["owner"]) != (watchlist_id, owner):
            self._db.close()
            raise ClientError(
                f"{path} is the replica of {meta['watchlist_id']} owned by {meta['owner']}, "
                f"not of {watchlist_id} owned by {owner}"
            )
        if meta.get("index_format") != _INDEX_FORMAT:
            self._rekey()
        self.purge_expired()

    def _rekey(self) -> None:
        """Recompute every entry's screening keys (a replica written by an older version)."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(replica_entries)")}
        rows = [
            (entry_id, *ScreeningIndex.keys_of(payload_pb2.WatchlistEntry.FromString(blob)))
            for entry_id, blob in self._db.execute("SELECT entry_id, entry FROM replica_entries")
        ]
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            if "index_digests" not in columns:
                self._db.execute("ALTER TABLE replica_entries ADD COLUMN index_digests BLOB NOT NULL DEFAULT x''")
            self._db.executemany(
                "UPDATE replica_entries SET index_keys = ?, index_digests = ? WHERE entry_id = ?",
                [(keys, digests, entry_id) for entry_id, keys, digests in rows],
            )
            self._db.execute("INSERT OR REPLACE INTO replica_meta VALUES ('index_format', ?)", (_INDEX_FORMAT,))

    def close(self) -> None:
        """Close the file."""
        self._db.close()

    def __enter__(self) -> WatchlistReplica:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- state ---------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        """The version the replica holds (0: none yet)."""
        row = self._db.execute("SELECT value FROM replica_meta WHERE key = 'version'").fetchone()
        return int(row[0])

    def entries(self) -> dict[str, payload_pb2.WatchlistEntry]:
        """Every current entry by id (expired ones have already dropped out)."""
        self.purge_expired()
        return {
            entry_id: payload_pb2.WatchlistEntry.FromString(blob)
            for entry_id, blob in self._db.execute("SELECT entry_id, entry FROM replica_entries")
        }

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM replica_entries").fetchone()[0])

    def purge_expired(self) -> int:
        """Delete entries whose review date has passed; return how many."""
        today = self._today().isoformat()
        with self._lock:
            gone = [
                r[0]
                for r in self._db.execute(
                    "SELECT entry_id FROM replica_entries WHERE review_date != '' AND review_date < ?", (today,)
                )
            ]
            if gone:
                with self._db:
                    self._db.execute("BEGIN")
                    self._db.executemany("DELETE FROM replica_entries WHERE entry_id = ?", [(g,) for g in gone])
                if self._index is not None:
                    for entry_id in gone:
                        self._index.remove(entry_id)
        return len(gone)

    # -- applying versions ---------------------------------------------------------------------
    def apply(self, verified: VerifiedUpdate) -> bool:
        """Apply one verified version; False if the replica already holds it. Raise `VersionGap`
        for a delta that is not the next version."""
        update = verified.update
        if update.watchlist_id != self.watchlist_id:
            raise VerificationError(f"update of {update.watchlist_id} offered to the replica of {self.watchlist_id}")
        with self._lock:
            current = self.version
            if update.version <= current:
                return False
            if not update.snapshot and update.version != current + 1:
                raise VersionGap(
                    f"replica of {self.watchlist_id} holds version {current}; version {update.version} is a delta "
                    f"that needs version {current + 1} first: sync again from version {current}"
                )
            today = self._today().isoformat()
            rows = []
            for entry in update.upserts:
                if not entry.entry_id:
                    raise VerificationError(f"version {update.version} has an entry without entry_id")
                rows.append(
                    (
                        entry.entry_id,
                        entry.SerializeToString(),
                        _review_text(entry.review_date),
                        *ScreeningIndex.keys_of(entry),
                    )
                )
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                if update.snapshot:
                    self._db.execute("DELETE FROM replica_entries")
                self._db.executemany("INSERT OR REPLACE INTO replica_entries VALUES (?, ?, ?, ?, ?)", rows)
                self._db.executemany(
                    "DELETE FROM replica_entries WHERE entry_id = ?", [(e,) for e in update.removed_entry_ids]
                )
                self._db.execute("UPDATE replica_meta SET value = ? WHERE key = 'version'", (str(update.version),))
                self._db.execute(
                    "INSERT INTO replica_versions VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        update.version,
                        verified.message_id,
                        verified.envelope_sha256,
                        int(update.snapshot),
                        len(rows),
                        len(update.removed_entry_ids),
                        int(dt.datetime.now(dt.UTC).timestamp() * 1_000_000),
                    ),
                )
            self._update_index(update, rows, today)
        self.purge_expired()
        return True

    def _update_index(
        self, update: payload_pb2.WatchlistUpdate, rows: list[tuple[str, bytes, str, str, bytes]], today: str
    ) -> None:
        if self._index is None:
            return
        if update.snapshot:
            self._index = None  # rebuilt on the next screening
            return
        for entry_id, _, review, keys, digests in rows:
            if review and review < today:
                self._index.remove(entry_id)
            else:
                self._index.add_keys(entry_id, keys, digests)
        for entry_id in update.removed_entry_ids:
            self._index.remove(entry_id)

    def apply_served(self, item: watchlist_pb2.WatchlistVersion, opener: VersionOpener) -> bool:
        """Verify one version as served by the broker and apply it."""
        return self.apply(opener.open(item, watchlist_id=self.watchlist_id, owner=self.owner))

    def sync(
        self, client: AgencyClient, *, follow: bool = False, idle: float | None = None, until_version: int | None = None
    ) -> SyncResult:
        """Bring the replica up to date from the broker through `client`.

        Without `follow`, returns once the broker has sent every version. With `follow`, keeps
        applying live versions until `until_version` is reached or `idle` seconds pass without
        one. A version that fails verification stops the sync with `VerificationError`; the
        replica keeps the last good version, and the next sync resumes from there.
        """
        opener = VersionOpener.for_client(client)
        request = watchlist_pb2.SyncRequest(watchlist_id=self.watchlist_id, have_version=self.version, follow=follow)
        call = watchlist_stub(client).Sync(request)
        reader = StreamReader(call, "isb-watchlist-sync")
        applied = 0
        try:
            while until_version is None or self.version < until_version:
                try:
                    item = reader.next(idle if follow else None)
                except grpc.RpcError as exc:
                    raise client.translate_error(exc) from exc
                if item is None:
                    break
                applied += int(self.apply_served(item, opener))
        finally:
            call.cancel()
        return SyncResult(applied, self.version)

    # -- screening -----------------------------------------------------------------------------
    def index(self) -> ScreeningIndex:
        """The in-memory screening index, built from the file on first use and kept up to date."""
        with self._lock:
            if self._index is None:
                index = ScreeningIndex()
                with _no_cyclic_gc():
                    index.add_many(self._db.execute("SELECT entry_id, index_keys, index_digests FROM replica_entries"))
                    index.build()
                self._index = index
            return self._index

    def screen(
        self,
        records: Iterable[ScreeningRecord | Mapping[str, str]],
        *,
        min_score: float = DEFAULT_MIN_SCORE,
        workers: int | None = None,
    ) -> list[Hit]:
        """Candidate hits of `records` against the current entries, with the entries they match
        (`workers`: see `ScreeningIndex.screen`)."""
        self.purge_expired()
        index = self.index()
        typed = (r if isinstance(r, ScreeningRecord) else ScreeningRecord.from_mapping(r) for r in records)
        with _no_cyclic_gc():
            hits = index.screen(typed, min_score=min_score, workers=workers)
        entries = self._load_entries({h.entry_id for h in hits})
        version = self.version
        return [
            Hit(
                h.record,
                h.entry_id,
                h.score,
                h.matched_fields,
                self.watchlist_id,
                version,
                self.owner,
                entries.get(h.entry_id),
                h.explanation,
            )
            for h in hits
        ]

    def _load_entries(self, entry_ids: set[str]) -> dict[str, payload_pb2.WatchlistEntry]:
        ids = sorted(entry_ids)
        found: dict[str, payload_pb2.WatchlistEntry] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT entry_id, entry FROM replica_entries WHERE entry_id IN ({marks})"  # noqa: S608
            for entry_id, blob in self._db.execute(query, chunk):
                found[entry_id] = payload_pb2.WatchlistEntry.FromString(blob)
        return found


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector. The index is millions of small containers without
    cycles; while it is built or screened against, each collection would rescan all of it, which
    doubles the build time and triples the screening time at a million entries."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
