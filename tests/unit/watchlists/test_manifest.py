"""Manifests: column aliases, encodings and separators, and every defect named by its row."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clients.watchlist.manifest import ACCEPTED_COLUMNS, ManifestError, parse_manifest, read_manifest

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def _csv(text: str) -> bytes:
    return text.encode("utf-8")


def test_csv_aliases_map_onto_record_fields() -> None:
    """Surname/First Name/DOB/Passport headers (any case, spaces) fill the record; ids default to row numbers."""
    manifest = parse_manifest(
        _csv("Surname,First Name,DOB,Passport,Issuing Country\nMüller,Hans,1970-03-04,C01,DEU\n"), json_format=False
    )
    [record] = manifest.records
    assert (
        record.record_id,
        record.family_name,
        record.given_names,
        record.date_of_birth,
        record.document_number,
        record.document_country,
    ) == ("2", "Müller", "Hans", "1970-03-04", "C01", "DEU")
    assert manifest.problems == []


@pytest.mark.parametrize("header", ["FAMILY_NAME,given_names", "family-name,Given-Names", "LAST_NAME,FIRSTNAME"])
def test_csv_header_spellings_are_recognised(header: str) -> None:
    """Upper case, dashes and the usual synonyms are the same columns."""
    [record] = parse_manifest(_csv(f"{header}\nDupont,Jean\n"), json_format=False).records
    assert (record.family_name, record.given_names) == ("Dupont", "Jean")


def test_csv_unknown_column_is_refused_with_the_accepted_names() -> None:
    """A misspelt header refuses the manifest and lists what would be accepted."""
    with pytest.raises(ManifestError, match=r"unknown column\(s\) 'Surnmae'.*accepted column names: .*family_name"):
        parse_manifest(_csv("Surnmae,given_names\nDupont,Jean\n"), json_format=False)


def test_csv_without_header_is_refused_and_points_to_columns() -> None:
    """A first row of data is not taken for a header: the error says to use --columns."""
    with pytest.raises(ManifestError, match=r"names no known column.*--columns"):
        parse_manifest(_csv("Dupont,Jean,1970-01-01\n"), json_format=False)


def test_csv_without_header_is_read_with_columns() -> None:
    """--columns names the columns of a headerless file; every line is a passenger."""
    manifest = parse_manifest(
        _csv("Dupont,Jean,1970-01-01\nMartin,Anne,1980-02-02\n"),
        json_format=False,
        columns=["family_name", "given_names", "dob"],
    )
    assert [(r.record_id, r.family_name) for r in manifest.records] == [("1", "Dupont"), ("2", "Martin")]


def test_csv_byte_order_mark_is_ignored() -> None:
    """A UTF-8 BOM (Excel's export) does not spoil the first column name."""
    [record] = parse_manifest(b"\xef\xbb\xbfsurname,given_names\nDupont,Jean\n", json_format=False).records
    assert record.family_name == "Dupont"


def test_csv_semicolon_separated_is_read() -> None:
    """A semicolon-separated file (European Excel) is read like a comma-separated one."""
    [record] = parse_manifest(
        _csv("surname;given_names;dob\nDupont;Jean, Pierre;01.02.1970\n"), json_format=False
    ).records
    assert (record.family_name, record.given_names, record.date_of_birth) == ("Dupont", "Jean, Pierre", "01.02.1970")


def test_csv_not_utf8_is_refused_naming_the_line() -> None:
    """Latin-1 bytes are refused with the line they are on."""
    with pytest.raises(ManifestError, match=r"not UTF-8 text.*line 2"):
        parse_manifest(b"surname\nM\xfcller\n", json_format=False)


def test_csv_bad_rows_are_reported_by_row_and_the_rest_is_read() -> None:
    """Too many cells, an empty name, a broken quote: each named by its line, the good rows still read."""
    manifest = parse_manifest(
        _csv('surname,given_names\nA,B,C\n,\nDupont,Jean\n"Broken,X\nMartin,Anne\n'), json_format=False
    )
    assert [r.family_name for r in manifest.records] == ["Dupont", "Martin"]
    assert [p.row for p in manifest.problems] == [2, 5]
    assert "3 cells" in manifest.problems[0].message
    assert "not valid CSV" in manifest.problems[1].message


def test_csv_row_without_anything_to_screen_is_reported() -> None:
    """A row with only a date of birth screens nothing: reported, not silently passed."""
    manifest = parse_manifest(_csv("surname,dob\n,1970-01-01\n"), json_format=False)
    assert manifest.records == []
    assert str(manifest.problems[0]).startswith("row 2: no name, document or identifier")


def test_csv_ten_megabyte_field_is_one_row_problem() -> None:
    """A 10 MB field is reported for its row; the rows around it are read."""
    big = "X" * 10_000_000
    manifest = parse_manifest(_csv(f"surname,given_names\nDupont,Jean\n{big},Y\nMartin,Anne\n"), json_format=False)
    assert [r.family_name for r in manifest.records] == ["Dupont", "Martin"]
    [problem] = manifest.problems
    assert problem.row == 3
    assert len(str(problem)) < 200


def test_unreadable_date_of_birth_is_reported_and_screened_without_it() -> None:
    """`31/31/1970` is named on its row; the passenger is still screened."""
    manifest = parse_manifest(_csv("surname,dob\nDupont,31/31/1970\n"), json_format=False)
    assert [r.family_name for r in manifest.records] == ["Dupont"]
    assert "date of birth '31/31/1970'" in str(manifest.problems[0])


def test_empty_csv_is_refused() -> None:
    """An empty file is an error, not a manifest without passengers."""
    with pytest.raises(ManifestError, match="empty"):
        parse_manifest(b"", json_format=False)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ("42", "is a number"),
        ('"passengers"', "is a string"),
        ('{"passengers": 5}', "'passengers' is a number"),
        ('{"flight": "AF1"}', "without 'passengers'"),
        ("[1, 2", "not JSON"),
        ("null", "is null"),
        ("[" * 100_000 + "]" * 100_000, "nests too deeply|not JSON"),
    ],
)
def test_json_manifest_of_the_wrong_shape_is_one_clear_error(document: str, expected: str) -> None:
    """`42`, a string, `{"passengers": 5}`, an object without passengers, broken or deep JSON: ManifestError."""
    with pytest.raises(ManifestError, match=expected):
        parse_manifest(document.encode(), json_format=True)


