"""The health file a container health check reads instead of calling the mutual-TLS port."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from broker.health import MAX_AGE_SECONDS, read_health_file, write_health_file


def test_a_fresh_serving_file_is_healthy(tmp_path: Path) -> None:
    """SERVING written just now reads as SERVING."""
    path = tmp_path / "health.json"
    write_health_file(path, {"status": "SERVING", "updated": time.time()})
    assert read_health_file(path) == "SERVING"


def test_not_serving_is_unhealthy(tmp_path: Path) -> None:
    """NOT_SERVING (the writer cannot commit, or the broker stopped) is refused with the status."""
    path = tmp_path / "health.json"
    write_health_file(path, {"status": "NOT_SERVING", "updated": time.time()})
    with pytest.raises(ValueError, match="NOT_SERVING"):
        read_health_file(path)


def test_a_stale_file_means_a_stuck_broker(tmp_path: Path) -> None:
    """A file not rewritten for longer than the allowed age is unhealthy, whatever it says."""
    path = tmp_path / "health.json"
    write_health_file(path, {"status": "SERVING", "updated": 1000.0})
    with pytest.raises(ValueError, match="stuck or stopped"):
        read_health_file(path, now=1000.0 + MAX_AGE_SECONDS + 1)


def test_a_missing_file_says_the_broker_has_not_started(tmp_path: Path) -> None:
    """No file yet: unhealthy, saying why."""
    with pytest.raises(ValueError, match="has not started"):
        read_health_file(tmp_path / "absent.json")
