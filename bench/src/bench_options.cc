#include "bench_options.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "report.h"

namespace keysvc::bench {

namespace {

[[noreturn]] void usage(int code, const std::string& default_out) {
  std::fprintf(code ? stderr : stdout,
               "usage: keysvc-bench [--quick] [--out FILE] [--rounds N] [--handshakes N]\n"
               "                    [--tcp-rounds N] [--tcp-connections N] [--tcp-clients N] [--no-tcp]\n"
               "                    [--warmup-s N] [--no-slow-hsm] [--server PATH] [--modes M,M...]\n"
               "                    [--scenarios S,S...]\n"
               "  --quick             few handshakes per cell (a smoke run, numbers are rough)\n"
               "  --out FILE          JSON results (default %s)\n"
               "  --rounds N          interleaved rounds, in-process (default 5)\n"
               "  --handshakes N      handshakes per cell and round, in-process (default 400)\n"
               "  --tcp-rounds N      interleaved rounds over TCP (default 2)\n"
               "  --tcp-connections N connections per cell and round over TCP (default 300)\n"
               "  --tcp-clients N     client threads over TCP (default 2)\n"
               "  --no-tcp            skip the TCP part\n"
               "  --warmup-s N        slow-HSM section: seconds of load before measuring (default 60,\n"
               "                      --quick 1)\n"
               "  --no-slow-hsm       skip the slow-HSM section\n"
               "  --server PATH       keysvc-tls-server (default: next to this binary)\n"
               "  --modes M,M...      only these modes and openssl (e.g. to profile one mode with perf);\n"
               "                      the others are reported as skipped\n"
               "  --scenarios S,S...  only these in-process scenarios (e.g. tls12-resume-t1), the others\n"
               "                      left out of the report\n",
               default_out.c_str());
  std::exit(code);
}

}  // namespace

Options parse_options(int argc, char** argv, const std::string& default_out) {
  Options o;
  o.out = default_out;
  auto usage = [&](int code) { bench::usage(code, default_out); };
  bool rounds_set = false, hs_set = false, tcp_rounds_set = false, tcp_conn_set = false, warmup_set = false;
  auto value = [&](int& i) -> std::string {
    if (i + 1 >= argc) usage(2);
    return argv[++i];
  };
  auto positive = [&](int& i) {
    std::string v = value(i);
    int n = std::atoi(v.c_str());
    if (n <= 0) usage(2);
    return n;
  };
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") o.quick = true;
    else if (a == "--out") o.out = value(i);
    else if (a == "--rounds") o.rounds = positive(i), rounds_set = true;
    else if (a == "--handshakes") o.handshakes = positive(i), hs_set = true;
    else if (a == "--tcp-rounds") o.tcp_rounds = positive(i), tcp_rounds_set = true;
    else if (a == "--tcp-connections") o.tcp_connections = positive(i), tcp_conn_set = true;
    else if (a == "--tcp-clients") o.tcp_clients = positive(i);
    else if (a == "--no-tcp") o.tcp = false;
    else if (a == "--no-slow-hsm") o.slow_hsm = false;
    else if (a == "--warmup-s") o.warmup_s = positive(i), warmup_set = true;
    else if (a == "--server") o.server_bin = value(i);
    else if (a == "--modes") {
      std::stringstream list(value(i));
      for (std::string m; std::getline(list, m, ',');) {
        if (std::find(kModes.begin(), kModes.end(), m) == kModes.end()) {
          std::fprintf(stderr, "keysvc-bench: unknown mode '%s'\n", m.c_str());
          usage(2);
        }
        o.modes.insert(m);
      }
    }
    else if (a == "--scenarios") {
      std::stringstream list(value(i));
      for (std::string sc; std::getline(list, sc, ',');) o.scenarios.insert(sc);  // checked by run()
    }
    else if (a == "--help" || a == "-h") usage(0);
    else {
      std::fprintf(stderr, "keysvc-bench: unknown argument '%s'\n", a.c_str());
      usage(2);
    }
  }
  if (o.quick) {
    if (!rounds_set) o.rounds = 2;
    if (!hs_set) o.handshakes = 16;
    if (!tcp_rounds_set) o.tcp_rounds = 1;
    if (!tcp_conn_set) o.tcp_connections = 8;
    if (!warmup_set) o.warmup_s = 1;
  }
  if (o.server_bin.empty()) {
    std::error_code ec;
    auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
    o.server_bin = (ec ? std::filesystem::path(".") : self.parent_path()) / "keysvc-tls-server";
  }
  return o;
}

}  // namespace keysvc::bench
