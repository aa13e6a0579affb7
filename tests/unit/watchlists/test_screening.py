"""Screening: each variation type of a listed person is found, hard negatives are not."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.api.v1 import payload_pb2
from clients.watchlist.dates import parse_date
from clients.watchlist.screening import (
    DEFAULT_MIN_SCORE,
    Hit,
    ScreeningIndex,
    ScreeningRecord,
    _dob_columns,
    _dob_parts,
    identifier_key,
)


def _person(
    entry_id: str,
    family: str,
    given: str,
    dob: tuple[int, ...] | None = (1975, 3, 12),
    *,
    document_number: str = "",
    issuing_country: str = "",
    aliases: tuple[str, ...] = (),
    nationality: str = "",
) -> payload_pb2.WatchlistEntry:
    entry = payload_pb2.WatchlistEntry(
        entry_id=entry_id,
        family_name=family,
        given_names=given,
        document_number=document_number,
        issuing_country=issuing_country,
        aliases=aliases,
        nationalities=[nationality] if nationality else [],
    )
    if dob:
        entry.date_of_birth.CopyFrom(
            payload_pb2.Date(year=dob[0], month=dob[1] if len(dob) > 1 else 0, day=dob[2] if len(dob) > 2 else 0)
        )
    return entry


def _index(*entries: payload_pb2.WatchlistEntry) -> ScreeningIndex:
    index = ScreeningIndex()
    # Bystanders with similar names, so that candidate keys have company.
    for i, (family, given_names) in enumerate(
        [
            ("Garcia", "Maria"),
            ("Martinez", "Jose"),
            ("Petrov", "Ivan"),
            ("Hassan", "Ali"),
            ("Wang", "Wei"),
            ("Schmidt", "Hans"),
        ]
    ):
        index.add(_person(f"bystander{i}", family, given_names, (1960 + i, 1, 1)))
    for e in entries:
        index.add(e)
    return index


def _hits(index: ScreeningIndex, **record: str) -> list[Hit]:
    return [h for h in index.screen([ScreeningRecord("r1", **record)]) if not h.entry_id.startswith("bystander")]


def _score(index: ScreeningIndex, **record: str) -> float:
    hits = [h for h in index.screen([ScreeningRecord("r1", **record)], min_score=0.0) if h.entry_id == "e1"]
    return hits[0].score if hits else 0.0


def test_exact_name_and_date_of_birth_is_a_sure_hit() -> None:
    """Same name (ICAO umlaut spelling) and date of birth: a hit above 0.8 naming both fields."""
    index = _index(_person("e1", "Müller", "Hans Peter"))
    [hit] = _hits(index, family_name="MUELLER", given_names="HANS PETER", date_of_birth="1975-03-12")
    assert hit.score > 0.8
    assert {"name", "date_of_birth"} <= set(hit.matched_fields)


@pytest.mark.parametrize("family", ["MULER", "MUELLRE", "MÜLLLER", "MILLER"])
def test_one_letter_typo_is_a_hit(family: str) -> None:
    """A substituted, inserted, dropped or transposed letter still hits."""
    index = _index(_person("e1", "Müller", "Hans"))
    assert [h.entry_id for h in _hits(index, family_name=family, given_names="Hans", date_of_birth="1975-03-12")] == [
        "e1"
    ]


@pytest.mark.parametrize(
    ("listed", "passenger"),
    [
        (("SHCHERBAKOV", "YURIY"), ("SCHTSCHERBAKOW", "JURIJ")),  # Russian: ICAO/BGN vs German
        (("SHCHERBAKOV", "YURIY"), ("CHTCHERBAKOV", "IOURI")),  # French
        (("AL-MASRI", "MOHAMMED"), ("EL MASRY", "MUHAMMAD")),  # Arabic
        (("HUSSEIN", "YOUSSEF"), ("HUSAYN", "YUSUF")),
        (("WANG", "XIAOMING"), ("WANG", "HSIAO-MING")),  # pinyin vs Wade-Giles
        (("MAO", "ZEDONG"), ("MAO", "TSE-TUNG")),
        (("DENG", "XIAOPING"), ("TENG", "HSIAO-PING")),
        (("CAI", "YINGWEN"), ("TSAI", "YING-WEN")),  # pinyin C, Wade-Giles TS
        (("ZHANG", "JIE"), ("CHANG", "CHIEH")),  # pinyin J, Wade-Giles CH
        (("JIANG", "QING"), ("CHIANG", "CHING")),
        (("TCHAIKOVSKY", "PYOTR"), ("TSCHAIKOWSKI", "PJOTR")),
        (("KHRUSHCHEV", "NIKITA"), ("CHRUSCHTSCHOW", "NIKITA")),
        (("SOKOLOV", "YEVGENIY"), ("SOKOLOW", "EWGENIJ")),  # German W for V before a consonant
        (("GADDAFI", "MUAMMAR"), ("QADHAFI", "MUAMMAR")),
        (("GADDAFI", "MUAMMAR"), ("KADHAFI", "MOAMMAR")),
    ],
)
def test_other_romanisation_is_a_hit(listed: tuple[str, str], passenger: tuple[str, str]) -> None:
    """Other transliterations of Russian, Arabic and Chinese names hit."""
    index = _index(_person("e1", *listed))
    hits = _hits(index, family_name=passenger[0], given_names=passenger[1], date_of_birth="12.03.1975")
    assert [h.entry_id for h in hits] == ["e1"]


@pytest.mark.parametrize(
    ("listed", "passenger"),
    [("al-Masri", "MASRI"), ("von der Heide", "HEIDE"), ("van Dijk", "DIJK"), ("de la Fuente", "FUENTE")],
)
def test_dropped_particle_is_a_hit(listed: str, passenger: str) -> None:
    """al-, von der, van, de la dropped from the family name still hit."""
    index = _index(_person("e1", listed, "Karim"))
    assert [
        h.entry_id for h in _hits(index, family_name=passenger, given_names="KARIM", date_of_birth="1975-03-12")
    ] == ["e1"]


def test_spanish_name_with_one_surname_is_a_hit() -> None:
    """GARCIA alone finds García Márquez."""
    index = _index(_person("e1", "García Márquez", "José Luis"))
    assert [
        h.entry_id for h in _hits(index, family_name="GARCIA", given_names="JOSE LUIS", date_of_birth="19750312")
    ] == ["e1"]


@pytest.mark.parametrize(
    ("listed", "passenger"),
    [
        (("Al Masri", "Omar"), ("ALMASRI", "OMAR")),
        (("Wang", "Xiao Ming"), ("WANG", "XIAOMING")),
        (("Wang", "Xiaoming"), ("WANG", "XIAO MING")),
        (("Dupont", "Jean-Pierre"), ("DUPONT", "JEANPIERRE")),
    ],
)
def test_joined_or_split_compound_is_a_hit(listed: tuple[str, str], passenger: tuple[str, str]) -> None:
    """ALMASRI ~ AL MASRI, XIAOMING ~ XIAO MING, JEANPIERRE ~ JEAN-PIERRE."""
    index = _index(_person("e1", *listed))
    assert [
        h.entry_id for h in _hits(index, family_name=passenger[0], given_names=passenger[1], date_of_birth="1975-03-12")
    ] == ["e1"]


@pytest.mark.parametrize("dob", ["1975-12-03", "1975-03-11", "1975-03-13", "1974-03-12", "1976-03-12"])
def test_date_of_birth_swapped_or_off_by_one_is_a_hit_with_a_lower_score(dob: str) -> None:
    """Day/month swapped, a day or a year apart: still a hit, never above the exact date's score."""
    index = _index(_person("e1", "Nowak", "Jan"))
    exact = _score(index, family_name="NOWAK", given_names="JAN", date_of_birth="1975-03-12")
    near = _score(index, family_name="NOWAK", given_names="JAN", date_of_birth=dob)
    assert DEFAULT_MIN_SCORE <= near <= exact


