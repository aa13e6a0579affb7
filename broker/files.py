"""Replacing a file so that no reader ever sees half of it; shared by the broker and the SDK.

Readers of these files run concurrently with the writer: the broker reloads its CRL and
certificates, the container's health check reads the health file, another SDK process reads the
trust state. Each file is written to a sibling temporary file, fsynced, then renamed over the
target (rename is atomic on POSIX), and its mode is set on the temporary file before any byte is
written, so a key or state file is never readable by others, not even for a moment.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Final

__all__ = ["PRIVATE_MODE", "PUBLIC_MODE", "write_atomically"]

PRIVATE_MODE: Final = 0o600
"""Keys, the SDK's trust state, the broker's health: the owner only."""
PUBLIC_MODE: Final = 0o644
"""Certificates, CRLs, the policy: readable by all."""


def write_atomically(path: Path, data: bytes, mode: int = PRIVATE_MODE) -> None:
    """Replace `path` with `data`, with file mode `mode` (0600 unless told), all at once or not at all."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            # The umask may have removed bits but never adds any; fchmod makes the mode exact.
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
