"""Benchmark: screening quality and speed on the generated set of bench/screening_set.py.

By default: 1,000,000 entries applied to a watchlist replica the way a subscriber applies them
(the owner seals a snapshot and deltas; the replica verifies certificate chain and signatures,
decrypts and applies each version), then the in-memory index is built from the replica file and
100,000 passengers are screened. Prints precision, recall and F1 per variation type, the share of
ordinary passengers with any hit, the precision/recall curve, speed, build time and memory, and a
JSON line. Every number comes from the held-out seed (2); `--fit` fits the scoring weights and the
threshold on the training seed (1) and prints them for clients/watchlist/screening.py.

    .venv/bin/python -m bench.bench_screening [--entries 1000000] [--passengers 100000] [--direct]
    .venv/bin/python -m bench.bench_screening --quick        # 100,000 entries, 20,000 passengers
    .venv/bin/python -m bench.bench_screening --fit          # training seed: weights and threshold
    .venv/bin/python -m bench.bench_screening --collisions   # namesakes born the same day, by parsing alone
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import gc
import json
import os
import resource
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import clients.watchlist.screening as screening
from bench.screening_set import HOMONYM, NEGATIVE_TYPES, POSITIVE_TYPES, Labelled, ScreeningSet, make_set
from broker.api.v1 import envelope_pb2, payload_pb2, watchlist_pb2
from broker.pki.dev import ensure_dev_pki
from broker.protocol.envelope import seal
from broker.protocol.keys import EncryptionKey
from clients.watchlist import VersionOpener, WatchlistReplica
from clients.watchlist.dates import parse_date
from clients.watchlist.names import parse_name, skeleton
from clients.watchlist.payloads import WATCHLIST_UPDATE_CONTENT_TYPE
from clients.watchlist.screening import DEFAULT_MIN_SCORE, FEATURE_NAMES, Evidence, Hit, ScreeningIndex

OWNER, READER, LIST_ID = "FR-CUSTOMS", "DE-BKA", "FR-CUSTOMS/bench"
THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def _rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def _cpu_s() -> float:
    """CPU seconds of this process and of its waited-for children (the screening workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class _MemorySampler(threading.Thread):
    """Peak memory of this process and its children together, sampled every 0.2 s: resident (RSS,
    counting pages shared after fork once per process) and proportional (PSS, each shared page split
    between the processes that map it: the memory the screening really takes)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_rss_mb = self.peak_pss_mb = 0.0
        self.processes = 1
        self._done = threading.Event()

    @staticmethod
    def _pids() -> list[int]:
        pids = [os.getpid()]
        for task in Path("/proc/self/task").iterdir():
            with contextlib.suppress(OSError):
                pids += [int(p) for p in (task / "children").read_text().split()]
        return pids

    @staticmethod
    def _rollup(pid: int) -> tuple[float, float]:
        values = {}
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                key, _, rest = line.partition(":")
                if key in ("Rss", "Pss"):
                    values[key] = int(rest.split()[0]) / 1e3
        return values.get("Rss", 0.0), values.get("Pss", 0.0)

    def sample(self) -> None:
        pids = self._pids()
        rollups = [self._rollup(pid) for pid in pids]
        self.peak_rss_mb = max(self.peak_rss_mb, sum(r for r, _ in rollups))
        self.peak_pss_mb = max(self.peak_pss_mb, sum(p for _, p in rollups))
        self.processes = max(self.processes, len(pids))

    def run(self) -> None:
        while not self._done.wait(0.2):
            self.sample()

    def stop(self) -> None:
        self._done.set()
        self.join()
        self.sample()


def _replica_index(data: ScreeningSet, tmp: Path, per_version: int) -> tuple[WatchlistReplica, float, float, float]:
    """Apply the entries to a replica through sealing and verification; return (replica, apply_s,
    build_s, build_cpu_s)."""
    pki = ensure_dev_pki(tmp / "pki", "isb.dev")
    cert_path, key_path = pki.agency(OWNER)
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    identity_key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(identity_key, ec.EllipticCurvePrivateKey)
    reader_key = EncryptionKey.generate()
    bundle = envelope_pb2.KeyBundle(
        agency=READER, key_id=reader_key.key_id, suite=reader_key.suite, public_key=reader_key.public_key_bytes
    )
    owner_key = EncryptionKey.generate()
    owner_bundle = envelope_pb2.KeyBundle(
        agency=OWNER, key_id=owner_key.key_id, suite=owner_key.suite, public_key=owner_key.public_key_bytes
    )
    opener = VersionOpener(
        READER, {reader_key.key_id: reader_key}, x509.load_pem_x509_certificates(pki.ca_cert.read_bytes()), "isb.dev"
    )
    replica = WatchlistReplica(tmp / "replica.db", watchlist_id=LIST_ID, owner=OWNER)
    t0 = time.perf_counter()
    for v, start in enumerate(range(0, len(data.entries), per_version), 1):
        update = payload_pb2.WatchlistUpdate(
            watchlist_id=LIST_ID, version=v, snapshot=(v == 1), upserts=data.entries[start : start + per_version]
        )
        envelope = seal(
            sender=OWNER,
            identity_key=identity_key,
            certificate=certificate,
            recipients=[READER],
            recipient_keys={READER: bundle, OWNER: owner_bundle},
            kind=envelope_pb2.WATCHLIST_UPDATE,
            body=update.SerializeToString(),
            content_type=WATCHLIST_UPDATE_CONTENT_TYPE,
            handling=envelope_pb2.Handling(tlp=envelope_pb2.TLP_AMBER),
            watchlist_id=LIST_ID,
            watchlist_version=v,
        )
        replica.apply_served(
            watchlist_pb2.WatchlistVersion(
                watchlist_id=LIST_ID,
                version=v,
                snapshot=update.snapshot,
                envelope=envelope,
                sender_certificate=certificate.public_bytes(serialization.Encoding.DER),
            ),
            opener,
        )
    apply_s = time.perf_counter() - t0
    gc.collect()
    t0, c0 = time.perf_counter(), _cpu_s()
    replica.index()
    return replica, apply_s, time.perf_counter() - t0, _cpu_s() - c0


def _metrics(manifest: Sequence[Labelled], hits: Sequence[Hit], threshold: float) -> dict[str, object]:
    """Recall, precision and false alarms at `threshold`. A homonym's hits on its namesakes (listed
    people of the same name born the same day) are neither true nor false alarms in the main figures;
    the `_strict` figures count them as false alarms."""
    by_record: dict[str, list[Hit]] = collections.defaultdict(list)
    for hit in hits:
        if hit.score >= threshold:
            by_record[hit.record.record_id].append(hit)
    table: dict[str, dict[str, float]] = {}
    totals = collections.Counter[str]()
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for item in manifest:
        found = by_record.get(item.record.record_id, [])
        c = counts[item.variation]
        c["n"] += 1
        if item.target:
            c["tp"] += any(h.entry_id == item.target for h in found)
            c["fp"] += sum(1 for h in found if h.entry_id != item.target)
        elif item.variation == HOMONYM:
            on_namesake = sum(1 for h in found if h.entry_id in item.namesakes)
            c["namesake_hits"] += on_namesake
            c["fp"] += len(found) - on_namesake
            c["flagged"] += bool(on_namesake)
            c["alarmed"] += len(found) > on_namesake
            c["any"] += bool(found)
        else:
            c["fp"] += len(found)
            c["alarmed"] += bool(found)
    for variation, c in counts.items():
        row: dict[str, float] = {"n": c["n"]}
        if variation in POSITIVE_TYPES:
            recall = c["tp"] / c["n"]
            precision = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 1.0
            row.update(
                recall=recall,
                precision=precision,
                f1=2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            )
        elif variation == HOMONYM:
            row.update(flagged_rate=c["flagged"] / c["n"], false_alarm_rate=c["alarmed"] / c["n"])
        else:
            row.update(false_alarm_rate=c["alarmed"] / c["n"])
        table[variation] = row
        group = (
            "pos"
            if variation in POSITIVE_TYPES
            else "neg"
            if variation in NEGATIVE_TYPES
            else "hom"
            if variation == HOMONYM
            else "ord"
        )
        for k in ("tp", "fp", "n", "alarmed", "flagged", "namesake_hits", "any"):
            totals[f"{group}_{k}"] += c[k]
    tp, fp_labelled = totals["pos_tp"], totals["pos_fp"] + totals["neg_fp"]
    fp_all = fp_labelled + totals["ord_fp"] + totals["hom_fp"]
    fp_strict = fp_all + totals["hom_namesake_hits"]
    recall = tp / totals["pos_n"] if totals["pos_n"] else 0.0

    def ratio(a: float, b: float, empty: float = 1.0) -> float:
        return a / b if b else empty

    precision_all = ratio(tp, tp + fp_all)
    precision_strict = ratio(tp, tp + fp_strict)
    return {
        "threshold": threshold,
        "recall": recall,
        "precision_labelled": ratio(tp, tp + fp_labelled),
        "precision_all": precision_all,
        "f1_all": ratio(2 * precision_all * recall, precision_all + recall, 0.0),
        "ordinary_false_alarm_rate": ratio(totals["ord_alarmed"], totals["ord_n"], 0.0),
        "homonyms": totals["hom_n"],
        "homonyms_flagged_rate": ratio(totals["hom_flagged"], totals["hom_n"], 0.0),
        "precision_all_strict": precision_strict,
        "f1_all_strict": ratio(2 * precision_strict * recall, precision_strict + recall, 0.0),
        "ordinary_false_alarm_rate_strict": ratio(
            totals["ord_alarmed"] + totals["hom_any"], totals["ord_n"] + totals["hom_n"], 0.0
        ),
        "by_variation": table,
    }


def _print_report(result: dict[str, object], curve: list[dict[str, object]], speed: dict[str, object]) -> None:
    print(f"{'variation':<26} {'n':>6} {'recall':>7} {'precision':>9} {'F1':>6} {'false alarms':>12}")
    table = result["by_variation"]
    assert isinstance(table, dict)
    for variation in (*POSITIVE_TYPES, *NEGATIVE_TYPES, "ordinary", HOMONYM):
        row = table.get(variation)
        if row is None:
            continue
        if "recall" in row:
            print(f"{variation:<26} {row['n']:>6.0f} {row['recall']:>7.3f} {row['precision']:>9.3f} {row['f1']:>6.3f}")
        else:
            print(f"{variation:<26} {row['n']:>6.0f} {'':>7} {'':>9} {'':>6} {row['false_alarm_rate']:>12.4f}")
    print(
        f"\nat threshold {result['threshold']}: recall {result['recall']:.3f}, precision (labelled passengers) "
        f"{result['precision_labelled']:.3f}, precision (all passengers) {result['precision_all']:.3f}, "
        f"F1 (all) {result['f1_all']:.3f}, ordinary passengers with a hit {result['ordinary_false_alarm_rate']:.4f}"
    )
    print(
        f"homonyms (ordinary passengers bearing a listed name, born the same day): {result['homonyms']}, "
        f"{result['homonyms_flagged_rate']:.3f} of them flagged on their namesake; counting those hits as false "
        f"alarms: precision (all) {result['precision_all_strict']:.3f}, F1 {result['f1_all_strict']:.3f}, "
        f"ordinary passengers and homonyms with a hit {result['ordinary_false_alarm_rate_strict']:.4f}"
    )
    print(
        "\nthreshold  recall  precision(all)  precision(labelled)  ordinary-with-hit  homonyms-flagged  "
        "precision(all, homonym hits false)"
    )
    for point in curve:
        print(
            f"{point['threshold']:>9}  {point['recall']:.3f}  {point['precision_all']:>14.3f}  "
            f"{point['precision_labelled']:>19.3f}  {point['ordinary_false_alarm_rate']:>17.4f}  "
            f"{point['homonyms_flagged_rate']:>16.3f}  {point['precision_all_strict']:>34.3f}"
        )
    print()
    width = max(len(k) for k in speed)
    for key, value in speed.items():
        print(f"{key:<{width}}  {value}")


def _failures(data: ScreeningSet, index: ScreeningIndex, weights: np.ndarray) -> None:
    """Print a few missed positives of the harder types (training seed only)."""
    screening.WEIGHTS = tuple(float(w) for w in weights)  # type: ignore[misc]
    entries = {e.entry_id: e for e in data.entries}
    shown: collections.Counter[str] = collections.Counter()
    wanted = [m for m in data.manifest if m.target]
    found = index.screen([m.record for m in wanted])
    hit = {(h.record.record_id, h.entry_id) for h in found}
    for item in wanted:
        if (item.record.record_id, item.target) in hit or shown[item.variation] >= 4:
            continue
        shown[item.variation] += 1
        e, r = entries[item.target], item.record
        print(
            f"  missed {item.variation}: {r.family_name}|{r.given_names}|{r.name}|{r.date_of_birth} vs "
            f"{e.family_name}|{e.given_names}|{e.date_of_birth.year}-{e.date_of_birth.month}-{e.date_of_birth.day}"
        )


def fit_weights(manifest: Sequence[Labelled], candidates: Sequence[Sequence[tuple[str, Evidence]]]) -> np.ndarray:
    """Logistic weights (Newton's method with a light ridge) from every candidate pair of `manifest`.

    A homonym's pairs with its namesakes are left out: the same name and date of birth as a listed
    person is what a true match looks like too, and an officer must check it (see HOMONYM)."""
    rows, labels = [], []
    for item, found in zip(manifest, candidates, strict=True):
        for entry_id, evidence in found:
            if evidence.identifier or entry_id in item.namesakes:
                continue
            rows.append(evidence.features())
            labels.append(1.0 if entry_id == item.target else 0.0)
    x, y = np.asarray(rows), np.asarray(labels)
    # A contradicting date only reaches scoring beside a document match (the candidate stage drops
    # the rest), so the data would make it look like evidence *for* a match: it is not fitted, but
    # set to a fixed penalty that a document match outweighs and a name match does not.
    different = FEATURE_NAMES.index("dob_different")
    offset = -8.0 * x[:, different]
    x[:, different] = 0.0
    weights = np.zeros(x.shape[1])
    ridge = 0.1 * np.eye(x.shape[1])
    ridge[0, 0] = 1e-6
    for _ in range(50):
        p = 1 / (1 + np.exp(-np.clip(x @ weights + offset, -40, 40)))
        gradient = x.T @ (p - y) + ridge @ weights
        hessian = (x * (p * (1 - p))[:, None]).T @ x + ridge
        step = np.clip(np.linalg.solve(hessian, gradient), -5, 5)
        weights -= step
        if np.abs(step).max() < 1e-8:
            break
    weights[different] = -8.0
    print(f"{len(y)} candidate pairs, {int(y.sum())} true")
    for name, w in zip(FEATURE_NAMES, weights, strict=True):
        print(f"  {name:<30} {w:8.3f}")
    print("WEIGHTS = (" + ", ".join(f"{w:.3f}" for w in weights) + ")")
    return weights


def choose_threshold(manifest: Sequence[Labelled], hits: Sequence[Hit]) -> float:
    """The default threshold from the training curve: the lowest that meets every target (recall and
    precision over all passengers >= 0.90, <= 1 % of ordinary passengers with a hit); when none does,
    the best F1 over all passengers among those that keep the false-alarm target; else the best F1."""
    curve = {t: _metrics(manifest, hits, t) for t in THRESHOLDS}
    for t, m in curve.items():
        print(
            f"train threshold {t}: recall {m['recall']:.3f} precision(all) {m['precision_all']:.3f} "
            f"F1 {m['f1_all']:.3f} ordinary-with-hit {m['ordinary_false_alarm_rate']:.4f}"
        )

    def value(t: float, key: str) -> float:
        return float(curve[t][key])  # type: ignore[arg-type]

    quiet = [t for t in THRESHOLDS if value(t, "ordinary_false_alarm_rate") <= 0.01]
    meeting = [t for t in quiet if value(t, "recall") >= 0.9 and value(t, "precision_all") >= 0.9]
    if meeting:
        return min(meeting)
    return max(quiet or THRESHOLDS, key=lambda t: value(t, "f1_all"))


def _fit(entries: int, passengers: int, per_type: int) -> None:
    """Fit the logistic weights on the training seed and choose the threshold there."""
    data = make_set(entries, passengers, seed=1, per_type=per_type)
    index = ScreeningIndex()
    for entry in data.entries:
        index.add(entry)
    index.build()
    records = [m.record for m in data.manifest]
    weights = fit_weights(data.manifest, index.candidates(records))
    _failures(data, index, weights)
    screening.WEIGHTS = tuple(float(w) for w in weights)  # type: ignore[misc]
    hits = index.screen(records, min_score=min(THRESHOLDS))
    best = choose_threshold(data.manifest, hits)
    print(f"default threshold from the training seed: {best}")
    _print_report(_metrics(data.manifest, hits, best), [], {"train_entries": entries})


def _near_dates(born: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """The dates a day or a year apart from `born`, and its day/month swap."""
    y, m, d = born
    day = dt.date(y, m, d)
    out = [(x.year, x.month, x.day) for x in (day - dt.timedelta(days=1), day + dt.timedelta(days=1))]
    out += [(y + k, m, d) for k in (-1, 1) if not (m == 2 and d == 29)]
    if d <= 12 and d != m:
        out.append((y, d, m))
    return out


def _collisions(data: ScreeningSet) -> None:
    """How many ordinary passengers share name and date of birth with a listed entry, counted by
    parsing alone: the alarms that any screening with recall on exact names (and on near dates) raises."""
    exact: set[tuple[tuple[str, ...], tuple[int, int, int]]] = set()
    alike: set[tuple[tuple[str, ...], tuple[int, int, int]]] = set()
    for entry in data.entries:
        d = entry.date_of_birth
        if d.day:
            core = parse_name(entry.family_name, entry.given_names).core
            exact.add((tuple(sorted(core)), (d.year, d.month, d.day)))
            alike.add((tuple(sorted(skeleton(p) for p in core)), (d.year, d.month, d.day)))
    unlabelled = [m for m in data.manifest if m.variation in {"ordinary", HOMONYM}]
    same = similar = near = homonyms = 0
    for item in unlabelled:
        homonyms += item.variation == HOMONYM
        born = parse_date(item.record.date_of_birth)
        if born is not None and born.day:
            core = tuple(sorted(parse_name(item.record.family_name, item.record.given_names).core))
            day = (born.year, born.month, born.day)
            same += (core, day) in exact
            similar += (tuple(sorted(skeleton(p) for p in core)), day) in alike
            near += item.variation == "ordinary" and any((core, x) in exact for x in _near_dates(day))
    n = len(unlabelled)
    print(
        f"{n} unlabelled passengers: {homonyms / n:.4f} are homonyms (the set's label: a listed person's name, "
        f"in its own script or the same spelling, born the same day), {same / n:.4f} share the spelling and "
        f"the date of birth of an entry, {similar / n:.4f} the name up to romanisation (skeletons) and the date; "
        f"{near / n:.4f} are ordinary passengers sharing the spelling of an entry born a day or a year apart "
        "or with day and month swapped"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--passengers", type=int, default=100_000)
    parser.add_argument("--per-type", type=int, default=300, help="labelled passengers per variation type")
    parser.add_argument("--per-version", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=2, help="2: held out (report); 1: training")
    parser.add_argument("--direct", action="store_true", help="index the entries directly, without a replica")
    parser.add_argument("--quick", action="store_true", help="100,000 entries and 20,000 passengers")
    parser.add_argument(
        "--workers", type=int, default=None, help="screening processes (default: one per available core)"
    )
    parser.add_argument("--fit", action="store_true", help="fit weights and threshold on the training seed")
    parser.add_argument(
        "--collisions",
        action="store_true",
        help="only count ordinary passengers sharing name and date of birth with an entry",
    )
    args = parser.parse_args()
    if args.quick:
        args.entries, args.passengers, args.per_type = 100_000, 20_000, 100
    if args.fit:
        _fit(args.entries, args.passengers, args.per_type)
        return
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    data = make_set(args.entries, args.passengers, seed=args.seed, per_type=args.per_type)
    generate_s = time.perf_counter() - t0
    if args.collisions:
        _collisions(data)
        return
    records = [m.record for m in data.manifest]
    with tempfile.TemporaryDirectory() as tmp:
        rss_before = _rss_mb()
        if args.direct:
            index = ScreeningIndex()
            t0 = time.perf_counter()
            for entry in data.entries:
                index.add(entry)
            apply_s = time.perf_counter() - t0
            t0, c0 = time.perf_counter(), _cpu_s()
            index.build()
            build_s, build_cpu_s = time.perf_counter() - t0, _cpu_s() - c0
            screen = index.screen
        else:
            replica, apply_s, build_s, build_cpu_s = _replica_index(data, Path(tmp), args.per_version)
            screen = replica.screen
        del data.entries[:]
        gc.collect()
        rss_index = _rss_mb()
        sampler = _MemorySampler()
        sampler.start()
        load_screening = os.getloadavg()
        t0, c0 = time.perf_counter(), _cpu_s()
        hits = screen(records, min_score=min(THRESHOLDS), workers=args.workers)
        screen_s, screen_cpu_s = time.perf_counter() - t0, _cpu_s() - c0
        sampler.stop()
        rss_after = _rss_mb()
    result = _metrics(data.manifest, hits, DEFAULT_MIN_SCORE)
    curve = [_metrics(data.manifest, hits, t) for t in THRESHOLDS]
    for point in curve:
        point.pop("by_variation")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    speed = {
        "entries": args.entries,
        "passengers": len(records),
        "seed": args.seed,
        "generate_s": round(generate_s, 1),
        "verify_apply_and_key_s": round(apply_s, 1),
        "index_build_s": round(build_s, 2),
        "index_build_cpu_s": round(build_cpu_s, 2),
        "screen_s": round(screen_s, 2),
        "screen_cpu_s": round(screen_cpu_s, 2),
        "screen_processes": sampler.processes,
        "passengers_per_s": round(len(records) / screen_s),
        "index_memory_mb": round(rss_index - rss_before),
        "rss_after_screening_mb": round(rss_after),
        "peak_rss_mb": round(peak_mb),
        "screening_peak_rss_all_processes_mb": round(sampler.peak_rss_mb),
        "screening_peak_pss_all_processes_mb": round(sampler.peak_pss_mb),
        "load_average_before": [round(x, 1) for x in load_before],
        "load_average_screening": [round(x, 1) for x in load_screening],
        "load_average_after": [round(x, 1) for x in os.getloadavg()],
    }
    _print_report(result, curve, speed)
    print(json.dumps({"default": result, "curve": curve, "speed": speed}))


if __name__ == "__main__":
    main()