@pytest.mark.parametrize("dob", ["1975-03-12", "12/03/1975", "12.03.1975", "19750312", "750312", "12MAR75"])
def test_every_date_format_scores_like_iso(dob: str) -> None:
    """ISO, DD/MM/YYYY, DD.MM.YYYY, YYYYMMDD, PAXLST YYMMDD and DDMMMYY are the same date."""
    index = _index(_person("e1", "Nowak", "Jan"))
    assert _score(index, family_name="NOWAK", given_names="JAN", date_of_birth=dob) == _score(
        index, family_name="NOWAK", given_names="JAN", date_of_birth="1975-03-12"
    )


def test_unreadable_date_is_unknown_never_a_contradiction() -> None:
    """An unparseable date scores like a missing one, well above a contradicting one."""
    index = _index(_person("e1", "Nowak", "Jan"))
    unreadable = _score(index, family_name="NOWAK", given_names="JAN", date_of_birth="31/31/1975")
    missing = _score(index, family_name="NOWAK", given_names="JAN")
    contradicting = _score(index, family_name="NOWAK", given_names="JAN", date_of_birth="1990-07-01")
    assert unreadable == missing
    assert unreadable >= DEFAULT_MIN_SCORE > contradicting


def _with_namesakes(count: int) -> ScreeningIndex:
    """The listed Jan Nowak born 1975-03-12 and `count` other listed Jan Nowaks born years apart."""
    index = _index(_person("e1", "Nowak", "Jan"))
    for i in range(count):
        index.add(_person(f"namesake{i}", "Nowak", "Jan", (1940 + i % 30, 1 + i % 12, 1 + i % 28)))
    return index


