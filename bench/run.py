"""The ISB benchmark: the full secure pipeline against NATS JetStream, in one run.

    .venv/bin/python -m bench.run            # default: about 5-10 minutes
    .venv/bin/python -m bench.run --quick    # under 2 minutes
    .venv/bin/python -m bench.run --profile  # also sample the broker with py-spy (pip install py-spy)

For each system (ISB on SQLite, ISB on PostgreSQL, NATS JetStream) it runs four scenarios, each
with fresh agency processes (multiprocessing, spawn) against a server in its own process:

- throughput-1to1, throughput-1to10: senders seal and stream as fast as they can; one subscriber
  process per five recipients verifies, opens and acknowledges (signed receipts, in batches);
- latency-500, latency-1000: the same, offered open-loop at a fixed rate; latency is the time from
  just before sealing (stamped into the plaintext) to the end of verification and decryption.

The broker is `isb serve --config <tmp>/broker.toml` on 127.0.0.1, on a temporary SQLite file
(WAL, synchronous=FULL) and then on a fresh PostgreSQL database `isb_bench_<pid>` (dropped after). Its
CPU time per envelope comes from /proc/<pid>/stat over the measured window. Results go to
bench/results/: results.json, latency.png, and with --profile the broker's sampled profiles.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bench import isb_agents, nats_agents
from bench.deployment import Deployment, build_deployment
from bench.profiling import Sampler, summarise
from bench.report import plot_latency, ratios, table, targets, write_json
from bench.servers import (
    BrokerProcess,
    PostgresCpu,
    free_port,
    machine_cpu,
    nats_available,
    postgres_available,
    postgres_database,
    process_cpu_seconds,
    py_spy,
    write_config,
)
from bench.workload import AgentSpec, Scenario, percentile
from broker.logs import configure_logging
from clients import AgencyClient

RESULTS = Path(__file__).resolve().parent / "results"
BACKENDS = ("sqlite", "postgresql", "nats")
SENDERS = 2
RECIPIENTS = 10
# One database per run: two runs on the shared server (other sessions benchmark too) must not drop
# each other's database, nor count each other's backends as `db us/env`.
BENCH_DATABASE = f"isb_bench_{os.getpid()}"


def scenarios(quick: bool, seconds: float | None = None) -> list[Scenario]:
    """The measured runs, sized so the quick mode stays under two minutes in all; latency runs
    last `seconds` each (default 6, quick 3)."""
    seconds = seconds or (3.0 if quick else 6.0)
    one = 3000 if quick else 6000
    limit = 40 if quick else 90
    plan = [
        Scenario(
            "throughput-1to1",
            "throughput",
            fanout=1,
            messages=one,
            rate=None,
            senders=SENDERS,
            subscribers=1,
            time_limit=limit,
        ),
        # Two subscriber processes sharing the recipient's queue (DESIGN.md section 6).
        Scenario(
            "throughput-1to1-x2",
            "throughput",
            fanout=1,
            messages=one,
            rate=None,
            senders=SENDERS,
            subscribers=2,
            time_limit=limit,
        ),
        Scenario(
            "throughput-1to10",
            "throughput",
            fanout=10,
            messages=300 if quick else 600,
            rate=None,
            senders=SENDERS,
            subscribers=2,
            time_limit=limit,
        ),
        # A light load (100/s), so that latency is measured once below the broker's current capacity too.
        *(
            Scenario(
                f"latency-{rate}",
                "latency",
                fanout=1,
                messages=int(rate * seconds),
                rate=float(rate),
                senders=SENDERS,
                subscribers=1,
                time_limit=seconds + 20,
            )
            for rate in (100, 500, 1000)
        ),
    ]
    # The quick mode leaves out the shared-queue variant to stay under two minutes.
    return [s for s in plan if not (quick and s.name == "throughput-1to1-x2")]


@dataclass
class Target:
    """What a scenario runs against: agent entry points, where to connect, whose CPU to read."""

    backend: str
    run_sender: Callable[..., None]
    run_subscriber: Callable[..., None]
    target: str
    cpu: Callable[[], float]
    db_cpu: Callable[[], float] | None = None  # a database server beside the broker (PostgreSQL)
    serial: Callable[[], float] | None = None  # seconds spent in the audit sequencer's serialised section
    prepare: Callable[[Scenario, tuple[str, ...]], None] = lambda _s, _r: None


@dataclass(frozen=True)
class Reading:
    """The counters read at the start and end of a measured window."""

    server: float
    database: float
    serial: float
    machine_busy: float
    machine_total: float

    @classmethod
    def take(cls, target: Target) -> Reading:
        busy, total = machine_cpu()
        return cls(
            target.cpu(),
            target.db_cpu() if target.db_cpu else math.nan,
            target.serial() if target.serial else math.nan,
            busy,
            total,
        )


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_scenario(
    target: Target,
    deployment: Deployment,
    scenario: Scenario,
    on_start: Callable[[list[int]], None] = lambda _pids: None,
) -> tuple[dict[str, Any], list[float]]:
    """Run one scenario with fresh agent processes; return its metrics and its latency samples (ms)."""
    ctx = multiprocessing.get_context("spawn")
    out: Any = ctx.Queue()
    go, stop = ctx.Event(), ctx.Event()
    expected: Any = ctx.Value("q", scenario.messages)
    delivered: Any = ctx.Value("q", 0)
    recipients = deployment.recipients[: scenario.fanout]
    target.prepare(scenario, recipients)
    subject = f"bench.{scenario.name}"
    common = AgentSpec(
        backend=target.backend,
        scenario=scenario,
        index=0,
        agencies=(),
        target=target.target,
        cert_dir=str(deployment.cert_dir),
        subject=subject,
        stream=nats_agents.STREAM,
    )
    processes = []
    for i in range(scenario.subscribers):
        # More subscriber processes than recipients: several consumers share each agency's queue.
        mine = (
            tuple(recipients[i :: scenario.subscribers])
            if scenario.subscribers <= len(recipients)
            else (recipients[i % len(recipients)],)
        )
        spec = replace(common, index=i, agencies=mine)
        processes.append(
            ctx.Process(
                target=target.run_subscriber,
                name=f"bench-sub-{i}",
                daemon=True,
                args=(spec, go, stop, expected, delivered, out),
            )
        )
    for i, count in enumerate(_split(scenario.messages, scenario.senders)):
        spec = replace(common, index=i, agencies=(deployment.senders[i],), recipients=recipients, messages=count)
        processes.append(
            ctx.Process(target=target.run_sender, args=(spec, go, stop, out), name=f"bench-send-{i}", daemon=True)
        )
    for process in processes:
        process.start()
    senders: list[dict[str, Any]] = []
    subscribers: list[dict[str, Any]] = []
    fatal: list[str] = []
    try:
        ready = 0
        setup_deadline = time.monotonic() + 90
        while ready < len(processes) and time.monotonic() < setup_deadline and not fatal:
            try:
                kind, payload = out.get(timeout=1)
            except Exception:  # queue.Empty: keep waiting until the set-up deadline
                continue
            if kind == "ready":
                ready += 1
            elif kind == "result":
                fatal.append(str(payload.get("fatal", payload)))
        if ready < len(processes):
            raise RuntimeError(f"{scenario.name}: only {ready}/{len(processes)} agents got ready: {fatal}")
        time.sleep(0.5)  # let subscriptions settle so the clock does not include a backlog load
        on_start([p.pid for p in processes if p.pid is not None])
        load = os.getloadavg()[0]
        first = Reading.take(target)
        t_go = time.time_ns()
        go.set()
        deadline = time.monotonic() + scenario.time_limit + 40
        last = first
        while len(senders) + len(subscribers) < len(processes):
            if time.monotonic() > deadline:
                stop.set()
                if time.monotonic() > deadline + 20:
                    break
            try:
                kind, payload = out.get(timeout=1)
            except Exception:  # queue.Empty: poll the deadline again
                continue
            if kind != "result":
                continue
            if payload.get("fatal"):
                fatal.append(payload["fatal"])
            if payload.get("role") == "sender":
                senders.append(payload)
                if len(senders) == scenario.senders:
                    # Subscribers stop once everything the broker accepted has arrived.
                    expected.value = sum(s.get("ok", 0) for s in senders)
            else:
                subscribers.append(payload)
                last = Reading.take(target)
    finally:
        stop.set()
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.terminate()
                process.join(5)
    result, latencies = _metrics(scenario, senders, subscribers, fatal, t_go, first, last)
    result["load_average_1min"] = load
    return result, latencies


def _metrics(
    scenario: Scenario,
    senders: list[dict[str, Any]],
    subscribers: list[dict[str, Any]],
    fatal: list[str],
    t_go: int,
    first: Reading,
    last: Reading,
) -> tuple[dict[str, Any], list[float]]:
    server_cpu, db_cpu, serial = last.server - first.server, last.database - first.database, last.serial - first.serial
    machine_total = last.machine_total - first.machine_total
    ok = sum(s.get("ok", 0) for s in senders)
    sent = sum(s.get("sent", 0) for s in senders)
    agencies = [a for s in subscribers for a in s.get("agencies", [])]
    delivered = sum(a["unique"] for a in agencies)
    end_ns = max((a["last_ack_ns"] for a in agencies if a["last_ack_ns"]), default=0)
    elapsed = (end_ns - t_go) / 1e9 if end_ns else float("nan")
    latencies = sorted(v / 1000 for s in subscribers for v in s.get("latencies_us", []))
    # Each message's seal time (ms after go) and latency (ms), in seal order: periodic spikes show here.
    timeline = sorted(
        (round((sealed - t_go) / 1e6, 3), latency / 1000)
        for s in subscribers
        for sealed, latency in zip(s.get("sealed_ns", []), s.get("latencies_us", []), strict=True)
    )
    errors: dict[str, int] = {}
    for s in senders:
        for key, n in s.get("errors", {}).items():
            errors[key] = errors.get(key, 0) + n
    for a in agencies:
        for key, n in a.get("ack_errors", {}).items():
            errors[f"ack: {key}"] = errors.get(f"ack: {key}", 0) + n
    send_elapsed = max((s.get("elapsed_s", 0.0) for s in senders), default=0.0)
    # Consumers sharing a queue may each get a copy of a redelivered message (at-least-once): >= not ==.
    complete = not fatal and sent == scenario.messages and ok == sent and delivered >= ok * scenario.fanout
    result: dict[str, Any] = {
        "kind": scenario.kind,
        "fanout": scenario.fanout,
        "offered_rate": scenario.rate,
        "messages_planned": scenario.messages,
        "sent": sent,
        "accepted": ok,
        "deliveries": delivered,
        "duplicates": sum(a["duplicates"] for a in agencies),
        "complete": complete,
        "elapsed_s": elapsed,
        "messages_per_s": ok / elapsed if elapsed > 0 else None,
        "deliveries_per_s": delivered / elapsed if elapsed > 0 else None,
        "offered_per_s": sent / send_elapsed if send_elapsed > 0 else None,
        "sender_max_lag_s": max((s.get("max_lag_s", 0.0) for s in senders), default=0.0),
        "latency_ms": {
            "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99),
            "p99.9": percentile(latencies, 99.9),
            "max": latencies[-1] if latencies else None,
            "samples": len(latencies),
        },
        "server_cpu_s": server_cpu,
        "server_cpu_us_per_envelope": server_cpu * 1e6 / ok if ok else None,
        "server_cpu_us_per_delivery": server_cpu * 1e6 / delivered if delivered else None,
        "database_cpu_us_per_envelope": db_cpu * 1e6 / ok if ok and not math.isnan(db_cpu) else None,
        "serial_us_per_envelope": serial * 1e6 / ok if ok and not math.isnan(serial) else None,
        "machine_busy": (last.machine_busy - first.machine_busy) / machine_total if machine_total > 0 else None,
        "sender_cpu_us_per_envelope": sum(s.get("cpu_s", 0.0) for s in senders) * 1e6 / ok if ok else None,
        "subscriber_cpu_us_per_delivery": sum(s.get("cpu_s", 0.0) for s in subscribers) * 1e6 / delivered
        if delivered
        else None,
        "ack_calls": sum(a.get("ack_calls", 0) for a in agencies),
        "errors": errors,
        "fatal": fatal,
    }
    if scenario.kind == "latency":
        result["timeline_ms"] = timeline
    return result, latencies


# -- systems -----------------------------------------------------------------------------------
@contextmanager
def isb_broker(
    deployment: Deployment, work: Path, backend: str, database_url: str, log_level: str
) -> Iterator[BrokerProcess]:
    """A broker process on `database_url`, recipients' keys published, stopped afterwards."""
    port, metrics_port = free_port(), free_port()
    config = write_config(
        work / f"broker-{backend}.toml",
        {
            "listen": f"127.0.0.1:{port}",
            "cert_dir": str(deployment.cert_dir),
            "database_url": database_url,
            "policy_file": str(deployment.policy_file),
            "log_level": log_level,
            "metrics_listen": f"127.0.0.1:{metrics_port}",
        },
    )
    some = deployment.recipients[0]
    broker = BrokerProcess(
        config,
        port,
        work / f"broker-{backend}.log",
        ca=deployment.cert_dir / "ca.crt",
        cert=deployment.cert_dir / f"{some}.crt",
        key=deployment.cert_dir / f"{some}.key",
        metrics_port=metrics_port,
    )
    broker.start()
    try:
        for agency in deployment.recipients:
            with AgencyClient.from_dir(
                broker.target, deployment.cert_dir, agency, keystore=deployment.keystore(agency)
            ) as client:
                client.publish_key()
        yield broker
    finally:
        broker.stop()


