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
   SCHTSCHERBAKOW and CHTCHERBAKOV read SRPKF; MOHAMMED, MUHAMMAD and MHMD read MMT. W is a
   consonant at the start or beside a vowel (WLADIMIR, EWGENIJ, وليد WLYD), a vowel between
   consonants (محمود MHMWD). A name whose every part splits into pinyin or Wade-Giles syllables
   also has a *Chinese* key per part (`part_key`), where the letters the two systems write
   differently agree: pinyin J, Q, C and Wade-Giles CH, TS (JIE/CHIEH, QIANG/CHIANG, CAI/TSAI),
   Wade-Giles J before A, E, O as pinyin R (JEN/REN).
4. **Comparison** of two names aligns their core parts one to one (rapidfuzz OSA similarity, a
   shared skeleton counting as a close variant, closer when the vowels agree too (MUHAMMAD/MOHAMMED,
   not AHMED/MOHAMMED) unless one side was read from an abjad, skeletons one consonant apart as a
   looser one (also from an abjad: عثمان/OSMAN), an initial as a weak match; two Chinese names
   compare by their Chinese keys), also trying adjacent
   parts joined (XIAO MING ~ XIAOMING, AL MASRI ~ ALMASRI, GARCIAMARQUEZ ~ GARCIA MARQUEZ).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import icu
from rapidfuzz.distance import OSA

__all__ = ["NameComparison", "ParsedName", "compare_names", "parse_name", "part_key", "skeleton", "to_latin"]

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
# W is a consonant (V/F) at the start, beside a vowel (WALID, EWGENIJ, IVANOW); between consonants it is
# a long vowel, as Arabic script transliterated writes it (MHMWD, YWSF).
_W_CONSONANT: Final = re.compile(r"^W|(?<=[AEIOU])W|W(?=[AEIOUY])")
_DROPPED: Final = re.compile("[AEIOUYHJW]")
_DOUBLES: Final = re.compile(r"(.)\1+")
_PNR: Final = re.compile(r"^\s*([^/]+)/([^/]*)$")
_TRUNCATED_AT: Final = 29
_CACHE_LIMIT: Final = 2_000_000
_HAN: Final = re.compile("[\u3400-\u9fff\uf900-\ufaff]")
_LATIN_END: Final = "\u0250"  # letters below this are Latin (Basic Latin to Latin Extended-B)
_latin_cache: dict[str, tuple[str, ...]] = {}
_skeleton_cache: dict[str, str] = {}


# ---- Chinese syllables: pinyin and Wade-Giles ----------------------------------------------------------

# Every syllable of standard Mandarin in pinyin (U for its U-umlaut, also written V).
_PINYIN_TEXT: Final = """
    A AI AN ANG AO E EI EN ENG ER O OU
    BA BAI BAN BANG BAO BEI BEN BENG BI BIAN BIAO BIE BIN BING BO BU
    PA PAI PAN PANG PAO PEI PEN PENG PI PIAN PIAO PIE PIN PING PO POU PU
    MA MAI MAN MANG MAO ME MEI MEN MENG MI MIAN MIAO MIE MIN MING MIU MO MOU MU
    FA FAN FANG FEI FEN FENG FO FOU FU
    DA DAI DAN DANG DAO DE DEI DEN DENG DI DIAN DIAO DIE DING DIU DONG DOU DU DUAN DUI DUN DUO
    TA TAI TAN TANG TAO TE TENG TI TIAN TIAO TIE TING TONG TOU TU TUAN TUI TUN TUO
    NA NAI NAN NANG NAO NE NEI NEN NENG NI NIAN NIANG NIAO NIE NIN NING NIU NONG NOU NU NUAN NUN NUO NV NUE NVE
    LA LAI LAN LANG LAO LE LEI LENG LI LIA LIAN LIANG LIAO LIE LIN LING LIU LO LONG LOU LU LUAN LUN LUO LV LUE LVE
    GA GAI GAN GANG GAO GE GEI GEN GENG GONG GOU GU GUA GUAI GUAN GUANG GUI GUN GUO
    KA KAI KAN KANG KAO KE KEN KENG KONG KOU KU KUA KUAI KUAN KUANG KUI KUN KUO
    HA HAI HAN HANG HAO HE HEI HEN HENG HONG HOU HU HUA HUAI HUAN HUANG HUI HUN HUO
    JI JIA JIAN JIANG JIAO JIE JIN JING JIONG JIU JU JUAN JUE JUN
    QI QIA QIAN QIANG QIAO QIE QIN QING QIONG QIU QU QUAN QUE QUN
    XI XIA XIAN XIANG XIAO XIE XIN XING XIONG XIU XU XUAN XUE XUN
    ZHA ZHAI ZHAN ZHANG ZHAO ZHE ZHEI ZHEN ZHENG ZHI ZHONG ZHOU ZHU ZHUA ZHUAI ZHUAN ZHUANG ZHUI ZHUN ZHUO
    CHA CHAI CHAN CHANG CHAO CHE CHEN CHENG CHI CHONG CHOU CHU CHUA CHUAI CHUAN CHUANG CHUI CHUN CHUO
    SHA SHAI SHAN SHANG SHAO SHE SHEI SHEN SHENG SHI SHOU SHU SHUA SHUAI SHUAN SHUANG SHUI SHUN SHUO
    RAN RANG RAO RE REN RENG RI RONG ROU RU RUA RUAN RUI RUN RUO
    ZA ZAI ZAN ZANG ZAO ZE ZEI ZEN ZENG ZI ZONG ZOU ZU ZUAN ZUI ZUN ZUO
    CA CAI CAN CANG CAO CE CEN CENG CI CONG COU CU CUAN CUI CUN CUO
    SA SAI SAN SANG SAO SE SEN SENG SI SONG SOU SU SUAN SUI SUN SUO
    YA YAN YANG YAO YE YI YIN YING YO YONG YOU YU YUAN YUE YUN
    WA WAI WAN WANG WEI WEN WENG WO WU
    """
