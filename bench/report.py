#!/usr/bin/env python3
"""Writes docs/BENCHMARKS.md from the JSON lines of a bench/compare.sh run.

Usage: report.py RESULTS.jsonl OUT.md (compare.sh passes the run's metadata in BENCH_* variables).
Everything above MARKER in an existing OUT.md is kept (the hand-written introduction); everything
below it is replaced.
"""

import json
import os
import sys

MARKER = "<!-- Everything below this line is written by bench/compare.sh; edits there are lost. -->"

DEFAULT_INTRO = """# Benchmarks

`bench/compare.sh` runs the scenarios of `amqtt-bench` (our load generator, `bench/`) against
amqtt-rs, Mosquitto and rumqttd on one machine, one broker after the other, and rewrites the part
of this page below the marker.
"""

OURS = "amqtt-rs"
# CPUs' worth of other processes' work above which a scenario's figures count as disturbed.
BUSY = 0.25

SCENARIOS = [
    ("fanin-qos0", "Fan-in, QoS 0", "4 publishers → 1 subscriber on `bench/ID/fanin/+/data`, QoS 0, "
     "each publisher at most `--ahead` (1 000) messages ahead of what the subscriber received from it."),
    ("fanin-qos1", "Fan-in, QoS 1", "4 publishers → 1 subscriber on a wildcard, QoS 1 both ways, "
     "at most `--window` (64) unacknowledged PUBLISHes per publisher."),
    ("fanout-qos0", "Fan-out, QoS 0", "1 publisher → 100 subscribers on one topic, QoS 0; the publisher "
     "stays at most 1 000 messages ahead of the average subscriber."),
    ("pairs-qos1", "Pairs, QoS 1", "50 publisher/subscriber pairs on distinct topics, QoS 1 both ways, "
     "window 64 per publisher."),
    ("connections", "Idle connections", "5 000 connections (CONNECT + CONNACK, keep-alive 600 s), 100 "
     "handshakes at a time; RSS per connection = (broker RSS with them, 0.5 s after the last CONNACK − "
     "RSS before) / 5 000."),
    ("latency-qos0", "Latency at light load, QoS 0", "4 publishers at 1 000 msg/s each (tokio interval) → "
     "1 subscriber on a wildcard, QoS 0."),
    ("latency-qos1", "Latency at light load, QoS 1", "The same at QoS 1."),
    ("slow-consumer-qos0", "Slow consumer, QoS 0", "4 publishers paced at 100 000 msg/s in all → 4 subscribers "
     "on a wildcard, QoS 0, twice: without, then with a fifth subscriber on the same filter that never reads "
     "its socket (`amqtt-bench slow-consumer`). Issue 9 asks for the reading subscribers' msg/s to drop by at "
     "most 10 % (ratio ≥ 0.9) and the broker's RSS to stay bounded (peak growth ≤ 16 MiB); the drops are "
     "what the stalled subscriber was owed minus what it received once it read again, and the broker's "
     "`$SYS/broker/publish/messages/dropped` rise where it publishes one (`sys_interval 1` for both)."),
    ("slow-consumer-qos1", "Slow consumer, QoS 1", "The same at QoS 1 (window 64 per publisher)."),
]

# (label, key or function, format, better) — better: "high", "low" or None.
FLOW_ROWS = [
    ("delivered msg/s", "rate", "int", "high"),
    ("delivered", "delivered", "int", None),
    ("lost", "lost", "int", "low"),
    ("latency p50 (ms)", lambda r: ms(r.get("p50_us")), "ms", "low"),
    ("latency p99 (ms)", lambda r: ms(r.get("p99_us")), "ms", "low"),
    ("latency max (ms)", lambda r: ms(r.get("max_us")), "ms", "low"),
    ("broker CPU s per M msgs", "broker_cpu_s_per_million", "f2", "low"),
    ("broker CPU s", "broker_cpu_s", "f2", "low"),
    ("bench CPU s", "bench_cpu_s", "f2", None),
    ("broker peak RSS (MiB)", lambda r: mib(r.get("broker_peak_rss_kib")), "f1", "low"),
    ("other processes (CPUs)", "other_load", "f2", None),
]