def test_json_passenger_that_is_not_an_object_is_reported_and_skipped() -> None:
    """A number among the passengers is named by its position; the others are read."""
    manifest = parse_manifest(
        json.dumps({"passengers": [{"surname": "A"}, 7, {"surname": "B"}]}).encode(), json_format=True
    )
    assert [r.family_name for r in manifest.records] == ["A", "B"]
    assert str(manifest.problems[0]) == "row 2: passenger is a number, not an object; row skipped"


def test_json_unknown_key_is_refused() -> None:
    """A passenger key outside the aliases refuses the manifest, as a CSV column would."""
    with pytest.raises(ManifestError, match=r"passenger 1 has unknown column.*'surnam'"):
        parse_manifest(json.dumps([{"surnam": "A"}]).encode(), json_format=True)


def test_json_nested_value_is_a_row_problem() -> None:
    """A name that is a list is reported for its passenger."""
    manifest = parse_manifest(json.dumps([{"surname": ["A"]}, {"surname": "B"}]).encode(), json_format=True)
    assert [r.family_name for r in manifest.records] == ["B"]
    assert "'surname' is a list" in str(manifest.problems[0])


def test_json_document_object_gives_number_and_country() -> None:
    """{"document": {"number", "issuing_country"}} fills document number and country."""
    [record] = parse_manifest(
        json.dumps([{"surname": "A", "document": {"number": "X1", "issuing_country": "FRA", "type": "P"}}]).encode(),
        json_format=True,
    ).records
    assert (record.document_number, record.document_country) == ("X1", "FRA")


def test_example_manifests_read_without_problems() -> None:
    """examples/manifest.csv and examples/manifest-paxlst.json are valid manifests."""
    csv_manifest = read_manifest(EXAMPLES / "manifest.csv")
    json_manifest = read_manifest(EXAMPLES / "manifest-paxlst.json")
    assert (len(csv_manifest.records), csv_manifest.problems) == (5, [])
    assert (len(json_manifest.records), json_manifest.problems) == (4, [])


def test_missing_manifest_file_is_one_line(tmp_path: Path) -> None:
    """A path that does not exist is a ManifestError naming it."""
    with pytest.raises(ManifestError, match=r"cannot read manifest .*nope.csv"):
        read_manifest(tmp_path / "nope.csv")


def test_accepted_columns_include_every_canonical_field() -> None:
    """The documented list names each record field."""
    assert {"family_name", "given_names", "name", "date_of_birth", "document_number", "document_country"} <= set(
        ACCEPTED_COLUMNS
    )


_cells = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"), max_size=30)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=400), st.booleans())
def test_any_bytes_give_a_manifest_or_a_manifest_error(data: bytes, json_format: bool) -> None:
    """Arbitrary bytes never raise anything but ManifestError."""
    try:
        manifest = parse_manifest(data, json_format=json_format)
    except ManifestError as exc:
        message = str(exc)
    else:
        assert all(p.row >= 1 for p in manifest.problems)
        return
    assert "\n" not in message


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(_cells, min_size=1, max_size=5), max_size=8), st.sampled_from([",", ";", "\t"]))
def test_any_rows_under_a_valid_header_are_records_or_row_problems(rows: list[list[str]], separator: str) -> None:
    """Under a valid header, problems name data lines and no line gives more than one record."""
    lines = [separator.join(["surname", "given_names", "dob"])] + [separator.join(r) for r in rows]
    text = "\n".join(lines)
    try:
        manifest = parse_manifest(text.encode("utf-8"), json_format=False)
    except ManifestError:
        return  # the header itself was spoilt by a generated separator in a cell
    assert all(2 <= p.row <= len(lines) for p in manifest.problems)
    assert len(manifest.records) <= len(lines) - 1


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(["passengers", "crew", "surname", "name", "dob", "document", "number", "x"]),
                children,
                max_size=4,
            )
        ),
        max_leaves=20,
    )
)
def test_any_json_value_gives_a_manifest_or_a_manifest_error(value: object) -> None:
    """Any JSON document is read or refused with ManifestError, never another exception."""
    with contextlib.suppress(ManifestError):
        parse_manifest(json.dumps(value).encode(), json_format=True)
