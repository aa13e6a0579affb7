"""What each page of the console shows, derived from an `AuditSnapshot` (no web framework here).

Every figure on a page is computed from the entries of the snapshot and nothing else: the console
adds no information of its own, so what a page shows is what the audit log holds.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from broker.audit.events import AuditEvent
from clients.console.snapshot import AuditSnapshot, LoggedEntry

__all__ = [
    "Exchange",
    "ExchangeFilter",
    "LifeStep",
    "Refusal",
    "RefusalGroup",
    "VolumeChart",
    "exchanges",
    "handling_label",
    "message_life",
    "refusals_by_rule",
    "volume_chart",
]

ACCEPTED, DELIVERED, RECEIPT, EXPIRED, RECALLED, REJECTED = (
    "envelope.accepted",
    "delivery.delivered",
    "receipt.received",
    "delivery.expired",
    "envelope.recalled",
    "request.rejected",
)
FORWARD_CONSENTED = "forward.consented"

KINDS = ("ALERT", "REQUEST", "REPLY", "WATCHLIST_UPDATE", "HIT_REPORT", "RECALL")
HANDLING_CODES = ("TLP_CLEAR", "TLP_GREEN", "TLP_AMBER", "TLP_AMBER_STRICT", "TLP_RED")
"""As the entries store them (the protobuf enum names)."""


def handling_label(code: str) -> str:
    """A handling code as people write it: `TLP_AMBER_STRICT` is shown as `AMBER+STRICT`."""
    return code.removeprefix("TLP_").replace("_", "+")


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _names(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list | tuple) else []


@dataclass
class Exchange:
    """One message the broker accepted, and what the log says happened to it since."""

    message_id: str
    index: int
    time: datetime
    sender: str
    recipients: list[str]
    kind: str
    handling: str
    rule: str
    forwarded_from: str | None = None
    recalls: str | None = None
    """For a RECALL: the message it withdraws."""
    delivered: set[str] = field(default_factory=set)
    receipts: dict[str, str] = field(default_factory=dict)
    expired: set[str] = field(default_factory=set)
    recalled: bool = False
    forwarded_as: list[str] = field(default_factory=list)
    problems: list[int] = field(default_factory=list)
    """Indices of this message's entries that do not verify."""

    @property
    def handling_label(self) -> str:
        """The handling code as people write it."""
        return handling_label(self.handling)

    @property
    def agencies(self) -> set[str]:
        """Sender and recipients."""
        return {self.sender, *self.recipients}


@dataclass(frozen=True)
class ExchangeFilter:
    """The timeline's filter: every field empty means everything."""

    agency: str = ""
    kind: str = ""
    handling: str = ""
    since: datetime | None = None
    until: datetime | None = None

    def admits(self, exchange: Exchange) -> bool:
        """Whether the exchange passes every set criterion."""
        return (
            (not self.agency or self.agency in exchange.agencies)
            and (not self.kind or exchange.kind == self.kind)
            and (not self.handling or exchange.handling == self.handling)
            and (self.since is None or exchange.time >= self.since)
            and (self.until is None or exchange.time <= self.until)
        )


def exchanges(snapshot: AuditSnapshot) -> list[Exchange]:
    """Every accepted message, in log order, with its deliveries, receipts, recall and forwards."""
    by_id: dict[str, Exchange] = {}
    for entry in snapshot.entries:
        event = entry.event
        if event is None or event.message_id is None:
            continue
        fields = event.fields
        if event.event == ACCEPTED and event.message_id not in by_id:
            references = _text(fields.get("references")) or None
            kind = _text(fields.get("kind"))
            exchange = Exchange(
                message_id=event.message_id,
                index=entry.index,
                time=event.time,
                sender=event.agency or "",
                recipients=_names(fields.get("recipients")),
                kind=kind,
                handling=_text(fields.get("tlp")),
                rule=_text(fields.get("rule")),
                forwarded_from=references if kind != "RECALL" else None,
                recalls=references if kind == "RECALL" else None,
            )
            by_id[event.message_id] = exchange
            original = by_id.get(references or "")
            if original is not None and kind != "RECALL":
                original.forwarded_as.append(event.message_id)
        exchange_of = by_id.get(event.message_id)
        if exchange_of is None:
            continue
        if entry.problem is not None:
            exchange_of.problems.append(entry.index)
        recipient = _text(fields.get("recipient")) or event.agency or ""
        if event.event == DELIVERED:
            exchange_of.delivered.add(recipient)
        elif event.event == RECEIPT:
            exchange_of.receipts[recipient] = _text(fields.get("status"))
        elif event.event == EXPIRED:
            exchange_of.expired.add(recipient)
        elif event.event == RECALLED:
            exchange_of.recalled = True
    return list(by_id.values())


@dataclass(frozen=True)
class LifeStep:
    """One entry in the life of a message, told in words."""

    entry: LoggedEntry
    what: str
    """"sent", "delivered", "receipted", "forwarded", "recalled", "refused", ..."""
    summary: str


