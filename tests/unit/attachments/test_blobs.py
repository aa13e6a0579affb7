"""The blob store's two backends behave alike (the e2e suite runs them on SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.attachments.blobs import BlobStore, DatabaseBlobStore, DirectoryBlobStore, open_blob_store
from broker.errors import ConfigurationError
from broker.protocol import _stream
from broker.store.db import create_engine
from broker.store.schema import upgrade_schema

CHUNK = _stream.MIN_CHUNK_SIZE
SIZE = 3 * CHUNK + 100  # four chunks


def _chunk(i: int) -> bytes:
    return bytes([i]) * _stream.ciphertext_length(SIZE, CHUNK, i)


@pytest.fixture(params=["directory", "database"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    """Each backend over a fresh SQLite database."""
    engine = create_engine(f"sqlite:///{tmp_path / 'broker.db'}")
    upgrade_schema(engine)
    yield DirectoryBlobStore(tmp_path / "blobs") if request.param == "directory" else DatabaseBlobStore(engine)
    engine.dispose()


def test_committed_chunks_survive_and_uncommitted_ones_are_dropped_on_resume(store: BlobStore) -> None:
    """What was committed is kept; a writer resuming after chunk k drops anything stored after it."""
    writer = store.writer("up", CHUNK, 0)
    for i in range(2):
        writer.append(_chunk(i), hashlib.sha256(_chunk(i)).digest())
    writer.commit()
    writer.close()
    assert store.committed("up") == [hashlib.sha256(_chunk(i)).digest() for i in range(2)]
    writer = store.writer("up", CHUNK, 1)
    for i in range(1, 4):
        writer.append(_chunk(i), hashlib.sha256(_chunk(i)).digest())
    writer.commit()
    writer.close()
    assert len(store.committed("up")) == 4
    store.rename("up", "ab" * 32)
    assert store.committed("up") == []
    read = list(store.read("ab" * 32, SIZE, CHUNK, 2))
    assert [data for data, _ in read] == [_chunk(2), _chunk(3)]
    assert all(hashlib.sha256(data).digest() == sha for data, sha in read)
    store.delete("ab" * 32)
    assert store.committed("ab" * 32) == []


def test_unknown_blob_has_no_chunks(store: BlobStore) -> None:
    """A blob never written has nothing committed."""
    assert store.committed("nothing") == []


def test_blob_store_choice_follows_the_database(tmp_path: Path) -> None:
    """By default: a folder beside a SQLite file; chunk rows where asked; a bad name is a configuration error."""
    engine = create_engine(f"sqlite:///{tmp_path / 'db' / 'broker.db'}")
    directory = open_blob_store("", engine, f"sqlite:///{tmp_path / 'db' / 'broker.db'}", None)
    assert isinstance(directory, DirectoryBlobStore)
    assert directory.root == tmp_path / "db" / "blobs"
    assert isinstance(open_blob_store("database", engine, "sqlite://", None), DatabaseBlobStore)
    with pytest.raises(ConfigurationError, match="blob_store must be"):
        open_blob_store("s3", engine, "sqlite://", None)
    engine.dispose()
