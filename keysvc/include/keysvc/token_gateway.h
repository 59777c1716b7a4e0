// The token gateway: the one road from keysvc to the HSM.
//
// Everything keysvc asks of the token goes through here: per-ticket derivations, epoch
// key derivations, ring scans, rotation and revocation, custody reads, audit seals and
// every keysvcctl command. The gateway owns the PKCS#11 session pool privately (nobody
// else can lease a session) and gives every call
//   - a deadline: the caller waits at most the lane's timeout, then gets kTimedOut while
//     the call, which PKCS#11 cannot cancel, finishes on a worker thread (hsm_guard.h);
//     waiting for a free session counts against the deadline;
//   - the circuit breaker: ticket-lane calls are refused without touching the HSM while
//     it is open (one probe per hsm.breaker_backoff); maintenance-lane calls have their
//     own rate limits and bypass it;
//   - recovery: a call that shows the device is gone (or a login the token can no longer
//     do) asks for a module restart, which the owner of the maintenance thread carries
//     out with restart_module_if_requested().
//
// Because a call may outlive its caller's wait, work must own everything it touches:
// capture by value (shared_ptr for outputs), never references to the caller's stack.
// call() does that boxing for work that returns a value.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "keysvc/config.h"
#include "keysvc/hsm/error.h"
#include "keysvc/hsm/pin_source.h"
#include "keysvc/hsm/rescan.h"
#include "keysvc/hsm/session_pool.h"
#include "keysvc/hsm_guard.h"

namespace keysvc {

class TokenGateway {
 public:
  // Which rules a call follows.
  enum class Lane {
    kTicket,       // a handshake waits for it: hsm.call_timeout, behind the breaker
    kMaintenance,  // background and tool work: hsm.maintenance_timeout, bypasses the breaker
  };
  using Result = HsmGuard::Result;
  using Outcome = HsmGuard::Outcome;
  using Work = HsmGuard::Work;

  // Makes the process non-dumpable unless [process] core_dumps (hsm/process_hardening.h),
  // loads the module, finds the token by its URI and logs in (the PIN is read from `pin`
  // if given, else from the config's source, into secure memory). Throws ConfigError /
  // hsm::Pkcs11Error with one line.
  static std::unique_ptr<TokenGateway> open(const Config& config, std::optional<hsm::PinSource> pin = {});

  // The session pool open() builds (logged in), without a gateway around it: only for
  // tests and benchmarks that inspect or measure the token beside keysvc, as pkcs11-tool
  // would. keysvc itself never reaches the token this way.
  static std::unique_ptr<hsm::SessionPool> open_bare_pool(const Config& config,
                                                          std::optional<hsm::PinSource> pin = {});

  // Runs work(session) on a read-write session of `config`'s token that is NOT logged in
  // (public objects only), opened for this call and closed after it. For a writer whose
  // login failed (the audit trail's pending mark, audit_anchor.h): the token answered, so
  // the call runs on the caller's thread, like open(). Throws what the module or work
  // throws.
  static void with_public_session(const Config& config, const std::function<void(hsm::Session&)>& work);

  // Stops the workers, waiting for a call still in the module to return.
  ~TokenGateway();
  TokenGateway(const TokenGateway&) = delete;
  TokenGateway& operator=(const TokenGateway&) = delete;

  // Runs work(session) under the lane's rules. Never throws.
  Result run(Work work, Lane lane) noexcept;

  // Runs f(session) on the maintenance lane and returns its value; throws what f threw,
  // or hsm::Error when the call was refused or overran its deadline. f is copied into
  // the call and must own what it captures.
  template <class F>
  auto call(F f) -> decltype(f(std::declval<hsm::Session&>())) {
    using R = decltype(f(std::declval<hsm::Session&>()));
    if constexpr (std::is_void_v<R>) {
      rethrow_unless_ok(run([f = std::move(f)](hsm::Session& s) mutable { f(s); }, Lane::kMaintenance));
    } else {
      auto box = std::make_shared<std::optional<R>>();
      rethrow_unless_ok(
          run([f = std::move(f), box](hsm::Session& s) mutable { box->emplace(f(s)); }, Lane::kMaintenance));
      return std::move(**box);
    }
  }

  // Restarts the PKCS#11 module if a call asked for it (see the top of this file), at
  // most once per hsm.breaker_backoff; true if it did (the caller says so in its log).
  // For the maintenance thread (and tools between runs); never blocks longer than the
  // in-flight wait. Never throws.
  bool restart_module_if_requested() noexcept;
  // Asks for a module restart, as a call showing the device is gone does.
  void request_module_restart() noexcept;
  bool module_restart_requested() const noexcept { return restart_requested_.load(std::memory_order_relaxed); }
  // Called (from any thread, without locks held) when a restart is requested, so the
  // maintenance thread can wake up. Set once, before any call.
  void on_restart_requested(std::function<void()> wake) { wake_ = std::move(wake); }

  // Before a scan that must see other processes' changes (the ring store's, keysvcctl
  // rotate --every): on a token that shows them only after a re-initialise
  // (hsm::ModuleProfile::rescan_needs_reinitialize, tpm2-pkcs11), restarts the module if
  // the token may have changed (hsm/rescan.h). Calls arriving meanwhile wait at the
  // module's gate. True if it restarted (every handle read before is void). For the
  // thread that scans; never throws.
  bool prepare_for_scan() noexcept;

  // In a child process right after fork(): re-initialises the module (PKCS#11 state does
  // not survive fork), forgets the parent's sessions without closing them, and starts
  // new workers (the parent's are not in the child; their objects are leaked on
  // purpose). Only while no other thread of the child uses the gateway.
  void reset_after_fork() noexcept;

  // The module's generation (bumped by each restart; object handles of an earlier one are
  // void) and its call statistics.
  std::uint64_t module_generation() const noexcept;
  hsm::CallStats& call_stats() const noexcept;
  const hsm::Token& token() const noexcept { return pool_->token(); }
  std::size_t open_sessions() const { return pool_->open_sessions(); }

  struct Counters {
    HsmGuard::Counters guard;          // breaker, deadline overruns, quarantined sessions
    std::uint64_t module_restarts = 0;  // C_Finalize + C_Initialize done for recovery
  };
  Counters counters() const noexcept;
  const HsmGuard::Options& options() const noexcept { return options_; }

 private:
  TokenGateway(std::unique_ptr<hsm::SessionPool> pool, HsmGuard::Options options);
  static void rethrow_unless_ok(const Result& r);
  // Whether a failed call's code means the device (or the module's link to it) is gone.
  static bool device_gone(CK_RV rv) noexcept;
  void note(const Result& r) noexcept;

  std::unique_ptr<hsm::SessionPool> pool_;
  const HsmGuard::Options options_;
  std::unique_ptr<HsmGuard> guard_;  // after pool_: stops (waiting out hung calls) before it goes
  hsm::RescanPreparer rescan_;
  std::function<void()> wake_;
  std::atomic<bool> restart_requested_{false};
  std::mutex restart_mutex_;  // one restart at a time; guards last_restart_
  std::chrono::steady_clock::time_point last_restart_{};
  std::atomic<std::uint64_t> module_restarts_{0};
};

}  // namespace keysvc
