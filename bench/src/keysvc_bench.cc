// keysvc-bench: TLS handshake throughput and cost per ticket mode, side by side in one
// run. See docs/PERFORMANCE.md for what is measured and how to read it.
//
//   keysvc-bench [--quick] [--out FILE] [--rounds N] [--handshakes N]
//                [--tcp-connections N] [--tcp-clients N] [--no-tcp] [--server PATH]
//                [--warmup-s N] [--no-slow-hsm] [--modes M,M...]
#include <openssl/crypto.h>
#include <openssl/opensslv.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bench_env.h"
#include "bench_options.h"
#include "bio_handshake.h"
#include "keysvc/token_gateway.h"
#include "keysvc/config.h"
#include "keysvc/log.h"
#include "keysvc/openssl/ticket_adapter.h"
#include "keysvc/session_key_cache.h"
#include "keysvc/ticket_key_service.h"
#include "report.h"
#include "slow_hsm.h"
#include "static_tickets.h"
#include "tcp_bench.h"

#ifndef KEYSVC_BENCH_REVISION
#define KEYSVC_BENCH_REVISION "unknown"
#endif
#ifndef KEYSVC_BENCH_RESULTS
#define KEYSVC_BENCH_RESULTS "bench/results/latest.json"
#endif

namespace keysvc::bench {
namespace {

struct Mode {
  std::string name;
  std::string skip;  // non-empty: skipped, why
  SslCtxPtr server;
  std::shared_ptr<TicketKeyService> service;
};

struct Scenario {
  int version;
  bool resume;
  int threads;
  std::string name() const {
    return std::string(version == TLS1_3_VERSION ? "tls13" : "tls12") + (resume ? "-resume" : "-full") + "-t" +
           std::to_string(threads);
  }
};

// The keysvc config of a keysvc mode (bench_env.h).
std::string config_of(const BenchEnv& env, const std::string& mode) {
  if (mode == "keysvc-epoch") return env.local_config();
  if (mode == "keysvc-strict") return env.strict_config();
  if (mode == "keysvc-strict-copies-v2") return env.strict_copies_v2_config();
  if (mode == "keysvc-strict-copies-v2-inline") return env.strict_copies_v2_inline_config();
  if (mode == "keysvc-epoch-p11kit") return env.remote_config();
  throw std::logic_error("no config for mode " + mode);
}

bool is_remote(const std::string& mode) { return mode == "keysvc-epoch-p11kit"; }

std::uint64_t hsm_calls(const Mode& m) { return m.service ? m.service->counters().hsm_calls : 0; }

// Every PKCS#11 call this mode's service made so far (the ticket path and the background
// work: ring rescans, epoch key derivations, audit seals).
std::uint64_t pkcs11_calls(const Mode& m) {
  if (!m.service) return 0;
  std::uint64_t n = 0;
  for (const auto& c : m.service->gateway().call_stats().snapshot()) n += c.count;
  return n;
}

// `handshakes` handshakes over `s.threads` threads, added to `acc`.
void run_chunk(Mode& m, SSL_CTX* client, const Scenario& s, int handshakes, CellAccum& acc) {
  // Sessions to resume: one full handshake per thread, not timed or counted.
  std::vector<SessionPtr> sessions(static_cast<std::size_t>(s.threads));
  if (s.resume) {
    for (auto& session : sessions) {
      HandshakeTiming w = timed_handshake(m.server.get(), client, nullptr, true);
      if (!w.ok || !w.session) {
        acc.failures++;
        if (acc.first_error.empty()) acc.first_error = "warm-up: " + w.error;
        return;
      }
      session = std::move(w.session);
    }
  }
  std::mutex mu;
  double chunk_rate = 0;
  const std::uint64_t calls0 = hsm_calls(m), pkcs11_0 = pkcs11_calls(m);
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < s.threads; ++t) {
    int n = handshakes / s.threads + (t < handshakes % s.threads ? 1 : 0);
    threads.emplace_back([&, t, n] {
      std::vector<double> lat;
      lat.reserve(static_cast<std::size_t>(n));
      double cpu = 0, wall = 0, client_wall = 0;
      std::uint64_t fail = 0, not_resumed = 0, tickets = 0;
      std::string err;
      SSL_SESSION* offer = s.resume ? sessions[static_cast<std::size_t>(t)].get() : nullptr;
      for (int i = 0; i < n; ++i) {
        HandshakeTiming h = timed_handshake(m.server.get(), client, offer, false);
        if (!h.ok) {
          fail++;
          if (err.empty()) err = h.error;
          continue;
        }
        if (s.resume && !h.reused) not_resumed++;
        lat.push_back(static_cast<double>(h.server_wall_ns) / 1e3);
        cpu += static_cast<double>(h.server_cpu_ns);
        wall += static_cast<double>(h.server_wall_ns);
        client_wall += static_cast<double>(h.client_wall_ns);
        tickets += static_cast<std::uint64_t>(h.tickets);
      }
      std::lock_guard<std::mutex> lock(mu);
      acc.latency_us.insert(acc.latency_us.end(), lat.begin(), lat.end());
      acc.handshakes += lat.size();
      acc.failures += fail;
      acc.not_resumed += not_resumed;
      acc.server_cpu_ns += cpu;
      acc.client_wall_ns += client_wall;
      acc.tickets = acc.tickets.value_or(0) + tickets;
      acc.per_thread[t].first += static_cast<double>(lat.size());
      acc.per_thread[t].second += wall;
      if (wall > 0) chunk_rate += static_cast<double>(lat.size()) / (wall / 1e9);
      if (acc.first_error.empty() && !err.empty()) acc.first_error = err;
    });
  }
  for (auto& th : threads) th.join();
  acc.round_rates.push_back(chunk_rate);
  acc.elapsed_ns += std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
  acc.hsm_calls = acc.hsm_calls.value_or(0) + (hsm_calls(m) - calls0);
  acc.pkcs11_calls = acc.pkcs11_calls.value_or(0) + (pkcs11_calls(m) - pkcs11_0);
}

std::string now_utc() {
  std::time_t t = std::time(nullptr);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

std::string loadavg() {
  std::string s = read_file("/proc/loadavg");
  auto parts = s.substr(0, s.find(' ', s.find(' ', s.find(' ') + 1) + 1));
  return parts;
}

std::string first_line(std::string s) {
  auto nl = s.find('\n');
  if (nl != std::string::npos) s.resize(nl);
  return s;
}

// Every in-process scenario, or those `names` asks for (--scenarios); nullopt, said in
// one line, for a name that is none of them.
std::optional<std::vector<Scenario>> in_process_scenarios(const std::set<std::string>& names) {
  std::vector<Scenario> all;
  for (int version : {TLS1_3_VERSION, TLS1_2_VERSION})
    for (bool resume : {false, true})
      for (int threads : {1, 2}) all.push_back({version, resume, threads});
  if (names.empty()) return all;
  std::vector<Scenario> chosen;
  std::copy_if(all.begin(), all.end(), std::back_inserter(chosen), [&](const Scenario& sc) { return names.count(sc.name()); });
  for (const auto& name : names) {
    if (std::none_of(chosen.begin(), chosen.end(), [&](const Scenario& sc) { return sc.name() == name; })) {
      std::fprintf(stderr, "keysvc-bench: unknown scenario '%s' (--scenarios; e.g. tls12-resume-t1)\n", name.c_str());
      return std::nullopt;
    }
  }
  return chosen;
}

int run(const Options& o) {
  const auto picked = in_process_scenarios(o.scenarios);  // before any set-up
  if (!picked) return 2;
  const std::vector<Scenario>& scenarios = *picked;
  auto started = std::chrono::steady_clock::now();
  const std::string load_start = loadavg();
  set_log_level("warn");
  BenchEnv env;
  std::fprintf(stderr, "keysvc-bench: token folder %s%s\n", env.dir().c_str(), o.quick ? " (quick run)" : "");

  ServerIdentity id;
  std::vector<Mode> modes;
  for (const auto& name : kModes) {
    const bool selected = o.modes.empty() || name == "openssl" || o.modes.count(name) > 0;
    modes.push_back(Mode{name, selected ? "" : "not selected (--modes)", nullptr, nullptr});
  }
  for (auto& m : modes) {
    if (!m.skip.empty()) continue;
    try {
      const bool remote = is_remote(m.name);
      if (remote && !env.remote_running()) {
        m.skip = env.start_remote();
        if (!m.skip.empty()) {
          std::fprintf(stderr, "keysvc-bench: mode %s skipped: %s\n", m.name.c_str(), m.skip.c_str());
          continue;
        }
      }
      m.server = make_server_ctx(id);
      if (m.name == "static") {
        install_static_tickets(m.server.get());
      } else if (m.name != "openssl") {
        m.service = TicketKeyService::open(Config::load_file(config_of(env, m.name)));
        keysvc::openssl::install(m.server.get(), m.service);
        const SessionKeyCache* copies = m.service->session_copies();
        if (copies != nullptr && copies->stats().live == 0) {
          m.skip = "no session copies were made (the token refused C_CopyObject; see the log)";
          if (!remote) throw std::runtime_error("mode " + m.name + ": " + m.skip);
          m.service.reset();
          m.server.reset();
        }
      }
    } catch (const std::exception& e) {
      if (!is_remote(m.name)) throw;  // the local modes must work
      m.skip = std::string("cannot open the token through p11-kit: ") + first_line(e.what());
      m.server.reset();
    }
    if (!m.skip.empty()) std::fprintf(stderr, "keysvc-bench: mode %s skipped: %s\n", m.name.c_str(), m.skip.c_str());
  }

  SslCtxPtr client13 = make_client_ctx(TLS1_3_VERSION);
  SslCtxPtr client12 = make_client_ctx(TLS1_2_VERSION);
  auto client_for = [&](int version) { return version == TLS1_3_VERSION ? client13.get() : client12.get(); };

  // Warm-up: sessions opened and logged in, caches filled.
  for (auto& m : modes) {
    if (!m.skip.empty()) continue;
    for (int version : {TLS1_3_VERSION, TLS1_2_VERSION}) {
      CellAccum scratch;
      run_chunk(m, client_for(version), Scenario{version, false, 2}, o.quick ? 4 : 40, scratch);
      run_chunk(m, client_for(version), Scenario{version, true, 2}, o.quick ? 4 : 40, scratch);
      if (scratch.failures || scratch.handshakes == 0)
        throw std::runtime_error("mode " + m.name + ": warm-up handshakes fail: " + scratch.first_error);
    }
  }

  std::vector<std::vector<CellAccum>> acc(scenarios.size(), std::vector<CellAccum>(modes.size()));
  for (int round = 0; round < o.rounds; ++round) {
    for (std::size_t si = 0; si < scenarios.size(); ++si) {
      for (std::size_t k = 0; k < modes.size(); ++k) {
        std::size_t mi = (k + static_cast<std::size_t>(round) + si) % modes.size();  // rotate who goes first
        if (!modes[mi].skip.empty()) continue;
        run_chunk(modes[mi], client_for(scenarios[si].version), scenarios[si], o.handshakes, acc[si][mi]);
      }
    }
    std::fprintf(stderr, "keysvc-bench: in-process round %d/%d done\n", round + 1, o.rounds);
  }

  Section inproc;
  inproc.name = "inprocess";
  inproc.description =
      "memory BIO pairs in one process; client and server alternate on each thread; server side timed alone";
  for (std::size_t si = 0; si < scenarios.size(); ++si) {
    ScenarioResult sc;
    sc.name = scenarios[si].name();
    sc.tls = scenarios[si].version == TLS1_3_VERSION ? "1.3" : "1.2";
    sc.kind = scenarios[si].resume ? "resume" : "full";
    sc.threads = scenarios[si].threads;
    for (std::size_t mi = 0; mi < modes.size(); ++mi) {
      if (!modes[mi].skip.empty()) {
        CellResult c;
        c.mode = modes[mi].name;
        c.skipped = true;
        c.reason = modes[mi].skip;
        sc.cells.push_back(c);
      } else {
        sc.cells.push_back(summarise(modes[mi].name, acc[si][mi], true));
      }
    }
    inproc.scenarios.push_back(std::move(sc));
  }
  add_ratios(inproc);

  // Keep the p11-kit server up for the TCP servers; release our own token sessions
  // first so the servers have the token to themselves.
  std::vector<std::pair<std::string, std::string>> mode_status;
  for (auto& m : modes) mode_status.emplace_back(m.name, m.skip);
  for (auto& m : modes) {
    m.server.reset();
    m.service.reset();
  }

  Section tcp;
  if (o.tcp) {
    TcpOptions t;
    t.server_bin = o.server_bin;
    t.dir = env.dir();
    t.rounds = o.tcp_rounds;
    t.connections = o.tcp_connections;
    t.client_threads = o.tcp_clients;
    std::vector<TcpMode> tmodes;
    for (const auto& [name, skip] : mode_status) {
      if (name == "openssl")
        tmodes.push_back({name, "openssl", "", ""});
      else if (name == "static")
        tmodes.push_back({name, "", "", "keysvc-tls-server has no static-key ticket mode (in-process only)"});
      else
        tmodes.push_back({name, "keysvc", config_of(env, name), skip});
    }
    tcp = run_tcp(t, tmodes);
  } else {
    tcp.name = "tcp";
    tcp.description = "loopback TCP to keysvc-tls-server";
    tcp.skipped = true;
    tcp.reason = "--no-tcp";
  }
  env.stop_remote();

  Section slow;
  if (o.tcp && o.slow_hsm) {
    SlowHsmOptions so;
    so.tcp.server_bin = o.server_bin;
    so.tcp.dir = env.dir() + "/slow-hsm";  // its own server logs and certificate
    std::filesystem::create_directories(so.tcp.dir);
    so.tcp.rounds = o.tcp_rounds;
    so.tcp.connections = o.tcp_connections;
    so.tcp.client_threads = o.tcp_clients;
    so.warmup_s = o.warmup_s;
    std::fprintf(stderr, "keysvc-bench: slow-HSM section (%d s warm-up)\n", o.warmup_s);
    slow = run_slow_hsm(so, env);
  } else {
    slow.name = "slow_hsm";
    slow.description = "keysvc-tls-server with 250 ms added to every C_Sign";
    slow.skipped = true;
    slow.reason = o.tcp ? "--no-slow-hsm" : "--no-tcp";
  }

  print_section(inproc);
  print_section(tcp);
  print_section(slow);

  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  utsname u{};
  ::uname(&u);
  char secs[32];
  std::snprintf(secs, sizeof secs, "%.1f", seconds);
  JsonObject machine = {
      {"nproc", {std::to_string(std::thread::hardware_concurrency()), true}},
      {"openssl", {OpenSSL_version(OPENSSL_VERSION), false}},
      {"kernel", {std::string(u.sysname) + " " + u.release + " " + u.machine, false}},
      {"date", {now_utc(), false}},
      {"loadavg_start", {load_start, false}},
      {"loadavg_end", {loadavg(), false}},
  };
  JsonObject params = {
      {"source_revision", {KEYSVC_BENCH_REVISION, false}},
      {"quick", {o.quick ? "true" : "false", true}},
      {"rounds", {std::to_string(o.rounds), true}},
      {"handshakes_per_cell_round", {std::to_string(o.handshakes), true}},
      {"tcp_rounds", {std::to_string(o.tcp_rounds), true}},
      {"tcp_connections_per_cell_round", {std::to_string(o.tcp_connections), true}},
      {"tcp_client_threads", {std::to_string(o.tcp_clients), true}},
      {"slow_hsm_warmup_s", {std::to_string(o.warmup_s), true}},
      {"server_key", {"EC P-256, self-signed", false}},
      {"tls13_tickets_per_full_handshake", {"2", true}},
      {"duration_s", {secs, true}},
  };
  std::string json = to_json(machine, params, mode_status, {inproc, tcp, slow});
  std::filesystem::path out(o.out);
  if (out.has_parent_path()) std::filesystem::create_directories(out.parent_path());
  std::ofstream f(o.out, std::ios::trunc);
  f << json;
  f.close();
  if (!f) throw std::runtime_error("cannot write " + o.out);
  std::printf("\nwrote %s (%.1f s, load %s -> %s)\n", o.out.c_str(), seconds, load_start.c_str(), loadavg().c_str());
  return 0;
}

}  // namespace
}  // namespace keysvc::bench

int main(int argc, char** argv) {
  auto options = keysvc::bench::parse_options(argc, argv, KEYSVC_BENCH_RESULTS);
  try {
    return keysvc::bench::run(options);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "keysvc-bench: %s\n", e.what());
    return 1;
  }
}
