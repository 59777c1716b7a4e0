#!/usr/bin/env python3
"""Checks a keysvc-bench JSON file: structure present, every cell has numbers.

Usage: check_results.py FILE.  Exit 0 if good, 1 with one line per problem if not.
Not a timing check: only that the run happened and measured what it says, and the counts
that do not depend on the machine (HSM calls per handshake of each tier).
"""
import json
import sys

MODES = ["openssl", "static", "keysvc-epoch", "keysvc-strict", "keysvc-strict-copies-v2",
         "keysvc-strict-copies-v2-inline", "keysvc-epoch-p11kit"]
# Every mode but the p11-kit one must run (p11-kit may be missing on a machine).
MUST_RUN = MODES[:-1]
# Modes on the default (epoch) tier: steady-state handshakes make no HSM call. The
# keysvc-strict* modes run the strict tier (an HSM derivation per ticket), each on a token
# of its own (the tier is chosen per generation).
EPOCH_TIER = ["keysvc-epoch", "keysvc-epoch-p11kit"]
SLOW_MODES = ["openssl", "keysvc-epoch-faultmod", "keysvc-epoch-faultmod-slow"]
SLOW_EPOCH_TIER = SLOW_MODES[1:]
SCENARIOS = [f"tls{v}-{k}-t{t}" for v in ("13", "12") for k in ("full", "resume") for t in (1, 2)]
SLOW_SCENARIOS = [f"tls{v}-{k}-t2" for v in ("13", "12") for k in ("full", "resume")]
POSITIVE = ["handshakes", "handshakes_per_s", "server_cpu_us_per_handshake", "p50_us", "p99_us", "ratio_to_openssl"]


def number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def epoch_calls_problem(where, hsm, handshakes):
    """The epoch tier's steady state: no HSM call per handshake. The maintenance thread
    derives the next epoch's key once per epoch, which may fall into a measured cell:
    allow two such calls plus one per 1,000 handshakes."""
    calls = round(hsm * handshakes)
    if calls > 2 + handshakes / 1000:
        return f"{where}: {calls} HSM calls in {handshakes} handshakes in the epoch tier (want <= 1 per 1000)"
    return None


def check_cell(name, where, mode, cell, problems, positive):
    if cell.get("skipped"):
        if not cell.get("reason"):
            problems.append(f"{where}: skipped without a reason")
        return
    for key in positive:
        v = cell.get(key)
        if not number(v) or not v > 0:
            problems.append(f"{where}: {key} = {v!r}, want a number > 0")
    if cell.get("failures", 1) != 0 or cell.get("not_resumed", 1) != 0:
        problems.append(f"{where}: {cell.get('failures')} failed, {cell.get('not_resumed')} not resumed"
                        + (f" ({cell['error']})" if cell.get("error") else ""))
    hsm = cell.get("hsm_calls_per_handshake")
    handshakes = cell.get("handshakes", 0)
    if name == "inprocess":
        median = cell.get("median_round_ratio_to_openssl")
        if not number(median) or not median > 0:
            problems.append(f"{where}: median_round_ratio_to_openssl = {median!r}, want a number > 0")
        if not number(hsm) or hsm < 0:
            problems.append(f"{where}: hsm_calls_per_handshake = {hsm!r}")
        elif mode in EPOCH_TIER:
            p = epoch_calls_problem(where, hsm, handshakes)
            if p:
                problems.append(p)
        elif mode.startswith("keysvc") and not hsm > 0:
            problems.append(f"{where}: keysvc made no HSM calls in the strict tier")
        elif not mode.startswith("keysvc") and hsm != 0:
            problems.append(f"{where}: {hsm} HSM calls without keysvc")
        pkcs11 = cell.get("pkcs11_calls_per_handshake")
        if not number(pkcs11) or pkcs11 < 0:
            problems.append(f"{where}: pkcs11_calls_per_handshake = {pkcs11!r}")
    elif name == "slow_hsm" and mode in SLOW_EPOCH_TIER:
        if not number(hsm) or hsm < 0:
            problems.append(f"{where}: hsm_calls_per_handshake = {hsm!r} (the fault module's C_Sign count)")
        else:
            p = epoch_calls_problem(where, hsm, handshakes)
            if p:
                problems.append(p)
        ratio = cell.get("ratio_to_baseline")
        if not number(ratio) or not ratio > 0:
            problems.append(f"{where}: ratio_to_baseline = {ratio!r}")


