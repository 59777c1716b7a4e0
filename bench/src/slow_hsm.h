// The slow-HSM section of keysvc-bench: keysvc's defaults (epoch tier) in front of an HSM
// that takes 250 ms for every C_Sign (the fault module, tests/faultmod, adding latency
// and forwarding to SoftHSM), against the same server without the latency and
// `--tickets openssl`, in the same run. keysvc-tls-server over loopback TCP, measured
// after a warm-up under load that starts when the servers are started.
#pragma once

#include <string>

#include "bench_env.h"
#include "report.h"
#include "tcp_bench.h"

namespace keysvc::bench {

// The slow server's added latency per C_Sign.
inline constexpr int kSlowSignMs = 250;

struct SlowHsmOptions {
  TcpOptions tcp;        // server binary, folder, rounds, connections, client threads
  int warmup_s = 60;     // load on every server this long after they are started
};

// Modes: openssl, keysvc-epoch-faultmod (baseline_mode), keysvc-epoch-faultmod-slow.
// Scenarios: TLS 1.3 and 1.2, full and resumed, at options.tcp.server_threads' last
// count. HSM calls per handshake are the fault module's C_Sign count over the measured
// connections (the server process's every C_Sign, the background's included).
Section run_slow_hsm(const SlowHsmOptions& options, BenchEnv& env);

}  // namespace keysvc::bench
