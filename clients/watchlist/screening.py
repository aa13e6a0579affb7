"""Screening records (API/PNR passengers, vehicles, consignments) against watchlist entries, locally.

Two stages, so that the cost stays flat as lists grow:

1. **Candidates** come from hashed blocking keys held in one sorted numpy array (a handful of
   binary searches per passenger, whatever the list size). A person's keys are pairs of name-part
   skeletons (see `clients.watchlist.names`) together with their one-deletion neighbourhoods, so a
   typo, another romanisation, a dropped particle or second surname, or a joined compound still
   shares a key with the entry; document numbers are keyed after folding OCR confusions (0/O, 1/I,
   5/S, 8/B); plates, containers and catalogue references exactly.
2. **Scoring** of each candidate compares names part by part (rapidfuzz), dates of birth in every
   common form (`clients.watchlist.dates`: swaps and off-by-one tolerated, unknown never
   contradicts), documents with their issuing country, and nationality, and turns the evidence
   into a calibrated probability in [0, 1] with a logistic model fitted on the training half of
   bench/screening_set.py (`bench/bench_screening.py --fit` prints the weights below). Each hit
   says which fields matched and how, without repeating the passenger's data.

The default threshold comes from the precision/recall curve of the training half (README).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

import numpy as np
import numpy.typing as npt

from broker.api.v1 import payload_pb2
from clients.watchlist.dates import BirthDate, DateAgreement, compare_dates, parse_date
from clients.watchlist.names import NameComparison, ParsedName, compare_names, parse_name, skeleton, to_latin

__all__ = [
    "DEFAULT_MIN_SCORE",
    "Evidence",
    "Hit",
    "ScreeningIndex",
    "ScreeningRecord",
    "date_text",
    "document_key",
    "identifier_key",
]

DEFAULT_MIN_SCORE: Final = 0.35
"""The default threshold on the calibrated score: the best F1 over all passengers of the training seed
among the thresholds that keep false alarms at or under 1 % of ordinary passengers (README curve)."""

_ID_NOISE: Final = re.compile(r"[^A-Z0-9]")
_OCR: Final = str.maketrans({"O": "0", "I": "1", "S": "5", "B": "8"})
_SEP: Final = "\x1f"
_LIST: Final = "\x1e"
_PART: Final = "\x1d"
_IDENTIFIER_KINDS: Final = ("vehicle_plate", "container_number", "catalogue_reference")
_MAX_PARTS: Final = 5
_RUN_CAP: Final = 400  # entries per key looked at; a key shared by more says little
_TOP: Final = 25  # name candidates scored per record, those sharing the most keys first
_PENDING_LIMIT: Final = 200_000
_BATCH: Final = 4096
_IDENTIFIER_SCORE: Final = 0.97
# The sorted key array packs each key's digest (its top 38 bits) with the entry position (26 bits),
# so that one np.sort orders both; a shortened digest shared by chance only adds a candidate.
_POSITION_BITS: Final = 26
_POSITION_MASK: Final = (1 << _POSITION_BITS) - 1
_ORDINAL_OF_1970: Final = dt.date(1970, 1, 1).toordinal()
_EARLIEST_YEAR: Final = 1850


def identifier_key(value: str) -> str:
    """A document number, plate, container number or reference without spaces, dashes, '<' or case."""
    return _ID_NOISE.sub("", "".join(to_latin(value)) if not value.isascii() else value.upper())


def document_key(value: str) -> str:
    """A document number with OCR confusions folded (O->0, I->1, S->5, B->8), for candidate look-up."""
    return identifier_key(value).translate(_OCR)


def date_text(date: payload_pb2.Date) -> str:
    """`YYYY-MM-DD` of a Date, `YYYY-MM` or `YYYY` when less is known, "" when nothing is."""
    if not date.year:
        return ""
    if not date.month:
        return f"{date.year:04d}"
    if not date.day:
        return f"{date.year:04d}-{date.month:02d}"
    return f"{date.year:04d}-{date.month:02d}-{date.day:02d}"


@dataclass(frozen=True, slots=True)
class ScreeningRecord:
    """One record to screen. Give `family_name`/`given_names` or a full `name` (any order, or PNR
    `FAMILY/GIVEN TITLE`); `date_of_birth` in any form `clients.watchlist.dates` reads."""

    record_id: str = ""
    family_name: str = ""
    given_names: str = ""
    name: str = ""
    date_of_birth: str = ""
    nationality: str = ""
    document_number: str = ""
    document_country: str = ""
    vehicle_plate: str = ""
    container_number: str = ""
    catalogue_reference: str = ""

    @classmethod
    def from_mapping(cls, values: Mapping[str, str]) -> ScreeningRecord:
        """A record from a CSV row or JSON object; unknown keys are ignored."""
        known = set(cls.__slots__)
        return cls(**{k: str(v) for k, v in values.items() if k in known and v is not None})

    def __repr__(self) -> str:
        # Records hold personal data: keep it out of logs and tracebacks.
        return f"ScreeningRecord(record_id={self.record_id!r})"


@dataclass(frozen=True, slots=True)
class Hit:
    """A candidate match of one record against one entry; `score` in [0, 1], a calibrated probability."""

    record: ScreeningRecord
    entry_id: str
    score: float
    matched_fields: tuple[str, ...]
    watchlist_id: str = ""
    watchlist_version: int = 0
    owner: str = ""
    entry: payload_pb2.WatchlistEntry | None = field(default=None, compare=False)
    explanation: tuple[str, ...] = ()


# ---- keys --------------------------------------------------------------------------------------


def _neighbours(key: str) -> list[str]:
    """`key` and its one-deletion variants (skeletons of two letters or more)."""
    if len(key) < 2 or key.startswith("~"):
        return [key]
    return [key, *{key[:i] + key[i + 1 :] for i in range(len(key))}]


def _pair_keys(parts: Sequence[str], exact: set[str], fuzzy: set[str], *, typos: bool) -> None:
    """Add the skeleton pairs of `parts` to `exact`, and with `typos` their deletion variants to `fuzzy`."""
    skeletons = [skeleton(p) for p in parts[:_MAX_PARTS]]
    if len(set(skeletons)) == 1:
        exact.add(f"S{skeletons[0]}")
        if typos:
            fuzzy.update(f"S{s}" for s in _neighbours(skeletons[0]))
        return
    for i, a in enumerate(skeletons):
        for b in skeletons[i + 1 :]:
            if a == b:
                continue
            exact.add(f"P{min(a, b)}|{max(a, b)}")
            if typos:
                for x in _neighbours(a):
                    fuzzy.add(f"P{min(x, b)}|{max(x, b)}")
                for y in _neighbours(b):
                    fuzzy.add(f"P{min(a, y)}|{max(a, y)}")


def _name_keys(name: ParsedName, exact: set[str], fuzzy: set[str], *, entry: bool) -> None:
    """Blocking keys of a name: skeleton pairs (`exact`) and their typo neighbourhoods (`fuzzy`)."""
    if not name.core:
        return
    _pair_keys(name.core, exact, fuzzy, typos=True)
    if name.split and (len(name.family_core) > 1 or len(name.given_core) > 1):
        _pair_keys(("".join(name.family_core), "".join(name.given_core)), exact, fuzzy, typos=True)
    if len(name.core) > 1:
        for i in range(min(len(name.core), _MAX_PARTS) - 1):
            joined = (*name.core[:i], name.core[i] + name.core[i + 1], *name.core[i + 2 :])
            _pair_keys(joined, exact, fuzzy, typos=False)
    if name.split and (entry or name.truncated):
        # MRZ truncation cuts the end of the given names: the family name and their first letters remain.
        given = "".join(name.given_core)
        if len(given) >= 3:
            fuzzy.add(f"F{skeleton(''.join(name.family_core))}|{given[:3]}")


def _entry_name_keys(names: Sequence[ParsedName], dob: BirthDate | None) -> set[str]:
    """An entry's name keys. Every key carries the year of birth ("?" when unknown), which keeps the
    runs of common names short; the exact pairs are also kept without it, for passengers whose date
    of birth is unknown."""
    exact: set[str] = set()
    fuzzy: set[str] = set()
    for name in names:
        _name_keys(name, exact, fuzzy, entry=True)
    year = str(dob.year) if dob is not None else "?"
    return {f"{k}#{year}" for k in exact | fuzzy} | {f"{k}#" for k in exact}


def _query_name_keys(name: ParsedName, dob: BirthDate | None) -> tuple[set[str], set[str]]:
    """A passenger's name keys: its year and "?" for every key, the years either side for exact
    pairs (a year off by one); only exact pairs without a year when the date is unknown. Second,
    the year-less keys of the plain skeleton pairs, whose shortest run says how common the name is
    on the list."""
    exact: set[str] = set()
    fuzzy: set[str] = set()
    _name_keys(name, exact, fuzzy, entry=False)
    # How common the name is: the rarest pair of its parts' skeletons (every entry of the same name
    # shares them all), not the commonest, which two common given names alone make large.
    plain: set[str] = set()
    _pair_keys(name.core, plain, set(), typos=False)
    frequency = {f"{k}#" for k in plain}
    if dob is None:
        return {f"{k}#" for k in exact}, frequency
    year = dob.year
    keys = {f"{k}#{y}" for k in exact | fuzzy for y in (year, "?")}
    keys.update(f"{k}#{y}" for k in exact for y in (year - 1, year + 1))
    return keys, frequency


def _digests(keys: Iterable[str]) -> bytes:
    return b"".join(hashlib.blake2b(k.encode(), digest_size=8).digest() for k in keys)


# ---- scoring -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the comparison of one record with one entry found (the model's inputs)."""

    name: NameComparison | None
    dob: DateAgreement
    document: str  # "", "same", "same-no-country", "ocr", "other-country"
    nationality: str  # "", "same", "different"
    identifier: str  # matched identifier kind, or ""
    rivals: int = 0  # other entries whose names match this record as well (namesakes)
    listed_namesakes: int = 0  # other entries on the list sharing every skeleton pair of the name (how common)

    def features(self) -> list[float]:
        """The model's feature vector."""
        n = self.name
        named = n is not None and n.passenger_coverage > 0
        cov_p = n.passenger_coverage if n is not None else 0.0
        cov_e = n.entry_coverage if n is not None else 0.0
        return [
            1.0,
            cov_p,
            cov_e,
            n.weakest if n is not None and named else 0.0,
            float(named and n is not None and n.passenger_parts == 1),
            float(named and n is not None and n.initials > 0),
            *(float(self.dob is d) for d in _DOB_FEATURES),
            *(float(self.document == d) for d in _DOCUMENT_FEATURES),
            float(self.nationality == "same"),
            float(self.nationality == "different"),
            math.log1p(self.rivals) if self.dob in _WEAK_DATES else 0.0,
            math.log1p(self.listed_namesakes) if self.dob is not DateAgreement.SAME else 0.0,
            # How common the name is on the list: the chance that a namesake born the same day is
            # someone else grows with it (the list's own inverse document frequency).
            math.log1p(self.listed_namesakes) if self.dob is DateAgreement.SAME else 0.0,
            float(named and n is not None and n.exact_parts == n.passenger_parts == n.entry_parts),
        ]


