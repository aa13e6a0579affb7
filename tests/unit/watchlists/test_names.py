"""Name parts and name comparison for screening (clients/watchlist/names.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clients.watchlist.names import (
    _PINYIN,
    _chinese,
    _syllabic,
    _wade_giles,
    compare_names,
    parse_name,
    part_key,
    to_latin,
)


@pytest.mark.parametrize(
    ("family", "given_names", "core"),
    [
        ("AL MASRI", "AHMED", ("MASRI", "AHMED")),
        ("BIN LADEN", "OSAMA", ("LADEN", "OSAMA")),
        ("van der Berg", "Anna", ("BERG", "ANNA")),
        ("de la Cruz", "Pablo", ("CRUZ", "PABLO")),
        # A particle ends no field and starts no given names: Chinese syllables that spell one stay.
        ("YANG", "JUN BIN", ("YANG", "JUN", "BIN")),
        ("HE", "BIN HUI", ("HE", "BIN", "HUI")),
        # A name repeated in family and given names is two parts, not one.
        ("MAHMOUD", "MAHMOUD", ("MAHMOUD", "MAHMOUD")),
        ("CHEN", "CHEN NA", ("CHEN", "CHEN", "NA")),
    ],
)
def test_core_parts(family: str, given_names: str, core: tuple[str, ...]) -> None:
    """Particles leave the compared parts only where they are particles."""
    assert parse_name(family, given_names).core == core


def test_han_script_syllables_are_never_particles() -> None:
    """斌 reads BIN: a Chinese given name, not the Arabic 'son of'."""
    assert parse_name("杨", "军斌").core == ("YANG", "JUN", "BIN")


def test_particle_inside_a_full_name_is_dropped() -> None:
    """MOHAMMED BIN SALMAN compares as MOHAMMED SALMAN."""
    assert parse_name(full="MOHAMMED BIN SALMAN").core == ("MOHAMMED", "SALMAN")


def test_typo_in_a_repeated_name_pairs_both_parts() -> None:
    """MAHMOUD MAHMOOD against MAHMOUD MAHMOUD: two parts against two, both paired closely."""
    found = compare_names(parse_name("MAHMOUD", "MAHMOOD"), parse_name("MAHMOUD", "MAHMOUD"))
    assert (found.passenger_parts, found.entry_parts) == (2, 2)
    assert found.weakest > 0.85
    assert found.entry_coverage > 0.9


@pytest.mark.parametrize(
    ("passenger", "listed"),
    [
        (("SUKHANOV", "MIKHAIL"), ("SUCHANOW", "MICHAIL")),  # Russian KH as German CH
        (("AHMAD", "ABDELRAHMAN"), ("AHMED", "ABDURRAHMAN")),  # the article written or assimilated
        (("OSMAN", "ALI"), ("UTHMAN", "ALI")),  # Turkish S for TH
        (("CHRUSCHTSCHOW", "NIKITA"), ("KHRUSHCHEV", "NIKITA")),  # German CH for kha, English for che
    ],
)
def test_skeletons_one_consonant_apart_are_close_variants(passenger: tuple[str, str], listed: tuple[str, str]) -> None:
    """Romanisations that write one consonant differently compare as close variants (0.75 or more)."""
    found = compare_names(parse_name(*passenger), parse_name(*listed))
    assert found.weakest >= 0.75
    assert found.passenger_coverage >= 0.8


def test_unrelated_names_with_one_shared_part_stay_weak() -> None:
    """BLACKFIELD is not LANGFIELD: the pair stays below a close variant's similarity."""
    found = compare_names(parse_name("BLACKFIELD", "DAVID"), parse_name("LANGFIELD", "DAVID"))
    assert found.weakest < 0.75


@pytest.mark.parametrize(
    ("variant", "other"),
    [(("MUHAMMAD", "ALI"), ("AHMED", "ALI")), (("HUSAYN", "ALI"), ("HASAN", "ALI"))],
)
def test_shared_skeleton_with_the_same_vowels_is_closer(variant: tuple[str, str], other: tuple[str, str]) -> None:
    """MOHAMMED is closer to MUHAMMAD than to AHMED, HOSSEIN to HUSAYN than to HASAN (same skeletons)."""
    listed = parse_name(variant[0].replace("UHAMMAD", "OHAMMED").replace("USAYN", "OSSEIN"), "ALI")
    assert compare_names(parse_name(*variant), listed).weakest > compare_names(parse_name(*other), listed).weakest


