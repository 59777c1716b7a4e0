// keysvc-bench's command line (keysvc_bench.cc).
#pragma once

#include <set>
#include <string>

namespace keysvc::bench {

struct Options {
  bool quick = false;
  std::string out;  // default: the source tree's bench/results/latest.json
  int rounds = 5;
  int handshakes = 400;  // per cell and round, over all threads
  int tcp_rounds = 2;
  int tcp_connections = 300;
  int tcp_clients = 2;
  bool tcp = true;
  bool slow_hsm = true;
  int warmup_s = 60;  // slow-HSM section: load before measuring
  std::string server_bin;
  std::set<std::string> modes;  // --modes: only these (and openssl, the baseline); empty: all
  std::set<std::string> scenarios;  // --scenarios: only these in-process scenarios; empty: all
};

// Parses argv; prints the usage and exits on --help (0) or a bad argument (2).
// `default_out` is where the JSON goes without --out.
Options parse_options(int argc, char** argv, const std::string& default_out);

}  // namespace keysvc::bench
