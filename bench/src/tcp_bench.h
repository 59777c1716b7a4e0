// The loopback TCP part of keysvc-bench: keysvc-tls-server (one process per mode and
// server thread count) driven by N client threads, each connection a handshake plus one
// HTTP request and response.
#pragma once

#include <string>
#include <vector>

#include "bench_env.h"
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

// The TCP section: every mode x {TLS 1.3, 1.2} x {full, resume} x server thread counts.
Section run_tcp(const TcpOptions& options, const std::vector<TcpMode>& modes);

// The pieces run_tcp is made of, for other sections over TCP (slow_hsm.h).
struct TcpServer {
  std::string mode;
  int threads = 1;
  Child child;
  int port = 0;
};
// Starts keysvc-tls-server for `m` with `threads` threads (in this process's environment)
// and waits for it to listen. Returns "" or why it did not start.
std::string start_tcp_server(const TcpOptions& o, const TcpMode& m, int threads, TcpServer& out);
// options.connections connections over options.client_threads threads, added to `acc`
// (with the server's CPU time).
void run_tcp_chunk(const TcpOptions& o, TcpServer& server, int version, bool resume, CellAccum& acc);
// The server's peak and current RSS now (VmHWM, VmRSS).
Section::Memory tcp_server_memory(TcpServer& server);
// "tls13-resume-t2" etc.
std::string scenario_name(int version, bool resume, int threads);

}  // namespace keysvc::bench