_PINYIN: Final = frozenset(_PINYIN_TEXT.split())
_WG_INITIALS: Final = (
    ("ZH", ("CH",)),
    ("CH", ("CH",)),
    ("SH", ("SH",)),
    ("B", ("P",)),
    ("D", ("T",)),
    ("G", ("K",)),
    ("J", ("CH",)),
    ("Q", ("CH",)),
    ("X", ("HS",)),
    ("Z", ("TS", "TZ")),
    ("C", ("TS", "TZ")),
    ("R", ("J",)),
)
_WG_FINALS: Final = (("IAN", "IEN"), ("IONG", "IUNG"), ("ONG", "UNG"), ("IE", "IEH"), ("UE", "UEH"), ("ER", "ERH"))


def _wade_giles(syllable: str) -> set[str]:
    """The Wade-Giles spellings (apostrophes and umlauts dropped) of one pinyin syllable."""
    initial, spellings = next(((i, s) for i, s in _WG_INITIALS if syllable.startswith(i)), ("", ("",)))
    if not initial and syllable[0] in "PTKMFNLHSYW":
        initial, spellings = syllable[0], (syllable[0],)
    final = syllable[len(initial) :]
    if final == "I" and initial in {"ZH", "CH", "SH", "R"}:
        final = "IH"
    elif final == "I" and initial in {"Z", "C", "S"}:
        final = "U"
        spellings = ("TZ", "TS") if initial != "S" else ("SS", "SZ")
    elif (final == "E" and initial in {"G", "K", "H", ""}) or (final == "UO" and initial not in {"G", "K", "H", "SH"}):
        final = "O"
    elif final == "UI" and initial in {"G", "K"}:
        final = "UEI"
    elif initial == "Y" and final in {"OU", "AN", "E", "ONG", "I"}:
        final = {"OU": "U", "AN": "EN", "E": "EH", "ONG": "UNG", "I": "I"}[final]
        spellings = ("Y",) if final != "I" else ("",)
    else:
        for a, b in _WG_FINALS:
            if final.endswith(a):
                final = final[: -len(a)] + b
                break
    return {s + final for s in spellings}


_CHINESE_SYLLABLES: Final = _PINYIN | frozenset(w for s in _PINYIN for w in _wade_giles(s))
_LONGEST_SYLLABLE: Final = max(map(len, _CHINESE_SYLLABLES))
_syllabic_cache: dict[str, bool] = {}


def _syllabic(part: str) -> bool:
    """Whether `part` splits into pinyin or Wade-Giles syllables (ZHANG, XIAOMING, HSIAO, CHIEHWEI)."""
    found = _syllabic_cache.get(part)
    if found is not None:
        return found
    reachable = bytearray(len(part) + 1)
    reachable[0] = 1
    for start in range(len(part)):
        if reachable[start]:
            for end in range(start + 1, min(start + _LONGEST_SYLLABLE, len(part)) + 1):
                if part[start:end] in _CHINESE_SYLLABLES:
                    reachable[end] = 1
    found = bool(reachable[-1])
    if len(_syllabic_cache) < _CACHE_LIMIT:
        _syllabic_cache[part] = found
    return found


# Named groups: what each letter becomes in the Chinese reading of a part.
_CHINESE_FOLD: Final = re.compile(r"(?P<R>J(?=[AEO]|UNG|IH))|(?P<Z>J|Q|C(?!H))|(?P<_>(?<=[AEIOU])H$)")


def part_key(part: str, *, chinese: bool = False) -> str:
    """The skeleton of a part, read as pinyin or Wade-Giles when `chinese`: the affricates and
    sibilants that the two systems write differently are one letter (pinyin J, Q, C as Wade-Giles CH,
    TS: JING/CHING, QIANG/CHIANG, CAI/TSAI), a Wade-Giles J that pinyin cannot write is its R
    (JEN/REN, JUNG/RONG), and the Wade-Giles final H goes (JIE/CHIEH)."""
    return skeleton(_chinese(part) if chinese else part)


def _chinese(part: str) -> str:
    return _CHINESE_FOLD.sub(lambda m: (m.lastgroup or "").strip("_"), part)


