"""The README's walkthrough and "Adding an agency", run as written against a real broker over mTLS.

Each ```sh block of a section is split into commands (a trailing backslash continues a line, a
heredoc runs to its terminator) and each command runs in bash, in a folder laid out like the
repository (`certs/dev` holds the deployment's PKI), with the `isb` of this environment first on
PATH. Only what a reader does outside the shell differs: `make run` and `. .venv/bin/activate` are
this test's broker and PATH (reached through ISB_BROKER), and MESSAGE_ID is the id the previous
`isb send` printed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from broker.pki.dev import DevPki
from tests.e2e.broker_support import REPO, Database, copy_pki

_SKIPPED = ("make run", ". .venv/bin/activate")
_MESSAGE_ID = re.compile(r"message.id\W+([0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12})")


def readme_commands(section: str, readme: Path = REPO / "README.md") -> list[str]:
    """The shell commands of the ```sh blocks under the `## {section}` heading, in order."""
    text = readme.read_text(encoding="utf-8")
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end > 0 else len(text)]
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", body, flags=re.DOTALL):
        lines = block.splitlines()
        while lines:
            line = lines.pop(0)
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            while line.endswith("\\") and lines:
                line = line[:-1] + " " + lines.pop(0).strip()
            heredoc = re.search(r"<<'?(\w+)'?", line)
            if heredoc:
                terminator = heredoc.group(1)
                document = []
                while lines and lines[0] != terminator:
                    document.append(lines.pop(0))
                lines.pop(0)
                line = "\n".join([line, *document, terminator])
            commands.append(line)
    return commands


class Shell:
    """Runs README commands one by one in `cwd`, as a reader's shell would."""

    def __init__(self, cwd: Path, broker: str) -> None:
        self.cwd = cwd
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ISB_")}
        self.env.update(
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            ISB_BROKER=broker,
            HOME=str(cwd),
            NO_COLOR="1",
            COLUMNS="200",
        )
        self.message_id = ""
        self.transcript: list[str] = []

    def run(self, command: str) -> str:
        if command.startswith(_SKIPPED):
            return ""
        if "MESSAGE_ID" in command:
            assert self.message_id, f"no message id for {command!r}"
            command = command.replace("MESSAGE_ID", self.message_id)
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        self.transcript.append(f"$ {command}\n{result.stdout}{result.stderr}")
        assert result.returncode == 0, "\n".join(self.transcript[-3:])
        assert "Traceback" not in result.stderr, result.stderr
        if found := _MESSAGE_ID.search(result.stdout):
            self.message_id = found.group(1)
        return result.stdout


def _repository_layout(pki: DevPki, tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    copy_pki(pki, root / "certs" / "dev")
    shutil.copytree(REPO / "examples", root / "examples")
    return root


@pytest.mark.slow
@pytest.mark.timeout(600)  # some 25 `isb` processes, each importing the SDK: slow on a loaded machine
def test_readme_walkthrough_and_adding_an_agency_work_as_written(
    pki: DevPki,
    database: Database,
    broker_factory: Any,
    tmp_path: Path,
) -> None:
    """Every command of the walkthrough and of "Adding an agency" succeeds, and each says what it should."""
    root = _repository_layout(pki, tmp_path)
    broker = broker_factory(cert_dir=root / "certs" / "dev", policy_file=root / "examples" / "policy-dev.toml")
    shell = Shell(root, broker.target)
    outputs = [shell.run(c) for c in readme_commands("Walkthrough: French customs alerts the German police")]
    walkthrough = "\n".join(outputs)
    assert "Passenger risk: traveller on AF1234" in walkthrough
    assert re.search(r"queued for\s+DE-BKA, NL-FIOD", walkthrough)
    assert "DELIVERED" in walkthrough or "ACKNOWLEDGED" in walkthrough
    assert "OK: isb.dev/audit:" in walkthrough

    outputs = [shell.run(c) for c in readme_commands("Adding an agency")]
    onboarding = "\n".join(outputs)
    assert "Container MSCU1234565: undeclared cash" in onboarding
    assert "Received, thank you" in onboarding
    assert database.scalar("SELECT count(*) FROM key_bundles WHERE agency = 'IT-GDF'") == 1
    assert (root / "it-gdf" / "isb.toml").is_file()