# The persistence scenario: one row per broker configuration (the labels bench/compare.sh gives
# them), what of the messages acknowledged to their publishers a crash leaves, and the peer the
# ratios use.
PERSISTENT = "pairs-qos1-persistent"
PERSISTENCE_BASELINE = "mosquitto (persistence true)"
PERSISTENCE_RUNS = [
    ("amqtt-rs (persistence off)", "none (memory only)"),
    ("amqtt-rs (sync always)", "all: on disk before the PUBACK"),
    ("amqtt-rs (sync periodic)", "all but the last `sync-interval` (1 s)"),
    ("mosquitto (persistence true)", "all but those since the last autosave (up to 1800 s)"),
    ("mosquitto (persistence false)", "none (memory only)"),
    ("rumqttd", "none (no disk persistence)"),
    ("aMQTT", "none (memory only)"),
]
PERSISTENCE_DESCRIPTION = (
    "The pairs of \"Pairs, QoS 1\" (50 publisher/subscriber pairs on distinct topics, QoS 1 both ways, "
    "window 64 per publisher), but every subscriber has a persistent session (clean session 0, a fixed "
    "client id: `amqtt-bench pairs --persistent-subscribers`), so that each message is stored for its "
    "subscriber. amqtt-rs runs with persistence off, with `persistence: {enabled: true, sync: always}` and "
    "with `{enabled: true, sync: periodic, sync-interval: 1}`; Mosquitto with `persistence true` "
    "(`persistence_location` a fresh directory, `autosave_interval` at its default, 1800 s) and with "
    "`persistence false`; rumqttd as in the other scenarios: it has no disk persistence.")
PERSISTENCE_GUARANTEES = (
    "With `sync: always` a publisher receives PUBACK only once the message stored for the persistent "
    "subscriber is on disk (one fsync shared by the publishers of a batch), so a crash or a power cut loses "
    "no acknowledged message; with `sync: periodic` the PUBACK waits for the same commit without its "
    "fsync, and commits are synced every `sync-interval`, so a crash may lose what was acknowledged in the "
    "last interval (a graceful stop loses nothing). Mosquitto "
    "with `persistence true` keeps its state in memory and saves it to its file only every "
    "`autosave_interval` and at shutdown: a crash loses everything since the last save.")

SLOW_ROWS = [
    ("reading subscribers' msg/s, without the stalled one", "baseline_rate", "int", "high"),
    ("reading subscribers' msg/s, with it", "stalled_rate", "int", "high"),
    ("ratio (≥ 0.9)", "ratio", "f2", "high"),
    ("publishers' msg/s without", "baseline_sent_rate", "int", None),
    ("publishers' msg/s with", "stalled_sent_rate", "int", None),
    ("latency p99 without (ms)", lambda r: ms(r.get("baseline_p99_us")), "ms", "low"),
    ("latency p99 with (ms)", lambda r: ms(r.get("stalled_p99_us")), "ms", "low"),
    ("broker peak RSS without (MiB)", lambda r: mib(r.get("baseline_peak_rss_kib")), "f1", "low"),
    ("broker peak RSS with (MiB)", lambda r: mib(r.get("stalled_peak_rss_kib")), "f1", "low"),
    ("RSS growth (MiB, ≤ 16)", lambda r: mib(r.get("rss_growth_kib")), "f1", "low"),
    ("dropped for the stalled subscriber", "dropped_for_stalled", "int", None),
    ("broker's $SYS drop count", "broker_dropped", "int", None),
    ("other processes (CPUs)", "other_load", "f2", None),
]

CONNECTION_ROWS = [
    ("connections/s", "connections_per_s", "int", "high"),
    ("connected", "connections", "int", None),
    ("failed", "connections_failed", "int", "low"),
    ("RSS per connection (KiB)", "rss_per_connection_kib", "f2", "low"),
    ("broker RSS before (MiB)", lambda r: mib(r.get("broker_rss_before_kib")), "f1", None),
    ("broker RSS with the connections (MiB)", lambda r: mib(r.get("broker_rss_connected_kib")), "f1", "low"),
    ("broker CPU s", "broker_cpu_s", "f2", "low"),
    ("bench CPU s", "bench_cpu_s", "f2", None),
    ("other processes (CPUs)", "other_load", "f2", None),
]


def ms(us):
    return None if us is None else us / 1000.0


def mib(kib):
    return None if kib is None else kib / 1024.0


