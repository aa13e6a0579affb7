"""`isb watchlist screen`: one clear line for every manifest or replica defect, never a traceback."""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

import pytest

from clients.cli import main
from clients.cli.watchlist_cmd import register
from clients.watchlist import WatchlistReplica

ARGS = ["watchlist", "screen", "--id", "FR-CUSTOMS/wanted", "--owner", "FR-CUSTOMS"]


def test_register_adds_the_four_commands() -> None:
    """create, publish, sync and screen are registered under `watchlist`."""
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["watchlist", "screen", "--id", "FR-CUSTOMS/wanted", "--owner", "FR-CUSTOMS", "--replica", "r.db", "pax.csv"]
    )
    assert (args.watchlist_command, args.owner) == ("screen", "FR-CUSTOMS")


def _run(tmp_path: Path, capsys: pytest.CaptureFixture[str], manifest: Path, replica: Path | None = None) -> str:
    status = main([*ARGS, "--replica", str(replica or tmp_path / "replica.db"), str(manifest)])
    err = capsys.readouterr().err
    assert status == 1
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    return err


@pytest.mark.parametrize(
    ("document", "expected"),
    [("42", "is a number"), ('{"passengers": 5}', "'passengers' is a number"), ('"just a string"', "is a string")],
)
def test_json_manifest_of_the_wrong_shape_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], document: str, expected: str
) -> None:
    """`42`, `{"passengers": 5}` and a plain string each give exit 1 and one error line."""
    manifest = tmp_path / "pax.json"
    manifest.write_text(document, encoding="utf-8")
    assert expected in _run(tmp_path, capsys, manifest)


def test_mistyped_replica_is_an_error_not_an_empty_replica(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A --replica path that does not exist is refused, and no file is created there."""
    manifest = tmp_path / "pax.csv"
    manifest.write_text("surname\nDupont\n", encoding="utf-8")
    err = _run(tmp_path, capsys, manifest, tmp_path / "replcia.db")
    assert "no replica file at" in err
    assert "isb watchlist sync" in err
    assert not (tmp_path / "replcia.db").exists()


def test_replica_never_synced_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A replica file that holds no version yet is refused rather than screening against nothing."""
    WatchlistReplica(tmp_path / "replica.db", watchlist_id="FR-CUSTOMS/wanted", owner="FR-CUSTOMS").close()
    manifest = tmp_path / "pax.csv"
    manifest.write_text("surname\nDupont\n", encoding="utf-8")
    assert "holds no version" in _run(tmp_path, capsys, manifest)


def test_replica_that_is_not_a_database_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Passing the manifest as --replica (a text file) is named as not a replica."""
    manifest = tmp_path / "pax.csv"
    manifest.write_text("surname\nDupont\n", encoding="utf-8")
    assert "is not a watchlist replica" in _run(tmp_path, capsys, manifest, manifest)


def test_csv_with_a_ten_megabyte_field_is_reported_by_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 10 MB field is a row problem, not a traceback; the unknown-header case is one line."""
    manifest = tmp_path / "pax.csv"
    manifest.write_text("surname,given_names\n" + "X" * 10_000_000 + ",Y\n", encoding="utf-8")
    WatchlistReplica(tmp_path / "replica.db", watchlist_id="FR-CUSTOMS/wanted", owner="FR-CUSTOMS").close()
    # The replica holds no version: the error is about the replica, and the manifest was read first.
    assert "holds no version" in _run(tmp_path, capsys, manifest)
    bad = tmp_path / "bad.csv"
    bad.write_text("Surname,DOBB\nDupont,1970\n", encoding="utf-8")
    assert "unknown column(s) 'DOBB'" in _run(tmp_path, capsys, bad)


def test_screen_prints_row_problems_and_hits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Against a synced replica, bad rows are printed by number and the good ones are screened."""
    WatchlistReplica(tmp_path / "replica.db", watchlist_id="FR-CUSTOMS/wanted", owner="FR-CUSTOMS").close()
    with sqlite3.connect(tmp_path / "replica.db") as db:  # a replica at version 1 with no entries
        db.execute("UPDATE replica_meta SET value = '1' WHERE key = 'version'")
    manifest = tmp_path / "pax.csv"
    manifest.write_text("surname,given_names\nA,B,C\nDupont,Jean\n", encoding="utf-8")
    status = main([*ARGS, "--replica", str(tmp_path / "replica.db"), str(manifest)])
    err = capsys.readouterr().err.splitlines()
    assert status == 0
    assert err[0].endswith("row 2: 3 cells, the header names 2 columns; row skipped")
    assert json.loads(err[-1]) == {"records": 1, "hits": 0, "row_problems": 1}