@pytest.mark.parametrize("dob", ["1975-12-03", "1975-03-13", "1974-03-12", ""])
def test_near_or_unknown_date_passes_for_a_rare_name_and_not_for_a_common_one(dob: str) -> None:
    """A near or unknown date of birth is weaker evidence the more listed people bear the name (the
    more likely one of them agrees by chance): a hit for a name borne by one listed person, none for
    a name borne by thousands. The same date of birth stays a hit either way."""
    passenger = {"family_name": "NOWAK", "given_names": "JAN", "date_of_birth": dob}
    rare, common = _index(_person("e1", "Nowak", "Jan")), _with_namesakes(3000)
    assert _score(rare, **passenger) >= DEFAULT_MIN_SCORE > _score(common, **passenger)
    assert _score(common, **{**passenger, "date_of_birth": "1975-03-12"}) >= DEFAULT_MIN_SCORE


def test_how_common_a_name_is_counts_its_spelling_for_a_name_spelled_the_same() -> None:
    """Thousands of listed JEAN NOWAKs (the skeletons of JAN NOWAK) do not make JAN NOWAK a common
    name: a near date still passes for the one listed JAN NOWAK, and not once JAN NOWAK is common."""
    index = _index(_person("e1", "Nowak", "Jan"))
    for i in range(3000):
        index.add(_person(f"other{i}", "Nowak", "Jean", (1940 + i % 30, 1 + i % 12, 1 + i % 28)))
    passenger = {"family_name": "NOWAK", "given_names": "JAN", "date_of_birth": "1975-12-03"}
    assert _score(index, **passenger) >= DEFAULT_MIN_SCORE > _score(_with_namesakes(3000), **passenger)


def test_entry_with_a_birth_year_only_compares_on_the_year() -> None:
    """An entry born "1975" hits a passenger born on any day of 1975, not one born in 1980."""
    index = _index(_person("e1", "Nowak", "Jan", (1975,)))
    assert _score(index, family_name="NOWAK", given_names="JAN", date_of_birth="1975-08-30") >= DEFAULT_MIN_SCORE
    assert _score(index, family_name="NOWAK", given_names="JAN", date_of_birth="1980-08-30") < DEFAULT_MIN_SCORE


@pytest.mark.parametrize("name", ["GARCIAMARQUEZ/JOSELUIS MR", "GARCIA MARQUEZ/JOSE LUIS", "GARCIA/JOSE LUIS MR"])
def test_pnr_name_format_is_a_hit(name: str) -> None:
    """`FAMILY/GIVEN TITLE`, joined or not, with or without the title."""
    index = _index(_person("e1", "García Márquez", "José Luis"))
    assert [h.entry_id for h in _hits(index, name=name, date_of_birth="1975-03-12")] == ["e1"]


def test_mrz_truncated_pnr_name_is_a_hit() -> None:
    """A name cut at 30 characters (MRZ) still hits: the last given name may be a prefix."""
    index = _index(_person("e1", "Rodriguez Villanueva", "Maria Concepcion"))
    truncated = "RODRIGUEZVILLANUEVA/MARIACONCEPCION"[:30]
    assert [h.entry_id for h in _hits(index, name=truncated, date_of_birth="1975-03-12")] == ["e1"]


@pytest.mark.parametrize(
    ("listed", "passenger"),
    [
        (("SHCHERBAKOV", "YURIY"), ("Щербаков", "Юрий")),
        (("AL-MASRI", "MOHAMMED"), ("المصري", "محمد")),
        (("WANG", "XIAOMING"), ("王", "小明")),
        (("HASSAN", "OMAR"), ("حسن", "عمر")),  # عمر reads MR: not a title in Arabic script
        (("AL-MASRI", "FATIMA"), ("المصري", "فاطمة")),
    ],
)  # a final ta marbuta is a vowel
def test_passenger_name_in_another_script_is_a_hit(listed: tuple[str, str], passenger: tuple[str, str]) -> None:
    """A passenger written in Cyrillic, Arabic or Han script hits the Latin entry."""
    index = _index(_person("e1", *listed))
    assert [
        h.entry_id for h in _hits(index, family_name=passenger[0], given_names=passenger[1], date_of_birth="1975-03-12")
    ] == ["e1"]