def value(record, key):
    if record is None:
        return None
    v = key(record) if callable(key) else record.get(key)
    return v if isinstance(v, (int, float)) else None


def fmt(v, kind):
    if v is None:
        return "—"
    if kind == "int":
        return f"{v:,.0f}"
    if kind == "ms":
        return f"{v:.3f}" if v < 10 else f"{v:,.1f}"
    if kind == "f1":
        return f"{v:,.1f}"
    return f"{v:,.2f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}"


def notes(results, scenario, brokers):
    """What went wrong or disturbed a scenario's runs, one Markdown bullet each."""
    out = []
    for b in brokers:
        r = results.get((scenario, b))
        if r is None:
            out.append(f"- {b}: no result.")
            continue
        if r.get("error"):
            out.append(f"- {b}: error: {r['error']}")
        if r.get("broker_died"):
            out.append(f"- {b}: the broker process died during the scenario.")
        load = r.get("other_load")
        if isinstance(load, (int, float)) and load > BUSY:
            out.append(f"- {b}: other processes used {load:.2f} CPUs during this scenario: its figures are "
                       "disturbed.")
        if r.get("failures"):
            out.append(f"- {b}: fails the scenario's checks: {r['failures']}")
        if r.get("out_of_order"):
            out.append(f"- {b}: {r['out_of_order']:,} deliveries out of order or duplicated.")
    return out