def check_section(doc, name, scenarios, modes, problems):
    section = doc["sections"].get(name)
    if section is None:
        problems.append(f"sections: missing '{name}'")
        return
    if section.get("skipped"):
        if name == "inprocess" or not section.get("reason"):
            problems.append(f"{name}: skipped" + ("" if section.get("reason") else " without a reason"))
        return
    seen = {s.get("scenario"): s for s in section.get("scenarios", [])}
    for scenario in scenarios:
        s = seen.get(scenario)
        if s is None:
            problems.append(f"{name}: missing scenario {scenario}")
            continue
        for mode in modes:
            cell = s.get("modes", {}).get(mode)
            if cell is None:
                problems.append(f"{name}/{scenario}/{mode}: missing")
                continue
            check_cell(name, f"{name}/{scenario}/{mode}", mode, cell, problems, POSITIVE)
    if name in ("tcp", "slow_hsm"):
        memory = {(r.get("mode"), r.get("server_threads")): r for r in section.get("server_memory", [])}
        for mode in ("openssl", "keysvc-epoch" if name == "tcp" else "keysvc-epoch-faultmod-slow"):
            r = memory.get((mode, 2))
            if r is None or not number(r.get("peak_rss_kb")) or not r["peak_rss_kb"] > 0:
                problems.append(f"{name}: no server memory for {mode} with 2 threads")
    if name == "slow_hsm":
        if section.get("baseline_mode") != "keysvc-epoch-faultmod":
            problems.append("slow_hsm: baseline_mode is not keysvc-epoch-faultmod")
        try:
            if not float(section.get("warmup_s")) > 0:
                raise ValueError
        except (TypeError, ValueError):
            problems.append(f"slow_hsm: warmup_s = {section.get('warmup_s')!r}")


def check(doc):
    problems = []
    for key in ("machine", "parameters", "modes", "sections"):
        if key not in doc:
            problems.append(f"missing '{key}'")
    if problems:
        return problems
    if doc.get("schema") != "keysvc-bench/2":
        problems.append(f"schema {doc.get('schema')!r}, want 'keysvc-bench/2'")
    for key in ("nproc", "openssl", "date", "loadavg_start", "loadavg_end"):
        if key not in doc["machine"]:
            problems.append(f"machine: missing '{key}'")
    for mode in MODES:
        status = doc["modes"].get(mode)
        if status is None:
            problems.append(f"modes: missing '{mode}'")
        elif status.get("status") == "skipped" and not status.get("reason"):
            problems.append(f"modes: '{mode}' skipped without a reason")
    for mode in MUST_RUN:
        if doc["modes"].get(mode, {}).get("status") != "ok":
            problems.append(f"modes: '{mode}' must run")
    check_section(doc, "inprocess", SCENARIOS, MODES, problems)
    check_section(doc, "tcp", SCENARIOS, MODES, problems)
    check_section(doc, "slow_hsm", SLOW_SCENARIOS, SLOW_MODES, problems)
    return problems


def main():
    if len(sys.argv) != 2:
        print("usage: check_results.py FILE", file=sys.stderr)
        return 2
    try:
        with open(sys.argv[1]) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        print(f"{sys.argv[1]}: {e}", file=sys.stderr)
        return 1
    problems = check(doc)
    for p in problems:
        print(f"{sys.argv[1]}: {p}", file=sys.stderr)
    if not problems:
        print(f"{sys.argv[1]}: ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
