"""Personal names for screening: any script to Latin, name parts, phonetic keys, and how two names compare.

1. **Script.** Text that is not ASCII goes through ICU (PyICU over Debian's libicu):
   `Russian-Latin/BGN` for Cyrillic (ЩЕРБАКОВ -> SHCHERBAKOV, as passports write it, where ICU's
   generic rule gives SERBAKOV), `Han-Latin/Names` for Chinese (surname readings: 单 -> SHAN),
   `Any-Latin` for every other script (Arabic gives its consonants: محمد -> MHMD), then
   `Latin-ASCII` (MÜLLER -> MULLER, ß -> SS, Ł -> L).
2. **Parts.** Apostrophes join (O'BRIEN -> OBRIEN), every other non-alphanumeric character splits.
   Titles (MR, MRS, DR ...) are dropped. Particles (AL, EL, BIN, DE, DEL, LA, VON, VAN, DER ...) are
   kept for display but left out of the *core* parts that are compared when another part follows
   them in the field (never in Han script, nor first in the given names), and a joined Arabic article
   comes off too (ALMASRI -> MASRI). PNR names `FAMILY/GIVEN TITLE` split into family and given; a
   name of 29 characters or more in that form may be MRZ-truncated, so its last part may be a prefix.
3. **Keys.** A part's *skeleton* is a consonant key that different romanisations share: digraphs
   fold (SHCH, SCH, TSCH, CH, SH, ZH, TS -> S; KH -> K; PH -> F), letters fold into classes (B/P,
   V/F/W, C/K/G/Q, D/T, S/Z/X), vowels, H, J and Y drop, doubles collapse: SHCHERBAKOV,
   SCHTSCHERBAKOW and CHTCHERBAKOV read SRPKF; MOHAMMED, MUHAMMAD and MHMD read MMT.
4. **Comparison** of two names aligns their core parts one to one (rapidfuzz OSA similarity, a
   shared skeleton counting as a close variant, closer when the vowels agree too (MUHAMMAD/MOHAMMED,
   not AHMED/MOHAMMED) unless one side was read from an abjad, skeletons one consonant apart as a
   looser one, an initial as a weak match), also trying adjacent
   parts joined (XIAO MING ~ XIAOMING, AL MASRI ~ ALMASRI, GARCIAMARQUEZ ~ GARCIA MARQUEZ).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import icu
from rapidfuzz.distance import OSA

__all__ = ["NameComparison", "ParsedName", "compare_names", "parse_name", "skeleton", "to_latin"]

_TRANSLITERATOR: Final = icu.Transliterator.createInstance(
    "Russian-Latin/BGN; Han-Latin/Names; Any-Latin; Latin-ASCII; Upper"
)
_APOSTROPHES: Final = re.compile("['`\u2018\u2019\u02bb\u02bc\u02be\u02bf\u02b9\u02ba\u00b4]")
_SEPARATORS: Final = re.compile(r"[^A-Z0-9]+")
TITLES: Final = frozenset(
    {
        "MR",
        "MRS",
        "MS",
        "MISS",
        "MSTR",
        "MASTER",
        "DR",
        "PROF",
        "REV",
        "SIR",
        "MME",
        "MLLE",
        "CHD",
        "INF",
        "HERR",
        "FRAU",
        "SR",
        "SRA",
        "SRTA",
    }
)
PARTICLES: Final = frozenset(
    {
        "AL",
        "EL",
        "UL",
        "AD",
        "AR",
        "AS",
        "AZ",
        "ASH",
        "AN",
        "BIN",
        "BEN",
        "IBN",
        "BINT",
        "DE",
        "DEL",
        "DELLA",
        "DELLE",
        "DEGLI",
        "DI",
        "DA",
        "DAL",
        "DAS",
        "DOS",
        "DO",
        "DU",
        "DES",
        "LA",
        "LE",
        "LES",
        "LO",
        "VAN",
        "VON",
        "DER",
        "DEN",
        "TER",
        "TEN",
        "ZU",
        "ZUR",
        "Y",
        "E",
        "OF",
    }
)
_PATRONYMIC: Final = re.compile(r".*(OVICH|EVICH|YEVICH|OVNA|EVNA|YEVNA|ICHNA|INICHNA|OGLU|OGLY|KYZY|QIZI)$")
_ARTICLE: Final = re.compile(r"^(AL|EL)(?=[^AEIOU])")
_DIGRAPHS: Final = (
    ("SCHTSCH", "S"),
    ("SHCH", "S"),
    ("CHTCH", "S"),
    ("TSCH", "S"),
    ("SCH", "S"),
    ("TCH", "S"),
    ("DJ", "J"),
    ("DZH", "S"),
    ("SH", "S"),
    ("ZH", "S"),
    ("CH", "S"),
    ("KH", "K"),
    ("GH", "K"),
    ("PH", "F"),
    ("TH", "T"),
    ("DH", "T"),
    ("CK", "K"),
    ("TS", "S"),
    ("TZ", "S"),
    ("DZ", "S"),
    ("HS", "S"),
    ("CE", "SE"),
    ("CI", "SI"),
    ("CY", "SY"),
)
_DIGRAPH: Final = re.compile("|".join(d for d, _ in _DIGRAPHS))
_DIGRAPH_MAP: Final = dict(_DIGRAPHS)
_CLASSES: Final = str.maketrans({"B": "P", "V": "F", "C": "K", "G": "K", "Q": "K", "D": "T", "Z": "S", "X": "S"})
_W_CONSONANT: Final = re.compile(r"W(?=[AEIOUY]|$)")
_DROPPED: Final = re.compile("[AEIOUYHJW]")
_DOUBLES: Final = re.compile(r"(.)\1+")
_PNR: Final = re.compile(r"^\s*([^/]+)/([^/]*)$")
_TRUNCATED_AT: Final = 29
_CACHE_LIMIT: Final = 2_000_000
_HAN: Final = re.compile("[\u3400-\u9fff\uf900-\ufaff]")
_LATIN_END: Final = "\u0250"  # letters below this are Latin (Basic Latin to Latin Extended-B)
_latin_cache: dict[str, tuple[str, ...]] = {}
_skeleton_cache: dict[str, str] = {}


def to_latin(text: str) -> tuple[str, ...]:
    """The upper-case ASCII parts of `text`, transliterated from any script."""
    found = _latin_cache.get(text)
    if found is not None:
        return found
    if text.isascii():
        latin, titles = text.upper(), TITLES
    else:
        # A final ta marbuta is a vowel (FATIMA, AISHA), not the T that ICU writes; and a name written
        # in another script holds no Latin titles (عمر reads MR).
        latin = _TRANSLITERATOR.transliterate(text.replace("\u0629", "\u0647")).upper()
        titles = TITLES if all(c < _LATIN_END or not c.isalpha() for c in text) else frozenset()
    parts = tuple(p for p in _SEPARATORS.split(_APOSTROPHES.sub("", latin)) if p and p not in titles)
    if len(_latin_cache) < _CACHE_LIMIT:
        _latin_cache[text] = parts
    return parts


def skeleton(part: str) -> str:
    """The consonant key of one upper-case ASCII name part (shared by its usual romanisations)."""
    found = _skeleton_cache.get(part)
    if found is not None:
        return found
    key = _DIGRAPH.sub(lambda m: _DIGRAPH_MAP[m.group()], part)
    key = _W_CONSONANT.sub("F", key).translate(_CLASSES)
    key = _DOUBLES.sub(r"\1", _DROPPED.sub("", key))
    key = key or f"~{part}"  # all vowels (AI, YAO): the part itself
    if len(_skeleton_cache) < _CACHE_LIMIT:
        _skeleton_cache[part] = key
    return key


_VOWEL_FOLDS: Final = (
    ("OU", "U"),
    ("OO", "U"),
    ("EE", "I"),
    ("IE", "I"),
    ("EI", "AI"),
    ("AY", "AI"),
    ("EY", "AI"),
)
_VOWEL_CLASSES: Final = str.maketrans({"O": "U", "E": "A", "Y": "I", "J": "I"})
_vowel_cache: dict[str, str] = {}


def vowel_form(part: str) -> str:
    """A part with consonants folded as in its skeleton but vowels kept in three classes (A/E, I/Y/J/EE,
    U/O/OU/OO), for telling romanisation variants (same vowels) from other names of the same skeleton."""
    found = _vowel_cache.get(part)
    if found is not None:
        return found
    key = _DIGRAPH.sub(lambda m: _DIGRAPH_MAP[m.group()], part)
    for a, b in _VOWEL_FOLDS:
        key = key.replace(a, b)
    key = _W_CONSONANT.sub("F", key).translate(_CLASSES).translate(_VOWEL_CLASSES)
    key = _DOUBLES.sub(r"\1", key)
    if len(_vowel_cache) < _CACHE_LIMIT:
        _vowel_cache[part] = key
    return key


_VOWELS: Final = re.compile("[AEIOUY]")


def _voweled(part: str) -> bool:
    """Whether a part writes its vowels (more than a quarter of its letters), unlike a transliterated
    abjad (محمد reads MHMD), whose vowels say nothing."""
    return len(_VOWELS.findall(part)) * 4 > len(part)


def _core(parts: tuple[str, ...], *, given: bool = False) -> tuple[str, ...]:
    """The parts that are compared: particles out, and a joined Arabic article off (ALMASRI -> MASRI).

    A particle is only one when another part follows it in the same field (AL MASRI, BIN LADEN, DE LA
    CRUZ): a last part (Chinese JUN BIN) or the first of the given names (BIN HUI, DE) is a name."""
    core = []
    last = len(parts) - 1
    for i, part in enumerate(parts):
        if part in PARTICLES and i < last and not (given and i == 0):
            continue
        stripped = _ARTICLE.sub("", part) if len(part) >= 5 else part
        core.append(stripped)
    return tuple(core) or parts


@dataclass(frozen=True, slots=True)
class ParsedName:
    """A name's parts: `family` and `given` when known (else all parts are in `given`), and the core
    parts used for comparison (particles and titles out)."""

    family: tuple[str, ...]
    given: tuple[str, ...]
    core: tuple[str, ...]
    family_core: tuple[str, ...]
    given_core: tuple[str, ...]
    optional: frozenset[str]
    truncated: bool = False

    @property
    def split(self) -> bool:
        """Whether family and given names are told apart."""
        return bool(self.family) and bool(self.given)


def parse_name(family: str = "", given: str = "", *, full: str = "") -> ParsedName:
    """Parse a name given as family and given names, or as one full name (any order, or PNR form)."""
    truncated = False
    if full and not family and not given:
        pnr = _PNR.match(full)
        if pnr:
            family, given = pnr.group(1), pnr.group(2)
            truncated = len(full.strip()) >= _TRUNCATED_AT
        else:
            given = full
    family_parts, given_parts = to_latin(family), to_latin(given)
    han = _HAN.search(family + given) is not None  # Chinese syllables are never particles
    family_core = family_parts if han else _core(family_parts)
    given_core = given_parts if han else _core(given_parts, given=bool(family_parts))
    core = family_core + given_core
    optional = frozenset(p for p in core if _PATRONYMIC.match(p))
    return ParsedName(family_parts, given_parts, core, family_core, given_core, optional, truncated)


@dataclass(frozen=True, slots=True)
class NameComparison:
    """How a passenger's name compares with an entry's: similarity and what happened to the parts."""

    passenger_coverage: float  # mean similarity over the passenger's parts
    entry_coverage: float  # mean similarity over the entry's (non-optional) parts
    weakest: float  # the lowest similarity of a passenger part (0: one matches nothing)
    exact_parts: int
    variant_parts: int  # spelling or romanisation variants
    initials: int
    joined: bool  # adjacent parts joined or split to match
    passenger_parts: int
    entry_parts: int

    def describe(self) -> str:
        """A one-line explanation without the names themselves (hit reports carry no passenger data)."""
        words = [f"{self.exact_parts + self.variant_parts + self.initials} of {self.entry_parts} entry parts"]
        if self.exact_parts:
            words.append(f"{self.exact_parts} exact")
        if self.variant_parts:
            words.append(f"{self.variant_parts} spelling/romanisation variant(s)")
        if self.initials:
            words.append(f"{self.initials} initial(s)")
        if self.joined:
            words.append("parts joined or split")
        return ", ".join(words)


def _part_similarity(a: str, b: str, *, prefix: bool) -> tuple[float, int]:
    """(similarity, kind) of a passenger part and an entry part; kind 0 exact, 1 variant, 2 initial."""
    if a == b:
        return 1.0, 0
    if len(a) == 1 or len(b) == 1:
        return (0.7, 2) if a[0] == b[0] else (0.0, 1)
    if prefix and len(a) >= 3 and b.startswith(a):
        return 0.95, 1
    similarity = OSA.normalized_similarity(a, b)
    key, other = skeleton(a), skeleton(b)
    if key == other:
        # A shared skeleton: a romanisation variant when the vowels agree too (MUHAMMAD/MOHAMMED,
        # HUSAYN/HOSSEIN), often another name when they do not (MOHAMMED/AHMED, HASAN/HUSSEIN); a
        # short skeleton says less.
        long = len(key) >= 3
        if _voweled(a) and _voweled(b):
            base, spread = (0.6, 0.35) if long else (0.55, 0.3)
            similarity = max(similarity, base + spread * OSA.normalized_similarity(vowel_form(a), vowel_form(b)))
        else:  # a part read from a script that writes no short vowels (Arabic MHMD): consonants only
            similarity = max(similarity, 0.9 if long else 0.8)
    elif min(len(key), len(other)) >= _NEAR_SKELETON and OSA.distance(key, other) == 1 and _voweled(a) and _voweled(b):
        # One consonant apart in skeletons (SUKHANOV/SUCHANOW, OSMAN/UTHMAN): the systems that write
        # a letter differently (KH/CH, S/TH) or drop one.
        similarity = max(similarity, 0.5 + 0.35 * OSA.normalized_similarity(vowel_form(a), vowel_form(b)))
    return similarity, 1


_MATCH_FLOOR: Final = 0.55
_NEAR_SKELETON: Final = 3
_JOINED_FLOOR: Final = 0.7


def _align(
    passenger: tuple[str, ...], entry: tuple[str, ...], optional: frozenset[str], truncated: bool
) -> tuple[float, float, float, int, int, int, bool]:
    """(passenger coverage, entry coverage, weakest part, exact, variant, initials, every part paired)."""
    pairs = []
    last = len(passenger) - 1
    for i, a in enumerate(passenger):
        for j, b in enumerate(entry):
            similarity, kind = _part_similarity(a, b, prefix=truncated and i == last)
            if similarity >= _MATCH_FLOOR:
                pairs.append((similarity, kind, i, j))
    pairs.sort(reverse=True)
    used_p: set[int] = set()
    used_e: set[int] = set()
    total, weakest = 0.0, 1.0
    counts = [0, 0, 0]
    for similarity, kind, i, j in pairs:
        if i in used_p or j in used_e:
            continue
        used_p.add(i)
        used_e.add(j)
        total += similarity
        weakest = min(weakest, similarity)
        counts[kind] += 1
    counted_entry = sum(1 for j, b in enumerate(entry) if j in used_e or b not in optional)
    passenger_cov = total / max(len(passenger), 1)
    entry_cov = total / max(counted_entry, 1)
    # The weakest passenger part: 0 when one of them matches nothing on the entry.
    weakest = weakest if used_p and len(used_p) == len(passenger) else 0.0
    complete = len(used_p) == len(passenger) and len(used_e) == len(entry)
    return passenger_cov, entry_cov, weakest, counts[0], counts[1], counts[2], complete


def _joins(parts: tuple[str, ...]) -> list[tuple[str, ...]]:
    """`parts` with each adjacent pair joined, and all joined (XIAO MING -> XIAOMING)."""
    if len(parts) < 2:
        return []
    out = [(*parts[:i], parts[i] + parts[i + 1], *parts[i + 2 :]) for i in range(len(parts) - 1)]
    if len(parts) > 2:
        out.append(("".join(parts),))
    return out


def _groups(name: ParsedName) -> list[tuple[str, ...]]:
    """Ways to read a name's core parts with compounds joined: family and given each joined."""
    out: list[tuple[str, ...]] = []
    if name.split and (len(name.family_core) > 1 or len(name.given_core) > 1):
        out.append(("".join(name.family_core), "".join(name.given_core)))
    out.extend(_joins(name.core))
    return out


