// Results of one keysvc-bench run: the table on stdout and the JSON file.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace keysvc::bench {

// The ticket modes, in table order (docs/PERFORMANCE.md, "Modes").
inline const std::vector<std::string> kModes = {"openssl",
                                                "static",
                                                "keysvc-epoch",
                                                "keysvc-strict",
                                                "keysvc-strict-copies-v2",
                                                "keysvc-strict-copies-v2-inline",
                                                "keysvc-epoch-p11kit"};

// Per handshake samples and totals gathered for one (scenario, mode) cell.
struct CellAccum {
  std::vector<double> latency_us;  // per handshake (in-process: server wall; TCP: connection)
  std::uint64_t handshakes = 0;
  std::uint64_t failures = 0;
  std::uint64_t not_resumed = 0;  // resumption scenario, but the server did a full handshake
  double server_cpu_ns = 0;
  double client_wall_ns = 0;
  std::optional<std::uint64_t> tickets;  // received by the clients (in-process)
  double elapsed_ns = 0;            // wall time of the timed chunks
  std::map<int, std::pair<double, double>> per_thread;  // thread -> (handshakes, server wall ns)
  // In-process: each timed chunk's server handshakes/s (its threads' handshakes over
  // their server wall time, summed), in run order: one per round.
  std::vector<double> round_rates;
  std::optional<std::uint64_t> hsm_calls;     // ticket-path C_Sign calls (service counters)
  std::optional<std::uint64_t> pkcs11_calls;  // every PKCS#11 call of the process meanwhile
  std::string first_error;
};

struct CellResult {
  std::string mode;
  bool skipped = false;
  std::string reason;
  std::uint64_t handshakes = 0, failures = 0, not_resumed = 0;
  double handshakes_per_s = 0;
  double e2e_handshakes_per_s = 0;
  double server_cpu_us_per_handshake = 0;
  double client_us_per_handshake = 0;  // in-process only
  double p50_us = 0, p99_us = 0;
  std::optional<double> hsm_calls_per_handshake;
  std::optional<double> pkcs11_calls_per_handshake;
  std::optional<double> tickets_per_handshake;
  std::optional<double> ratio_to_openssl;
  // In-process: the median over rounds of this mode's handshakes/s over openssl's in the
  // same round (rounds interleave the modes, so each pair ran within seconds of each
  // other): a slow spell of the machine moves both sides of a pair, and an outlier round
  // moves the median little.
  std::optional<double> median_round_ratio_to_openssl;
  std::vector<double> round_rates;
  std::optional<double> ratio_to_baseline;  // to Section::baseline_mode, if the section has one
  // openssl's server CPU per handshake / this mode's: less sensitive to a loaded machine
  // than handshakes/s, but blind to work outside the measured threads (summarise()).
  std::optional<double> cpu_ratio_to_openssl;
  std::string error;
};

struct ScenarioResult {
  std::string name;  // tls13-resume-t2
  std::string tls;   // "1.3"
  std::string kind;  // "full" / "resume"
  int threads = 1;   // server threads
  std::vector<CellResult> cells;
};

struct Section {
  std::string name;         // "inprocess" / "tcp"
  std::string description;  // one line for the table heading and the JSON
  bool skipped = false;
  std::string reason;
  std::string baseline_mode;  // besides openssl, the mode ratio_to_baseline compares with
  std::vector<std::pair<std::string, std::string>> notes;  // extra JSON strings (key, text)
  std::vector<ScenarioResult> scenarios;
  // TCP only: memory of each keysvc-tls-server at the end of its run.
  struct Memory {
    std::string mode;
    int threads = 1;
    long peak_rss_kb = 0;  // VmHWM
    long rss_kb = 0;       // VmRSS
  };
  std::vector<Memory> memory;
};

// Turns the samples of a cell into its numbers. `in_process` picks how handshakes/s is
// computed (see docs/PERFORMANCE.md).
CellResult summarise(const std::string& mode, const CellAccum& a, bool in_process);
// Fills ratio_to_openssl, median_round_ratio_to_openssl (in-process) and
// ratio_to_baseline in every scenario.
void add_ratios(Section& s);

void print_section(const Section& s);
// `machine` and `parameters` are flat string/number maps; numbers are given as text
// already formatted (written without quotes when `numeric` says so).
struct JsonValue {
  std::string text;
  bool numeric = false;
};
using JsonObject = std::vector<std::pair<std::string, JsonValue>>;
std::string to_json(const JsonObject& machine, const JsonObject& parameters,
                    const std::vector<std::pair<std::string, std::string>>& mode_status,
                    const std::vector<Section>& sections);

}  // namespace keysvc::bench
