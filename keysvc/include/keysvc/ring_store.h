// The ring store: the key ring a process uses, and the scans that replace it.
//
// The ring is an immutable snapshot (key_ring.h) that handshakes read without locks worth
// the name (hsm::SharedSnapshot). Scans read the token through the gateway's maintenance
// lane and are serialised: a scan starts only after the previous one has installed its
// ring, so a newer scan always wins and an older ring is never installed over a newer one.
//
// A scan is installed only if it is a newer truth:
//   - a scan that failed (a PKCS#11 error, a deadline) keeps the last good ring;
//   - a scan that lost every live generation at once (ticket_rules.h, "Trusting a
//     scan") is taken for an outage and keeps the last good ring too.
// Either makes the store stale: said once in the log when it starts and once when a
// scan is good again, and counted (counters(): failed and suspect scans, stale).
// Listeners (the audit trail, the issue pool, usage tracking, the epoch key cache) hear only of
// installed rings, so nobody acts on a scan that was not believed.
//
// Scans run on the maintenance thread (periodic refreshes, and rescans requested by
// handshakes that met an unknown key name or stale handles: wait_for_scan()) and at
// open(); scan() is also safe from any other thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "keysvc/hsm/shared_snapshot.h"
#include "keysvc/key_custody.h"
#include "keysvc/key_ring.h"
#include "keysvc/token_gateway.h"

namespace keysvc {

class SessionKeyCache;

class RingStore {
 public:
  using UnixClock = std::function<std::int64_t()>;
  // Called after a ring is installed, on the scanning thread: (previous, installed, now).
  // Listeners must not call scan().
  using Listener = std::function<void(const KeyRing& before, const KeyRing& after, std::int64_t now)>;

  // `session_copies` (may be null; hsm.session_copies) gets every scanned ring to attach
  // this process's session-object copies. `skew` is rotation.clock_skew in seconds.
  // `custody` is what keys found in the token must be (key_custody.h, custody_rule_of).
  RingStore(TokenGateway& gateway, UnixClock now, std::int64_t skew, SessionKeyCache* session_copies,
            CustodyRule custody = {});

  // The ring in use. Cheap; safe from any thread.
  std::shared_ptr<const KeyRing> current() const { return ring_.load(); }

  // Adds a listener. Before the first scan that may install (open()).
  void listen(Listener listener);

  enum class ScanResult { kInstalled, kFailed, kSuspect };
  // Reads the token and installs the ring if it is a newer truth (see above). Waits for a
  // scan in progress to finish first. Never throws.
  ScanResult scan() noexcept;

  // The number of scans finished so far (installed or not), for wait_for_scan().
  std::uint64_t scans_finished() const;
  // Waits until more than `seen` scans have finished, or until `deadline`; true if one did.
  bool wait_for_scan(std::uint64_t seen, std::chrono::steady_clock::time_point deadline) const;

  // Whether a scan is under way now.
  bool scanning() const noexcept { return scanning_.load(std::memory_order_relaxed); }

  // Whether the last scan was not installed (failed or suspect).
  bool stale() const;

  struct Counters {
    std::uint64_t scans = 0;      // scans finished
    std::uint64_t installed = 0;  // of them, installed
    std::uint64_t failed = 0;     // of them, failed in the token
    std::uint64_t suspect = 0;    // of them, lost every live generation
    bool stale = false;           // the last scan was not installed
  };
  Counters counters() const;

 private:
  void finish(ScanResult result, const std::string& why) noexcept;

  TokenGateway& gateway_;
  UnixClock now_;
  const std::int64_t skew_;
  SessionKeyCache* session_copies_;
  const CustodyRule custody_;
  hsm::SharedSnapshot<const KeyRing> ring_;
  std::vector<Listener> listeners_;

  std::mutex scan_mutex_;  // one scan at a time, installed in the order they ran
  std::atomic<bool> scanning_{false};
  mutable std::mutex state_mutex_;
  mutable std::condition_variable scanned_;
  Counters counters_;  // under state_mutex_
};

}  // namespace keysvc
