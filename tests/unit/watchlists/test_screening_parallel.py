"""Screening split across forked worker processes finds exactly what one process finds."""

from __future__ import annotations

import multiprocessing

import pytest

from bench.screening_set import make_set
from clients.watchlist.screening import Hit, ScreeningIndex

pytestmark = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="parallel screening forks its workers"
)


def _facts(hits: list[Hit]) -> list[tuple[str, str, float, tuple[str, ...], tuple[str, ...]]]:
    return [(h.record.record_id, h.entry_id, h.score, h.matched_fields, h.explanation) for h in hits]


def test_parallel_screening_equals_serial_screening_exactly() -> None:
    data = make_set(3_000, 3_000, seed=3, per_type=20)
    index = ScreeningIndex()
    for entry in data.entries[:2_500]:
        index.add(entry)
    records = [m.record for m in data.manifest]
    serial = index.screen(records, min_score=0.05, workers=1)
    parallel = index.screen(records, min_score=0.05, workers=2)
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