def _nats_server_pid() -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "nats-server":
                    return int(entry.name)
            except OSError:
                continue
    return None


def _say(message: str) -> None:
    print(message, flush=True)


def run_isb(
    backend: str, database_url: str, deployment: Deployment, work: Path, plan: list[Scenario], args: argparse.Namespace
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Every scenario against one broker on `database_url`."""
    results: dict[str, Any] = {}
    samples: dict[str, list[float]] = {}
    with isb_broker(deployment, work, backend, database_url, args.log_level) as broker:
        target = Target(
            backend,
            isb_agents.run_sender,
            isb_agents.run_subscriber,
            broker.target,
            broker.cpu_seconds,
            PostgresCpu(BENCH_DATABASE) if backend == "postgresql" else None,
            serial=lambda: broker.metric("isb_sequencer_held_seconds_total"),
        )
        for scenario in plan:
            sampler: list[Sampler] = []
            spy = py_spy() if scenario.name == args.profile else None

            def start_profile(pids: list[int], spy: str | None = spy, sampler: list[Sampler] = sampler) -> None:
                if spy is not None:
                    # Agents start subscribers first: pids[0] is the first subscriber.
                    sampler.append(
                        Sampler(spy, pids[0], RESULTS / f"profile-{backend}-subscriber-gil.collapsed", gil=True)
                    )
                    sampler.append(Sampler(spy, broker.pid, RESULTS / f"profile-{backend}-wall.collapsed"))
                    sampler.append(Sampler(spy, broker.pid, RESULTS / f"profile-{backend}-gil.collapsed", gil=True))

            _say(f"  {backend}: {scenario.name} ...")
            result, latencies = run_scenario(target, deployment, scenario, on_start=start_profile)
            for s in sampler:
                problems = s.stop()
                if s.output.exists():
                    text = s.output.with_suffix(".txt")
                    text.write_text(summarise(s.output))
                    result.setdefault("profiles", []).append(str(text))
                else:
                    result.setdefault("profile_errors", []).append(problems)
            results[scenario.name] = result
            samples[scenario.name] = latencies
            _say(f"    {_line(result)}")
    return results, samples


def run_nats(deployment: Deployment, plan: list[Scenario]) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Every scenario against the local NATS server's JetStream."""
    results: dict[str, Any] = {}
    samples: dict[str, list[float]] = {}
    pid = _nats_server_pid()

    def prepare(scenario: Scenario, recipients: tuple[str, ...]) -> None:
        asyncio.run(nats_agents.prepare_stream(f"bench.{scenario.name}", recipients))

    target = Target(
        "nats",
        nats_agents.run_sender,
        nats_agents.run_subscriber,
        nats_agents.NATS_URL,
        (lambda: process_cpu_seconds(pid)) if pid else (lambda: float("nan")),
        prepare=prepare,
    )
    try:
        for scenario in plan:
            _say(f"  nats: {scenario.name} ...")
            result, latencies = run_scenario(target, deployment, scenario)
            results[scenario.name] = result
            samples[scenario.name] = latencies
            _say(f"    {_line(result)}")
    finally:
        asyncio.run(nats_agents.delete_stream())
    return results, samples


def _line(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    cpu = r["server_cpu_us_per_envelope"]
    return (
        f"{r['messages_per_s'] or 0:,.0f} msgs/s, {r['deliveries_per_s'] or 0:,.0f} deliveries/s, "
        f"p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, server {cpu or 0:,.0f} us/envelope, "
        f"machine {100 * (r['machine_busy'] or 0):.0f}% busy, load {r['load_average_1min']:.1f}, "
        f"complete={r['complete']}"
        + (f", errors={r['errors']}" if r["errors"] else "")
        + (f", fatal={r['fatal']}" if r["fatal"] else "")
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when every scenario completed."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small runs (under about two minutes)")
    parser.add_argument("--only", default=",".join(BACKENDS), help="comma-separated subset of " + ",".join(BACKENDS))
    parser.add_argument("--scenarios", default="", help="comma-separated subset of scenario names")
    parser.add_argument(
        "--profile",
        nargs="?",
        const="throughput-1to1",
        default=None,
        metavar="SCENARIO",
        help="sample the broker and a subscriber with py-spy during SCENARIO (default throughput-1to1)",
    )
    parser.add_argument("--seconds", type=float, default=None, help="length of each latency run (default 6, quick 3)")
    parser.add_argument(
        "--linger",
        type=float,
        default=0.001,
        help="ISB senders' producer linger in seconds (default 0.001, as the issue suggests)",
    )
    parser.add_argument("--log-level", default="info", help="broker log level (default info, as deployed)")
    parser.add_argument("--output", type=Path, default=RESULTS / "results.json")
    args = parser.parse_args(argv)
    configure_logging("warning")  # the PKI set-up's info lines would bury the table
    backends = [b for b in args.only.split(",") if b]
    plan = [replace(s, linger=args.linger) for s in scenarios(args.quick, args.seconds)]
    if args.scenarios:
        wanted = set(args.scenarios.split(","))
        plan = [s for s in plan if s.name in wanted]
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.profile and py_spy() is None:
        _say("py-spy is not installed (.venv/bin/pip install py-spy); running without --profile")
        args.profile = None
    started = time.monotonic()
    results: dict[str, Any] = {}
    samples: dict[str, dict[str, list[float]]] = {}
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="isb-bench-") as tmp:
        work = Path(tmp)
        _say(f"building PKI and policy in {work} ...")
        deployment = build_deployment(work, senders=SENDERS, recipients=RECIPIENTS)
        for backend in backends:
            _say(f"{backend}:")
            if backend == "sqlite":
                url = f"sqlite:///{work / 'sqlite' / 'broker.db'}"
                results[backend], samples[backend] = run_isb(backend, url, deployment, work, plan, args)
            elif backend == "postgresql":
                if not postgres_available():
                    skipped[backend] = "no PostgreSQL server on 127.0.0.1:5432"
                    continue
                with postgres_database(BENCH_DATABASE) as url:
                    results[backend], samples[backend] = run_isb(backend, url, deployment, work, plan, args)
            elif backend == "nats":
                if not nats_available():
                    skipped[backend] = "no NATS server on 127.0.0.1:4222"
                    continue
                results[backend], samples[backend] = run_nats(deployment, plan)
            else:
                parser.error(f"unknown backend {backend!r}")
    latency_samples = {b: {n: v for n, v in per.items() if n.startswith("latency")} for b, per in samples.items()}
    plot = RESULTS / "latency.png"
    plot_latency(plot, latency_samples)
    document = {
        "when": dt.datetime.now(dt.UTC).isoformat(),
        "mode": "quick" if args.quick else "default",
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "platform": platform.platform()},
        "scenarios": [asdict(s) for s in plan],
        "results": results,
        "ratios_isb_over_nats": ratios(results),
        "targets": targets(results),
        "skipped": skipped,
        "wall_seconds": time.monotonic() - started,
        "plot": str(plot),
    }
    write_json(args.output, document)
    _say("")
    _say(table(results))
    for backend, reason in skipped.items():
        _say(f"skipped {backend}: {reason}")
    _say(f"\nresults: {args.output}\nplot: {plot}\nwall time: {document['wall_seconds']:.0f} s")
    complete = all(r.get("complete") for per in results.values() for r in per.values())
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
