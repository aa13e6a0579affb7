"""The benchmark's outputs: a table on stdout, results.json, and a latency plot."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

BACKEND_LABELS = {"sqlite": "ISB SQLite", "postgresql": "ISB PostgreSQL", "nats": "NATS JetStream"}


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _client_cpu(r: Mapping[str, Any]) -> float | None:
    """Sender and subscriber CPU per message (a message's deliveries included)."""
    send, receive = r.get("sender_cpu_us_per_envelope"), r.get("subscriber_cpu_us_per_delivery")
    if send is None or receive is None:
        return None
    return float(send + receive * r.get("fanout", 1))


def table(results: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """One row per backend and scenario, then the ISB/NATS ratios."""
    header = (
        f"{'system':<16} {'scenario':<17} {'msgs/s':>8} {'deliv/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'p99.9 ms':>8} {'srv us/env':>10} {'srv us/dlv':>10} {'db us/env':>9} {'cli us/msg':>10} "
        f"{'offered/s':>9}  ok"
    )
    lines = [header, "-" * len(header)]
    for backend, scenarios in results.items():
        for name, r in scenarios.items():
            lat = r.get("latency_ms", {})
            lines.append(
                f"{BACKEND_LABELS.get(backend, backend):<16} {name:<17} {_fmt(r.get('messages_per_s')):>8} "
                f"{_fmt(r.get('deliveries_per_s')):>8} {_fmt(lat.get('p50'), 1):>7} {_fmt(lat.get('p99'), 1):>7} "
                f"{_fmt(lat.get('p99.9'), 1):>8} {_fmt(r.get('server_cpu_us_per_envelope')):>10} "
                f"{_fmt(r.get('server_cpu_us_per_delivery')):>10} {_fmt(r.get('database_cpu_us_per_envelope')):>9} "
                f"{_fmt(_client_cpu(r)):>10} {_fmt(r.get('offered_per_s')):>9}  "
                f"{'yes' if r.get('complete') else 'NO'}"
            )
    ratio_lines = []
    for key, ratio in ratios(results).items():
        ratio_lines.append(f"  {key:<48} {ratio:.3f}")
    if ratio_lines:
        lines += ["", "ISB / NATS JetStream (end-to-end messages/s; latency: ISB p99 / NATS p99):", *ratio_lines]
    goals = targets(results)
    if goals:
        lines += ["", "Issue 19 targets (this run; ratios compare systems measured minutes apart on the same machine):"]
        for goal in goals:
            met = {True: "met", False: "NOT met", None: ""}[goal["met"]]
            lines.append(
                f"  {goal['target']:<58} {_fmt(goal['value'], goal['digits']):>10}  "
                f"{goal['goal']:<9} {met:<8} {goal['note']}"
            )
    return "\n".join(lines)


def _get(results: Mapping[str, Mapping[str, Mapping[str, Any]]], backend: str, scenario: str, key: str) -> float | None:
    value = results.get(backend, {}).get(scenario, {}).get(key)
    if isinstance(value, dict):
        value = value.get("p99")
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _over(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def targets(results: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Issue 19's targets, each as the ratio or figure of this run, its goal, and whether it is met."""

    def get(backend: str, scenario: str, key: str) -> float | None:
        return _get(results, backend, scenario, key)

    out: list[dict[str, Any]] = []

    def goal(
        target: str, value: float | None, at_least: float | None, at_most: float | None, digits: int, note: str = ""
    ) -> None:
        if value is None:
            return
        met = (at_least is None or value >= at_least) and (at_most is None or value <= at_most)
        bound = f">= {at_least:g}" if at_least is not None else f"<= {at_most:g}" if at_most is not None else ""
        out.append(
            {
                "target": target,
                "value": value,
                "goal": bound,
                "met": met if bound else None,
                "digits": digits,
                "note": note,
            }
        )

    one = "throughput-1to1"
    sqlite_rate, pg_rate = get("sqlite", one, "messages_per_s"), get("postgresql", one, "messages_per_s")
    goal("SQLite 1-to-1 msgs/s / NATS JetStream", _over(sqlite_rate, get("nats", one, "messages_per_s")), 0.25, None, 3)
    nats_cpu = get("nats", one, "server_cpu_us_per_envelope")
    for backend in ("sqlite", "postgresql"):
        cpu = get(backend, one, "server_cpu_us_per_envelope")
        goal(
            f"{backend} broker CPU per envelope / NATS server CPU per msg",
            _over(cpu, nats_cpu),
            None,
            6,
            1,
            f"{_fmt(cpu)} us vs {_fmt(nats_cpu)} us",
        )
    goal("PostgreSQL 1-to-1 msgs/s / SQLite 1-to-1", _over(pg_rate, sqlite_rate), 0.8, None, 3)
    goal(
        "PostgreSQL backend CPU per envelope, 1-to-1 (us)",
        get("postgresql", one, "database_cpu_us_per_envelope"),
        None,
        150,
        0,
    )
    for backend in ("sqlite", "postgresql"):
        p99, nats_p99 = get(backend, "latency-500", "latency_ms"), get("nats", "latency-500", "latency_ms")
        goal(
            f"{backend} p99 at 500/s / NATS p99 at 500/s",
            _over(p99, nats_p99),
            None,
            4,
            1,
            f"{_fmt(p99, 1)} ms vs {_fmt(nats_p99, 1)} ms",
        )
    rate = get("sqlite", "latency-1000", "messages_per_s")
    if rate is not None:
        cores = (get("sqlite", "latency-1000", "server_cpu_us_per_envelope") or 0) * 1000 / 1e6
        busy = get("sqlite", "latency-1000", "machine_busy")
        goal(
            "SQLite at 1,000/s offered: delivered msgs/s",
            rate,
            950,
            None,
            0,
            f"p99 {_fmt(get('sqlite', 'latency-1000', 'latency_ms'), 1)} ms, broker {cores:.2f} cores, "
            f"machine {100 * (busy or 0):.0f}% busy",
        )
    for backend in ("postgresql", "sqlite"):
        serial = get(backend, one, "serial_us_per_envelope")
        if serial:
            capacity = 1e6 / (get(backend, one, "server_cpu_us_per_envelope") or math.inf)
            bound = 1e6 / serial
            limit = 20 if backend == "postgresql" else None
            goal(
                f"{backend} serialised section per envelope (us)",
                serial,
                None,
                limit,
                1,
                f"bounds all replicas to {bound:,.0f} env/s = {bound / capacity:.1f} broker cores' worth",
            )
            if backend == "postgresql":
                # N replicas of one broker core each, each at its broker-only capacity, as far as the
                # serialised section lets them (the database server's own CPU is not in this bound).
                implied = ", ".join(f"{n}: {min(n * capacity, bound):,.0f}" for n in (1, 2, 4, 8, 16))
                goal(
                    "postgresql N-replica bound (envelopes/s, N = 1 2 4 8 16 one-core replicas)",
                    min(16 * capacity, bound),
                    None,
                    None,
                    0,
                    implied,
                )
    for backend in ("sqlite", "postgresql"):
        cpu = get(backend, one, "server_cpu_us_per_envelope")
        if cpu:
            goal(f"{backend} broker-only capacity (envelopes/s per broker core)", 1e6 / cpu, None, None, 0)
    return out


def ratios(results: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, float]:
    """ISB throughput over NATS throughput per scenario, and p99 ratios for the latency runs."""
    nats = results.get("nats", {})
    out: dict[str, float] = {}
    for backend in ("sqlite", "postgresql"):
        for name, r in results.get(backend, {}).items():
            reference = nats.get(name)
            if not reference:
                continue
            if r.get("kind") == "throughput" and r.get("messages_per_s") and reference.get("messages_per_s"):
                out[f"{backend} {name} msgs/s"] = r["messages_per_s"] / reference["messages_per_s"]
            mine, theirs = r.get("latency_ms", {}).get("p99"), reference.get("latency_ms", {}).get("p99")
            if r.get("kind") == "latency" and mine and theirs:
                out[f"{backend} {name} p99 (x slower)"] = mine / theirs
    return out


def write_json(path: Path, document: Mapping[str, Any]) -> None:
    """Write the results document."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=False, default=str) + "\n")


def plot_latency(path: Path, samples: Mapping[str, Mapping[str, Sequence[float]]]) -> None:
    """Latency CDFs (log scale), one panel per offered rate, one curve per system."""
    import matplotlib  # noqa: PLC0415 - imported late so the run does not pay for it before plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    scenario_names = sorted({s for per in samples.values() for s in per})
    if not scenario_names:
        return
    fig, axes = plt.subplots(1, len(scenario_names), figsize=(6 * len(scenario_names), 4.5), squeeze=False)
    for axis, name in zip(axes[0], scenario_names, strict=True):
        for backend, per in samples.items():
            values = sorted(per.get(name, []))
            if not values:
                continue
            n = len(values)
            axis.plot(values, [(i + 1) / n * 100 for i in range(n)], label=BACKEND_LABELS.get(backend, backend))
        axis.set_xscale("log")
        axis.set_xlabel("seal to verified open (ms, log scale)")
        axis.set_ylabel("percentile")
        axis.set_title(name)
        axis.axhline(99, color="grey", linewidth=0.5, linestyle="--")
        axis.axvline(20, color="red", linewidth=0.5, linestyle=":")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(loc="lower right")
    fig.suptitle("End-to-end latency at fixed offered rates (red: 20 ms p99 target)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