@pytest.mark.parametrize(
    ("listed", "passenger"),
    [
        (("Щербаков", "Юрий"), ("SHCHERBAKOV", "IURII")),
        (("المصري", "محمد"), ("AL MASRI", "MOHAMED")),
        (("王", "小明"), ("WANG", "XIAOMING")),
        (("萧", "杰"), ("HSIAO", "CHIEH")),  # Han read as pinyin, passport in Wade-Giles
        (("حسن", "عمر"), ("HASAN", "UMAR")),  # عمر reads MR, a name and not a title
        (("وليد", "حسين"), ("WALEED", "HUSSEIN")),  # an initial و is a consonant
        (("القذافي", "معمر"), ("GADDAFI", "MUAMMAR")),
    ],
)
def test_entry_in_original_script_only_is_a_hit(listed: tuple[str, str], passenger: tuple[str, str]) -> None:
    """An entry held only in its original script hits the passport's Latin spelling."""
    index = _index(_person("e1", *listed))
    assert [
        h.entry_id for h in _hits(index, family_name=passenger[0], given_names=passenger[1], date_of_birth="1975-03-12")
    ] == ["e1"]


def test_document_number_with_its_issuing_country_is_a_hit_whatever_the_name() -> None:
    """A listed document is a hit under another name when the issuing country agrees."""
    index = _index(_person("e1", "Nowak", "Jan", document_number="XA1234567", issuing_country="POL"))
    [hit] = _hits(index, name="Someone Else", document_number="xa 1234567", document_country="POL")
    assert "document_number" in hit.matched_fields


def test_document_number_of_another_country_is_not_a_hit() -> None:
    """The same number issued by another country is another document."""
    index = _index(_person("e1", "Nowak", "Jan", document_number="XA1234567", issuing_country="POL"))
    assert _hits(index, name="Someone Else", document_number="XA1234567", document_country="DEU") == []


def test_document_number_without_a_country_alone_is_not_a_hit() -> None:
    """A number without the passenger's issuing country is not enough on its own."""
    index = _index(_person("e1", "Nowak", "Jan", document_number="XA1234567", issuing_country="POL"))
    assert _hits(index, name="Someone Else", document_number="XA1234567") == []


@pytest.mark.parametrize("number", ["XAI280567", "XA12B0567", "XA128O567", "XA1280S67"])
def test_ocr_confusions_in_a_document_number_are_near_matches(number: str) -> None:
    """1/I, 8/B, 0/O and 5/S misread by OCR still find the document (with its country)."""
    index = _index(_person("e1", "Nowak", "Jan", document_number="XA1280567", issuing_country="POL"))
    [hit] = _hits(index, name="Someone Else", document_number=number, document_country="POL")
    assert "OCR" in " ".join(hit.explanation)


def test_namesake_born_on_another_day_is_not_a_hit() -> None:
    """The same name with a clearly different date of birth is a namesake."""
    index = _index(_person("e1", "Nowak", "Jan"))
    assert _hits(index, family_name="NOWAK", given_names="JAN", date_of_birth="1988-07-01") == []


def test_family_name_and_date_of_birth_alone_are_not_a_hit() -> None:
    """Same family name and date of birth with another given name: not a hit."""
    index = _index(_person("e1", "Schröder", "Grete"))
    assert _hits(index, family_name="SCHROEDER", given_names="WOLFGANG", date_of_birth="1975-03-12") == []


def test_scores_are_continuous() -> None:
    """Different evidence gives different scores in [0, 1] (not a handful of fixed values)."""
    index = _index(_person("e1", "Müller", "Hans Peter"))
    variants = [
        {"family_name": "MUELLER", "given_names": "HANS PETER", "date_of_birth": "1975-03-12"},
        {"family_name": "MULLER", "given_names": "HANS", "date_of_birth": "1975-03-12"},
        {"family_name": "MUELLER", "given_names": "HANZ PETER", "date_of_birth": "1975-03-12"},
        {"family_name": "MUELLER", "given_names": "HANS PETER", "date_of_birth": "1975-03-13"},
        {"family_name": "MUELLER", "given_names": "HANS PETER"},
        {"family_name": "MUELLER", "given_names": "HANS PETER", "date_of_birth": "1974-03-12"},
    ]
    scores = {_score(index, **v) for v in variants}
    assert len(scores) == len(variants)
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_explanation_says_how_without_the_passengers_spelling() -> None:
    """A hit explains which fields matched and how, without quoting the passenger's data."""
    index = _index(_person("e1", "Müller", "Hans"))
    [hit] = _hits(index, family_name="MULER", given_names="HANS", date_of_birth="1975-12-03")
    text = " ".join(hit.explanation)
    assert "date_of_birth: day and month swapped" in text
    assert "variant" in text
    assert "MULER" not in text.upper()


