"""`isb send --attach` and `isb listen --save-attachments` over real mTLS."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from broker.pki.dev import DevPki
from clients import AgencyClient
from clients.cli import main as isb
from clients.cli.progress import ProgressBar
from tests.e2e.broker_support import RunningBroker, copy_pki


def _connection(broker: RunningBroker, certs: Path, agency: str) -> list[str]:
    return ["--broker", broker.target, "--agency", agency, "--certs", str(certs)]


def test_send_with_two_attachments_and_listen_saves_them_verified(
    broker_factory: Any,
    pki: DevPki,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two files attached with --attach arrive, verified, in the folder given to --save-attachments."""
    # A private PKI copy: the CLI keeps keys and trust state under --certs, which must not leak to other tests.
    certs = copy_pki(pki, tmp_path / "pki")
    broker = broker_factory(cert_dir=certs)
    photo, scan = tmp_path / "statuette.jpg", tmp_path / "scan.pdf"
    photo.write_bytes(os.urandom(1_500_000))
    scan.write_bytes(b"%PDF-1.7 inventory")
    # The police's key is published with a keystore the CLI finds: its default under --certs.
    police = AgencyClient.from_dir(broker.target, certs, "DE-BKA")
    police.publish_key()
    police.close()
    assert (
        isb(
            [
                "send",
                *_connection(broker, certs, "FR-CUSTOMS"),
                "--to",
                "DE-BKA",
                "--text",
                "photos attached",
                "--attach",
                str(photo),
                "--attach",
                str(scan),
                "--json",
            ]
        )
        == 0
    )
    sent = json.loads(capsys.readouterr().out)
    out = tmp_path / "received"
    assert (
        isb(
            [
                "listen",
                *_connection(broker, certs, "DE-BKA"),
                "--count",
                "1",
                "--idle",
                "10",
                "--save-attachments",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    assert line["message_id"] == sent["message_id"]
    saved = [Path(a["saved"]) for a in line["attachments"]]
    assert [p.name for p in saved] == [f"{sent['message_id']}-0.jpg", f"{sent['message_id']}-1.pdf"]
    assert saved[0].read_bytes() == photo.read_bytes()
    assert saved[1].read_bytes() == scan.read_bytes()


def test_send_refuses_a_missing_attachment_file(
    broker: RunningBroker,
    pki: DevPki,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A path that is not a file is refused before anything is sent."""
    code = isb(
        [
            "send",
            *_connection(broker, pki.directory, "FR-CUSTOMS"),
            "--to",
            "DE-BKA",
            "--text",
            "x",
            "--attach",
            str(tmp_path / "nope.jpg"),
        ]
    )
    assert code == 1
    assert "cannot attach" in capsys.readouterr().err


def test_progress_bar_draws_on_a_terminal_and_ends_its_line(tmp_path: Path) -> None:
    """The bar shows percent and rate for transfers over a megabyte, and nothing for small ones."""
    with (tmp_path / "tty").open("w+") as stream:
        bar = ProgressBar("uploading", stream=stream, force=True)
        bar(10, 100)
        bar(5 << 20, 10 << 20)
        bar(10 << 20, 10 << 20)
        bar.close()
        stream.seek(0)
        text = stream.read()
    assert "uploading [" in text
    assert "100%" in text
    assert text.endswith("\n")
    assert "10 " not in text.split("\r")[0]
