// In-process TLS load for reliability tests: client threads that each do a full
// handshake and then resume with the ticket it brought (a fresh copy of the session),
// over and over, against one server SSL_CTX (real OpenSSL handshakes over BIO pairs).
//
// Results are counted per phase, so a test can say "while the fault lasted, N
// handshakes completed, none aborted" and "after the fault was cleared, the first
// resumption came after T":
//
//   HandshakeLoad load(server.get(), TLS1_3_VERSION, 2);
//   load.start();                              // phase 0
//   ... load.next_phase();                     // phase 1 (the fault)
//   ... load.next_phase();                     // phase 2 (recovery)
//   auto t = load.wait_for_resumption(2, 3s);  // time from phase 2's start, if any
//   load.stop();
//   PhaseCounts during = load.counts(1);
#pragma once

#include <openssl/ssl.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tls_pair.h"

namespace keysvc::test {

struct PhaseCounts {
  std::uint64_t handshakes = 0;       // completed handshakes (full + resumed)
  std::uint64_t full = 0;             // completed without resumption
  std::uint64_t resumed = 0;          // completed by resuming the offered ticket
  std::uint64_t resume_attempts = 0;  // handshakes that offered a ticket
  std::uint64_t aborted = 0;          // handshakes that failed (must stay 0)
  std::vector<std::string> errors;    // the first few failures, for messages
  std::chrono::milliseconds slowest{0};  // the longest handshake (wall time)
};

// The failures of `phases`, one indented line each, for messages.
std::string errors_text(std::initializer_list<const PhaseCounts*> phases);

class HandshakeLoad {
 public:
  static constexpr int kMaxPhases = 8;

  HandshakeLoad(SSL_CTX* server, int version, int threads);
  ~HandshakeLoad();  // stops
  HandshakeLoad(const HandshakeLoad&) = delete;
  HandshakeLoad& operator=(const HandshakeLoad&) = delete;

  void start();
  void stop();
  // Moves to the next phase; returns its number.
  int next_phase();
  PhaseCounts counts(int phase) const;

  // Waits until a resumption that started in `phase` completes, or `timeout` passes.
  // Returns the time from the phase's start to the end of that handshake.
  std::optional<std::chrono::milliseconds> wait_for_resumption(int phase, std::chrono::milliseconds timeout);

 private:
  void run();
  void record(int phase, const Handshake& h, bool offered, std::chrono::milliseconds took);

  SSL_CTX* server_;
  SslCtxPtr client_;
  int threads_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> phase_{0};
  std::vector<std::thread> workers_;
  mutable std::mutex mutex_;
  std::array<PhaseCounts, kMaxPhases> counts_{};
  std::array<std::chrono::steady_clock::time_point, kMaxPhases> phase_start_{};
  std::array<std::optional<std::chrono::steady_clock::time_point>, kMaxPhases> first_resumption_{};
};

}  // namespace keysvc::test