def table(results, scenario, brokers, rows):
    peers = [b for b in brokers if b != OURS]
    header = ["", *brokers] + ([f"{OURS} ÷ {p}" for p in peers] if OURS in brokers else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, key, kind, _ in rows:
        values = [value(results.get((scenario, b)), key) for b in brokers]
        cells = [label] + [fmt(v, kind) for v in values]
        if OURS in brokers:
            ours = values[brokers.index(OURS)]
            cells += [ratio(ours, values[brokers.index(p)]) for p in peers]
        lines.append("| " + " | ".join(cells) + " |")
    problems = notes(results, scenario, brokers)
    return "\n".join(lines + ([""] + problems if problems else []))


def persistence_table(results):
    """One row per broker configuration that ran the persistence scenario, in PERSISTENCE_RUNS order."""
    known = [label for label, _ in PERSISTENCE_RUNS]
    ran = [label for scenario, label in results if scenario == PERSISTENT]
    labels = [label for label in known if label in ran] + [label for label in ran if label not in known]
    survives = dict(PERSISTENCE_RUNS)
    base = results.get((PERSISTENT, PERSISTENCE_BASELINE))
    columns = [("delivered msg/s", "rate", "int"), ("lost", "lost", "int"),
               ("latency p50 (ms)", lambda r: ms(r.get("p50_us")), "ms"),
               ("latency p99 (ms)", lambda r: ms(r.get("p99_us")), "ms"),
               ("broker CPU s per M msgs", "broker_cpu_s_per_million", "f2"),
               ("broker peak RSS (MiB)", lambda r: mib(r.get("broker_peak_rss_kib")), "f1"),
               ("other processes (CPUs)", "other_load", "f2")]
    ratios = [("msg/s", "rate"), ("p99", lambda r: r.get("p99_us"))]
    header = ["broker, configuration", "acknowledged messages a crash leaves", *(c[0] for c in columns),
              *(f"{name} ÷ {PERSISTENCE_BASELINE}" for name, _ in ratios)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label in labels:
        r = results.get((PERSISTENT, label))
        cells = [label, survives.get(label, "?")] + [fmt(value(r, key), kind) for _, key, kind in columns]
        cells += [ratio(value(r, key), value(base, key)) for _, key in ratios]
        lines.append("| " + " | ".join(cells) + " |")
    problems = notes(results, PERSISTENT, labels)
    for label in labels:
        stored = (results.get((PERSISTENT, label)) or {}).get("store_bytes")
        if isinstance(stored, int) and stored <= 4096:
            problems.append(f"- {label}: its store directory holds {stored:,} bytes after the run: the broker "
                            "did not save its state there (see its log in target/bench-run).")
    return "\n".join(lines + ([""] + problems if problems else []))


def targets(results, brokers):
    def get(scenario, broker, key):
        return value(results.get((scenario, broker)), key)

    rows = []

    def add(target, status, detail, scenario=None):
        if scenario is not None:
            disturbed = [b for b in (OURS, "mosquitto", "rumqttd")
                         if (get(scenario, b, "other_load") or 0) > BUSY]
            if disturbed:
                detail += f" (disturbed by other processes: {', '.join(disturbed)})"
        rows.append(f"| {target} | {status} | {detail} |")

    for scenario, title in [("fanin-qos0", "fan-in QoS 0"), ("fanin-qos1", "fan-in QoS 1"),
                            ("fanout-qos0", "fan-out QoS 0"), ("pairs-qos1", "pairs QoS 1")]:
        ours, mosq, rum = (get(scenario, b, "rate") for b in (OURS, "mosquitto", "rumqttd"))
        if ours is None or (mosq is None and rum is None):
            add(f"{title}: delivered msg/s ≥ rumqttd and ≥ 3 × Mosquitto", "n/a", "missing figures")
            continue
        ok = (rum is None or ours >= rum) and (mosq is None or ours >= 3 * mosq)
        detail = []
        if rum is not None:
            detail.append(f"{ours / rum:.2f} × rumqttd")
        if mosq is not None:
            detail.append(f"{ours / mosq:.2f} × Mosquitto")
        add(f"{title}: delivered msg/s ≥ rumqttd and ≥ 3 × Mosquitto", "met" if ok else "**missed**",
            f"{ours:,.0f} msg/s = " + ", ".join(detail) + f"; lost {get(scenario, OURS, 'lost') or 0:,.0f}", scenario)

    per = get("connections", OURS, "rss_per_connection_kib")
    if per is None:
        add("RSS per idle connection ≤ 2 KiB", "n/a", "missing figures")
    else:
        mosq = get("connections", "mosquitto", "rss_per_connection_kib")
        extra = f" (Mosquitto {mosq:.2f} KiB)" if mosq is not None else ""
        add("RSS per idle connection ≤ 2 KiB", "met" if per <= 2 else "**missed**", f"{per:.2f} KiB{extra}")


    for scenario, title in [("latency-qos0", "QoS 0"), ("latency-qos1", "QoS 1")]:
        ours, mosq = get(scenario, OURS, "p99_us"), get(scenario, "mosquitto", "p99_us")
        if ours is None or mosq is None:
            add(f"p99 latency at light load, {title} ≤ Mosquitto", "n/a", "missing figures")
        else:
            add(f"p99 latency at light load, {title} ≤ Mosquitto", "met" if ours <= mosq else "**missed**",
                f"{ours / 1000:.3f} ms vs {mosq / 1000:.3f} ms ({ours / mosq:.2f} ×)", scenario)

    ours, mosq = get("connections", OURS, "connections_per_s"), get("connections", "mosquitto", "connections_per_s")
    if ours is None or mosq is None:
        add("connection rate ≥ Mosquitto", "n/a", "missing figures")
    else:
        add("connection rate ≥ Mosquitto", "met" if ours >= mosq else "**missed**",
            f"{ours:,.0f}/s vs {mosq:,.0f}/s ({ours / mosq:.2f} ×)", "connections")

    lost = get("pairs-qos1", OURS, "lost")
    if lost is None:
        add("no QoS 1 message lost in pairs", "n/a", "missing figures")
    else:
        delivered = get("pairs-qos1", OURS, "delivered") or 0
        add("no QoS 1 message lost in pairs", "met" if lost == 0 else "**missed**",
            f"{lost:,.0f} lost of {lost + delivered:,.0f} acknowledged", "pairs-qos1")

    lost = get("fanin-qos1", OURS, "lost")
    expected = get("fanin-qos1", OURS, "expected")
    if lost is not None and expected:
        others = []
        for b in brokers:
            if b != OURS and get("fanin-qos1", b, "lost") is not None:
                e = get("fanin-qos1", b, "expected") or 0
                others.append(f"{b} {get('fanin-qos1', b, 'lost'):,.0f} of {e:,.0f}")
        add("fan-in QoS 1: documented flow-control policy, measured loss", "measured",
            f"{lost:,.0f} lost of {expected:,.0f} acknowledged ({100 * lost / expected:.1f} %)"
            + (f"; {', '.join(others)}" if others else ""))

    return "\n".join(["| target | status | measured |", "|---|---|---|"] + rows)


def main():
    results_path, out_path = sys.argv[1], sys.argv[2]
    results = {}
    with open(results_path) as f:
        for line in f:
            line = line.strip()
            if line:
                r = json.loads(line)
                results[(r.get("scenario"), r.get("label"))] = r
    env = os.environ.get
    brokers = env("BENCH_BROKERS", OURS).split()

    intro = DEFAULT_INTRO
    if os.path.exists(out_path):
        with open(out_path) as f:
            text = f.read()
        # Without the marker the whole page is the hand-written part.
        intro = text.split(MARKER)[0].rstrip("\n") + "\n"

    load_before = env("BENCH_LOAD_BEFORE", "?")
    load_after = env("BENCH_LOAD_AFTER", "?")
    # CPU time used by other processes during each scenario, in CPUs (measured by amqtt-bench).
    # This, not the load average, says whether the machine was busy: the load average before the
    # run still counts compare.sh's own release build.
    loads = [r["other_load"] for r in results.values() if isinstance(r.get("other_load"), (int, float))]
    busy_runs = sum(1 for load in loads if load > BUSY)
    busy = busy_runs > 0
    duration = env("BENCH_DURATION", "10")
    out = [intro, MARKER, "", "## Last run", ""]
    out.append(f"- date: {env('BENCH_DATE', '?')}")
    out.append(f"- machine: {env('BENCH_NPROC', '?')} CPUs ({env('BENCH_CPU', '?')}), "
               f"{env('BENCH_MEMORY', '?')} RAM, {env('BENCH_KERNEL', '?')}")
    out.append(f"- brokers: {env('BENCH_VERSIONS', '?')}")
    out.append(f"- load average (1, 5, 15 min) before the run: {load_before}; after it: {load_after} "
               "(the figure after includes the benchmark itself)")
    if loads:
        out.append(f"- other processes (neither the broker nor the bench) used {sum(loads) / len(loads):.2f} "
                   f"CPUs on average during the scenarios, {max(loads):.2f} at most (row \"other processes\" "
                   "of each table)")
    if busy:
        out.append("- **the machine was busy during this run** (other jobs were running: "
                   f"{busy_runs} of {len(loads)} scenarios saw more than a quarter of a CPU used by other "
                   "processes): the figures are lower and noisier than on an idle machine; rerun on an idle "
                   "machine before drawing fine conclusions.")
    out.append(f"- command: `{env('BENCH_COMMAND', 'bench/compare.sh')}`; each scenario ran as "
               f"`target/release/amqtt-bench <scenario> --port PORT --duration {duration} --broker-pid PID "
               "--label BROKER --json` against a fresh broker process (one per scenario and broker, "
               "on a free port of 127.0.0.1), 64-byte payloads.")
    out.append("")
    out.append("Ratios are amqtt-rs divided by the peer: above 1 means more — better for msg/s and "
               "connections/s, worse for latency, CPU and memory. Throughput counts messages delivered to "
               "subscribers; lost = sent (QoS 0) or acknowledged (QoS 1) minus delivered, after a drain "
               "(until deliveries stop for 1 s, 30 s at most). Latency is end to end, from the publisher's "
               "write to the subscriber's read, on one clock.")
    out.append("")
    # A run of some scenarios only (compare.sh --scenarios) reports those.
    ran = {scenario for scenario, _ in results}
    if ran & {"fanin-qos0", "fanin-qos1", "fanout-qos0", "pairs-qos1", "connections", "latency-qos0",
              "latency-qos1"}:
        out.append("## Targets (issue #4)")
        out.append("")
        out.append(targets(results, brokers))
        out.append("")
    for key, title, description in SCENARIOS:
        if key not in ran:
            continue
        out.append(f"## {title}")
        out.append("")
        out.append(description)
        out.append("")
        rows = CONNECTION_ROWS if key == "connections" else SLOW_ROWS if key.startswith("slow-") else FLOW_ROWS
        out.append(table(results, key, brokers, rows))
        out.append("")
    if PERSISTENT in ran:
        out.append("## Persistence")
        out.append("")
        out.append(PERSISTENCE_DESCRIPTION + f" The stores were on {env('BENCH_STORE', '?')}.")
        out.append("")
        out.append(persistence_table(results))
        out.append("")
        out.append(PERSISTENCE_GUARANTEES)
        out.append("")
    with open(out_path, "w") as f:
        f.write("\n".join(out).rstrip("\n") + "\n")


if __name__ == "__main__":
    main()