@given(st.text(max_size=60), st.text(max_size=60), st.text(max_size=60))
def test_parse_and_compare_any_text(family: str, given_names: str, full: str) -> None:
    """Any text parses into upper-case ASCII parts, and any two names compare within [0, 1]."""
    a = parse_name(family, given_names)
    b = parse_name(full=full)
    for name in (a, b):
        assert all(p.isascii() and p == p.upper() and p.isalnum() for p in name.core)
        assert set(name.family_core) <= set(name.core)
        assert set(name.given_core) <= set(name.core)
    if a.core and b.core:
        found = compare_names(a, b)
        assert 0.0 <= found.passenger_coverage <= 1.0 + 1e-9
        assert 0.0 <= found.entry_coverage <= 1.0 + 1e-9
        assert 0.0 <= found.weakest <= 1.0


@pytest.mark.parametrize(
    ("passenger", "listed"),
    [
        (("MAO", "TSE-TUNG"), ("MAO", "ZEDONG")),  # Wade-Giles and pinyin
        (("CHANG", "CHIEH"), ("ZHANG", "JIE")),
        (("TSAI", "YING-WEN"), ("CAI", "YINGWEN")),
        (("CHIANG", "CHING"), ("JIANG", "QING")),
        (("TSCHAIKOWSKI", "PJOTR"), ("TCHAIKOVSKY", "PYOTR")),  # German and English for Russian
        (("DOSTOJEWSKI", "FJODOR"), ("DOSTOEVSKY", "FYODOR")),
        (("SOKOLOW", "EWGENIJ"), ("SOKOLOV", "YEVGENIY")),  # W for V before a consonant; YE or E
        (("WLADIMIR", "PUTIN"), ("VLADIMIR", "PUTIN")),
        (("KADHAFI", "MOAMMAR"), ("GADDAFI", "MUAMMAR")),
        (("وليد", "حسين"), ("WALEED", "HUSSEIN")),  # an initial و is a consonant, a medial one a vowel
    ],
)
def test_real_world_romanisations_are_close_variants(passenger: tuple[str, str], listed: tuple[str, str]) -> None:
    """Customary spellings of the same name in other romanisation systems compare closely (0.85 or more)."""
    found = compare_names(parse_name(*passenger), parse_name(*listed))
    assert found.weakest >= 0.85
    assert found.passenger_coverage >= 0.9


@pytest.mark.parametrize(
    ("pinyin", "wade_giles"),
    [("ZHANG", "CHANG"), ("JIE", "CHIEH"), ("QIANG", "CHIANG"), ("XIAO", "HSIAO"), ("CAI", "TSAI"), ("REN", "JEN")],
)
def test_pinyin_and_wade_giles_share_the_chinese_key(pinyin: str, wade_giles: str) -> None:
    """Read as Chinese, a syllable's two romanisations have one key (and the plain skeletons may differ)."""
    assert part_key(pinyin, chinese=True) == part_key(wade_giles, chinese=True)


def test_every_pinyin_syllable_shares_its_key_with_its_wade_giles_spellings() -> None:
    """Pinyin syllables and their Wade-Giles spellings (apostrophes dropped) have one Chinese key, but
    for the few that one system writes alike for two sounds (Wade-Giles JU is pinyin JU or RU) and
    the vowel-only ones (E/O), which keep their letters."""
    ambiguous = {"RU", "RUA", "RUAN", "RUI", "RUN", "E", "HE", "YI", "YOU"}
    for syllable in _PINYIN - ambiguous:
        for spelling in _wade_giles(syllable):
            assert part_key(syllable, chinese=True) == part_key(spelling, chinese=True), (syllable, spelling)


def test_a_name_reads_as_chinese_only_when_every_part_is_syllables() -> None:
    """XIAO MING and HSIAO CHIEH read as Chinese; JUAN GARCIA does not (GARCIA is no syllable)."""
    assert parse_name("HSIAO", "CHIEH").chinese
    assert parse_name("王", "小明").chinese
    assert not parse_name("GARCIA", "JUAN").chinese


@given(st.text(st.characters(min_codepoint=32, max_codepoint=0x24F), max_size=30), st.booleans())
def test_part_keys_are_upper_case_letters(text: str, chinese: bool) -> None:
    """Any part has a key of upper-case ASCII letters or digits (a vowel-only part: itself after "~"), with or
    without the Chinese reading, and the Chinese reading of a key's part is its own fixed point."""
    for part in to_latin(text):
        key = part_key(part, chinese=chinese)
        assert key
        assert key[0] == "~" or key.isalnum()
        assert key.isascii()
        assert key == key.upper()
        assert _syllabic(part) in (True, False)
        assert _chinese(_chinese(part)) == _chinese(part)
