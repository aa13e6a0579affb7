"""What the console's pages show, derived from a snapshot: exchanges, filters, a message's life, refusals, volume."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from clients.console import views
from clients.console.snapshot import AuditSnapshot, load_snapshot
from tests.unit.clients.console.console_support import FWD, M1, M2, T0, Log


@pytest.fixture
def snapshot(log: Log, tmp_path: Path) -> AuditSnapshot:
    return load_snapshot(log.write(tmp_path / "a.jsonl"), log.vkey)


def test_exchanges_follow_deliveries_receipts_and_forwards(snapshot: AuditSnapshot) -> None:
    """One exchange per accepted message, with what happened to it and its forward linked both ways."""
    by_id = {x.message_id: x for x in views.exchanges(snapshot)}
    assert list(by_id) == [M1, M2, FWD]
    assert by_id[M1].delivered == {"DE-BKA"}
    assert by_id[M1].receipts == {"DE-BKA": "DELIVERED"}
    assert by_id[M1].forwarded_as == [FWD]
    assert by_id[FWD].forwarded_from == M1
    assert by_id[M2].delivered == set()
    assert by_id[M2].handling_label == "AMBER"


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        ({"agency": "NL-FIOD"}, [M2, FWD]),
        ({"agency": "FR-CUSTOMS"}, [M1, M2]),
        ({"kind": "REQUEST"}, [M2]),
        ({"handling": "TLP_GREEN"}, [M1, FWD]),
        ({"since": T0 + timedelta(minutes=5)}, [FWD]),
        ({"until": T0 + timedelta(minutes=3)}, [M1, M2]),
        ({"agency": "DE-BKA", "kind": "ALERT", "handling": "TLP_GREEN"}, [M1, FWD]),
    ],
)
def test_the_timeline_filter_admits_exactly_the_matching_exchanges(
    snapshot: AuditSnapshot,
    criteria: dict[str, object],
    expected: list[str],
) -> None:
    """Agency (sender or recipient), kind, handling code and time bounds, alone and combined."""
    chosen = views.ExchangeFilter(**criteria)  # type: ignore[arg-type]
    assert [x.message_id for x in views.exchanges(snapshot) if chosen.admits(x)] == expected


def test_the_life_of_a_message_includes_its_forward(snapshot: AuditSnapshot) -> None:
    """Sent, delivered, receipted, then forwarded by the recipient, in log order."""
    steps = views.message_life(snapshot, M1)
    assert [(s.entry.index, s.what) for s in steps] == [
        (0, "sent"),
        (1, "delivered"),
        (2, "receipted"),
        (6, "forwarded"),
    ]
    assert "FR-CUSTOMS sent a ALERT at GREEN to DE-BKA" in steps[0].summary


def test_refusals_are_grouped_by_the_rule_they_name(snapshot: AuditSnapshot) -> None:
    """A policy refusal by its rule; a refusal outside policy by status and call."""
    groups = {g.rule: len(g.refusals) for g in views.refusals_by_rule(snapshot)}
    assert groups == {"builtin:red-to-named-agencies-only": 1, "INVALID_ARGUMENT (Send)": 1}


def test_a_rule_field_wins_over_the_reason_text() -> None:
    """When a refusal entry carries a `rule` field, that is its rule."""
    assert views.refusal_rule({"rule": "eu-customs", "reason": "refused by policy (other): ..."}) == "eu-customs"
    assert views.refusal_rule({}) == "refused (call)"


def test_volume_counts_one_message_per_recipient_pair(snapshot: AuditSnapshot) -> None:
    """Pairs largest first; the matrix has one cell per sender x recipient."""
    chart = views.volume_chart(views.exchanges(snapshot))
    assert chart.pairs[0] == ("FR-CUSTOMS", "DE-BKA", 2)
    assert sorted(chart.pairs) == [("DE-BKA", "NL-FIOD", 1), ("FR-CUSTOMS", "DE-BKA", 2), ("FR-CUSTOMS", "NL-FIOD", 1)]
    assert chart.total == 4
    assert len(chart.cells) == len(chart.senders) * len(chart.recipients) == 4
    assert chart.bars[0].width == chart.plot_width


def test_handling_codes_read_as_people_write_them() -> None:
    """The protobuf enum names become TLP 2.0 labels."""
    assert [views.handling_label(c) for c in views.HANDLING_CODES] == ["CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"]