_DOB_FEATURES: Final = (
    DateAgreement.SAME,
    DateAgreement.YEAR_ONLY,
    DateAgreement.MONTH_DAY_SWAPPED,
    DateAgreement.DAY_OFF_BY_ONE,
    DateAgreement.YEAR_OFF_BY_ONE,
    DateAgreement.DIFFERENT,
)
_DOCUMENT_FEATURES: Final = ("same", "same-no-country", "ocr", "other-country")
# Without a full date on both sides, namesakes cannot be told apart: how many there are matters.
_WEAK_DATES: Final = frozenset({DateAgreement.UNKNOWN, DateAgreement.YEAR_ONLY})
_NEAR_DATES: Final = frozenset(
    {
        DateAgreement.YEAR_ONLY,
        DateAgreement.MONTH_DAY_SWAPPED,
        DateAgreement.DAY_OFF_BY_ONE,
        DateAgreement.YEAR_OFF_BY_ONE,
    }
)
FEATURE_NAMES: Final = (
    "bias",
    "passenger_coverage",
    "entry_coverage",
    "weakest_part",
    "single_part",
    "initials",
    *(f"dob_{d.name.lower()}" for d in _DOB_FEATURES),
    *(f"document_{d}" for d in _DOCUMENT_FEATURES),
    "nationality_same",
    "nationality_different",
    "namesakes_without_full_dates",
    "common_name_without_same_dob",
    "common_name_with_same_dob",
    "every_part_exact",
)

