#!/usr/bin/env python3
"""Prints the tables of a keysvc-bench JSON file as Markdown (for docs/PERFORMANCE.md).

Usage: render_table.py [FILE]   (default bench/results/latest.json)
"""
import json
import os
import sys

MODES = ["openssl", "static", "keysvc", "keysvc-copies", "keysvc-copies-v2", "keysvc-copies-v2-inline",
         "keysvc-remote", "keysvc-remote-copies"]


def fmt(v, digits=0):
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "results", "latest.json")
    with open(path) as f:
        doc = json.load(f)
    m, p = doc["machine"], doc["parameters"]
    print(f"Run {m['date']}, {m['nproc']} CPUs, {m['openssl']}, {m['kernel']}; "
          f"load average {m['loadavg_start']} at start, {m['loadavg_end']} at end; {p['duration_s']} s.")
    print()
    for name, section in doc["sections"].items():
        print(f"**{name}**: {section['description']}")
        print()
        if section.get("skipped"):
            print(f"skipped: {section['reason']}\n")
            continue
        print("| scenario | mode | handshakes/s | ratio to openssl | server CPU us/hs | p50 us | p99 us | HSM calls/hs | tickets/hs |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for s in section["scenarios"]:
            for mode in MODES:
                c = s["modes"].get(mode, {})
                if c.get("skipped"):
                    continue
                print(f"| {s['scenario']} | {mode} | {fmt(c['handshakes_per_s'])} | {fmt(c['ratio_to_openssl'], 3)} "
                      f"| {fmt(c['server_cpu_us_per_handshake'], 1)} | {fmt(c['p50_us'], 1)} | {fmt(c['p99_us'], 1)} "
                      f"| {fmt(c['hsm_calls_per_handshake'], 2)} | {fmt(c.get('tickets_per_handshake'), 2)} |")
        skipped = {mode: c["reason"] for s in section["scenarios"] for mode, c in s["modes"].items() if c.get("skipped")}
        for mode, reason in skipped.items():
            print(f"\n{mode}: skipped ({reason})")
        if section.get("server_memory"):
            print("\n| server | threads | peak RSS kB | RSS kB |\n|---|---:|---:|---:|")
            for r in section["server_memory"]:
                print(f"| {r['mode']} | {r['server_threads']} | {r['peak_rss_kb']} | {r['rss_kb']} |")
        print()


if __name__ == "__main__":
    main()
