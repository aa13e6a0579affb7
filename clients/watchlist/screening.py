"""Screening records (API/PNR passengers, vehicles, consignments) against watchlist entries, locally.

Two stages, so that the cost stays flat as lists grow:

1. **Candidates** come from hashed blocking keys held in one sorted numpy array (a handful of
   binary searches per passenger, whatever the list size). A person's keys are pairs of name-part
   skeletons (see `clients.watchlist.names`) together with their one-deletion neighbourhoods, and
   one part's skeleton with the other's first letters, so a typo, another romanisation, a dropped
   particle or second surname, or a joined compound still shares a key with the entry; document
   numbers are keyed after folding OCR confusions (0/O, 1/I, 5/S, 8/B); plates, containers and
   catalogue references exactly. Year-less keys of the name's skeleton pairs and of its pairs as
   spelled only count how many listed people bear the name.
2. **Scoring** of each candidate compares names part by part (rapidfuzz), dates of birth in every
   common form (`clients.watchlist.dates`: swaps and off-by-one tolerated, unknown never
   contradicts), documents with their issuing country, and nationality, and turns the evidence
   into a calibrated probability in [0, 1] with a logistic model fitted on the training half of
   bench/screening_set.py (`bench/bench_screening.py --fit` prints the weights below). Each hit
   says which fields matched and how, without repeating the passenger's data.

The default threshold comes from the precision/recall curve of the training half (README).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import gc
import hashlib
import math
import multiprocessing
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from multiprocessing.sharedctypes import Synchronized
from typing import Final

import numpy as np
import numpy.typing as npt

from broker.api.v1 import payload_pb2
from clients.watchlist.dates import BirthDate, DateAgreement, compare_dates, parse_date
from clients.watchlist.names import NameComparison, ParsedName, compare_names, parse_name, part_key, to_latin

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
_FILTER_BLOCK: Final = 65_536
_IDENTIFIER_SCORE: Final = 0.97
# The sorted key array packs each key's digest (its top 38 bits) with the entry position (26 bits),
# so that one np.sort orders both; a shortened digest shared by chance only adds a candidate.
_POSITION_BITS: Final = 26
_POSITION_MASK: Final = (1 << _POSITION_BITS) - 1
_DIGEST_MASK: Final = (1 << 64) - 1 - _POSITION_MASK
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


_NEIGHBOUR_LIMIT: Final = 500_000
_neighbour_cache: dict[str, tuple[str, ...]] = {}


def _neighbours(key: str) -> tuple[str, ...]:
    """`key` and its one-deletion variants (skeletons of two letters or more)."""
    found = _neighbour_cache.get(key)
    if found is None:
        if len(key) < 2 or key.startswith("~"):
            found = (key,)
        else:
            found = (key, *{key[:i] + key[i + 1 :] for i in range(len(key))})
        if len(_neighbour_cache) < _NEIGHBOUR_LIMIT:
            _neighbour_cache[key] = found
    return found


def _pair_keys(parts: Sequence[str], exact: set[str], fuzzy: set[str], *, typos: bool, chinese: bool = False) -> None:
    """Add the skeleton pairs of `parts` to `exact`, and with `typos` their deletion variants to `fuzzy`."""
    skeletons = [part_key(p, chinese=chinese) for p in parts[:_MAX_PARTS]]
    if len(set(skeletons)) == 1:
        exact.add(f"S{skeletons[0]}")
        if typos:
            fuzzy.update([f"S{s}" for s in _neighbours(skeletons[0])])
        return
    for i, a in enumerate(skeletons):
        for b in skeletons[i + 1 :]:
            if a == b:
                continue
            exact.add(_pair(a, b))
            if typos:
                fuzzy.update([_pair(x, b) for x in _neighbours(a)])
                fuzzy.update([_pair(a, y) for y in _neighbours(b)])


def _pair(a: str, b: str) -> str:
    """The key of two skeletons, in sorted order: P{min}|{max}; S{a} when a typo made them one (the key
    of a name whose parts share one skeleton, ABDULRAHMAN ABDELRAHMAN)."""
    if a == b:
        return f"S{a}"
    return f"P{a}|{b}" if a < b else f"P{b}|{a}"


def _name_keys(name: ParsedName, exact: set[str], fuzzy: set[str], *, typos: bool = True) -> None:
    """Blocking keys of a name: skeleton pairs (`exact`) and, with `typos`, their typo neighbourhoods
    and the MRZ truncation key (`fuzzy`). A name that reads as Chinese syllables has the keys of its
    pinyin/Wade-Giles reading too (`names.part_key`)."""
    if not name.core:
        return
    for chinese in (False, True) if name.chinese else (False,):
        _pair_keys(name.core, exact, fuzzy, typos=typos, chinese=chinese)
        if name.split and (len(name.family_core) > 1 or len(name.given_core) > 1):
            family, given = "".join(name.family_core), "".join(name.given_core)
            _pair_keys((family, given), exact, fuzzy, typos=typos, chinese=chinese)
        if len(name.core) > 1:
            for i in range(min(len(name.core), _MAX_PARTS) - 1):
                joined = (*name.core[:i], name.core[i] + name.core[i + 1], *name.core[i + 2 :])
                _pair_keys(joined, exact, fuzzy, typos=False, chinese=chinese)
    if typos and name.split:
        # A typo that changes a skeleton more than one deletion undoes (JEAN/JEAB, MAHMOOD/MAZHMOOD),
        # or MRZ truncation, which cuts the end of the given names: one part's skeleton and the first
        # letters of the other remain (first letters are the least often mistyped).
        family, given = "".join(name.family_core), "".join(name.given_core)
        if len(given) >= 3:
            fuzzy.add(f"F{part_key(family)}|{given[:3]}")
        if len(family) >= 2 and not name.truncated:
            fuzzy.add(f"G{part_key(name.given_core[0])}|{family[:2]}")


def _entry_name_keys(names: Sequence[ParsedName], dob: BirthDate | None) -> set[str]:
    """An entry's name keys. Every key carries the year of birth ("?" when unknown), which keeps the
    runs of common names short; the exact pairs are also kept without it, for passengers whose date
    of birth is unknown."""
    exact: set[str] = set()
    fuzzy: set[str] = set()
    for name in names:
        _name_keys(name, exact, fuzzy)
    year = str(dob.year) if dob is not None else "?"
    return {f"{k}#{year}" for k in exact | fuzzy} | {f"{k}#" for k in exact} | _spelling_keys(names)


def _spelling_keys(names: Sequence[ParsedName]) -> set[str]:
    """Keys that count how many entries bear a name spelled the same (pairs of core parts, as they
    are written, not their skeletons); never looked up for candidates."""
    keys: set[str] = set()
    for name in names:
        parts = sorted(set(name.core[:_MAX_PARTS]))
        if len(parts) == 1:
            keys.add(f"Q{parts[0]}")
        keys.update(f"Q{a}|{b}" for i, a in enumerate(parts) for b in parts[i + 1 :])
    return keys


def _query_name_keys(name: ParsedName, dob: BirthDate | None) -> tuple[set[str], set[str]]:
    """A passenger's name keys: its year and "?" for every key, the years either side for exact
    pairs (a year off by one); only exact pairs without a year when the date is unknown. Second,
    the year-less keys of the plain skeleton pairs, whose shortest run says how common the name is
    on the list up to spelling (see also `_spelling_keys`)."""
    exact: set[str] = set()
    fuzzy: set[str] = set()
    # Without a date, only the exact pairs are looked up (and the typo neighbourhoods not made).
    _name_keys(name, exact, fuzzy, typos=dob is not None)
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
            # How common the name is on the list (the list's own inverse document frequency), once per
            # kind of date agreement: the chance that a listed namesake agrees with the passenger's date
            # by coincidence grows with the number of namesakes and with how loose the agreement is (one
            # day in ~24,000 for the same date, a handful for a near one, all of them for no date).
            *(math.log1p(self.listed_namesakes) if self.dob in kinds else 0.0 for kinds in _RARITY_DATES),
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
# The date agreements that share one weight on how common the name is (see Evidence.features).
_RARITY_DATES: Final = (
    frozenset({DateAgreement.SAME}),
    _NEAR_DATES - {DateAgreement.YEAR_ONLY},
    frozenset({DateAgreement.YEAR_ONLY}),
    frozenset({DateAgreement.UNKNOWN}),
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
    "common_name_with_same_dob",
    "common_name_with_near_dob",
    "common_name_with_year_only",
    "common_name_without_dob",
    "every_part_exact",
)

# Fitted by `bench/bench_screening.py --fit` (1,000,000 entries, 100,000 passengers, 300 of each labelled
# type) on the training seed of the evaluation set, without the pairs of homonyms and their namesakes
# (bench.screening_set.HOMONYM; dob_different is fixed, not fitted: see bench_screening.fit_weights).
WEIGHTS: Final[tuple[float, ...]] = (
    -22.513,
    11.181,
    3.308,
    10.189,
    0.000,
    0.000,
    3.411,
    2.273,
    1.835,
    -0.463,
    -0.661,
    -8.000,
    37.573,
    0.000,
    37.980,
    -0.000,
    0.185,
    -3.535,
    -1.211,
    -0.543,
    -0.952,
    -0.545,
    -0.786,
    1.443,
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
        if evidence.listed_namesakes:
            how.append(
                f"name frequency: {evidence.listed_namesakes} other listed entries bear the name (weaker evidence)"
            )
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
        names.append(parse_name(family, given, titles=False))
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
    namesakes: int = 0  # listed entries sharing the rarest skeleton pair of the name
    spelled_namesakes: int = 0  # listed entries sharing the rarest pair of its parts as spelled


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


def _query_keys(query: _Query) -> tuple[set[str], set[str], set[str], set[str]]:
    """(name keys, name frequency keys up to spelling, and as spelled, document and identifier keys)
    of a query."""
    names, frequency = _query_name_keys(query.name, query.dob) if query.name is not None else (set(), set())
    spelling = _spelling_keys([query.name]) if query.name is not None else set()
    others: set[str] = set()
    if query.document:
        others.add(f"D{query.document.translate(_OCR)}")
    for kind, value in query.identifiers.items():
        others.add(f"I{kind}={value}")
    return names, frequency, spelling, others


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


_Column = npt.NDArray[np.int32]


def _date_codes(parts: npt.NDArray[np.int64]) -> _Column:
    """One integer per (year, month, day, ordinal) row: year << 9 | month << 5 | day (0: unknown)."""
    return np.asarray(parts[:, 0] << 9 | parts[:, 1] << 5 | parts[:, 2], dtype=np.int32)


def _ordinal_table(last_year: int) -> _Column:
    """The proleptic ordinal of each full date code from _EARLIEST_YEAR to `last_year`, at
    code - (_EARLIEST_YEAR << 9); 0 for codes of partial or impossible dates (as `_dob_parts`)."""
    codes = np.arange((last_year + 1 - _EARLIEST_YEAR) << 9, dtype=np.int64)
    year, month, day = codes >> 9, (codes >> 5) & 15, codes & 31
    months = (year + _EARLIEST_YEAR - 1970) * 12 + np.clip(month, 1, 12) - 1
    born = months.astype("datetime64[M]").astype("datetime64[D]") + np.clip(day, 1, 31) - 1
    full = (month >= 1) & (month <= 12) & (day >= 1) & (born.astype("datetime64[M]").astype(np.int64) == months)
    return np.asarray(np.where(full, born.astype(np.int64) + _ORDINAL_OF_1970, 0), dtype=np.int32)


def _dates_compatible(
    ay: _Column, am: _Column, ad: _Column, ao: _Column, by: _Column, bm: _Column, bd: _Column, bo: _Column
) -> npt.NDArray[np.bool_]:
    """Row-wise: dates that are unknown, equal as far as known, swapped, or a day or a year apart
    (year, month, day and ordinal columns of each side; 0 for what is unknown).

    The vectorised twin of `compare_dates(...) is not DIFFERENT`, so that namesakes born on other
    days never reach the (slower) scoring.
    """
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
    # How many other listed people bear a name that matches as well: for a name spelled the same
    # part by part, those who bear that spelling; for another spelling, those of the same skeletons.
    exact = name is not None and name.exact_parts == name.passenger_parts == name.entry_parts
    return Evidence(
        name,
        compare_dates(query.dob, entry.dob),
        document,
        nationality,
        "",
        listed_namesakes=max((query.spelled_namesakes if exact else query.namesakes) - 1, 0),
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


class _Strings:
    """Strings by position: those packed at the last `pack` back to back in one UTF-8 buffer (each
    ending at its `_ends`), then those appended since in a list. A million strings held this way are
    two objects, not a million: forked workers that read them write to no shared page (reference
    counts), and the memory of a bulk load is handed back whole once it is packed."""

    __slots__ = ("_data", "_ends", "_tail")

    def __init__(self, tail: list[str] | None = None) -> None:
        self._data = bytearray()
        self._ends = np.zeros(0, dtype=np.int64)
        self._tail = tail if tail is not None else []

    def __len__(self) -> int:
        return len(self._ends) + len(self._tail)

    def __getitem__(self, position: int) -> str:
        packed = len(self._ends)
        if position >= packed:
            return self._tail[position - packed]
        start = int(self._ends[position - 1]) if position else 0
        return self._data[start : int(self._ends[position])].decode()

    def append(self, text: str) -> None:
        self._tail.append(text)

    def unpacked(self) -> list[str]:
        """The strings appended since the last `pack`."""
        return self._tail

    def pack(self) -> None:
        """Move the strings appended since the last `pack` into the buffer."""
        strings, self._tail = self._tail, []
        ends = []
        end = len(self._data)
        for start in range(0, len(strings), 65_536):
            chunk = strings[start : start + 65_536]
            text = "".join(chunk)
            data = text.encode()
            lengths = map(len, chunk) if len(data) == len(text) else (len(s.encode()) for s in chunk)
            ends.append(np.cumsum(np.fromiter(lengths, dtype=np.int64, count=len(chunk))) + end)
            self._data += data
            end = len(self._data)
        self._ends = np.concatenate((self._ends, *ends))


class ScreeningIndex:
    """In-memory candidate keys and scoring data of watchlist entries; add, remove and screen.

    Keys live in one sorted array (built on the first screening, merged again when many entries
    were added since); entries added after that are found through a small dictionary until then.
    Removed or amended entries leave a tombstone.
    """

    def __init__(self) -> None:
        # Entry ids and scoring records by position (packed at each build); the position of each
        # living entry's id, made when first needed (adding or removing entries, not screening).
        self._ids = _Strings()
        self._records = _Strings()
        self._alive = bytearray()
        self._position: dict[str, int] | None = {}
        self._keys: npt.NDArray[np.uint64] = np.zeros(0, dtype=np.uint64)
        self._pending_positions: list[int] = []
        self._pending_digests: list[bytes] = []
        self._pending_keys = 0
        self._pending_lookup: dict[bytes, list[int]] | None = None
        self._views: dict[int, _EntryView] = {}
        # Each entry's date of birth as one code (`_date_codes`), the code of the entry of each key
        # beside the sorted keys (so that the date filter reads runs in order), and code -> ordinal.
        self._dob_code = np.zeros(0, dtype=np.int32)
        self._key_dates = np.zeros(0, dtype=np.int32)
        self._ordinals = _ordinal_table(dt.datetime.now(dt.UTC).year + 1)

    def __len__(self) -> int:
        return self._alive.count(1)

    def _positions(self) -> dict[str, int]:
        if self._position is None:
            ids = self._ids
            self._position = {ids[p]: p for p in range(len(self._alive)) if self._alive[p]}
        return self._position

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
        positions = self._positions()
        if entry_id in positions:
            self.remove(entry_id)
        position = len(self._ids)
        self._ids.append(entry_id)
        self._records.append(record)
        self._alive.append(1)
        positions[entry_id] = position
        self._pending_positions.append(position)
        self._pending_digests.append(digests)
        self._pending_keys += len(digests) // 8
        if self._pending_lookup is not None:
            for i in range(0, len(digests), 8):
                self._pending_lookup.setdefault(digests[i : i + 8], []).append(position)

    def add_many(self, rows: Iterable[tuple[str, str, bytes]]) -> None:
        """Index many entries by what `keys_of` made of them: (entry id, record, digests) each."""
        if len(self._ids):
            for row in rows:
                self.add_keys(*row)
            return
        # An empty index (start-up from a replica file): the same lists, filled without a Python loop.
        columns = tuple(zip(*rows, strict=True))
        if not columns:
            return
        ids, records, digests = (list(c) for c in columns)
        if len(set(ids)) < len(ids):  # the same id twice: the last one counts, as with add_keys
            for row in zip(ids, records, digests, strict=True):
                self.add_keys(*row)
            return
        self._ids, self._records, self._position = _Strings(ids), _Strings(records), None
        self._alive = bytearray(b"\x01") * len(ids)
        self._pending_positions, self._pending_digests = list(range(len(ids))), digests
        self._pending_keys = sum(map(len, digests)) // 8

    def remove(self, entry_id: str) -> None:
        """Forget `entry_id` (no-op if absent)."""
        position = self._positions().pop(entry_id, None)
        if position is not None:
            self._alive[position] = 0
            self._views.pop(position, None)

    def entry_ids(self) -> Iterator[str]:
        """The ids of every indexed entry."""
        return iter(self._positions())

    def build(self) -> None:
        """Merge the keys of entries added since the last build into the sorted array."""
        if not self._pending_positions:
            return
        if len(self._ids) > _POSITION_MASK:
            raise ValueError(f"a screening index holds at most {_POSITION_MASK} entries and amendments")
        parts = _dob_columns([r.split(_SEP, 2)[1] for r in self._records.unpacked()])
        self._dob_code = np.concatenate((self._dob_code, _date_codes(parts)))
        last_year = max(int(parts[:, 0].max(initial=0)), dt.datetime.now(dt.UTC).year) + 1
        if (last_year + 1 - _EARLIEST_YEAR) << 9 > len(self._ordinals):
            self._ordinals = _ordinal_table(last_year)
        # In place where numpy allows: each temporary of a million entries' keys is 160 MB to fault in.
        count = len(self._pending_digests)
        sizes = np.fromiter(map(len, self._pending_digests), dtype=np.int64, count=count) // 8
        positions = np.repeat(np.asarray(self._pending_positions, dtype=np.uint64), sizes)
        keys = np.empty(len(self._keys) + len(positions), dtype=np.uint64)
        keys[: len(self._keys)] = self._keys
        added = keys[len(self._keys) :]
        np.bitwise_and(
            np.frombuffer(b"".join(self._pending_digests), dtype=np.uint64), np.uint64(_DIGEST_MASK), out=added
        )
        added |= positions
        del added, positions
        self._keys = np.zeros(0, dtype=np.uint64)
        keys.sort()
        self._keys = keys
        self._key_dates = self._dob_code[keys & np.uint64(_POSITION_MASK)]
        self._records.pack()
        self._ids.pack()
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

    def _members(self, blobs: list[bytes]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(query number, index in the sorted array) of every key sharing a digest with each query's
        keys (the first _RUN_CAP of each run)."""
        owner, low, high = self._runs(blobs)
        counts = np.minimum(high - low, _RUN_CAP)
        total = int(counts.sum())
        starts = np.repeat(low, counts)
        offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        return np.repeat(owner, counts), starts + offsets

    def _lookup(self, blobs: list[bytes]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(query number, entry position) of every sorted-array entry sharing a key with each query."""
        owner, members = self._members(blobs)
        return owner, (self._keys[members] & np.uint64(_POSITION_MASK)).astype(np.int64)

    def _candidates(self, queries: list[_Query]) -> list[set[int]]:
        """Candidate positions per query: every entry sharing a document or identifier key, and the
        entries sharing the most name keys whose date of birth does not contradict (at most _TOP)."""
        found: list[set[int]] = [set() for _ in queries]
        name_blobs, frequency_blobs, spelling_blobs, other_blobs = [], [], [], []
        for query in queries:
            names, frequency, spelling, others = _query_keys(query)
            name_blobs.append(_digests(names))
            frequency_blobs.append(_digests(frequency))
            spelling_blobs.append(_digests(spelling))
            other_blobs.append(_digests(others))
        alive = np.frombuffer(self._alive, dtype=np.uint8)[: len(self._dob_code)]
        for query, count in zip(queries, self._fewest(frequency_blobs), strict=True):
            query.namesakes = count
        for query, count in zip(queries, self._fewest(spelling_blobs), strict=True):
            query.spelled_namesakes = count
        owner, position = self._lookup(other_blobs)
        for q, p in zip(owner.tolist(), position.tolist(), strict=True):
            found[q].add(p)
        owner, members = self._members(name_blobs)
        if len(owner):
            # The date filter first, on the keys' own date codes read in order: it drops about 99 %
            # of the pairs, and whether a pair passes does not depend on the key that found it, so
            # the shared-key counts of the pairs it keeps are those of the unfiltered pairs.
            query_parts = np.asarray([_dob_parts(q.dob) for q in queries], dtype=np.int64).reshape(-1, 4)
            query_codes, query_ordinals = _date_codes(query_parts), query_parts[:, 3].astype(np.int32)
            keep = np.empty(len(owner), dtype=np.bool_)
            for start in range(0, len(owner), _FILTER_BLOCK):  # blocks whose temporaries stay in cache
                block = slice(start, start + _FILTER_BLOCK)
                query_code, query_ordinal = query_codes[owner[block]], query_ordinals[owner[block]]
                code = self._key_dates[members[block]]
                keep[block] = _dates_compatible(
                    query_code >> 9,
                    query_code >> 5 & 15,
                    query_code & 31,
                    query_ordinal,
                    code >> 9,
                    code >> 5 & 15,
                    code & 31,
                    self._ordinals[np.maximum(code - np.int32(_EARLIEST_YEAR << 9), 0)],
                )
            owner = owner[keep]
            position = (self._keys[members[keep]] & np.uint64(_POSITION_MASK)).astype(np.int64)
            living = alive[position] == 1
            codes, shared = np.unique(owner[living] << 32 | position[living], return_counts=True)
            owner, position = codes >> 32, codes & 0xFFFFFFFF
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

    def _fewest(self, blobs: list[bytes]) -> list[int]:
        """For each query, the fewest entries sharing one of its keys `blobs` (0 without keys): with
        the year-less name pair keys, an estimate of how many listed people bear the name."""
        owner, low, high = self._runs(blobs)
        fewest = np.full(len(blobs), np.iinfo(np.int64).max, dtype=np.int64)
        if len(owner):
            np.minimum.at(fewest, owner, high - low)
        return [count if count != np.iinfo(np.int64).max else 0 for count in fewest.tolist()]

    def evidence(self, record: ScreeningRecord, entry_id: str) -> Evidence:
        """What comparing `record` with the indexed entry `entry_id` finds (for tests and tuning)."""
        return _compare(_query(record), self._view(self._positions()[entry_id]))

    def candidates(self, records: Sequence[ScreeningRecord]) -> list[list[tuple[str, Evidence]]]:
        """Every candidate entry of each record with its evidence, before any threshold (for tuning)."""
        self._ready()
        queries = [_query(r) for r in records]
        out: list[list[tuple[str, Evidence]]] = []
        for query, positions in zip(queries, self._candidates(queries), strict=True):
            compared = [(p, _compare(query, self._view(p))) for p in sorted(positions) if self._alive[p]]
            out.append([(self._ids[p], e) for p, e in _with_rivals(compared)])
        return out

    def screen(
        self, records: Iterable[ScreeningRecord], *, min_score: float = DEFAULT_MIN_SCORE, workers: int | None = None
    ) -> list[Hit]:
        """Hits of `records` at or above `min_score`, best first within each record, in record order.

        `workers` processes share the work (None: one per available core when there are at least
        `_PARALLEL_MIN` records; 1: this process alone). They are forked, so they read this index
        without copying it; the hits are the same, in the same order, whatever the number.
        """
        self._ready()
        items = records if isinstance(records, list) else list(records)
        count = _worker_count(workers, len(items))
        raw = self._screen_parallel(items, min_score, count) if count > 1 else self._screen_slice(items, 0, min_score)
        ids = self._ids
        return [Hit(items[n], ids[p], score, fields, explanation=how) for n, p, score, fields, how in raw]

    def _screen_slice(self, records: list[ScreeningRecord], start: int, min_score: float) -> list[_RawHit]:
        """The hits of `records` (numbered from `start`) as (record number, entry position, score,
        fields, explanation), in order."""
        out: list[_RawHit] = []
        for offset in range(0, len(records), _BATCH):
            out.extend(self._screen_batch(records[offset : offset + _BATCH], start + offset, min_score))
        return out

    def _screen_parallel(self, records: list[ScreeningRecord], min_score: float, workers: int) -> list[_RawHit]:
        """Screen `records` in this process and `workers` - 1 forked ones, which claim chunks of
        records from a shared counter until none is left; the hits come back in record order."""
        global _SHARED  # noqa: PLW0603 (what forked workers read instead of a pickled copy)
        chunk = max(1, min(_BATCH, -(-len(records) // (4 * workers))))
        bounds = [(start, min(start + chunk, len(records))) for start in range(0, len(records), chunk)]
        context = multiprocessing.get_context("fork")
        shared = _SHARED = _Shared(self, records, min_score, bounds, context.Value("q", 0))
        # Free memory handed back before forking is not copied into each worker when reused there.
        _malloc("malloc_trim", 0)
        parts: dict[int, list[_RawHit]] = {}
        try:
            with ProcessPoolExecutor(workers - 1, mp_context=context, initializer=_worker_start) as pool:
                try:
                    forked = [pool.submit(_screen_claimed) for _ in range(workers - 1)]
                    parts.update(_screen_claimed())
                    for future in forked:  # a worker that died raises BrokenProcessPool here
                        parts.update(future.result())
                except BaseException:
                    # Interrupted or failed: the workers stop after their current chunk, and the pool's
                    # exit waits for no more than that.
                    with shared.claimed.get_lock():
                        shared.claimed.value = len(bounds)
                    raise
        finally:
            _SHARED = None
        return [hit for number in range(len(bounds)) for hit in parts[number]]

    def _screen_batch(self, records: list[ScreeningRecord], start: int, min_score: float) -> list[_RawHit]:
        queries = [_query(r) for r in records]
        hits: list[_RawHit] = []
        alive = self._alive
        for number, (query, positions) in enumerate(zip(queries, self._candidates(queries), strict=True), start):
            found = []
            compared = [(p, _compare(query, self._view(p))) for p in positions if alive[p]]
            for position, evidence in _with_rivals(compared):
                score = score_evidence(evidence)
                if score >= min_score:
                    fields, how = _explain(evidence)
                    found.append((number, position, round(score, 4), fields, how))
            found.sort(key=lambda h: (-h[2], self._ids[h[1]]))
            hits.extend(found)
        return hits


_RawHit = tuple[int, int, float, tuple[str, ...], tuple[str, ...]]
_PARALLEL_MIN: Final = 2 * _BATCH


@dataclass(frozen=True, slots=True)
class _Shared:
    """A batch being screened in parallel, as the forked workers inherit it."""

    index: ScreeningIndex
    records: list[ScreeningRecord]
    min_score: float
    bounds: list[tuple[int, int]]
    claimed: Synchronized[int]  # the number of chunks claimed so far


_SHARED: _Shared | None = None


def _malloc(function: str, *args: int) -> None:
    """Call glibc's malloc_trim or mallopt where the C library has them (elsewhere, nothing)."""
    with contextlib.suppress(OSError, AttributeError):
        getattr(ctypes.CDLL(None), function)(*args)


_M_MMAP_THRESHOLD: Final = -3


def _worker_start() -> None:
    """In a forked worker: leave the inherited heap alone. The objects inherited are never collected
    (gc.freeze), and large temporaries get pages of their own (a fixed mmap threshold: glibc's
    adaptive one would place them in the parent's free heap, copying its pages)."""
    gc.freeze()
    _malloc("mallopt", _M_MMAP_THRESHOLD, 128 * 1024)


def _worker_count(workers: int | None, records: int) -> int:
    """How many processes screen `records` records: `workers` if given, else one per available core
    for a large enough batch, and never more than one where processes cannot be forked."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    if workers is None:
        if records < _PARALLEL_MIN:
            return 1
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(workers, records))


def _screen_claimed() -> dict[int, list[_RawHit]]:
    """Screen chunks of the shared batch, claimed one at a time, until none is left."""
    shared = _SHARED
    if shared is None:
        raise RuntimeError("no screening batch was shared with this worker")
    found: dict[int, list[_RawHit]] = {}
    while True:
        with shared.claimed.get_lock():
            number = shared.claimed.value
            shared.claimed.value = number + 1
        if number >= len(shared.bounds):
            return found
        start, stop = shared.bounds[number]
        found[number] = shared.index._screen_slice(shared.records[start:stop], start, shared.min_score)