# Fitted by `bench/bench_screening.py --fit` (1,000,000 entries, 100,000 passengers, 300 of each labelled
# type) on the training seed of the evaluation set, without the pairs of homonyms and their namesakes
# (bench.screening_set.HOMONYM; dob_different is fixed, not fitted: see bench_screening.fit_weights).
WEIGHTS: Final[tuple[float, ...]] = (
    -22.791,
    10.961,
    3.192,
    10.275,
    0.000,
    0.000,
    3.977,
    3.692,
    0.819,
    -1.274,
    -1.498,
    -8.000,
    41.765,
    0.000,
    42.172,
    -0.000,
    0.186,
    -3.372,
    -1.227,
    -0.685,
    -0.553,
    2.180,
)


def _calibrated(features: Sequence[float]) -> float:
    z = sum(w * x for w, x in zip(WEIGHTS, features, strict=True))
    return 1.0 / (1.0 + math.exp(-max(-40.0, min(40.0, z))))


_DOCUMENT_TEXT: Final = {
    "same": "same number and issuing country",
    "same-no-country": "same number, issuing country not known on one side",
    "ocr": "number differs only by OCR confusions (0/O, 1/I, 5/S, 8/B), same issuing country",
    "other-country": "same number, another issuing country",
}


def _explain(evidence: Evidence) -> tuple[tuple[str, ...], tuple[str, ...]]:
    fields: list[str] = []
    how: list[str] = []
    if evidence.identifier:
        fields.append(evidence.identifier)
        how.append(f"{evidence.identifier}: same")
    n = evidence.name
    if n is not None and n.passenger_coverage >= 0.5:
        fields.append("name")
        how.append(f"name: {n.describe()}")
    if evidence.dob in {
        DateAgreement.SAME,
        DateAgreement.YEAR_ONLY,
        DateAgreement.MONTH_DAY_SWAPPED,
        DateAgreement.DAY_OFF_BY_ONE,
        DateAgreement.YEAR_OFF_BY_ONE,
    }:
        fields.append("date_of_birth")
    how.append(f"date_of_birth: {evidence.dob.value}")
    if evidence.document in {"same", "same-no-country", "ocr"}:
        fields.append("document_number")
    if evidence.document:
        how.append(f"document_number: {_DOCUMENT_TEXT[evidence.document]}")
    if evidence.nationality == "same":
        fields.append("nationality")
    return tuple(fields), tuple(how)