def test_alias_is_matched_like_the_main_name() -> None:
    """An alias of the entry is screened like its main name."""
    index = _index(_person("e1", "Smith", "John", aliases=("Ivan Kuznetsov",)))
    assert [h.entry_id for h in _hits(index, name="KUZNETSOV IVAN", date_of_birth="1975-03-12")] == ["e1"]


def test_word_order_and_columns_do_not_matter() -> None:
    """Given and family names in each other's columns still hit."""
    index = _index(_person("e1", "Schröder", "Grete"))
    assert [
        h.entry_id for h in _hits(index, family_name="Grete", given_names="SCHRODER", date_of_birth="1975-03-12")
    ] == ["e1"]


def test_removed_and_amended_entries_are_forgotten() -> None:
    """After remove() an entry no longer matches; after re-adding, only the new name does."""
    index = _index(_person("e1", "Old", "Name"), _person("e2", "Gone", "Person"))
    index.screen([])
    index.add(_person("e1", "New", "Name"))
    index.remove("e2")
    assert _hits(index, name="Name Old", date_of_birth="1975-03-12") == []
    assert _hits(index, name="Person Gone", date_of_birth="1975-03-12") == []
    assert [h.entry_id for h in _hits(index, name="Name New", date_of_birth="1975-03-12")] == ["e1"]


def test_vehicle_plate_matches_only_a_plate() -> None:
    """A plate matches an entry's plate, not a document number with the same characters."""
    index = _index(
        payload_pb2.WatchlistEntry(entry_id="v1", vehicle_plate="AB-123-CD"),
        payload_pb2.WatchlistEntry(entry_id="d1", document_number="AB123CD"),
    )
    hits = index.screen([ScreeningRecord("r1", vehicle_plate="ab 123 cd")])
    assert [(h.entry_id, h.matched_fields) for h in hits] == [("v1", ("vehicle_plate",))]


def test_identifier_key_ignores_spaces_dashes_and_case() -> None:
    """Document numbers compare without separators and case."""
    assert identifier_key("c01x-00 t47<") == "C01X00T47"


def test_record_repr_hides_personal_data() -> None:
    """A record's repr shows its id, not the name."""
    assert "Secret" not in repr(ScreeningRecord("7", name="Secret Person"))


@given(
    st.lists(
        st.one_of(
            st.builds(
                lambda y, m, d: f"{y:04d}-{m:02d}-{d:02d}", st.integers(1, 9999), st.integers(0, 99), st.integers(0, 99)
            ),
            st.builds(lambda y, m: f"{y:04d}-{m:02d}", st.integers(1, 9999), st.integers(0, 99)),
            st.builds(lambda y: f"{y:04d}", st.integers(0, 9999)),
            st.just(""),
        ),
        max_size=20,
    )
)
def test_index_reads_dates_of_birth_as_parse_date_does(texts: list[str]) -> None:
    """The index's vectorised reading of stored dates agrees with parse_date on any stored text."""
    expected = [_dob_parts(parse_date(t)) for t in texts]
    assert [tuple(row) for row in _dob_columns(texts).tolist()] == expected


def test_bulk_loading_finds_what_one_by_one_loading_finds() -> None:
    """add_many (start-up from a replica file) indexes exactly like add_keys, a repeated id included."""
    entries = [
        _person("e1", "Garcia Lopez", "Maria"),
        _person("e2", "Petrov", "Ivan", (1980, 5, 1)),
        _person("e1", "Schmidt", "Hans"),
    ]
    rows = [(e.entry_id, *ScreeningIndex.keys_of(e)) for e in entries]
    one_by_one, bulk = ScreeningIndex(), ScreeningIndex()
    for row in rows:
        one_by_one.add_keys(*row)
    bulk.add_many(rows)
    records = [
        ScreeningRecord("r1", family_name="Schmidt", given_names="Hans", date_of_birth="1975-03-12"),
        ScreeningRecord("r2", family_name="Petrov", given_names="Ivan", date_of_birth="1980-05-01"),
        ScreeningRecord("r3", family_name="Garcia Lopez", given_names="Maria", date_of_birth="1975-03-12"),
    ]
    found = [(h.record.record_id, h.entry_id, h.score) for h in bulk.screen(records)]
    assert found == [(h.record.record_id, h.entry_id, h.score) for h in one_by_one.screen(records)]
    assert [(r, e) for r, e, _ in found] == [("r1", "e1"), ("r2", "e2")]
