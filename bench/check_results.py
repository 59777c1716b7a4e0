#!/usr/bin/env python3
"""Checks a keysvc-bench JSON file: structure present, every cell has numbers.

Usage: check_results.py FILE.  Exit 0 if good, 1 with one line per problem if not.
Not a timing check: only that the run happened and measured what it says.
"""
import json
import sys

MODES = ["openssl", "static", "keysvc", "keysvc-copies", "keysvc-copies-v2", "keysvc-copies-v2-inline",
         "keysvc-remote", "keysvc-remote-copies"]
# Modes on the default (epoch) tier: steady-state handshakes make no HSM call. The others
# run the strict tier (an HSM derivation per ticket). The tier is chosen per generation:
# keysvc-remote-copies serves keysvc-remote's token, whose generation is an epoch one.
EPOCH_TIER = ["keysvc", "keysvc-remote", "keysvc-remote-copies"]
SCENARIOS = [f"tls{v}-{k}-t{t}" for v in ("13", "12") for k in ("full", "resume") for t in (1, 2)]
POSITIVE = ["handshakes", "handshakes_per_s", "server_cpu_us_per_handshake", "p50_us", "p99_us", "ratio_to_openssl"]


def check(doc):
    problems = []
    for key in ("machine", "parameters", "modes", "sections"):
        if key not in doc:
            problems.append(f"missing '{key}'")
    if problems:
        return problems
    for key in ("nproc", "openssl", "date"):
        if key not in doc["machine"]:
            problems.append(f"machine: missing '{key}'")
    for mode in MODES:
        status = doc["modes"].get(mode)
        if status is None:
            problems.append(f"modes: missing '{mode}'")
        elif status.get("status") == "skipped" and not status.get("reason"):
            problems.append(f"modes: '{mode}' skipped without a reason")
    for mode in ("openssl", "static", "keysvc", "keysvc-copies", "keysvc-copies-v2", "keysvc-copies-v2-inline"):
        if doc["modes"].get(mode, {}).get("status") != "ok":
            problems.append(f"modes: '{mode}' must run")
    for name in ("inprocess", "tcp"):
        section = doc["sections"].get(name)
        if section is None:
            problems.append(f"sections: missing '{name}'")
            continue
        if section.get("skipped"):
            if name == "inprocess" or not section.get("reason"):
                problems.append(f"{name}: skipped" + ("" if section.get("reason") else " without a reason"))
            continue
        seen = {s.get("scenario"): s for s in section.get("scenarios", [])}
        for scenario in SCENARIOS:
            s = seen.get(scenario)
            if s is None:
                problems.append(f"{name}: missing scenario {scenario}")
                continue
            for mode in MODES:
                where = f"{name}/{scenario}/{mode}"
                cell = s.get("modes", {}).get(mode)
                if cell is None:
                    problems.append(f"{where}: missing")
                    continue
                if cell.get("skipped"):
                    if not cell.get("reason"):
                        problems.append(f"{where}: skipped without a reason")
                    continue
                for key in POSITIVE:
                    v = cell.get(key)
                    if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
                        problems.append(f"{where}: {key} = {v!r}, want a number > 0")
                if cell.get("failures", 1) != 0 or cell.get("not_resumed", 1) != 0:
                    problems.append(f"{where}: {cell.get('failures')} failed, {cell.get('not_resumed')} not resumed"
                                    + (f" ({cell['error']})" if cell.get("error") else ""))
                hsm = cell.get("hsm_calls_per_handshake")
                if name == "inprocess":
                    if not isinstance(hsm, (int, float)) or hsm < 0:
                        problems.append(f"{where}: hsm_calls_per_handshake = {hsm!r}")
                    elif mode in EPOCH_TIER and hsm > 0.001:
                        problems.append(f"{where}: {hsm} HSM calls per handshake in the epoch tier (want <= 1 per 1000)")
                    elif mode.startswith("keysvc") and mode not in EPOCH_TIER and not hsm > 0:
                        problems.append(f"{where}: keysvc made no HSM calls in the strict tier")
                    elif not mode.startswith("keysvc") and hsm != 0:
                        problems.append(f"{where}: {hsm} HSM calls without keysvc")
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
