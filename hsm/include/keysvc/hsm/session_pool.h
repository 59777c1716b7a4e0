// A thread-safe pool of logged-in read-write sessions on one token.
//
// Sessions are leased RAII-style: a Lease returns its session to the pool when it goes
// out of scope, unless the session was marked dead. A session whose last call failed
// with CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED, CKR_USER_NOT_LOGGED_IN,
// CKR_DEVICE_REMOVED or CKR_TOKEN_NOT_PRESENT is closed and replaced, never reused.
// Idle sessions left from before a Module::restart() are dropped at the next lease().
//
// The pool keeps the PIN *source*, not the PIN: whenever a new session finds the user
// logged out (first use, or after a token reset) it reads the PIN, logs in and wipes it,
// through its LoginPolicy (login_policy.h): a PIN the token refused is not tried again
// until the source changes.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "keysvc/hsm/error.h"
#include "keysvc/hsm/login_policy.h"
#include "keysvc/hsm/pin_source.h"
#include "keysvc/hsm/session.h"
#include "keysvc/hsm/token.h"

namespace keysvc::hsm {

class SessionPool {
 public:
  // Opens no session yet: call lease() or run() (or warm_up()) to log in.
  SessionPool(Token token, PinSource pin, std::size_t max_sessions);
  ~SessionPool();
  SessionPool(const SessionPool&) = delete;
  SessionPool& operator=(const SessionPool&) = delete;

  class Lease {
   public:
    Lease(Lease&& other) noexcept : pool_(std::exchange(other.pool_, nullptr)), session_(std::move(other.session_)) {}
    Lease& operator=(Lease&&) = delete;
    ~Lease();
    Session& session() const noexcept { return *session_; }
    Session* operator->() const noexcept { return session_.get(); }
    // Closes the session instead of returning it to the pool.
    void discard() noexcept { session_.reset(); }

   private:
    friend class SessionPool;
    Lease(SessionPool* pool, std::unique_ptr<Session> session) : pool_(pool), session_(std::move(session)) {}
    SessionPool* pool_;
    std::unique_ptr<Session> session_;
  };

  // Leases an idle session, opens (and logs in) a new one if fewer than max_sessions
  // exist, or waits for one to come back until `deadline`. Throws Pkcs11Error /
  // ConfigError, and Error when no session came back in time (every session is leased
  // to calls that have not returned: a stalled HSM).
  using Deadline = std::chrono::steady_clock::time_point;
  static constexpr std::chrono::seconds kDefaultLeaseWait{10};
  Lease lease(Deadline deadline);
  Lease lease() { return lease(std::chrono::steady_clock::now() + kDefaultLeaseWait); }

  // Runs f(Session&) on a leased session. If f throws a Pkcs11Error that kills the
  // session, the session is discarded and f is retried once on a fresh session
  // (which logs in again if needed); any other error is rethrown as is.
  template <class F>
  auto run(F&& f) -> decltype(f(std::declval<Session&>())) {
    return run_leased([&](Lease& l) { return f(l.session()); },
                      std::chrono::steady_clock::now() + kDefaultLeaseWait);
  }
  // run() for callers that need the lease itself (to discard a session f used).
  template <class F>
  auto run_leased(F&& f, Deadline deadline) -> decltype(f(std::declval<Lease&>())) {
    for (int attempt = 0;; ++attempt) {
      Lease l = lease(deadline);
      try {
        return f(l);
      } catch (const Pkcs11Error& e) {
        if (!e.session_is_dead()) throw;
        l.discard();
        if (attempt > 0) throw;
      }
    }
  }

  // Opens and logs in one session now, so that bad PINs and missing tokens show up at
  // start-up rather than in the first handshake.
  void warm_up();

  // In a child process right after fork(): forgets every session without a PKCS#11 call
  // (their handles belong to the parent's module state; closing them from the child could
  // close the parent's sessions on a network HSM). The next lease() opens and logs in a
  // fresh session. Leases held at the time of the fork must never be returned.
  void forget_after_fork() noexcept;

  const Token& token() const noexcept { return token_; }
  std::size_t open_sessions() const;
  // Logins the token refused for a wrong, unusable or locked PIN (login_policy.h), and
  // the policy itself for its other counters.
  std::uint64_t login_refusals() const noexcept { return login_.refusals(); }
  const LoginPolicy& login_policy() const noexcept { return login_; }

 private:
  void give_back(std::unique_ptr<Session> session) noexcept;
  std::unique_ptr<Session> open_logged_in();

  Token token_;
  LoginPolicy login_;
  const std::size_t max_sessions_;
  mutable std::mutex mutex_;
  std::condition_variable returned_;
  std::vector<std::unique_ptr<Session>> idle_;
  std::size_t open_ = 0;  // idle + leased
};

}  // namespace keysvc::hsm
