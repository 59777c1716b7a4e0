// The loopback TCP part of keysvc-bench: keysvc-tls-server (one process per mode and
// server thread count) driven by N client threads, each connection a handshake plus one
// HTTP request and response.
#pragma once

#include <string>
#include <vector>

#include "report.h"

namespace keysvc::bench {

struct TcpMode {
  std::string name;     // openssl, keysvc, keysvc-remote (static: always skipped)
  std::string tickets;  // --tickets value
  std::string config;   // --config, if any
  std::string skip;     // non-empty: skipped, why
};

struct TcpOptions {
  std::string server_bin;
  std::string dir;  // where logs, cert and key go
  int rounds = 1;
  int connections = 100;  // per cell and round, over all client threads
  int client_threads = 2;
  std::vector<int> server_threads = {1, 2};
};

Section run_tcp(const TcpOptions& options, const std::vector<TcpMode>& modes);

}  // namespace keysvc::bench
