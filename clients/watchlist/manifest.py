"""Passenger manifests (API/PNR) read into screening records, with every defect named.

Two formats:
- **CSV**: UTF-8 (a byte-order mark is fine), comma-, semicolon-, tab- or pipe-separated (guessed
  from the header row), one header row whose cells are column names below. A file without a header
  row is read with `columns=` (CLI `--columns`), which names its columns in order.
- **JSON** (PAXLST-like): a list of passenger objects, or an object whose `passengers`,
  `travellers` and/or `crew` are such lists. Keys are the column names below; a `document` object
  may carry `number`, `issuing_country` (or `country`) and `type`.

Column names (case, spaces and dashes do not matter; each field's first name is the canonical one):

| field | also accepted |
|---|---|
| record_id | id, seq, sequence, passenger_id, pax_id, reference |
| family_name | surname, last_name, lastname, family |
| given_names | given_name, first_name, firstname, first_names, forename, forenames, given |
| name | full_name, fullname, passenger_name, pnr_name (also `FAMILY/GIVEN TITLE`) |
| date_of_birth | dob, birth_date, birthdate, date_birth (forms: see clients.watchlist.dates) |
| nationality | citizenship, nationality_code |
| document_number | doc_number, document, document_no, doc_no, passport_number, passport, travel_document_number |
| document_country | issuing_country, issuing_state, doc_country, document_issuing_country |
| vehicle_plate | plate, registration |
| container_number | container |
| catalogue_reference | catalogue_ref, catalog_reference |
| (read, not screened) | sex, gender, seat, flight, document_type, doc_type, document_expiry, place_of_birth |

A column or key outside this table refuses the whole manifest, naming the accepted ones: a
misspelt header would otherwise screen nothing without saying so. A bad row (too many cells, a
field over 256 characters, nothing to screen, a passenger that is not an object) is reported by its
row number and skipped; an unreadable date of birth is reported and the passenger is screened
without it. CSV row numbers are line numbers of the file (the header is row 1); JSON row numbers
count passengers from 1.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from clients.errors import ClientError
from clients.watchlist.dates import parse_date
from clients.watchlist.screening import ScreeningRecord

__all__ = ["ACCEPTED_COLUMNS", "Manifest", "ManifestError", "ManifestProblem", "parse_manifest", "read_manifest"]

_ALIASES: Final[dict[str, tuple[str, ...]]] = {
    "record_id": ("id", "seq", "sequence", "passenger_id", "pax_id", "reference"),
    "family_name": ("surname", "last_name", "lastname", "family"),
    "given_names": ("given_name", "first_name", "firstname", "first_names", "forename", "forenames", "given"),
    "name": ("full_name", "fullname", "passenger_name", "pnr_name"),
    "date_of_birth": ("dob", "birth_date", "birthdate", "date_birth"),
    "nationality": ("citizenship", "nationality_code"),
    "document_number": (
        "doc_number",
        "document",
        "document_no",
        "doc_no",
        "passport_number",
        "passport",
        "travel_document_number",
    ),
    "document_country": ("issuing_country", "issuing_state", "doc_country", "document_issuing_country"),
    "vehicle_plate": ("plate", "registration"),
    "container_number": ("container",),
    "catalogue_reference": ("catalogue_ref", "catalog_reference"),
}
_IGNORED: Final = ("sex", "gender", "seat", "flight", "document_type", "doc_type", "document_expiry", "place_of_birth")
_COLUMN: Final = {alias: canonical for canonical, aliases in _ALIASES.items() for alias in (canonical, *aliases)}
ACCEPTED_COLUMNS: Final = tuple(sorted(_COLUMN)) + _IGNORED
"""Every column name a manifest may use."""

_SCREENED: Final = (
    "family_name",
    "given_names",
    "name",
    "document_number",
    "vehicle_plate",
    "container_number",
    "catalogue_reference",
)
_MAX_FIELD: Final = 256
_MAX_FILE: Final = 512 * 1024 * 1024
_SEPARATORS: Final = ",;\t|"
_PEOPLE_KEYS: Final = ("passengers", "travellers", "crew")
_JSON_TYPES: Final = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


class ManifestError(ClientError):
    """The manifest as a whole cannot be read; the message says why and what would be accepted."""


@dataclass(frozen=True, slots=True)
class ManifestProblem:
    """A defect of one row: reported, and the run goes on."""

    row: int
    message: str

    def __str__(self) -> str:
        return f"row {self.row}: {self.message}"


@dataclass
class Manifest:
    """The records of a manifest, and the problems of the rows that were skipped or read partly."""

    records: list[ScreeningRecord] = field(default_factory=list)
    problems: list[ManifestProblem] = field(default_factory=list)


def _column_key(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def _accepted_text() -> str:
    return ", ".join(ACCEPTED_COLUMNS)


def _columns(names: Sequence[str], *, where: str, header: bool = False) -> list[str | None]:
    """Canonical field per column (None: read, not screened); refuse unknown names."""
    fields: list[str | None] = []
    unknown: list[str] = []
    for name in names:
        key = _column_key(name)
        if key in _COLUMN:
            fields.append(_COLUMN[key])
        elif key in _IGNORED:
            fields.append(None)
        else:
            unknown.append(name)
    if unknown:
        shown = ", ".join(repr(u[:40]) for u in unknown[:10])
        if header and len(unknown) == len(names):
            raise ManifestError(
                f"{where} names no known column ({shown}); if the file has no header row, name "
                f"its columns with --columns; accepted column names: {_accepted_text()}"
            )
        raise ManifestError(f"{where} has unknown column(s) {shown}; accepted column names: {_accepted_text()}")
    seen: dict[str, str] = {}
    for name, canonical in zip(names, fields, strict=True):
        if canonical is not None:
            if canonical in seen:
                raise ManifestError(f"{where}: columns {seen[canonical]!r} and {name!r} both give {canonical}")
            seen[canonical] = name
    return fields


def _record(values: Mapping[str, str], row: int, problems: list[ManifestProblem]) -> ScreeningRecord | None:
    for name, value in values.items():
        if len(value) > _MAX_FIELD:
            problems.append(
                ManifestProblem(row, f"{name} is {len(value)} characters long (at most {_MAX_FIELD}); row skipped")
            )
            return None
    if not any(values.get(f, "").strip() for f in _SCREENED):
        problems.append(ManifestProblem(row, "no name, document or identifier to screen; row skipped"))
        return None
    dob = values.get("date_of_birth", "").strip()
    if dob and parse_date(dob) is None:
        problems.append(
            ManifestProblem(
                row,
                f"date of birth {dob[:40]!r} is not a date this reader knows "
                "(YYYY-MM-DD, DD/MM/YYYY, DD.MM.YYYY, YYYYMMDD, YYMMDD, 12MAR75); "
                "screened without it",
            )
        )
    record = dict(values)
    record.setdefault("record_id", str(row))
    if not record["record_id"].strip():
        record["record_id"] = str(row)
    return ScreeningRecord.from_mapping(record)


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ManifestError(f"{where} is not UTF-8 text (byte {exc.start}, line {line}): save it as UTF-8") from None


def _read_csv(text: str, where: str, columns: Sequence[str] | None, manifest: Manifest) -> None:
    first_line = text.replace("\r", "\n").split("\n", 1)[0]
    separator = max(_SEPARATORS, key=first_line.count) if any(s in first_line for s in _SEPARATORS) else ","
    fields: list[str | None] | None = None
    if columns is not None:
        fields = _columns(columns, where="--columns")
    # Each line is parsed on its own: names and document numbers never span lines, and a stray quote
    # then spoils one row instead of swallowing the rest of the file into one field.
    for row, line in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), 1):
        try:
            cells = next(csv.reader([line], delimiter=separator, strict=True), [])
        except csv.Error as exc:
            if fields is None:
                raise ManifestError(f"{where}: the header row does not parse as CSV ({exc})") from None
            manifest.problems.append(ManifestProblem(row, f"not valid CSV ({exc}); row skipped"))
            continue
        if fields is None:
            if not any(c.strip() for c in cells):
                what = "is empty" if not text.strip() else "has an empty header row"
                raise ManifestError(f"{where} {what}: a CSV manifest needs a header row (or --columns) and passengers")
            fields = _columns([c.strip() for c in cells], where=f"{where}: the header row", header=True)
            continue
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(fields):
            manifest.problems.append(
                ManifestProblem(row, f"{len(cells)} cells, the header names {len(fields)} columns; row skipped")
            )
            continue
        values = {f: c.strip() for f, c in zip(fields, cells, strict=False) if f is not None}
        record = _record(values, row, manifest.problems)
        if record is not None:
            manifest.records.append(record)
    if fields is None:
        raise ManifestError(f"{where} is empty: a CSV manifest needs a header row (or --columns) and passengers")


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _json_people(data: object, where: str) -> list[object]:
    if isinstance(data, list):
        return data
    if not isinstance(data, dict):
        raise ManifestError(
            f"{where} is {_json_type(data)}; a JSON manifest is a list of passenger objects or an "
            f"object with {', '.join(repr(k) for k in _PEOPLE_KEYS)} lists"
        )
    present = [k for k in _PEOPLE_KEYS if k in data]
    if not present:
        raise ManifestError(
            f"{where} is an object without {', '.join(repr(k) for k in _PEOPLE_KEYS)}: nothing to screen"
        )
    people: list[object] = []
    for key in present:
        value = data[key]
        if not isinstance(value, list):
            raise ManifestError(f"{where}: {key!r} is {_json_type(value)}, not a list of passenger objects")
        people.extend(value)
    return people


def _json_values(item: Mapping[str, Any], row: int, problems: list[ManifestProblem]) -> dict[str, str] | None:
    flat: dict[str, Any] = {k: v for k, v in item.items() if k != "document"}
    document = item.get("document")
    if isinstance(document, Mapping):
        for key, target in (
            ("number", "document_number"),
            ("issuing_country", "document_country"),
            ("country", "document_country"),
            ("type", "document_type"),
        ):
            if key in document:
                flat.setdefault(target, document[key])
    elif document is not None:
        flat["document"] = document
    fields = _columns([str(k) for k in flat], where=f"passenger {row}")
    values: dict[str, str] = {}
    for (key, value), canonical in zip(flat.items(), fields, strict=True):
        if canonical is None or value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            problems.append(ManifestProblem(row, f"{key!r} is {_json_type(value)}, not text; row skipped"))
            return None
        values[canonical] = str(value).strip()
    return values


def _read_json(text: str, where: str, manifest: Manifest) -> None:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{where} is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except RecursionError:
        raise ManifestError(f"{where} nests too deeply to be a manifest") from None
    for row, item in enumerate(_json_people(data, where), 1):
        if not isinstance(item, dict):
            manifest.problems.append(
                ManifestProblem(row, f"passenger is {_json_type(item)}, not an object; row skipped")
            )
            continue
        values = _json_values(item, row, manifest.problems)
        if values is not None:
            record = _record(values, row, manifest.problems)
            if record is not None:
                manifest.records.append(record)


def read_manifest(path: Path, *, columns: Sequence[str] | None = None) -> Manifest:
    """Read a `.csv` or `.json` manifest; raise `ManifestError` when it cannot be read at all."""
    where = str(path)
    try:
        size = path.stat().st_size
        if size > _MAX_FILE:
            raise ManifestError(f"{where} is {size} bytes; split manifests over {_MAX_FILE} bytes")
        data = path.read_bytes()
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {where}: {exc.strerror or exc}") from None
    return parse_manifest(data, json_format=path.suffix.lower() == ".json", where=where, columns=columns)


def parse_manifest(
    data: bytes, *, json_format: bool, where: str = "the manifest", columns: Sequence[str] | None = None
) -> Manifest:
    """Parse manifest bytes (CSV unless `json_format`); raise `ManifestError` when they cannot be read at all."""
    text = _decode(data, where)
    manifest = Manifest()
    if json_format:
        if columns is not None:
            raise ManifestError("--columns applies to CSV manifests only")
        _read_json(text, where, manifest)
    else:
        _read_csv(text, where, columns, manifest)
    return manifest
