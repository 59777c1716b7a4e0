#include "slow_hsm.h"

#include <openssl/ssl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <vector>

#include "fault_control.h"

namespace keysvc::bench {

namespace {

using Clock = std::chrono::steady_clock;

struct Entry {
  TcpMode mode;
  std::unique_ptr<test::FaultControl> faults;  // none: not behind the fault module
  TcpServer server;
  std::string skip;
};

std::uint64_t sign_calls(const Entry& e) { return e.faults ? e.faults->stats().calls_to("C_Sign") : 0; }

}  // namespace

Section run_slow_hsm(const SlowHsmOptions& o, BenchEnv& env) {
  const int threads = o.tcp.server_threads.empty() ? 2 : o.tcp.server_threads.back();
  Section section;
  section.name = "slow_hsm";
  section.description = "loopback TCP to keysvc-tls-server (" + std::to_string(threads) +
                        " server threads) with keysvc's defaults through the fault module, with and without " +
                        std::to_string(kSlowSignMs) + " ms added to every C_Sign; measured after " +
                        std::to_string(o.warmup_s) + " s of load from the servers' start";
  section.baseline_mode = "keysvc-epoch-faultmod";
  section.notes = {{"warmup_s", std::to_string(o.warmup_s)},
                   {"slow_sign_latency_ms", std::to_string(kSlowSignMs)}};
  if (::access(o.tcp.server_bin.c_str(), X_OK) != 0) {
    section.skipped = true;
    section.reason = "no keysvc-tls-server at " + o.tcp.server_bin;
    return section;
  }
  env.write_faultmod_configs(test::FaultControl::module_path());

  std::vector<Entry> entries(3);
  entries[0].mode = {"openssl", "openssl", "", ""};
  entries[1].mode = {"keysvc-epoch-faultmod", "keysvc", env.faultmod_config(false), ""};
  entries[1].faults = std::make_unique<test::FaultControl>(env.dir() + "/faults-plain");
  entries[2].mode = {"keysvc-epoch-faultmod-slow", "keysvc", env.faultmod_config(true), ""};
  entries[2].faults = std::make_unique<test::FaultControl>(env.dir() + "/faults-slow");
  entries[2].faults->set("C_Sign latency " + std::to_string(kSlowSignMs) + "\n");

  // The warm-up counts from here: the slow server's start-up already waits for the HSM.
  const auto started = Clock::now();
  for (auto& e : entries) {
    if (e.faults) e.faults->export_env();  // the server inherits its own control file
    e.skip = start_tcp_server(o.tcp, e.mode, threads, e.server);
  }
  for (const char* name : {"KEYSVC_FAULTMOD_TARGET", "KEYSVC_FAULTMOD_CONTROL", "KEYSVC_FAULTMOD_STATS"})
    ::unsetenv(name);

  // Load on every server until the warm-up is over (TLS 1.3 resumption and full handshakes).
  TcpOptions warm = o.tcp;
  warm.connections = 20;
  std::uint64_t warm_handshakes = 0, warm_failures = 0;
  for (bool resume = false; Clock::now() - started < std::chrono::seconds(o.warmup_s); resume = !resume) {
    for (auto& e : entries) {
      if (!e.skip.empty()) continue;
      CellAccum scratch;
      run_tcp_chunk(warm, e.server, TLS1_3_VERSION, resume, scratch);
      warm_handshakes += scratch.handshakes;
      warm_failures += scratch.failures;
    }
  }
  section.notes.emplace_back("warmup_handshakes", std::to_string(warm_handshakes));
  section.notes.emplace_back("warmup_failures", std::to_string(warm_failures));

  struct Scn {
    int version;
    bool resume;
  };
  std::vector<Scn> scns;
  for (int version : {TLS1_3_VERSION, TLS1_2_VERSION})
    for (bool resume : {false, true}) scns.push_back({version, resume});
  std::vector<std::vector<CellAccum>> acc(scns.size(), std::vector<CellAccum>(entries.size()));
  for (int round = 0; round < o.tcp.rounds; ++round) {
    for (std::size_t si = 0; si < scns.size(); ++si) {
      for (std::size_t k = 0; k < entries.size(); ++k) {
        std::size_t mi = (k + static_cast<std::size_t>(round) + si) % entries.size();  // rotate the order
        Entry& e = entries[mi];
        if (!e.skip.empty()) continue;
        const std::uint64_t signs0 = sign_calls(e);
        run_tcp_chunk(o.tcp, e.server, scns[si].version, scns[si].resume, acc[si][mi]);
        if (e.faults) acc[si][mi].hsm_calls = acc[si][mi].hsm_calls.value_or(0) + (sign_calls(e) - signs0);
      }
    }
  }
  for (auto& e : entries) {
    if (!e.skip.empty()) continue;
    section.memory.push_back(tcp_server_memory(e.server));
    e.server.child.stop();
  }

  for (std::size_t si = 0; si < scns.size(); ++si) {
    ScenarioResult sc;
    sc.tls = scns[si].version == TLS1_3_VERSION ? "1.3" : "1.2";
    sc.kind = scns[si].resume ? "resume" : "full";
    sc.threads = threads;
    sc.name = scenario_name(scns[si].version, scns[si].resume, threads);
    for (std::size_t mi = 0; mi < entries.size(); ++mi) {
      if (!entries[mi].skip.empty()) {
        CellResult c;
        c.mode = entries[mi].mode.name;
        c.skipped = true;
        c.reason = entries[mi].skip;
        sc.cells.push_back(c);
        continue;
      }
      sc.cells.push_back(summarise(entries[mi].mode.name, acc[si][mi], false));
    }
    section.scenarios.push_back(std::move(sc));
  }
  add_ratios(section);
  return section;
}

}  // namespace keysvc::bench
