"""Retention periods of the sharing policy: how long the broker keeps what it stores (LED Art. 5).

The `[retention]` table of the policy file sets a period for each kind of stored data (`envelopes`,
`attachments`, `receipts`, `revoked_key_bundles`) with a deployment `default`, and
`[[retention.rules]]` narrow it per message kind and handling code; see docs/protocol.md section 22
"Retention". A policy without a `[retention]` table keeps everything for `BUILTIN_PERIOD` (3
years, the SIS review interval of Reg. 2018/1861 Art. 39): never forever, because the Law
Enforcement Directive wants a time limit for every item.

Which period applies to an item: the first retention rule, in file order, whose `kinds` and
`handling` match the message and that sets a period for this kind of data; else the table's own key
for it; else the table's `default`; else the built-in period. The name of what decided is recorded
with every purge (`red-alerts`, `retention.envelopes`, `retention.default`, `builtin:retention`).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

#: What the broker stores and purges, as the policy names it.
STORED: Final[tuple[str, ...]] = ("envelopes", "attachments", "receipts", "revoked_key_bundles")
#: What a retention rule may set: the data that belongs to one message (key bundles have no kind).
PER_MESSAGE: Final[tuple[str, ...]] = ("envelopes", "attachments", "receipts")
BUILTIN_RULE: Final = "builtin:retention"

_UNIT_SECONDS: Final[Mapping[str, int]] = {"s": 1, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_UNIT_MONTHS: Final[Mapping[str, int]] = {"mo": 1, "y": 12}
_PERIOD: Final = re.compile(r"([1-9][0-9]{0,5})(s|min|h|d|w|mo|y)")
#: The longest period accepted: a longer one is a typo, not a retention decision.
MAX_SECONDS: Final = 100 * 366 * 86400
PERIOD_SYNTAX: Final = "a whole number and a unit: s, min, h, d, w, mo (calendar months) or y (years), e.g. '3y'"


class PeriodError(ValueError):
    """A period that does not follow `PERIOD_SYNTAX` or is longer than 100 years."""


@dataclass(frozen=True, slots=True)
class Period:
    """A retention period: calendar months (`mo`, `y`) or an exact number of seconds (the others)."""

    amount: int
    unit: str

    @classmethod
    def parse(cls, text: str) -> Period:
        """Read `3y`, `6mo`, `30d`, `12h`, `10s`; raise `PeriodError` for anything else."""
        match = _PERIOD.fullmatch(text)
        if match is None:
            raise PeriodError(f"'{text[:40]}' is not a period ({PERIOD_SYNTAX})")
        period = cls(int(match.group(1)), match.group(2))
        if period.longest_seconds > MAX_SECONDS:
            raise PeriodError(f"'{text}' is longer than 100 years")
        return period

    @property
    def longest_seconds(self) -> int:
        """An upper bound in seconds (a month counted as 31 days)."""
        if self.unit in _UNIT_MONTHS:
            return self.amount * _UNIT_MONTHS[self.unit] * 31 * 86400
        return self.amount * _UNIT_SECONDS[self.unit]

    def cutoff(self, now: datetime) -> datetime:
        """The instant such that what was stored at or before it has been kept for this period at `now`.

        Months are calendar months: 1mo before 31 March is 28 (or 29) February, as a lawyer counts.
        """
        months = _UNIT_MONTHS.get(self.unit)
        if months is None:
            return now - timedelta(seconds=self.amount * _UNIT_SECONDS[self.unit])
        total = now.year * 12 + (now.month - 1) - self.amount * months
        year, month = divmod(total, 12)
        if year < 1:
            return datetime.min.replace(tzinfo=now.tzinfo)
        day = min(now.day, calendar.monthrange(year, month + 1)[1])
        return now.replace(year=year, month=month + 1, day=day)

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"


BUILTIN_PERIOD: Final = Period(3, "y")


@dataclass(frozen=True, slots=True)
class RetentionRule:
    """One `[[retention.rules]]` entry. Empty `kinds` or `handling`: every kind, every code."""

    name: str
    kinds: frozenset[str]
    handling: frozenset[str]
    periods: Mapping[str, Period]  # keys from PER_MESSAGE

    def matches(self, kind: str, tlp: str | None) -> bool:
        """Whether a message of `kind` at handling code `tlp` (None: unspecified) falls under this rule."""
        if self.kinds and kind not in self.kinds:
            return False
        return not self.handling or tlp in self.handling


@dataclass(frozen=True, slots=True)
class Retention:
    """The retention section of a policy: table-level periods and rules, in file order."""

    periods: Mapping[str, Period]  # keys from STORED and "default"
    rules: tuple[RetentionRule, ...] = ()

    def period_for(self, what: str, kind: str = "", tlp: str | None = None) -> tuple[Period, str]:
        """The period that applies to `what` (one of STORED) of a message, and the name of what decided it."""
        if what in PER_MESSAGE:
            for rule in self.rules:
                period = rule.periods.get(what)
                if period is not None and rule.matches(kind, tlp):
                    return period, rule.name
        if what in self.periods:
            return self.periods[what], f"retention.{what}"
        if "default" in self.periods:
            return self.periods["default"], "retention.default"
        return BUILTIN_PERIOD, BUILTIN_RULE


#: The retention of a policy without a `[retention]` table.
DEFAULT_RETENTION: Final = Retention(periods={})

__all__ = [
    "BUILTIN_PERIOD",
    "BUILTIN_RULE",
    "DEFAULT_RETENTION",
    "PERIOD_SYNTAX",
    "PER_MESSAGE",
    "STORED",
    "Period",
    "PeriodError",
    "Retention",
    "RetentionRule",
]
