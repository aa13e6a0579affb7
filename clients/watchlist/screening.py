"""Screening records (API/PNR passengers, vehicles, consignments) against watchlist entries.

Built for speed: entries are normalised once into in-memory hash indexes (by name token set, by
family name and date of birth, by document number, plate, container and catalogue reference), so
screening a record is a handful of dictionary look-ups, never a scan and never a query. 100,000
records against 1,000,000 entries take seconds (see bench/bench_screening.py).

Name normalisation, applied alike to entries and records:
1. Unicode compatibility decomposition (NFKD) and upper case; letters that do not decompose get
   their ICAO 9303 transliteration (ß -> SS, Æ -> AE, Ø -> OE, Ł -> L, Þ -> TH ...), and combining
   marks are dropped: MÜLLER -> MULLER, JOSÉ -> JOSE.
2. Every character that is not A-Z or 0-9 separates tokens: O'BRIEN-SMITH -> O BRIEN SMITH.
3. For the "variant" key, the digraphs ICAO 9303 uses for umlauts and ring (AE, OE, UE, AA) become
   one letter, so MÜLLER, MUELLER and MULLER all read MULLER. The same folding is applied to both
   sides, so it can only add candidates (SAMUEL matches SAMUL), which the score then ranks.
4. A name is its sorted set of tokens of two letters or more: word order and initials do not matter.
Scripts other than Latin are not transliterated (an entry in Cyrillic matches only Cyrillic).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

from broker.api.v1 import payload_pb2

__all__ = [
    "DEFAULT_MIN_SCORE",
    "Hit",
    "ScreeningIndex",
    "ScreeningRecord",
    "date_text",
    "identifier_key",
    "name_key",
    "name_tokens",
]

DEFAULT_MIN_SCORE: Final = 60

# Letters NFKD does not decompose, with their ICAO 9303 (section 6 of part 3) transliteration.
_SPECIAL: Final = str.maketrans({
    "ß": "SS", "ẞ": "SS", "Æ": "AE", "æ": "AE", "Ø": "OE", "ø": "OE", "Œ": "OE", "œ": "OE",
    "Đ": "D", "đ": "D", "Ð": "D", "ð": "D", "Ł": "L", "ł": "L", "Þ": "TH", "þ": "TH", "\u0131": "I", "Ħ": "H", "ħ": "H",
})
_NOT_ALNUM: Final = re.compile(r"[^A-Z0-9]+")
_DIGRAPHS: Final = re.compile(r"AE|OE|UE|AA")
_FOLD: Final = {"AE": "A", "OE": "O", "UE": "U", "AA": "A"}
_ID_NOISE: Final = re.compile(r"[^A-Z0-9]")
# Separators of the stored index keys (ASCII unit and record separators: never in a normalised key).
_SEP: Final = "\x1f"
_LIST: Final = "\x1e"
# Combining marks NFKD splits off Latin letters (the Combining Diacritical Marks block and its
# supplements); letters of other scripts are kept as they are.
_COMBINING: Final = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")

# Score parts (0..100 overall). A name alone reaches the default threshold; a date of birth that
# contradicts it pulls it well below.
_NAME_EXACT, _NAME_VARIANT, _FAMILY = 65, 60, 35
_DOB_MATCH, _DOB_CONFLICT = 30, -40
_DOCUMENT, _DOCUMENT_WITH_NAME = 70, 20
_IDENTIFIER = 80
_NATIONALITY = 5


def _strip(text: str) -> str:
    if text.isascii():  # the common case, and ten times cheaper
        return text.upper()
    decomposed = unicodedata.normalize("NFKD", text.translate(_SPECIAL))
    return _COMBINING.sub("", decomposed).upper()


def _fold(match: re.Match[str]) -> str:
    return _FOLD[match.group()]


Word = tuple[str, str]
"""One normalised token: (exact, folded)."""


def _chunk_words(chunk: str) -> tuple[Word, ...]:
    return tuple((w, _DIGRAPHS.sub(_fold, w)) for w in _NOT_ALNUM.split(_strip(chunk)) if w)


def _keys(words: list[Word]) -> tuple[str, str]:
    """(exact key, variant key) of a name's tokens: initials dropped (unless that is all), sorted, distinct."""
    longer = [w for w in words if len(w[0]) > 1] or words
    return " ".join(sorted({e for e, _ in longer})), " ".join(sorted({f for _, f in longer}))


def _tokens(text: str, *, fold: bool) -> tuple[str, ...]:
    words = [w for chunk in text.split() for w in _chunk_words(chunk)]
    key = _keys(words)[1 if fold else 0]
    return tuple(key.split()) if key else ()


