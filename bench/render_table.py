#!/usr/bin/env python3
"""Prints the tables of a keysvc-bench JSON file as Markdown (for docs/PERFORMANCE.md).

Usage: render_table.py [--detail] [FILE]   (default bench/results/latest.json)

Summary tables: ratio to openssl per scenario and mode (in-process and TCP), HSM calls
per 1,000 handshakes, the slow HSM, server memory. --detail adds every cell's numbers.
"""
import json
import os
import sys

MODES = ["openssl", "static", "keysvc-epoch", "keysvc-strict", "keysvc-strict-copies-v2",
         "keysvc-strict-copies-v2-inline", "keysvc-epoch-p11kit"]
SLOW_MODES = ["openssl", "keysvc-epoch-faultmod", "keysvc-epoch-faultmod-slow"]


def fmt(v, digits=0):
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def ran(cell):
    return cell is not None and not cell.get("skipped")


def ratio_table(section, modes, key="ratio_to_openssl"):
    present = [m for m in modes if any(ran(s["modes"].get(m)) for s in section["scenarios"])]
    print("| scenario | " + " | ".join(f"`{m}`" for m in present) + " |")
    print("|---|" + "---:|" * len(present))
    for s in section["scenarios"]:
        cells = [fmt(s["modes"][m].get(key), 2) if ran(s["modes"].get(m)) else "-" for m in present]
        print(f"| {s['scenario']} | " + " | ".join(cells) + " |")
    skipped = {m: c["reason"] for s in section["scenarios"] for m, c in s["modes"].items() if c.get("skipped")}
    for mode, reason in (skipped.items() if key == "ratio_to_openssl" else []):
        print(f"\n`{mode}`: skipped ({reason})")
    print()


def per_1000(section, modes, key):
    """Calls per 1,000 handshakes over every scenario of a mode (timed handshakes only)."""
    out = {}
    for m in modes:
        calls = handshakes = 0
        for s in section["scenarios"]:
            c = s["modes"].get(m)
            if not ran(c) or c.get(key) is None:
                continue
            calls += c[key] * c["handshakes"]
            handshakes += c["handshakes"]
        if handshakes:
            out[m] = (1000 * calls / handshakes, handshakes)
    return out


def measured_seconds(section, mode):
    """Wall time of a mode's timed chunks (handshakes / e2e_handshakes_per_s, summed)."""
    total = 0.0
    for s in section["scenarios"]:
        c = s["modes"].get(mode)
        if ran(c) and c.get("e2e_handshakes_per_s"):
            total += c["handshakes"] / c["e2e_handshakes_per_s"]
    return total


def calls_table(section):
    tickets = per_1000(section, MODES, "hsm_calls_per_handshake")
    pkcs11 = per_1000(section, MODES, "pkcs11_calls_per_handshake")
    print("| mode | handshakes | ticket-path `C_Sign` per 1,000 | all PKCS#11 calls per 1,000 "
          "| all PKCS#11 calls per second measured |")
    print("|---|---:|---:|---:|---:|")
    for m in MODES:
        if m in tickets and m.startswith("keysvc"):
            all_calls = pkcs11.get(m, (None, 0))[0]
            secs = measured_seconds(section, m)
            per_s = None if all_calls is None or not secs else all_calls * tickets[m][1] / 1000 / secs
            print(f"| `{m}` | {tickets[m][1]:,} | {fmt(tickets[m][0], 1)} | {fmt(all_calls, 1)} | {fmt(per_s, 1)} |")
    print()


