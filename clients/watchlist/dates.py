"""Dates of birth as manifests and lists write them, and how two of them compare.

Accepted forms (a date that fits none is *unknown*: reported, and never counted against a match):

| form | example | note |
|---|---|---|
| ISO 8601 | `1975-03-12`, `1975-03`, `1975`, `1975-03-12T00:00:00Z` | also `/` or `.` between the parts |
| day first | `12/03/1975`, `12.03.1975`, `12-03-1975` | read month first only when the first number exceeds 12 |
| compact | `19750312` | |
| PAXLST (UN/EDIFACT DTM 329) | `750312` | two-digit years pivot on today: never in the future |
| PNR / APIS `DOCS` | `12MAR75`, `12MAR1975`, `12 MAR 1975` | |
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from enum import Enum
from typing import Final

__all__ = ["BirthDate", "DateAgreement", "compare_dates", "parse_date"]

_MONTHS: Final = {
    m: i for i, m in enumerate(("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1)
}
_ISO: Final = re.compile(r"(\d{4})(?:[-/.](\d{1,2})(?:[-/.](\d{1,2}))?)?(?:[T ].*)?")
_DAY_FIRST: Final = re.compile(r"(\d{1,2})[-/.](\d{1,2})[-/.](\d{4}|\d{2})")
_DIGITS: Final = re.compile(r"\d{8}|\d{6}")
_NAMED_MONTH: Final = re.compile(r"(\d{1,2}) ?([A-Z]{3}) ?(\d{4}|\d{2})")
_EARLIEST_YEAR: Final = 1850


@dataclass(frozen=True, slots=True)
class BirthDate:
    """A date of birth; `month` and `day` are 0 when the source gave only a year (or year-month)."""

    year: int
    month: int = 0
    day: int = 0

    def iso(self) -> str:
        """`YYYY-MM-DD`, `YYYY-MM` or `YYYY`."""
        if not self.month:
            return f"{self.year:04d}"
        if not self.day:
            return f"{self.year:04d}-{self.month:02d}"
        return f"{self.year:04d}-{self.month:02d}-{self.day:02d}"


def _valid(year: int, month: int, day: int, today: dt.date) -> BirthDate | None:
    if not _EARLIEST_YEAR <= year <= today.year:
        return None
    if month == 0:
        return BirthDate(year) if day == 0 else None
    if not 1 <= month <= 12:
        return None
    if day == 0:
        return BirthDate(year, month)
    try:
        born = dt.date(year, month, day)
    except ValueError:
        return None
    return BirthDate(year, month, day) if born <= today else None


def _year(text: str, today: dt.date) -> int:
    year = int(text)
    if len(text) == 2:  # a birth year is never in the future: 30 -> 1930 in 2026, 25 -> 2025
        year += 2000 if 2000 + year <= today.year else 1900
    return year


def parse_date(text: str, *, today: dt.date | None = None) -> BirthDate | None:  # noqa: PLR0911 (one return per form)
    """The date `text` writes in any accepted form, or None when it is empty or not understood."""
    today = today or dt.datetime.now(dt.UTC).date()
    value = text.strip().upper()
    if not value or len(value) > 40:
        return None
    if (m := _DIGITS.fullmatch(value)) is not None:
        if len(value) == 8:
            return _valid(int(value[:4]), int(value[4:6]), int(value[6:]), today)
        return _valid(_year(value[:2], today), int(value[2:4]), int(value[4:]), today)
    if (m := _ISO.fullmatch(value)) is not None:
        return _valid(int(m[1]), int(m[2] or 0), int(m[3] or 0), today)
    if (m := _DAY_FIRST.fullmatch(value)) is not None:
        first, second, year = int(m[1]), int(m[2]), _year(m[3], today)
        if first <= 12 < second:  # only a month-first date can be read this way
            first, second = second, first
        return _valid(year, second, first, today)
    if (m := _NAMED_MONTH.fullmatch(value)) is not None and m[2] in _MONTHS:
        return _valid(_year(m[3], today), _MONTHS[m[2]], int(m[1]), today)
    return None


class DateAgreement(Enum):
    """How a passenger's date of birth compares with an entry's."""

    SAME = "same"
    YEAR_ONLY = "same year (one side gives only the year)"
    MONTH_DAY_SWAPPED = "day and month swapped"
    DAY_OFF_BY_ONE = "one day apart"
    YEAR_OFF_BY_ONE = "one year apart"
    UNKNOWN = "unknown on one side"
    DIFFERENT = "different"


def compare_dates(a: BirthDate | None, b: BirthDate | None) -> DateAgreement:  # noqa: PLR0911 (one per outcome)
    """Compare two dates of birth; a missing or partial date never contradicts what it does not say."""
    if a is None or b is None:
        return DateAgreement.UNKNOWN
    if not a.month or not b.month:
        if a.year == b.year:
            return DateAgreement.YEAR_ONLY
        return DateAgreement.YEAR_OFF_BY_ONE if abs(a.year - b.year) == 1 else DateAgreement.DIFFERENT
    if not a.day or not b.day:
        if (a.year, a.month) == (b.year, b.month):
            return DateAgreement.YEAR_ONLY
        return DateAgreement.DIFFERENT
    if a == b:
        return DateAgreement.SAME
    if a.year == b.year and (a.month, a.day) == (b.day, b.month):
        return DateAgreement.MONTH_DAY_SWAPPED
    if abs(dt.date(a.year, a.month, a.day).toordinal() - dt.date(b.year, b.month, b.day).toordinal()) == 1:
        return DateAgreement.DAY_OFF_BY_ONE
    if abs(a.year - b.year) == 1 and (a.month, a.day) == (b.month, b.day):
        return DateAgreement.YEAR_OFF_BY_ONE
    return DateAgreement.DIFFERENT