def name_tokens(text: str, *, fold: bool = True) -> tuple[str, ...]:
    """The sorted distinct tokens of a name after normalisation (folded digraphs by default)."""
    return _tokens(text, fold=fold)


def name_key(*parts: str, fold: bool = True) -> str:
    """A name's key: its normalised tokens, sorted and joined (word order does not matter)."""
    return " ".join(_tokens(" ".join(parts), fold=fold))


def identifier_key(value: str) -> str:
    """A document number, plate, container number or reference without spaces, dashes, '<' or case."""
    return _ID_NOISE.sub("", _strip(value))


def date_text(date: payload_pb2.Date) -> str:
    """`YYYY-MM-DD` of a Date, `YYYY-MM` or `YYYY` when less is known, "" when nothing is."""
    if not date.year:
        return ""
    if not date.month:
        return f"{date.year:04d}"
    if not date.day:
        return f"{date.year:04d}-{date.month:02d}"
    return f"{date.year:04d}-{date.month:02d}-{date.day:02d}"


def _dates_agree(a: str, b: str) -> bool | None:
    """True/False when both are known (a partial date agrees with any date it is a prefix of)."""
    if not a or not b:
        return None
    return a.startswith(b) or b.startswith(a)


@dataclass(frozen=True, slots=True)
class ScreeningRecord:
    """One record to screen. Give `family_name`/`given_names` or a full `name` (any order)."""

    record_id: str = ""
    family_name: str = ""
    given_names: str = ""
    name: str = ""
    date_of_birth: str = ""  # YYYY-MM-DD (or YYYY-MM, YYYY)
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
    """A candidate match of one record against one entry; `score` 0..100, higher is surer."""

    record: ScreeningRecord
    entry_id: str
    score: int
    matched_fields: tuple[str, ...]
    watchlist_id: str = ""
    watchlist_version: int = 0
    owner: str = ""
    entry: payload_pb2.WatchlistEntry | None = field(default=None, compare=False)


@dataclass(slots=True)
class _Entry:
    entry_id: str
    exact_names: tuple[str, ...]
    variant_names: tuple[str, ...]
    family: str
    dob: str
    nationalities: frozenset[str]
    document: str