def slow_table(section):
    print(f"Warm-up: {section.get('warmup_s')} s of load from the servers' start "
          f"({section.get('warmup_handshakes', '?')} connections, {section.get('warmup_failures', '?')} failed); "
          f"{section.get('slow_sign_latency_ms')} ms added to every `C_Sign` of the slow server.\n")
    print("| scenario | `openssl` hs/s | `keysvc-epoch-faultmod` hs/s | `keysvc-epoch-faultmod-slow` hs/s "
          "| slow / same without latency | slow / openssl | slow server's `C_Sign` per 1,000 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for s in section["scenarios"]:
        c = s["modes"]
        if not all(ran(c.get(m)) for m in SLOW_MODES):
            continue
        slow = c["keysvc-epoch-faultmod-slow"]
        hsm = slow.get("hsm_calls_per_handshake")
        print(f"| {s['scenario']} | {fmt(c['openssl']['handshakes_per_s'])} "
              f"| {fmt(c['keysvc-epoch-faultmod']['handshakes_per_s'])} | {fmt(slow['handshakes_per_s'])} "
              f"| {fmt(slow.get('ratio_to_baseline'), 2)} | {fmt(slow.get('ratio_to_openssl'), 2)} "
              f"| {fmt(None if hsm is None else 1000 * hsm, 1)} |")
    print()


def memory_table(section):
    rows = section.get("server_memory", [])
    base = {r["server_threads"]: r["peak_rss_kb"] for r in rows if r["mode"] == "openssl"}
    print("| server | threads | peak RSS kB | RSS kB | peak RSS - `openssl`'s, MB |\n|---|---:|---:|---:|---:|")
    for r in rows:
        delta = None if r["server_threads"] not in base else (r["peak_rss_kb"] - base[r["server_threads"]]) / 1024
        print(f"| `{r['mode']}` | {r['server_threads']} | {r['peak_rss_kb']:,} | {r['rss_kb']:,} | {fmt(delta, 1)} |")
    print()


def detail_table(section, modes):
    print("| scenario | mode | handshakes/s | ratio to openssl | server CPU us/hs | p50 us | p99 us | HSM calls/hs | tickets/hs |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for s in section["scenarios"]:
        for mode in modes:
            c = s["modes"].get(mode)
            if not ran(c):
                continue
            print(f"| {s['scenario']} | {mode} | {fmt(c['handshakes_per_s'])} | {fmt(c['ratio_to_openssl'], 3)} "
                  f"| {fmt(c['server_cpu_us_per_handshake'], 1)} | {fmt(c['p50_us'], 1)} | {fmt(c['p99_us'], 1)} "
                  f"| {fmt(c['hsm_calls_per_handshake'], 3)} | {fmt(c.get('tickets_per_handshake'), 2)} |")
    print()


def main():
    args = sys.argv[1:]
    detail = "--detail" in args
    args = [a for a in args if a != "--detail"]
    path = args[0] if args else os.path.join(os.path.dirname(__file__), "results", "latest.json")
    with open(path) as f:
        doc = json.load(f)
    m, p = doc["machine"], doc["parameters"]
    print(f"Run {m['date']}, {m['nproc']} CPUs, {m['openssl']}, {m['kernel']}; "
          f"load average {m['loadavg_start']} at start, {m['loadavg_end']} at end; {p['duration_s']} s"
          f"{' (--quick)' if p.get('quick') else ''}.\n")
    for name, section in doc["sections"].items():
        print(f"**{name}**: {section['description']}\n")
        if section.get("skipped"):
            print(f"skipped: {section['reason']}\n")
            continue
        if name == "slow_hsm":
            slow_table(section)
        else:
            print("Handshakes/s, ratio to `openssl`:\n")
            ratio_table(section, MODES)
            if name == "inprocess":
                print("Median over the rounds of each round's ratio to `openssl` "
                      "(`median_round_ratio_to_openssl`):\n")
                ratio_table(section, MODES, "median_round_ratio_to_openssl")
            print("Server CPU per handshake, `openssl`'s / the mode's (`cpu_ratio_to_openssl`):\n")
            ratio_table(section, MODES, "cpu_ratio_to_openssl")
        if name == "inprocess":
            calls_table(section)
        if section.get("server_memory"):
            memory_table(section)
        if detail:
            detail_table(section, SLOW_MODES if name == "slow_hsm" else MODES)


if __name__ == "__main__":
    main()
