"""Screening: name normalisation and matching against in-memory indexes."""

from __future__ import annotations

from broker.api.v1 import payload_pb2
from clients.watchlist.screening import ScreeningIndex, ScreeningRecord, identifier_key, name_key


def _index(*entries: payload_pb2.WatchlistEntry) -> ScreeningIndex:
    index = ScreeningIndex()
    for e in entries:
        index.add(e)
    return index


def _person(entry_id: str, family: str, given: str, dob: tuple[int, int, int] | None = None, *,
            document_number: str = "", aliases: tuple[str, ...] = ()) -> payload_pb2.WatchlistEntry:
    entry = payload_pb2.WatchlistEntry(entry_id=entry_id, family_name=family, given_names=given,
                                       document_number=document_number, aliases=aliases)
    if dob:
        entry.date_of_birth.CopyFrom(payload_pb2.Date(year=dob[0], month=dob[1], day=dob[2]))
    return entry


def test_umlaut_transliterations_share_one_key() -> None:
    """MÜLLER, MUELLER and MULLER normalise to the same name key."""
    assert name_key("Müller") == name_key("MUELLER") == name_key("muller") == "MULLER"


def test_sharp_s_is_transliterated_as_ss() -> None:
    """ß reads SS, as ICAO 9303 writes it."""
    assert name_key("Groß") == name_key("GROSS")


def test_accents_and_case_do_not_matter() -> None:
    """José García Márquez and JOSE GARCIA MARQUEZ have one key."""
    assert name_key("José García Márquez") == name_key("JOSE GARCIA MARQUEZ")


def test_word_order_and_punctuation_do_not_matter() -> None:
    """O'Brien-Smith, Mary equals MARY SMITH O BRIEN."""
    assert name_key("O'Brien-Smith, Mary") == name_key("MARY SMITH O BRIEN")


def test_letters_without_decomposition_are_transliterated() -> None:
    """Ø, Ł and Þ become OE (folded to O), L and TH."""
    assert name_key("Søren Østergaard") == name_key("SOEREN OESTERGAARD")
    assert name_key("Łukasz") == "LUKASZ"
    assert name_key("Þór") == "THOR"


def test_identifier_key_ignores_spaces_dashes_and_case() -> None:
    """Document numbers compare without separators and case."""
    assert identifier_key("c01x-00 t47<") == "C01X00T47"


def test_name_and_date_of_birth_variant_is_a_strong_hit() -> None:
    """A transliterated, reordered name with the same date of birth scores high with both fields named."""
    index = _index(_person("e1", "Müller", "Hans", (1970, 3, 4)))
    [hit] = index.screen([ScreeningRecord("r1", name="MUELLER HANS", date_of_birth="1970-03-04")])
    assert hit.entry_id == "e1"
    assert hit.score >= 85
    assert set(hit.matched_fields) == {"name", "name_variant", "date_of_birth"}


def test_contradicting_date_of_birth_drops_a_name_match() -> None:
    """Same name, another date of birth: below the threshold."""
    index = _index(_person("e1", "Müller", "Hans", (1970, 3, 4)))
    assert index.screen([ScreeningRecord("r1", name="Hans Müller", date_of_birth="1981-01-01")]) == []


def test_document_number_matches_exactly_whatever_the_name() -> None:
    """A document number on the list is a hit even under another name."""
    index = _index(_person("e1", "Nowak", "Jan", document_number="X1234567"))
    [hit] = index.screen([ScreeningRecord("r1", name="Someone Else", document_number="x 1234567")])
    assert hit.matched_fields == ("document_number",)


def test_similar_document_number_is_not_a_hit() -> None:
    """Document numbers match exactly, not approximately."""
    index = _index(_person("e1", "Nowak", "Jan", document_number="X1234567"))
    assert index.screen([ScreeningRecord("r1", name="Someone Else", document_number="X1234568")]) == []


def test_family_name_and_date_of_birth_find_a_changed_given_name() -> None:
    """Family name plus date of birth is a candidate even when the given names differ."""
    index = _index(_person("e1", "Schröder", "Grete", (1988, 12, 24)))
    [hit] = index.screen([ScreeningRecord("r1", family_name="SCHROEDER", given_names="Margarete",
                                          date_of_birth="1988-12-24")])
    assert set(hit.matched_fields) == {"family_name", "date_of_birth"}


def test_alias_matches() -> None:
    """An alias of the entry is matched like its main name."""
    index = _index(_person("e1", "Smith", "John", aliases=("Ivan Kuznetsov",)))
    [hit] = index.screen([ScreeningRecord("r1", name="KUZNETSOV IVAN")])
    assert hit.entry_id == "e1"


def test_removed_and_amended_entries_are_forgotten() -> None:
    """After remove() an entry no longer matches; after re-adding, only the new name does."""
    index = _index(_person("e1", "Old", "Name"), _person("e2", "Gone", "Person"))
    index.add(_person("e1", "New", "Name"))
    index.remove("e2")
    assert index.screen([ScreeningRecord("a", name="Name Old"), ScreeningRecord("b", name="Person Gone")]) == []
    assert [h.entry_id for h in index.screen([ScreeningRecord("c", name="Name New")])] == ["e1"]
    assert len(index) == 1


def test_vehicle_plate_matches_only_a_plate() -> None:
    """A plate matches an entry's plate, not a document number with the same characters."""
    index = _index(payload_pb2.WatchlistEntry(entry_id="v1", vehicle_plate="AB-123-CD"),
                   payload_pb2.WatchlistEntry(entry_id="d1", document_number="AB123CD"))
    hits = index.screen([ScreeningRecord("r1", vehicle_plate="ab 123 cd")])
    assert [(h.entry_id, h.matched_fields) for h in hits] == [("v1", ("vehicle_plate",))]


def test_record_from_mapping_ignores_unknown_keys() -> None:
    """CSV columns the screening does not use are ignored."""
    record = ScreeningRecord.from_mapping({"record_id": "7", "name": "A B", "seat": "12C"})
    assert (record.record_id, record.name) == ("7", "A B")


def test_record_repr_hides_personal_data() -> None:
    """A record's repr shows its id, not the name."""
    assert "Secret" not in repr(ScreeningRecord("7", name="Secret Person"))