def to_latin(text: str, *, titles: bool = True) -> tuple[str, ...]:
    """The upper-case ASCII parts of `text`, transliterated from any script (with `titles`, those
    that are titles left out)."""
    cache_key = text if titles else f"\x00{text}"
    found = _latin_cache.get(cache_key)
    if found is not None:
        return found
    if text.isascii():
        latin, dropped = text.upper(), TITLES
    else:
        # A final ta marbuta is a vowel (FATIMA, AISHA), not the T that ICU writes; and a name written
        # in another script holds no Latin titles (عمر reads MR).
        latin = _TRANSLITERATOR.transliterate(text.replace("\u0629", "\u0647")).upper()
        dropped = TITLES if all(c < _LATIN_END or not c.isalpha() for c in text) else frozenset()
    if not titles:
        dropped = frozenset()
    parts = tuple(p for p in _SEPARATORS.split(_APOSTROPHES.sub("", latin)) if p and p not in dropped)
    if len(_latin_cache) < _CACHE_LIMIT:
        _latin_cache[cache_key] = parts
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
_LEADING_SEMIVOWEL: Final = re.compile(r"^I(?=[AIU])")
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
    # An initial semivowel before a vowel is written or not (Russian ye, yu, ya: YELENA/ELENA, YURIY/IURII).
    key = _LEADING_SEMIVOWEL.sub("", _DOUBLES.sub(r"\1", key))
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
    chinese: bool = False  # every core part reads as pinyin or Wade-Giles syllables

    @property
    def split(self) -> bool:
        """Whether family and given names are told apart."""
        return bool(self.family) and bool(self.given)


def parse_name(family: str = "", given: str = "", *, full: str = "", titles: bool = True) -> ParsedName:
    """Parse a name given as family and given names, or as one full name (any order, or PNR form).
    `titles=False` reads parts that `parse_name` made before (their titles are out already: a part
    read from another script, such as عمر as MR, is a name)."""
    truncated = False
    if full and not family and not given:
        pnr = _PNR.match(full)
        if pnr:
            family, given = pnr.group(1), pnr.group(2)
            truncated = len(full.strip()) >= _TRUNCATED_AT
        else:
            given = full
    family_parts, given_parts = to_latin(family, titles=titles), to_latin(given, titles=titles)
    han = _HAN.search(family + given) is not None  # Chinese syllables are never particles
    family_core = family_parts if han else _core(family_parts)
    given_core = given_parts if han else _core(given_parts, given=bool(family_parts))
    core = family_core + given_core
    optional = frozenset(p for p in core if _PATRONYMIC.match(p))
    chinese = bool(core) and all(_syllabic(p) for p in core)
    return ParsedName(family_parts, given_parts, core, family_core, given_core, optional, truncated, chinese)


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


def _part_similarity(a: str, b: str, *, prefix: bool, chinese: bool = False) -> tuple[float, int]:
    """(similarity, kind) of a passenger part and an entry part; kind 0 exact, 1 variant, 2 initial."""
    if a == b:
        return 1.0, 0
    if len(a) == 1 or len(b) == 1:
        return (0.7, 2) if a[0] == b[0] else (0.0, 1)
    if prefix and len(a) >= 3 and b.startswith(a):
        return 0.95, 1
    similarity = OSA.normalized_similarity(a, b)
    if chinese:  # both names read as Chinese syllables: compared as pinyin and Wade-Giles alike
        a, b = _chinese(a), _chinese(b)
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
    elif min(len(key), len(other)) >= _NEAR_SKELETON and OSA.distance(key, other) == 1:
        # One consonant apart in skeletons (SUKHANOV/SUCHANOW, OSMAN/UTHMAN, عثمان/OSMAN): the systems
        # that write a letter differently (KH/CH, S/TH) or drop one (an assimilated article).
        if _voweled(a) and _voweled(b):
            similarity = max(similarity, 0.5 + 0.35 * OSA.normalized_similarity(vowel_form(a), vowel_form(b)))
        else:
            similarity = max(similarity, _NEAR_ABJAD)
    return similarity, 1


_MATCH_FLOOR: Final = 0.55
_NEAR_SKELETON: Final = 3
_NEAR_ABJAD: Final = 0.75
_JOINED_FLOOR: Final = 0.7


def _align(
    passenger: tuple[str, ...], entry: tuple[str, ...], optional: frozenset[str], truncated: bool, chinese: bool
) -> tuple[float, float, float, int, int, int, bool]:
    """(passenger coverage, entry coverage, weakest part, exact, variant, initials, every part paired)."""
    pairs = []
    last = len(passenger) - 1
    for i, a in enumerate(passenger):
        for j, b in enumerate(entry):
            similarity, kind = _part_similarity(a, b, prefix=truncated and i == last, chinese=chinese)
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
    chinese = passenger.chinese and entry.chinese
    best = _align(p_core, e_core, entry.optional, passenger.truncated, chinese)
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
        candidate = _align(p_alt, e_alt, entry.optional, passenger.truncated, chinese)
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