@dataclass(slots=True)
class _EntryView:
    names: list[ParsedName]
    dob: BirthDate | None
    nationalities: frozenset[str]
    document: str
    country: str
    identifiers: dict[str, str]


def _entry_view(record: str) -> _EntryView:
    names_text, dob, nationalities, document, country, identifiers = record.split(_SEP)
    names = []
    for name in names_text.split(_LIST) if names_text else ():
        family, _, given = name.partition(_PART)
        names.append(parse_name(family, given))
    return _EntryView(
        names,
        parse_date(dob) if dob else None,
        frozenset(nationalities.split(",")) if nationalities else frozenset(),
        document,
        country,
        dict(item.split("=", 1) for item in identifiers.split(_LIST)) if identifiers else {},
    )


@dataclass(slots=True)
class _Query:
    record: ScreeningRecord
    name: ParsedName | None
    dob: BirthDate | None
    document: str
    country: str
    nationality: str
    identifiers: dict[str, str]
    namesakes: int = 0


def _query(record: ScreeningRecord) -> _Query:
    name = None
    if record.family_name or record.given_names:
        name = parse_name(record.family_name, record.given_names)
    elif record.name:
        name = parse_name(full=record.name)
    identifiers = {
        k: identifier_key(v)
        for k, v in (
            ("vehicle_plate", record.vehicle_plate),
            ("container_number", record.container_number),
            ("catalogue_reference", record.catalogue_reference),
        )
        if v
    }
    return _Query(
        record,
        name if name is not None and name.core else None,
        parse_date(record.date_of_birth),
        identifier_key(record.document_number) if record.document_number else "",
        record.document_country.strip().upper(),
        record.nationality.strip().upper(),
        identifiers,
    )


def _query_keys(query: _Query) -> tuple[set[str], set[str], set[str]]:
    """(name keys, name frequency keys, document and identifier keys) of a query."""
    names, frequency = _query_name_keys(query.name, query.dob) if query.name is not None else (set(), set())
    others: set[str] = set()
    if query.document:
        others.add(f"D{query.document.translate(_OCR)}")
    for kind, value in query.identifiers.items():
        others.add(f"I{kind}={value}")
    return names, frequency, others


def _dob_parts(date: BirthDate | None) -> tuple[int, int, int, int]:
    """(year, month, day, ordinal) with 0 for what is not known."""
    if date is None:
        return 0, 0, 0, 0
    ordinal = dt.date(date.year, date.month, date.day).toordinal() if date.day else 0
    return date.year, date.month, date.day, ordinal


