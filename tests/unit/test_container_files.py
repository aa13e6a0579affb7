"""The build context and the image: what goes in, and what never does."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_dockerignore_admits_only_what_the_dockerfile_copies() -> None:
    """.dockerignore excludes everything (certs/, var/, .venv) except the sources the Dockerfile copies."""
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    admitted = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied: set[str] = set()
    for match in re.finditer(r"^COPY (?!--from)(.+) \S+$", (REPO / "Dockerfile").read_text(), flags=re.MULTILINE):
        copied.update(match.group(1).split())
    assert copied <= admitted
    assert not admitted & {"certs", "var", ".venv", "tests", "bench"}


def test_image_runs_as_uid_10001_with_a_health_check_that_needs_no_certificate() -> None:
    """The final stage runs as the isb user (uid 10001) and checks health from the health file."""
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "--uid 10001" in dockerfile
    assert "USER isb" in dockerfile
    assert 'CMD ["python", "-m", "clients.healthcheck"]' in dockerfile
    assert "ISB_HEALTH_FILE=" in dockerfile
    assert "admin.key" not in (REPO / "clients" / "healthcheck.py").read_text()