def compare_names(passenger: ParsedName, entry: ParsedName) -> NameComparison:
    """Compare a passenger's name with an entry's (word order and family/given columns do not matter)."""
    p_core, e_core = passenger.core, entry.core
    best = _align(p_core, e_core, entry.optional, passenger.truncated)
    joined = False
    score = best[0] + best[1]
    alternatives: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
    if not best[6] and OSA.normalized_similarity("".join(p_core), "".join(e_core)) >= _JOINED_FLOOR:
        # A part left unpaired, and the names alike written together: joining adjacent parts of the
        # side with more parts may pair it.
        p_alts = [p_core, *_groups(passenger)] if len(p_core) >= len(e_core) else [p_core]
        e_alts = [e_core, *_groups(entry)] if len(e_core) >= len(p_core) else [e_core]
        alternatives = [(a, b) for a in p_alts for b in e_alts if a is not p_core or b is not e_core]
    elif score < 2.0 and len(p_core) > 1:
        # Every part paired, some loosely: the whole names compared as one (short skeletons say more joined).
        alternatives = [(("".join(p_core),), ("".join(e_core),))]
    for p_alt, e_alt in alternatives:
        candidate = _align(p_alt, e_alt, entry.optional, passenger.truncated)
        if candidate[0] + candidate[1] > score + 1e-9:
            best, score, joined = candidate, candidate[0] + candidate[1], True
    passenger_cov, entry_cov, weakest, exact, variant, initials, _ = best
    return NameComparison(
        passenger_cov,
        entry_cov,
        weakest,
        exact,
        variant,
        initials,
        joined,
        len(p_core),
        len([p for p in e_core if p not in entry.optional]) or len(e_core),
    )
