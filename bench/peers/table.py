#!/usr/bin/env python3
"""Prints the side-by-side table of bench/run from the JSON reports in the directory given
(default bench/out/peers): one column per system, and the ratio wsfleet / peer per figure.
A figure whose report is missing (run skipped or failed) shows as "n/a"."""

import json
import os
import sys

SYSTEMS = ["wsfleet", "wsfleet-raw", "nchan", "socketio", "floor"]
NAMES = {"wsfleet": "wsfleet (Rust client)", "wsfleet-raw": "wsfleet (raw WS)",
         "nchan": "nginx + Nchan", "socketio": "Socket.IO 4",
         "floor": "bare epoll acceptor (floor)"}


def load(directory, system, scenario):
    try:
        with open(os.path.join(directory, f"{system}-{scenario}.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def dig(report, *path):
    for key in path:
        if not isinstance(report, dict) or report.get(key) is None:
            return None
        report = report[key]
    return report


def scaled(value, factor):
    return None if value is None else value * factor


def lost(directory, system):
    if system == "floor":
        return ""
    parts = []
    for scenario in ("small", "big", "saturation"):
        report = load(directory, system, scenario)
        if report is None:
            parts.append("n/a")
        else:
            missing = report["expected_deliveries"] - report["deliveries"]
            parts.append(f"{report['lost']}" + (f" (+{missing} short)" if missing > report["lost"] else ""))
    return " / ".join(parts)


# (label, scenario, extractor, better)
FIGURES = [
    ("RSS per idle connection (KiB)", "idle",
     lambda r: scaled(dig(r, "gateway", "rss_per_connection_bytes"), 1 / 1024), "lower"),
    ("Server CPU per accepted connection (µs)", "idle",
     lambda r: dig(r, "gateway", "cpu_us_per_accepted"), "lower"),
    ("Handshakes/s (shared cores)", "idle", lambda r: dig(r, "handshakes_per_sec"), "higher"),
    ("Handshake p99 (ms)", "idle",
     lambda r: scaled(dig(r, "handshake_latency", "p99_us"), 1e-3), "lower"),
    ("Deliveries per server-CPU-second, 10k subs, 4 msg/s", "big",
     lambda r: dig(r, "gateway", "deliveries_per_cpu_second"), "higher"),
    ("Deliveries per server-CPU-second at saturation", "saturation",
     lambda r: dig(r, "gateway", "deliveries_per_cpu_second"), "higher"),
    ("Saturation deliveries/s (sustained, shared cores)", "saturation",
     lambda r: dig(r, "sustained_deliveries_per_sec"), "higher"),
    ("p99 latency, 10k subs over 2 nodes, 4 msg/s (ms)", "big",
     lambda r: scaled(dig(r, "latency", "p99_us"), 1e-3), "lower"),
    ("Cross-node p99, 100 subs, 50 msg/s (ms)", "small",
     lambda r: scaled(dig(r, "cross_node_latency", "p99_us"), 1e-3), "lower"),
]


def fmt(value):
    if value is None:
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def ratio(ours, theirs):
    if ours is None or theirs is None or theirs == 0:
        return "n/a"
    return f"{ours / theirs:.2f}"


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else "bench/out/peers"
    header = ["Figure", "better"] + [NAMES[s] for s in SYSTEMS] + [
        "wsfleet ÷ Nchan", "wsfleet ÷ Socket.IO"]
    # Ratios compare like with like: fan-out figures from wsfleet-raw (driven like the peers)
    # when it ran, idle figures from wsfleet (the same dial for both).
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for label, scenario, extract, better in FIGURES:
        values = {}
        for system in SYSTEMS:
            report = load(directory, system, scenario)
            values[system] = None if report is None else extract(report)
        ours = values["wsfleet"]
        if scenario != "idle" and values["wsfleet-raw"] is not None:
            ours = values["wsfleet-raw"]
        cells = [label, better] + [fmt(values[s]) for s in SYSTEMS] + [
            ratio(ours, values["nchan"]), ratio(ours, values["socketio"])]
        print("| " + " | ".join(cells) + " |")
    cells = ["Lost (small / big / saturation)", "lower"] + [lost(directory, s) for s in SYSTEMS] + ["", ""]
    print("| " + " | ".join(cells) + " |")
    print()
    print("Load average (1/5/15 min) at the start of each run:")
    for system in SYSTEMS:
        readings = []
        for scenario in ("idle", "small", "big", "saturation"):
            try:
                with open(os.path.join(directory, f"{system}-{scenario}.loadavg")) as f:
                    readings.append(f"{scenario} {f.read().strip()}")
            except OSError:
                pass
        if readings:
            print(f"- {NAMES[system]}: " + "; ".join(readings))


if __name__ == "__main__":
    main()
