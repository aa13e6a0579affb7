"""`isb audit report --from --to` over real mTLS (issue 16): the DPO's report is computed from an export
verified against the audit key, as a table, CSV and JSON."""

from __future__ import annotations

import base64
import csv
import datetime as dt
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest

from broker.pki.dev import DevPki
from clients import AgencyClient
from clients.cli import main as isb
from tests.e2e.broker_support import Database, RunningBroker, copy_pki
from tests.e2e.pki_support import dev_policy_plus


def test_report_counts_disclosures_consultations_and_erasures_of_the_period(
    agencies: dict[str, AgencyClient],
    broker: RunningBroker,
    pki: DevPki,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two justified disclosures, one unjustified, an auditor's query and a confirmed recall show in the report."""
    customs, police = agencies["FR-CUSTOMS"], agencies["DE-BKA"]
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    first = customs.send(["DE-BKA", "NL-FIOD"], b"a", tlp="GREEN", legal_basis="NAPLES-II", case_reference="C-1")
    customs.send(["DE-BKA"], b"b", tlp="GREEN")
    police.ack(next(police.deliveries(timeout=10)))
    customs.recall(first.message_id, ["DE-BKA"], tlp="GREEN")
    for message in police.deliveries(timeout=10):  # the second alert, then the RECALL, which the SDK honours
        if message.erased is not None:
            break
        police.ack(message)
    assert message.erased is not None
    certs = copy_pki(pki, tmp_path / "pki")
    connection = ["--broker", broker.target, "--certs", str(certs)]
    assert (
        isb(
            [
                "audit",
                "prove",
                first.message_id,
                *connection,
                "--legal-basis",
                "LED-ART8",
                "--operator",
                "dpo-1",
                "--json",
            ]
        )
        == 0
    )
    capsys.readouterr()

    assert isb(["audit", "report", "--from", start.isoformat(), *connection, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_section: dict[str, list[tuple[str, str, int]]] = {}
    for row in rows:
        by_section.setdefault(row["section"], []).append((row["subject"], row["legal_basis"], row["count"]))
    assert by_section["disclosures"] == [
        ("DE-BKA", "(none)", 1),
        ("DE-BKA", "NAPLES-II", 1),
        ("NL-FIOD", "NAPLES-II", 1),
    ]
    consulted = {(r["subject"], r["legal_basis"]): r["detail"] for r in rows if r["section"] == "consultations"}
    # The query and one proof per entry of the message, all justified; the checkpoint requests are not counted.
    assert consulted["spiffe://isb.dev/auditor/audit-1", "LED-ART8"].endswith("QueryEntries=1")
    assert ("spiffe://isb.dev/auditor/audit-1", "(none)") not in consulted
    assert by_section["erasures"] == [("DE-BKA", "", 1)]

    assert isb(["audit", "report", "--from", start.isoformat(), *connection, "--csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    # The same disclosures; consultations grew by the first report's own export, now under a checkpoint.
    assert [r for r in table if r["section"] == "disclosures"] == [
        {k: str(v) for k, v in r.items()} for r in rows if r["section"] == "disclosures"
    ]
    assert table[0]["detail"] == "ALERT=1; with case reference: 0"

    assert isb(["audit", "report", "--from", start.isoformat(), *connection]) == 0
    text = capsys.readouterr().out
    assert "from entries verified under checkpoint" in text
    assert "purges: none in this period" in text  # no retention run in this test


def test_report_of_a_tampered_export_fails(
    agencies: dict[str, AgencyClient],
    broker: RunningBroker,
    pki: DevPki,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An export changed after the fact yields no report: the verification fails first."""
    agencies["FR-CUSTOMS"].send(["DE-BKA"], b"a", tlp="GREEN", legal_basis="NAPLES-II")
    certs = copy_pki(pki, tmp_path / "pki")
    connection = ["--broker", broker.target, "--certs", str(certs)]
    export = tmp_path / "audit.jsonl"
    assert isb(["audit", "checkpoint", "--fresh", *connection]) == 0
    assert isb(["audit", "export", "--out", str(export), *connection]) == 0
    # The justification of the disclosure is rewritten in its entry (the leaf hash is left as it was).
    lines = export.read_text().splitlines()
    for i, line in enumerate(lines):
        document = json.loads(line)
        entry = base64.b64decode(document.get("entry", ""))
        if b"NAPLES-II" in entry:
            document["entry"] = base64.b64encode(entry.replace(b"NAPLES-II", b"LED-ART8")).decode()
            lines[i] = json.dumps(document)
    export.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert isb(["audit", "report", "--from", "2000-01-01", "--export", str(export), *connection]) == 1
    assert "was changed: its content does not match its leaf hash" in capsys.readouterr().err


def test_report_counts_a_purge_run_of_the_period(
    broker_factory: Any,
    pki: DevPki,
    database: Database,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A real purge (`isb admin retention`) of an alert past its 1-second period is a row of the purges section."""
    policy = dev_policy_plus(tmp_path, '\n[[retention.rules]]\nname = "short"\nkinds = ["ALERT"]\nenvelopes = "1s"\n')
    broker = broker_factory(policy_file=policy)
    police = AgencyClient.from_dir(broker.target, pki.directory, "DE-BKA", keystore=tmp_path / "keys" / "DE-BKA")
    customs = AgencyClient.from_dir(
        broker.target, pki.directory, "FR-CUSTOMS", keystore=tmp_path / "keys" / "FR-CUSTOMS"
    )
    police.publish_key()
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    customs.send(["DE-BKA"], b"short-lived", tlp="GREEN")
    certs = copy_pki(pki, tmp_path / "pki")
    connection = ["--broker", broker.target, "--certs", str(certs)]
    # Until the period has passed (no time is asserted): an admin's run, or the broker's own periodic one.
    while not database.scalar("SELECT count(*) FROM audit_entries WHERE event = 'retention.purged'"):
        time.sleep(0.5)
        assert isb(["admin", "retention", *connection, "--json"]) == 0
    capsys.readouterr()
    assert isb(["audit", "report", "--from", start.isoformat(), *connection, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    purges = [r for r in rows if r["section"] == "purges"]
    assert [(p["count"], p["detail"]) for p in purges] == [(1, "envelopes=1; rules: envelopes:short:1s:1")]
    assert purges[0]["subject"].endswith(("(admin)", "(schedule)"))
    customs.close()
    police.close()