class ScreeningIndex:
    """In-memory indexes over watchlist entries; add, remove and screen without touching a database.

    Positions are never reused: a removed or amended entry leaves a tombstone, so indexes only grow
    until `compact()` (or a rebuild) drops the dead positions.
    """

    def __init__(self) -> None:
        self._entries: list[_Entry | None] = []
        self._position: dict[str, int] = {}
        self._names: dict[str, list[int]] = {}
        self._family_dob: dict[str, list[int]] = {}
        self._identifiers: dict[str, list[tuple[int, str]]] = {}
        self._cache: dict[str, tuple[Word, ...]] = {}

    def __len__(self) -> int:
        return len(self._position)

    def _words(self, text: str) -> list[Word]:
        # Name words repeat a great deal in real lists and manifests: normalise each spelling once.
        cache = self._cache
        words: list[Word] = []
        for chunk in text.split():
            found = cache.get(chunk)
            if found is None:
                found = _chunk_words(chunk)
                if len(cache) < 4_000_000:
                    cache[chunk] = found
            words.extend(found)
        return words

    def _name(self, text: str) -> tuple[str, str]:
        """(exact key, variant key) of a full name."""
        return _keys(self._words(text))

    def keys_of(self, entry: payload_pb2.WatchlistEntry) -> str:
        """The normalised keys of `entry`, as one string that `add_keys` takes back.

        A replica stores this beside each entry, so that building the index at start-up is a loop
        of dictionary inserts, without parsing or normalising a million entries again.
        """
        family_words = self._words(entry.family_name)
        exact_key, variant_key = _keys(self._words(entry.given_names) + family_words)
        exact, variant = ([exact_key], [variant_key]) if variant_key else ([], [])
        for alias in entry.aliases:
            e, v = self._name(alias)
            if v:
                exact.append(e)
                variant.append(v)
        identifiers = [f"{kind}={identifier_key(value)}" for kind, value in (
            ("document_number", entry.document_number), ("vehicle_plate", entry.vehicle_plate),
            ("container_number", entry.container_number), ("catalogue_reference", entry.catalogue_reference))
            if value]
        return _SEP.join((
            _LIST.join(exact), _LIST.join(variant), _keys(family_words)[1] if family_words else "",
            date_text(entry.date_of_birth) if entry.HasField("date_of_birth") else "",
            _LIST.join(n.upper() for n in entry.nationalities), _LIST.join(identifiers)))

    def add(self, entry: payload_pb2.WatchlistEntry) -> None:
        """Index `entry`, replacing an entry of the same id."""
        self.add_keys(entry.entry_id, self.keys_of(entry))

    def add_keys(self, entry_id: str, keys: str) -> None:
        """Index an entry by the keys `keys_of` made of it, replacing an entry of the same id."""
        if entry_id in self._position:
            self.remove(entry_id)
        position = len(self._entries)
        exact_text, variant_text, family, dob, nationality_text, identifier_text = keys.split(_SEP)
        exact = tuple(exact_text.split(_LIST)) if exact_text else ()
        variant = tuple(variant_text.split(_LIST)) if variant_text else ()
        document = ""
        identifiers = self._identifiers
        if identifier_text:
            for item in identifier_text.split(_LIST):
                kind, _, value = item.partition("=")
                if value:
                    identifiers.setdefault(value, []).append((position, kind))
                    if kind == "document_number":
                        document = value
        nationalities = frozenset(nationality_text.split(_LIST)) if nationality_text else frozenset()
        self._entries.append(_Entry(entry_id, exact, variant, family, dob, nationalities, document))
        self._position[entry_id] = position
        names = self._names
        for key in set(variant):
            if key in names:
                names[key].append(position)
            else:
                names[key] = [position]
        if family and dob:
            self._family_dob.setdefault(f"{family}|{dob}", []).append(position)

    def remove(self, entry_id: str) -> None:
        """Forget `entry_id` (no-op if absent)."""
        position = self._position.pop(entry_id, None)
        if position is not None:
            self._entries[position] = None

    def entry_ids(self) -> Iterator[str]:
        """The ids of every indexed entry."""
        return iter(self._position)

    def screen(self, records: Iterable[ScreeningRecord], *, min_score: int = DEFAULT_MIN_SCORE) -> list[Hit]:
        """Candidate hits of `records`, best first within each record, at or above `min_score`."""
        hits: list[Hit] = []
        for record in records:
            scored = self._screen_one(record)
            for position, (score, fields) in sorted(scored.items(), key=lambda kv: -kv[1][0]):
                if score >= min_score:
                    entry = self._entries[position]
                    assert entry is not None
                    hits.append(Hit(record, entry.entry_id, min(score, 100), tuple(sorted(fields))))
        return hits

    def _screen_one(self, record: ScreeningRecord) -> dict[int, tuple[int, set[str]]]:
        full = record.name or f"{record.given_names} {record.family_name}"
        exact, variant = self._name(full)
        family = self._name(record.family_name)[1] if record.family_name else ""
        dob = record.date_of_birth.strip()
        candidates: dict[int, set[str]] = {}
        if variant:
            for p in self._names.get(variant, ()):
                candidates.setdefault(p, set()).add("name")
        if family and dob:
            for p in self._family_dob.get(f"{family}|{dob}", ()):
                candidates.setdefault(p, set()).add("family_name")
        for kind, value in (("document_number", record.document_number), ("vehicle_plate", record.vehicle_plate),
                            ("container_number", record.container_number),
                            ("catalogue_reference", record.catalogue_reference)):
            if value:
                for p, entry_kind in self._identifiers.get(identifier_key(value), ()):
                    if entry_kind == kind:
                        candidates.setdefault(p, set()).add(kind)
        scored: dict[int, tuple[int, set[str]]] = {}
        for position, fields in candidates.items():
            entry = self._entries[position]
            if entry is None:
                continue
            scored[position] = _score(entry, fields, exact, variant, dob, record.nationality.upper())
        return scored


def _score(entry: _Entry, fields: set[str], exact: str, variant: str, dob: str,
           nationality: str) -> tuple[int, set[str]]:
    score = 0
    named = "name" in fields or (variant and variant in entry.variant_names)
    if named:
        fields.add("name")
        fields.discard("family_name")
        score += _NAME_EXACT if exact in entry.exact_names else _NAME_VARIANT
        if exact not in entry.exact_names:
            fields.add("name_variant")
    elif "family_name" in fields:
        score += _FAMILY
    agree = _dates_agree(dob, entry.dob)
    if agree is True:
        fields.add("date_of_birth")
        score += _DOB_MATCH
    elif agree is False:
        score += _DOB_CONFLICT
    if "document_number" in fields:
        # A document match stands on its own: impostors use other people's documents.
        score = max(score, 0) + _DOCUMENT + (_DOCUMENT_WITH_NAME if named else 0)
    for kind in ("vehicle_plate", "container_number", "catalogue_reference"):
        if kind in fields:
            score = max(score, 0) + _IDENTIFIER
    if nationality and nationality in entry.nationalities and score > 0:
        fields.add("nationality")
        score += _NATIONALITY
    return score, fields