def _dob_columns(texts: list[str]) -> npt.NDArray[np.int64]:
    """(year, month, day, ordinal) rows of stored `YYYY[-MM[-DD]]` texts, read with numpy exactly as
    `_dob_parts(parse_date(text))` reads them (unknown, impossible or future dates: zeros)."""
    if not texts:
        return np.zeros((0, 4), dtype=np.int64)
    raw = np.array(texts, dtype="S10")
    chars = raw.view(np.uint8).reshape(len(texts), 10).astype(np.int64) - ord("0")
    lengths = np.char.str_len(raw)
    shaped = np.isin(lengths, (0, 4, 7, 10)) & np.asarray([len(t) <= 10 and t.isascii() for t in texts])

    def number(start: int, stop: int, present: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
        value = np.zeros(len(texts), dtype=np.int64)
        for i in range(start, stop):
            nonlocal shaped
            shaped &= ~present | ((chars[:, i] >= 0) & (chars[:, i] <= 9))
            value = value * 10 + chars[:, i]
        return np.where(present, value, 0)

    year, month, day = number(0, 4, lengths >= 4), number(5, 7, lengths >= 7), number(8, 10, lengths == 10)
    for at in (4, 7):
        shaped &= (lengths <= at) | (chars[:, at] == ord("-") - ord("0"))
    today = dt.datetime.now(dt.UTC).date()
    months = ((year - 1970) * 12 + np.clip(month, 1, 12) - 1).astype("datetime64[M]")
    born = months.astype("datetime64[D]") + np.clip(day, 1, 31) - 1
    calendar = born.astype("datetime64[M]") == months  # day 31 of a 30-day month spills over
    ordinal = born.astype(np.int64) + _ORDINAL_OF_1970
    full = (month >= 1) & (month <= 12) & (day >= 1) & (day <= 31) & calendar & (ordinal <= today.toordinal())
    valid = (
        (year >= _EARLIEST_YEAR)
        & (year <= today.year)
        & (((month == 0) & (day == 0)) | ((month >= 1) & (month <= 12) & (day == 0)) | full)
    )
    parts = np.stack([year, month, day, np.where(day > 0, ordinal, 0)], axis=1)
    parts[~valid] = 0
    odd = np.flatnonzero(~shaped)
    for i in odd.tolist():  # not what date_text writes: read it the slow way
        parts[i] = _dob_parts(parse_date(texts[i]))
    return parts


def _dates_compatible(a: npt.NDArray[np.int64], b: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """Row-wise: dates that are unknown, equal as far as known, swapped, or a day or a year apart.

    The vectorised twin of `compare_dates(...) is not DIFFERENT`, so that namesakes born on other
    days never reach the (slower) scoring.
    """
    ay, am, ad, ao = a[:, 0], a[:, 1], a[:, 2], a[:, 3]
    by, bm, bd, bo = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    unknown = (ay == 0) | (by == 0)
    partial = (am == 0) | (bm == 0) | (ad == 0) | (bd == 0)
    same_year = ay == by
    partial_ok = partial & (
        (same_year & ((am == 0) | (bm == 0) | (am == bm))) | ((np.abs(ay - by) == 1) & ((am == 0) | (bm == 0)))
    )
    full = ~partial
    full_ok = full & (
        (same_year & (((am == bd) & (ad == bm)) | (np.abs(ao - bo) <= 1)))
        | ((np.abs(ay - by) == 1) & (am == bm) & (ad == bd))
        | (np.abs(ao - bo) <= 1)
    )
    return np.asarray(unknown | partial_ok | full_ok, dtype=np.bool_)


def _compare(query: _Query, entry: _EntryView) -> Evidence:
    for kind, value in query.identifiers.items():
        if entry.identifiers.get(kind) == value:
            return Evidence(None, DateAgreement.UNKNOWN, "", "", kind)
    name = None
    if query.name is not None and entry.names:
        comparisons = [compare_names(query.name, n) for n in entry.names]
        name = max(comparisons, key=lambda c: (c.passenger_coverage + c.entry_coverage, c.passenger_coverage))
    document = ""
    if query.document and entry.document and query.document.translate(_OCR) == entry.document.translate(_OCR):
        kind = "same" if query.document == entry.document else "ocr"
        if not query.country or not entry.country:
            document = "same-no-country" if kind == "same" else ""
        elif query.country != entry.country:
            document = "other-country"
        else:
            document = kind
    nationality = ""
    if query.nationality and entry.nationalities:
        nationality = "same" if query.nationality in entry.nationalities else "different"
    return Evidence(
        name,
        compare_dates(query.dob, entry.dob),
        document,
        nationality,
        "",
        listed_namesakes=max(query.namesakes - 1, 0),
    )


_NAMESAKE: Final = 0.85


def _namesake(evidence: Evidence) -> bool:
    n = evidence.name
    return n is not None and n.passenger_coverage >= _NAMESAKE and n.entry_coverage >= 0.5


def _with_rivals(compared: list[tuple[int, Evidence]]) -> list[tuple[int, Evidence]]:
    """Each candidate's evidence with the number of other candidates that match the name as well."""
    namesakes = sum(1 for _, e in compared if _namesake(e))
    if namesakes < 2:
        return compared
    return [(p, replace(e, rivals=namesakes - 1) if _namesake(e) else e) for p, e in compared]


def score_evidence(evidence: Evidence) -> float:
    """The calibrated probability that `evidence` describes the listed person (or object)."""
    if evidence.identifier:
        return _IDENTIFIER_SCORE
    score = _calibrated(evidence.features())
    if evidence.dob in _NEAR_DATES:
        # Monotone in the date: a swapped or nearly equal date is never better evidence than the same date.
        score = min(score, _calibrated(replace(evidence, dob=DateAgreement.SAME).features()))
    return score


# ---- the index ---------------------------------------------------------------------------------


class ScreeningIndex:
    """In-memory candidate keys and scoring data of watchlist entries; add, remove and screen.

    Keys live in one sorted array (built on the first screening, merged again when many entries
    were added since); entries added after that are found through a small dictionary until then.
    Removed or amended entries leave a tombstone.
    """

    def __init__(self) -> None:
        self._ids: list[str] = []
        self._records: list[str] = []
        self._alive = bytearray()
        self._position: dict[str, int] = {}
        self._keys: npt.NDArray[np.uint64] = np.zeros(0, dtype=np.uint64)
        self._pending_positions: list[int] = []
        self._pending_digests: list[bytes] = []
        self._pending_keys = 0
        self._pending_lookup: dict[bytes, list[int]] | None = None
        self._views: dict[int, _EntryView] = {}
        self._dob_year = np.zeros(0, dtype=np.int16)
        self._dob_month = np.zeros(0, dtype=np.int8)
        self._dob_day = np.zeros(0, dtype=np.int8)
        self._dob_ordinal = np.zeros(0, dtype=np.int32)

    def __len__(self) -> int:
        return len(self._position)

    @staticmethod
    def keys_of(entry: payload_pb2.WatchlistEntry) -> tuple[str, bytes]:
        """The scoring record and the candidate key digests of `entry`, which `add_keys` takes back.

        A replica stores both beside each entry, so that building the index at start-up reads them
        back without transliterating or parsing a million entries again.
        """
        names = [parse_name(entry.family_name, entry.given_names)] if (entry.family_name or entry.given_names) else []
        names += [parse_name(full=alias) for alias in entry.aliases]
        names = [n for n in names if n.core]
        dob = parse_date(date_text(entry.date_of_birth)) if entry.HasField("date_of_birth") else None
        keys = _entry_name_keys(names, dob)
        document = identifier_key(entry.document_number) if entry.document_number else ""
        if document:
            keys.add(f"D{document.translate(_OCR)}")
        identifiers = []
        for kind in _IDENTIFIER_KINDS:
            value = getattr(entry, kind)
            if value:
                identifiers.append(f"{kind}={identifier_key(value)}")
                keys.add(f"I{kind}={identifier_key(value)}")
        record = _SEP.join(
            (
                _LIST.join(f"{' '.join(n.family)}{_PART}{' '.join(n.given)}" for n in names),
                date_text(entry.date_of_birth) if entry.HasField("date_of_birth") else "",
                ",".join(n.strip().upper() for n in entry.nationalities),
                document,
                entry.issuing_country.strip().upper(),
                _LIST.join(identifiers),
            )
        )
        return record, _digests(sorted(keys))

    def add(self, entry: payload_pb2.WatchlistEntry) -> None:
        """Index `entry`, replacing an entry of the same id."""
        self.add_keys(entry.entry_id, *self.keys_of(entry))

    def add_keys(self, entry_id: str, record: str, digests: bytes) -> None:
        """Index an entry by what `keys_of` made of it, replacing an entry of the same id."""
        if entry_id in self._position:
            self.remove(entry_id)
        position = len(self._ids)
        self._ids.append(entry_id)
        self._records.append(record)
        self._alive.append(1)
        self._position[entry_id] = position
        self._pending_positions.append(position)
        self._pending_digests.append(digests)
        self._pending_keys += len(digests) // 8
        if self._pending_lookup is not None:
            for i in range(0, len(digests), 8):
                self._pending_lookup.setdefault(digests[i : i + 8], []).append(position)

    def add_many(self, rows: Iterable[tuple[str, str, bytes]]) -> None:
        """Index many entries by what `keys_of` made of them: (entry id, record, digests) each."""
        if self._ids:
            for row in rows:
                self.add_keys(*row)
            return
        # An empty index (start-up from a replica file): the same lists, filled without a Python loop.
        columns = tuple(zip(*rows, strict=True))
        if not columns:
            return
        ids, records, digests = (list(c) for c in columns)
        position = dict(zip(ids, range(len(ids)), strict=True))
        if len(position) < len(ids):  # the same id twice: the last one counts, as with add_keys
            self._ids, self._records = [], []
            for row in zip(ids, records, digests, strict=True):
                self.add_keys(*row)
            return
        self._ids, self._records, self._position = ids, records, position
        self._alive = bytearray(b"\x01") * len(ids)
        self._pending_positions, self._pending_digests = list(range(len(ids))), digests
        self._pending_keys = sum(map(len, digests)) // 8

    def remove(self, entry_id: str) -> None:
        """Forget `entry_id` (no-op if absent)."""
        position = self._position.pop(entry_id, None)
        if position is not None:
            self._alive[position] = 0
            self._views.pop(position, None)

    def entry_ids(self) -> Iterator[str]:
        """The ids of every indexed entry."""
        return iter(self._position)

    def build(self) -> None:
        """Merge the keys of entries added since the last build into the sorted array."""
        if not self._pending_positions:
            return
        if len(self._ids) > _POSITION_MASK:
            raise ValueError(f"a screening index holds at most {_POSITION_MASK} entries and amendments")
        known = len(self._dob_ordinal)
        parts = _dob_columns([r.split(_SEP, 2)[1] for r in self._records[known:]])
        self._dob_year = np.concatenate((self._dob_year, parts[:, 0].astype(np.int16)))
        self._dob_month = np.concatenate((self._dob_month, parts[:, 1].astype(np.int8)))
        self._dob_day = np.concatenate((self._dob_day, parts[:, 2].astype(np.int8)))
        self._dob_ordinal = np.concatenate((self._dob_ordinal, parts[:, 3].astype(np.int32)))
        added = np.frombuffer(b"".join(self._pending_digests), dtype=np.uint64)
        added = added >> np.uint64(_POSITION_BITS) << np.uint64(_POSITION_BITS)
        count = len(self._pending_digests)
        sizes = np.fromiter(map(len, self._pending_digests), dtype=np.int64, count=count) // 8
        positions = np.repeat(np.asarray(self._pending_positions, dtype=np.uint64), sizes)
        keys = np.concatenate((self._keys, added | positions))
        keys.sort()
        self._keys = keys
        self._pending_positions, self._pending_digests, self._pending_keys, self._pending_lookup = [], [], 0, {}

    def _ready(self) -> None:
        if self._pending_lookup is None or self._pending_keys > _PENDING_LIMIT:
            self.build()

    def _view(self, position: int) -> _EntryView:
        view = self._views.get(position)
        if view is None:
            view = _entry_view(self._records[position])
            if len(self._views) < 500_000:
                self._views[position] = view
        return view

    def _runs(self, blobs: list[bytes]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(query number, start, end) in the sorted array of each key of each query.

        The keys are looked up once each and in order (binary searches that walk the array forwards
        instead of jumping around it: ten times faster on a million entries)."""
        wanted = np.frombuffer(b"".join(blobs), dtype=np.uint64) >> np.uint64(_POSITION_BITS)
        owner = np.repeat(
            np.arange(len(blobs), dtype=np.int64),
            np.fromiter((len(b) // 8 for b in blobs), dtype=np.int64, count=len(blobs)),
        )
        if not len(self._keys) or not len(wanted):
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        unique, inverse = np.unique(wanted, return_inverse=True)
        low = np.searchsorted(self._keys, unique << np.uint64(_POSITION_BITS), side="left")
        high = np.searchsorted(self._keys, (unique + np.uint64(1)) << np.uint64(_POSITION_BITS), side="left")
        return owner, low[inverse].astype(np.int64), high[inverse].astype(np.int64)

    def _lookup(self, blobs: list[bytes]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(query number, entry position) of every sorted-array entry sharing a key with each query."""
        owner, low, high = self._runs(blobs)
        counts = np.minimum(high - low, _RUN_CAP)
        total = int(counts.sum())
        starts = np.repeat(low, counts)
        offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        positions = self._keys[starts + offsets] & np.uint64(_POSITION_MASK)
        return np.repeat(owner, counts), positions.astype(np.int64)

    def _candidates(self, queries: list[_Query]) -> list[set[int]]:
        """Candidate positions per query: every entry sharing a document or identifier key, and the
        entries sharing the most name keys whose date of birth does not contradict (at most _TOP)."""
        found: list[set[int]] = [set() for _ in queries]
        name_blobs, frequency_blobs, other_blobs = [], [], []
        for query in queries:
            names, frequency, others = _query_keys(query)
            name_blobs.append(_digests(names))
            frequency_blobs.append(_digests(frequency))
            other_blobs.append(_digests(others))
        alive = np.frombuffer(self._alive, dtype=np.uint8)[: len(self._dob_ordinal)]
        self._count_namesakes(queries, frequency_blobs)
        owner, position = self._lookup(other_blobs)
        for q, p in zip(owner.tolist(), position.tolist(), strict=True):
            found[q].add(p)
        owner, position = self._lookup(name_blobs)
        if len(owner):
            codes, shared = np.unique(owner << 32 | position, return_counts=True)
            owner, position = codes >> 32, codes & 0xFFFFFFFF
            query_dob = np.asarray([_dob_parts(q.dob) for q in queries], dtype=np.int64).reshape(-1, 4)[owner]
            keep = (alive[position] == 1) & _dates_compatible(query_dob, self._dob_parts_of(position))
            owner, position, shared = owner[keep], position[keep], shared[keep]
            order = np.lexsort((-shared, owner))
            owner, position = owner[order], position[order]
            first = np.searchsorted(owner, owner, side="left")
            top = (np.arange(len(owner)) - first) < _TOP
            for q, p in zip(owner[top].tolist(), position[top].tolist(), strict=True):
                found[q].add(p)
        if self._pending_lookup:
            self._pending_candidates(queries, name_blobs, other_blobs, found)
        return found

    def _pending_candidates(
        self, queries: list[_Query], name_blobs: list[bytes], other_blobs: list[bytes], found: list[set[int]]
    ) -> None:
        """Candidates among entries added since the last build (the same rules, in Python)."""
        lookup = self._pending_lookup or {}
        for i, query in enumerate(queries):
            for digests, check_date in ((other_blobs[i], False), (name_blobs[i], True)):
                for j in range(0, len(digests), 8):
                    for position in lookup.get(digests[j : j + 8], ()):
                        if check_date and compare_dates(query.dob, self._view(position).dob) is DateAgreement.DIFFERENT:
                            continue
                        found[i].add(position)

    def _count_namesakes(self, queries: list[_Query], blobs: list[bytes]) -> None:
        """Set each query's `namesakes`: the fewest entries sharing one of its year-less plain pair
        keys (an estimate of how many listed people bear the name, up to romanisation)."""
        owner, low, high = self._runs(blobs)
        if not len(owner):
            return
        fewest = np.full(len(queries), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(fewest, owner, high - low)
        for query, count in zip(queries, fewest.tolist(), strict=True):
            query.namesakes = count if count != np.iinfo(np.int64).max else 0

    def _dob_parts_of(self, positions: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        return np.stack(
            [
                self._dob_year[positions],
                self._dob_month[positions],
                self._dob_day[positions],
                self._dob_ordinal[positions],
            ],
            axis=1,
        ).astype(np.int64)

    def evidence(self, record: ScreeningRecord, entry_id: str) -> Evidence:
        """What comparing `record` with the indexed entry `entry_id` finds (for tests and tuning)."""
        return _compare(_query(record), self._view(self._position[entry_id]))

    def candidates(self, records: Sequence[ScreeningRecord]) -> list[list[tuple[str, Evidence]]]:
        """Every candidate entry of each record with its evidence, before any threshold (for tuning)."""
        self._ready()
        queries = [_query(r) for r in records]
        out: list[list[tuple[str, Evidence]]] = []
        for query, positions in zip(queries, self._candidates(queries), strict=True):
            compared = [(p, _compare(query, self._view(p))) for p in sorted(positions) if self._alive[p]]
            out.append([(self._ids[p], e) for p, e in _with_rivals(compared)])
        return out

    def screen(self, records: Iterable[ScreeningRecord], *, min_score: float = DEFAULT_MIN_SCORE) -> list[Hit]:
        """Hits of `records` at or above `min_score`, best first within each record."""
        self._ready()
        hits: list[Hit] = []
        batch: list[ScreeningRecord] = []
        for record in records:
            batch.append(record)
            if len(batch) == _BATCH:
                hits.extend(self._screen_batch(batch, min_score))
                batch = []
        if batch:
            hits.extend(self._screen_batch(batch, min_score))
        return hits

    def _screen_batch(self, records: list[ScreeningRecord], min_score: float) -> list[Hit]:
        queries = [_query(r) for r in records]
        hits: list[Hit] = []
        alive = self._alive
        for query, positions in zip(queries, self._candidates(queries), strict=True):
            found = []
            compared = [(p, _compare(query, self._view(p))) for p in positions if alive[p]]
            for position, evidence in _with_rivals(compared):
                score = score_evidence(evidence)
                if score >= min_score:
                    fields, how = _explain(evidence)
                    found.append(Hit(query.record, self._ids[position], round(score, 4), fields, explanation=how))
            found.sort(key=lambda h: (-h.score, h.entry_id))
            hits.extend(found)
        return hits