def _describe(entry: LoggedEntry, event: AuditEvent, message_id: str) -> LifeStep:
    fields = event.fields
    recipient = _text(fields.get("recipient")) or event.agency or ""
    recipients = ", ".join(_names(fields.get("recipients")))
    name = event.event
    what, summary = name, name
    if name == ACCEPTED and event.message_id == message_id:
        what = "sent"
        summary = (
            f"{event.agency} sent a {fields.get('kind')} at {handling_label(_text(fields.get('tlp')))}"
            f" to {recipients} (policy rule {fields.get('rule')})"
        )
    elif name == ACCEPTED:
        what = "recalled" if fields.get("kind") == "RECALL" else "forwarded"
        summary = f"{event.agency} sent {event.message_id} ({fields.get('kind')}) referring to it, to {recipients}"
    elif name == DELIVERED:
        what, summary = "delivered", f"delivered to {recipient} (attempt {fields.get('attempt')})"
    elif name == RECEIPT:
        what, summary = "receipted", f"{recipient} signed a receipt: {fields.get('status')}"
    elif name == EXPIRED:
        what, summary = "expired", f"expired before {recipient} acknowledged it"
    elif name == RECALLED:
        what = "recalled"
        summary = (
            f"recalled by {event.agency} with {fields.get('recall_message_id')};"
            f" {fields.get('undelivered_dropped')} undelivered copies dropped"
        )
    elif name == FORWARD_CONSENTED:
        what, summary = "consented", f"{event.agency} let {fields.get('forwarder')} forward it to {recipients}"
    elif name == REJECTED:
        what, summary = "refused", f"{fields.get('rpc')} refused: {fields.get('reason')}"
    elif name == "audit.query":
        what, summary = "queried", f"auditor query by {event.actor}"
    return LifeStep(entry, what, summary)


def message_life(snapshot: AuditSnapshot, message_id: str) -> list[LifeStep]:
    """Every entry about `message_id`, and the messages that forward or recall it, in log order."""
    steps = []
    for entry in snapshot.entries:
        event = entry.event
        if event is None:
            continue
        about = event.message_id == message_id
        refers = event.event == ACCEPTED and event.fields.get("references") == message_id
        if about or refers:
            steps.append(_describe(entry, event, message_id))
    return steps


@dataclass(frozen=True)
class Refusal:
    """One refused request."""

    entry: LoggedEntry
    rule: str
    rpc: str
    status: str
    reason: str


@dataclass
class RefusalGroup:
    """The refusals of one rule (a policy rule, a built-in rule, or a status for checks outside policy)."""

    rule: str
    refusals: list[Refusal] = field(default_factory=list)


_POLICY_RULE = re.compile(r"refused by policy \(([^)]*)\)")


def refusal_rule(fields: Mapping[str, object]) -> str:
    """The rule a refusal names: a `rule` field, the policy rule in its reason, or its status and RPC."""
    rule = _text(fields.get("rule"))
    if rule:
        return rule
    match = _POLICY_RULE.search(_text(fields.get("reason")))
    if match:
        return match.group(1)
    status = _text(fields.get("status")) or "refused"
    return f"{status} ({_text(fields.get('rpc')) or 'call'})"


def refusals_by_rule(snapshot: AuditSnapshot) -> list[RefusalGroup]:
    """Every `request.rejected` entry, grouped by rule, the largest group first."""
    groups: dict[str, RefusalGroup] = {}
    for entry in snapshot.entries:
        event = entry.event
        if event is None or event.event != REJECTED:
            continue
        fields = event.fields
        rule = refusal_rule(fields)
        groups.setdefault(rule, RefusalGroup(rule)).refusals.append(
            Refusal(entry, rule, _text(fields.get("rpc")), _text(fields.get("status")), _text(fields.get("reason")))
        )
    return sorted(groups.values(), key=lambda g: (-len(g.refusals), g.rule))


@dataclass(frozen=True)
class Bar:
    """One bar of a horizontal bar chart, laid out in SVG user units."""

    label: str
    count: int
    y: int
    width: int


@dataclass(frozen=True)
class Cell:
    """One cell of the sender x recipient matrix."""

    x: int
    y: int
    count: int
    opacity: str


@dataclass
class VolumeChart:
    """Messages per (sender, recipient) pair, as bars and as a matrix; laid out for inline SVG."""

    pairs: list[tuple[str, str, int]]
    bars: list[Bar]
    senders: list[str]
    recipients: list[str]
    cells: list[Cell]
    total: int
    bar_height: int = 26
    label_width: int = 260
    plot_width: int = 420
    cell: int = 64

    @property
    def bars_height(self) -> int:
        """Height of the bar chart."""
        return max(1, len(self.bars)) * self.bar_height + 10

    @property
    def matrix_width(self) -> int:
        """Width of the matrix."""
        return 140 + len(self.recipients) * self.cell + 90  # room for the last slanted label

    @property
    def matrix_height(self) -> int:
        """Height of the matrix."""
        return 90 + len(self.senders) * self.cell


def volume_chart(items: list[Exchange]) -> VolumeChart:
    """Count messages per agency pair (one per recipient after group expansion)."""
    counts: Counter[tuple[str, str]] = Counter()
    for exchange in items:
        for recipient in exchange.recipients:
            counts[(exchange.sender, recipient)] += 1
    pairs = sorted(((s, r, n) for (s, r), n in counts.items()), key=lambda p: (-p[2], p[0], p[1]))
    top = max((n for _, _, n in pairs), default=1)
    chart = VolumeChart(pairs=pairs, bars=[], senders=[], recipients=[], cells=[], total=sum(counts.values()))
    chart.bars = [
        Bar(f"{s} \u2192 {r}", n, i * chart.bar_height, max(2, round(chart.plot_width * n / top)))
        for i, (s, r, n) in enumerate(pairs)
    ]
    chart.senders = sorted({s for s, _ in counts})
    chart.recipients = sorted({r for _, r in counts})
    by_pair: defaultdict[tuple[str, str], int] = defaultdict(int, counts)
    chart.cells = [
        Cell(
            140 + c * chart.cell,
            90 + r * chart.cell,
            by_pair[(s, t)],
            f"{0.12 + 0.88 * by_pair[(s, t)] / top:.2f}" if by_pair[(s, t)] else "0",
        )
        for r, s in enumerate(chart.senders)
        for c, t in enumerate(chart.recipients)
    ]
    return chart
