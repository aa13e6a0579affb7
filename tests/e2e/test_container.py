"""The container without Docker: the image's entry point, run as uid 10001 against a certificate
folder prepared as the README's "Container" section says.

The Dockerfile is read for what the image would do (its ENV, WORKDIR, USER, ENTRYPOINT and CMD);
`/app` becomes a temporary folder and the listening address a free loopback port. The broker runs
under this machine's Debian python3.11 with the installed packages on PYTHONPATH, because the
test environment's own interpreter may live where uid 10001 cannot read (as under /root).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.broker_process import _free_port
from tests.e2e.broker_support import REPO
from tests.e2e.test_readme import Shell, readme_commands

pytestmark = [pytest.mark.slow, pytest.mark.foreign_broker, pytest.mark.timeout(300)]

UID = GID = 10001


def _dockerfile() -> dict[str, object]:
    """ENV, WORKDIR, USER, ENTRYPOINT and CMD of the Dockerfile's last stage."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    stage = text[text.rindex("\nFROM ") :]
    image: dict[str, object] = {"env": {}}
    for line in stage.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "ENV":
            env = image["env"]
            assert isinstance(env, dict)
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
        elif word in ("WORKDIR", "USER"):
            image[word.lower()] = rest.strip()
        elif word in ("ENTRYPOINT", "CMD"):
            image[word.lower()] = json.loads(rest)
    return image


def _python_for(uid: int) -> str | None:
    """A python3.X of the test's version that `uid` can run, or None."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (shutil.which(version, path="/usr/bin:/usr/local/bin"),):
        if (
            candidate
            and subprocess.run(
                [candidate, "-c", "pass"], user=uid, group=uid, extra_groups=[], capture_output=True, check=False
            ).returncode
            == 0
        ):
            return candidate
    return None


@pytest.fixture
def app() -> Iterator[Path]:
    """An /app folder that uid 10001 can enter (pytest's tmp_path is root's only)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run the broker as uid 10001")
    folder = Path(tempfile.mkdtemp(prefix="isb-container-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _prepare_certificates_as_documented(app: Path) -> None:
    # The README's commands, as root on the host, in a copy of the repository's examples.
    shutil.copytree(REPO / "examples", app / "examples")
    shell = Shell(app, broker="127.0.0.1:1")
    for command in readme_commands("Container"):
        shell.run(command)


class Image:
    """The image's entry point with the image's environment, /app mapped to a folder."""

    def __init__(self, app: Path) -> None:
        python = _python_for(UID)
        if python is None:
            pytest.skip(f"no python{sys.version_info.major}.{sys.version_info.minor} that uid {UID} can run")
        self.python = python
        self.app = app
        image = _dockerfile()
        assert image["user"] == "isb"
        assert image["entrypoint"] == ["isb"]
        env = image["env"]
        assert isinstance(env, dict)
        self.port = _free_port()
        self.env = {key: value.replace("/app", str(app)) for key, value in env.items()}
        self.env["ISB_LISTEN"] = f"127.0.0.1:{self.port}"  # the image binds 0.0.0.0:7443
        self.env.update(
            HOME=str(app),
            PATH="/usr/bin:/bin",
            ISB_LOG_LEVEL="info",
            PYTHONPATH=os.pathsep.join([sysconfig.get_paths()["purelib"], str(REPO)]),
        )
        command = image["cmd"]
        assert isinstance(command, list)
        self.command = [python, "-m", "clients.cli", *command]
        for folder in ("var", "policy"):  # as the image's RUN line creates them
            (app / folder).mkdir(exist_ok=True)
            os.chown(app / folder, UID, GID)
        shutil.copy(app / "examples" / "policy-production.toml", app / "policy" / "policy.toml")
        os.chown(app / "policy" / "policy.toml", UID, GID)
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command,
            cwd=self.app,
            env=self.env,
            user=UID,
            group=GID,
            extra_groups=[],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def healthcheck(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.python, "-m", "clients.healthcheck"],
            cwd=self.app,
            env=self.env,
            user=UID,
            group=GID,
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def wait_healthy(self, timeout: float = 30.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the broker exited with {self.process.returncode}: {self.process.stdout.read()}")  # type: ignore[union-attr]
            if self.healthcheck().returncode == 0:
                return
            time.sleep(0.3)
        pytest.fail(f"not healthy within {timeout} s: {self.healthcheck().stderr}")

    def stop(self) -> str:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.terminate()
        output, _ = self.process.communicate(timeout=20)
        return output

    def wait(self, timeout: float = 60.0) -> str:
        assert self.process is not None
        output, _ = self.process.communicate(timeout=timeout)
        return output


def test_entry_point_as_uid_10001_serves_from_a_folder_prepared_as_documented(app: Path) -> None:
    """Keys of group 10001, mode 0640: the broker starts as uid 10001, its health check says healthy
    without any client certificate, and the keys are not readable by others."""
    _prepare_certificates_as_documented(app)
    certs = app / "certs" / "prod"
    for key in ("broker.key", "audit.key"):
        info = (certs / key).stat()
        assert (info.st_gid, stat.S_IMODE(info.st_mode)) == (GID, 0o640)
    assert not (certs / "ca.key").exists()  # the CA's key stays with the CA
    image = Image(app)
    image.env["ISB_CERT_DIR"] = str(certs)  # compose mounts certs/prod at /app/certs
    image.env["ISB_TRUST_DOMAIN"] = "isb.example.eu"
    image.start()
    try:
        image.wait_healthy()
        health = json.loads((app / "var" / "health.json").read_text())
        assert health["status"] == "SERVING"
    finally:
        output = image.stop()
    events = [json.loads(line) for line in output.splitlines()]
    assert "broker.started" in [e["event"] for e in events]
    assert image.healthcheck().returncode == 1  # stopped: NOT_SERVING


def test_a_key_the_container_cannot_read_stops_the_broker_with_one_line_naming_it(app: Path) -> None:
    """A broker key left 0600 for its host owner: the entry point exits at once, naming the file and the fix."""
    _prepare_certificates_as_documented(app)
    certs = app / "certs" / "prod"
    (certs / "broker.key").chmod(0o600)
    os.chown(certs / "broker.key", 0, 0)
    image = Image(app)
    image.env["ISB_CERT_DIR"] = str(certs)
    image.start()
    output = image.wait()
    assert image.process is not None
    assert image.process.returncode == 2, output
    [exit_event] = [json.loads(line) for line in output.splitlines() if '"broker.exit"' in line]
    reason = exit_event["reason"]
    assert f"server_key {certs / 'broker.key'} is not readable by the broker (uid {UID}" in reason
    assert "mode 0600" in reason
    assert f"chgrp {GID} {certs / 'broker.key'}" in reason
    assert "Traceback" not in output
