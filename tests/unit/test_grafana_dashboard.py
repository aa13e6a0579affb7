"""The Grafana dashboard queries only metrics the broker exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from broker.metrics import REGISTRY

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "isb-dashboard.json"
_SUFFIXES = ("_total", "_bucket", "_count", "_sum")


def test_every_panel_queries_an_exported_metric() -> None:
    """Each isb_* name in a panel's expression is a metric of broker.metrics (counters with _total)."""
    exported = {m.name for m in REGISTRY.collect()}
    exported |= {"isb_queue_depth"}  # collected at scrape time, registered once a broker serves metrics
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert {p["title"] for p in panels} >= {
        "Queue depth per agency",
        "Delivery latency",
        "Audit log size",
        "Checkpoint age",
        "Certificate expiry",
        "Envelopes",
    }
    for panel in panels:
        for target in panel["targets"]:
            for name in re.findall(r"\bisb_\w+", target["expr"]):
                base = next((name[: -len(s)] for s in _SUFFIXES if name.endswith(s)), name)
                assert base in exported or name in exported, (panel["title"], name)
