"""`isb watchlist screen` manifests: CSV and PAXLST-like JSON become screening records."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from clients.cli.watchlist_cmd import manifest_records, register


def test_csv_manifest_reads_named_columns(tmp_path: Path) -> None:
    """A CSV with surname/first_name/dob columns maps onto record fields, ids from the row number."""
    path = tmp_path / "pax.csv"
    path.write_text("surname,first_name,dob,passport_number\nMüller,Hans,1970-03-04,C01X00T47\n", encoding="utf-8")
    [record] = manifest_records(path)
    assert (record.record_id, record.family_name, record.given_names, record.date_of_birth,
            record.document_number) == ("1", "Müller", "Hans", "1970-03-04", "C01X00T47")


def test_paxlst_json_reads_nested_document_numbers(tmp_path: Path) -> None:
    """A {"passengers": [...]} manifest with document objects yields one record per passenger."""
    path = tmp_path / "pax.json"
    path.write_text(json.dumps({"flight": "AF1234", "passengers": [
        {"id": "P1", "surname": "Dupont", "given_names": "Jean", "document": {"number": "X1"}},
        {"id": "P2", "name": "Eve Example"}]}), encoding="utf-8")
    records = list(manifest_records(path))
    assert [(r.record_id, r.document_number, r.name) for r in records] == [("P1", "X1", ""), ("P2", "", "Eve Example")]


def test_register_adds_the_four_commands() -> None:
    """create, publish, sync and screen are registered under `watchlist`."""
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["watchlist", "screen", "--id", "FR-CUSTOMS/wanted", "--owner", "FR-CUSTOMS",
                              "--replica", "r.db", "pax.csv"])
    assert (args.watchlist_command, args.owner) == ("screen", "FR-CUSTOMS")
