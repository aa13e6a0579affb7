"""Replacing a file atomically (broker.files), as the PKI, the health file and the SDK's trust state do."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.files import PUBLIC_MODE, write_atomically


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """A umask that would leave new files world-writable, so that only the explicit mode protects them."""
    old = os.umask(0)
    yield
    os.umask(old)


@pytest.mark.usefixtures("permissive_umask")
def test_new_file_is_private_by_default(tmp_path: Path) -> None:
    """Without a mode the file is 0600 whatever the umask: keys and state are the owner's only."""
    path = tmp_path / "state.json"
    write_atomically(path, b"{}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == b"{}"


@pytest.mark.usefixtures("permissive_umask")
def test_replacement_takes_the_given_mode_and_content(tmp_path: Path) -> None:
    """An existing file is replaced whole, with the mode asked for (0644 for public material)."""
    path = tmp_path / "ca.crt"
    path.write_bytes(b"old content, longer than the new one")
    path.chmod(0o600)
    write_atomically(path, b"new", PUBLIC_MODE)
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    """If the rename cannot happen, the target keeps its old bytes and the temporary file is removed."""
    target = tmp_path / "target"
    target.mkdir()  # a directory cannot be replaced by a file
    with pytest.raises(IsADirectoryError):
        write_atomically(target, b"data")
    assert target.is_dir()
    assert [p.name for p in tmp_path.iterdir()] == ["target"]
