"""What the screening index does to be fast changes nothing it finds: forked workers find what one
process finds, the cached key generation makes the plain keys, the date filter on codes is compare_dates."""

from __future__ import annotations

import datetime as dt
import multiprocessing

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.screening_set import make_set
from clients.watchlist.dates import BirthDate, DateAgreement, compare_dates
from clients.watchlist.names import skeleton
from clients.watchlist.screening import (
    _EARLIEST_YEAR,
    Hit,
    ScreeningIndex,
    _date_codes,
    _dates_compatible,
    _dob_parts,
    _ordinal_table,
    _pair_keys,
)

_FORK = "fork" in multiprocessing.get_all_start_methods()


def _facts(hits: list[Hit]) -> list[tuple[str, str, float, tuple[str, ...], tuple[str, ...]]]:
    return [(h.record.record_id, h.entry_id, h.score, h.matched_fields, h.explanation) for h in hits]


@pytest.mark.skipif(not _FORK, reason="parallel screening forks its workers")
def test_parallel_screening_equals_serial_screening_exactly() -> None:
    data = make_set(3_000, 3_000, seed=3, per_type=20)
    index = ScreeningIndex()
    for entry in data.entries[:2_500]:
        index.add(entry)
    records = [m.record for m in data.manifest]
    serial = index.screen(records, min_score=0.05, workers=1)
    parallel = index.screen(records, min_score=0.05, workers=3)
    assert _facts(parallel) == _facts(serial)
    # The hits carry the caller's own record objects, not copies from a worker.
    assert all(p.record is s.record for p, s in zip(parallel, serial, strict=True))
    # A labelled set of this size raises a few hundred hits, over many records.
    assert len({h.record.record_id for h in serial}) > 200

    # Entries added after the build are found through the pending dictionary, by workers too.
    for entry in data.entries[2_500:]:
        index.add(entry)
    serial = index.screen(records, min_score=0.05, workers=1)
    assert _facts(index.screen(records, min_score=0.05, workers=2)) == _facts(serial)
    late = {e.entry_id for e in data.entries[2_500:]}
    assert any(h.entry_id in late for h in serial)


def _reference_pair_keys(parts: tuple[str, ...], *, typos: bool) -> tuple[set[str], set[str]]:
    """The blocking keys of `parts` written plainly (what `_pair_keys` computes with its caches)."""

    def neighbours(key: str) -> list[str]:
        if len(key) < 2 or key.startswith("~"):
            return [key]
        return [key, *{key[:i] + key[i + 1 :] for i in range(len(key))}]

    exact: set[str] = set()
    fuzzy: set[str] = set()
    skeletons = [skeleton(p) for p in parts[:5]]
    if len(set(skeletons)) == 1:
        exact.add(f"S{skeletons[0]}")
        if typos:
            fuzzy.update(f"S{s}" for s in neighbours(skeletons[0]))
        return exact, fuzzy

    def pair(a: str, b: str) -> str:  # a deletion that makes the two one: the key of a repeated skeleton
        return f"S{a}" if a == b else f"P{min(a, b)}|{max(a, b)}"

    for i, a in enumerate(skeletons):
        for b in skeletons[i + 1 :]:
            if a != b:
                exact.add(pair(a, b))
                if typos:
                    fuzzy.update(pair(x, b) for x in neighbours(a))
                    fuzzy.update(pair(a, y) for y in neighbours(b))
    return exact, fuzzy


@settings(deadline=None)
@given(st.lists(st.text("ABCDEHIKLMNOSTUVWYZ", min_size=1, max_size=9), min_size=1, max_size=7), st.booleans())
def test_pair_keys_are_the_plain_skeleton_pairs_and_their_deletions(parts: list[str], typos: bool) -> None:
    exact: set[str] = set()
    fuzzy: set[str] = set()
    for _ in range(2):  # the second time from the neighbourhood cache
        _pair_keys(tuple(parts), exact, fuzzy, typos=typos)
        assert (exact, fuzzy) == _reference_pair_keys(tuple(parts), typos=typos)


_DATES = st.one_of(
    st.none(),
    st.builds(BirthDate, st.integers(1850, 2026)),
    st.builds(BirthDate, st.integers(1850, 2026), st.integers(1, 12)),
    st.dates(dt.date(1850, 1, 1), dt.date(2026, 12, 31)).map(lambda d: BirthDate(d.year, d.month, d.day)),
)


_TABLE = _ordinal_table(2027)


@settings(deadline=None)  # numpy per example: slow on a loaded machine, not wrong
@given(st.lists(st.tuples(_DATES, _DATES), min_size=1, max_size=30))
def test_date_filter_on_codes_is_compare_dates_not_different(pairs: list[tuple[BirthDate | None, ...]]) -> None:
    """The candidate stage's vectorised date filter (date codes, ordinals from the index's table)
    keeps exactly the pairs that compare_dates does not call DIFFERENT."""
    columns = []
    for side in (0, 1):
        parts = np.asarray([_dob_parts(p[side]) for p in pairs], dtype=np.int64).reshape(-1, 4)
        code = _date_codes(parts)
        ordinal = _TABLE[np.maximum(code - np.int32(_EARLIEST_YEAR << 9), 0)]
        assert ordinal.tolist() == parts[:, 3].tolist()
        columns += [code >> 9, code >> 5 & 15, code & 31, ordinal]
    kept = _dates_compatible(*columns).tolist()
    assert kept == [compare_dates(a, b) is not DateAgreement.DIFFERENT for a, b in pairs]
