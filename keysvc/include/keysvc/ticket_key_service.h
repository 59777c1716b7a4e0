// The ticket key service: the one object a TLS integration talks to.
//
// It owns the session pool on the token and a snapshot of the key ring, and answers
// the two questions of the ticket path with per-ticket keys derived in the HSM:
//   issue: "which generation encrypts now, with what IV, and what are this ticket's keys?"
//   open:  "for this key name and IV, what are the ticket's keys, and should it be renewed?"
// Both are safe to call from any number of handshake threads at once, never throw, and
// never hand out long-term keys or object handles.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "keysvc/config.h"
#include "keysvc/derivation.h"
#include "keysvc/hsm/session_pool.h"
#include "keysvc/hsm_guard.h"
#include "keysvc/hsm/shared_snapshot.h"
#include "keysvc/issue_pool.h"
#include "keysvc/key_name.h"
#include "keysvc/key_ring.h"
#include "keysvc/session_key_cache.h"
#include "keysvc/usage.h"

namespace keysvc {

namespace audit {
class AuditTrail;
}

// Wall-clock source; injectable so tests can move time.
using Clock = std::function<std::chrono::system_clock::time_point()>;

// The keys for one new ticket.
struct IssueKeys {
  KeyName name{};
  Iv iv{};
  TicketKeys keys;
};

enum class OpenStatus {
  kOk,          // keys derived; generation still encrypts
  kOkRenew,     // keys derived; the ticket is under an older generation: renew it
  kUnknownKey,  // no generation has this name, even after a rescan
  kRetired,     // the generation is expired or revoked
  kHsmError,    // the token failed; serve a full handshake
};

struct ServiceCounters {
  std::uint64_t issued = 0;       // per-ticket keys handed out for new tickets
  std::uint64_t opened = 0;       // per-ticket keys handed out for presented tickets
  std::uint64_t unknown_key = 0;  // presented tickets whose key name is not in the ring
  std::uint64_t hsm_errors = 0;   // issue/open calls that failed in the token
  std::uint64_t hsm_calls = 0;    // PKCS#11 sign operations made for tickets
  std::uint64_t retired_key = 0;  // presented tickets under expired or revoked generations
  std::uint64_t rescans = 0;      // on-demand token rescans triggered by unknown key names
  std::uint64_t refreshes = 0;    // token rescans (periodic and on demand)
  std::uint64_t issued_from_pool = 0;  // of `issued`: taken from the pre-derived pool
  std::uint64_t module_restarts = 0;   // PKCS#11 module restarts after the HSM was gone
};

struct ForkHooks;

class TicketKeyService {
 public:
  // Loads the module, finds the token, logs in (the PIN is read from its source and
  // wiped) and loads the ring. If nothing encrypts and rotation.self_rotate or
  // tickets.create_if_empty is set, runs the rotator once. Then starts a background
  // thread that refreshes the ring every rotation.refresh_interval (rotating first if
  // rotation.self_rotate). Throws ConfigError / hsm::Pkcs11Error with one line.
  //
  // Fork safety (prefork servers, as nginx): the process may fork() while services are
  // open. pthread_atfork handlers stop each service's background threads before the fork
  // and restart them in the parent; in the child they first re-run C_Initialize, forget
  // the parent's sessions without closing them (a new session logs in again), rebuild
  // the HSM guard's workers and the session-copy cache, and wipe the pre-derived issue
  // pool (two processes must never issue with the same per-ticket keys). Fork only while
  // no other thread of the process is using the service (a prefork master forks before
  // it serves). [audit] stays with the parent: a child writes no audit records (open
  // keysvc after fork, as the nginx module does, to audit each worker).
  static std::shared_ptr<TicketKeyService> open(const Config& config, Clock clock = {});

  ~TicketKeyService();
  TicketKeyService(const TicketKeyService&) = delete;
  TicketKeyService& operator=(const TicketKeyService&) = delete;

  // Fills `out` for a new ticket: the encrypting generation's name, a fresh random IV
  // and the derived keys, taken from the pre-derived issue pool when it has an entry
  // for the encrypt generation (no HSM call), else derived now. Returns false (and
  // counts an HSM error) if there is no generation or the token fails.
  bool derive_for_issue(IssueKeys& out) noexcept;

  // Derives the keys of a presented ticket. An unknown name triggers a rescan of the
  // token, at most once per refresh_interval whatever the names presented, so a flood
  // of random names cannot multiply HSM calls.
  OpenStatus derive_for_open(const KeyName& name, const Iv& iv, TicketKeys& out) noexcept;

  // The name new tickets are issued under, if any.
  std::optional<KeyName> encrypt_key_name() const noexcept;

  // The current ring snapshot.
  std::shared_ptr<const KeyRing> ring() const noexcept { return ring_.load(); }

  // Rotates (if rotation.self_rotate), rescans the token and swaps in the new ring.
  // Throws on token failure.
  //
  // Module restarts (docs/RELIABILITY.md): when the breaker's probe fails with a code
  // saying the device is gone (CKR_DEVICE_REMOVED, CKR_DEVICE_ERROR,
  // CKR_TOKEN_NOT_PRESENT, CKR_CRYPTOKI_NOT_INITIALIZED, or a fresh session's
  // CKR_SESSION_HANDLE_INVALID / CKR_SESSION_CLOSED), the refresher thread restarts the
  // PKCS#11 module (hsm::Module::restart: C_Finalize + C_Initialize, only while keysvc
  // is the module's only user in the process) at most once per hsm.breaker_backoff,
  // then reloads the ring (a fresh session: the token found again by its URI, a login,
  // handles of the new generation). A network HSM's client (p11-kit-client.so) needs
  // this to reconnect after its server restarted. If the token is not back yet, the
  // next failed probe restarts again.
  void refresh();
  // Rescans the token and swaps in the new ring, without rotating.
  void reload();

  // Creates a generation that encrypts from now (or a second after the current one
  // began, if that is later) for one encrypt_period, and reloads. For tests and manual
  // intervention; scheduled generations come from the rotator.
  Generation create_generation();

  std::chrono::system_clock::time_point now() const { return clock_(); }
  std::int64_t unix_now() const;
  const Config& config() const noexcept { return config_; }
  hsm::SessionPool& sessions() noexcept { return *pool_; }
  // The session-copy cache's figures, or nullopt when hsm.session_copies is off.
  std::optional<SessionKeyCache::Stats> session_copy_stats() const {
    if (!session_copies_) return std::nullopt;
    return session_copies_->stats();
  }
  ServiceCounters counters() const noexcept;
  // The HSM guard's figures: breaker state, opens, probes, refusals, deadline overruns
  // (hsm_guard.h).
  HsmGuard::Counters hsm_guard_counters() const noexcept { return guard_->counters(); }

  // Per key name: tickets issued, resumed, renewed and rejected by reason (usage.h),
  // cumulative since open(). The service counts what it sees itself (issued, unknown
  // key, expired, revoked, HSM error on open); the TLS adapter reports the rest through
  // record(). Cheap enough to call per ticket; snapshot() takes no lock on the hot path.
  UsageSnapshot usage() const { return usage_.snapshot(); }
  // Counts an outcome only the TLS integration can see (resumed, renewed, MAC or decrypt
  // failure, max session age) for the ticket under `name`. Never throws.
  // With audit.per_handshake, also writes a handshake record.
  void record(const KeyName& name, TicketOutcome outcome) noexcept;
  // The audit trail (audit_trail.h), or nullptr when [audit] path is not set.
  audit::AuditTrail* audit_trail() noexcept { return audit_.get(); }

 private:
  TicketKeyService(Config config, Clock clock, std::unique_ptr<hsm::SessionPool> pool);
  friend struct ForkHooks;  // fork_hooks.cc: pthread_atfork handlers
  // The HSM guard and the session-copy cache (constructor, and again in a forked child).
  void make_hsm_helpers();
  // The refresher and refiller threads (open(), and after a fork in parent and child).
  void start_background();
  void stop_background() noexcept;
  // Fork (see open()): stops the threads before, restarts them after; in the child first
  // re-initialises the module, forgets the parent's sessions, rebuilds the guard and
  // cache, and wipes the issue pool.
  void pause_for_fork() noexcept;
  void resume_after_fork(bool in_child) noexcept;
  // Derives under generation `g` (non-null, of `ring`). If the token no longer knows the
  // ring's object handles (SoftHSM forgets them when an application's last session
  // closes; a token reset does the same), reloads the ring (throttled), points `ring` and
  // `g` at the new one and retries once.
  bool derive(std::shared_ptr<const KeyRing>& ring, const Generation*& g, const Iv& iv, TicketKeys& out) noexcept;
  // Reloads the ring unless `throttle` allowed a reload less than `interval` ago. If
  // another thread is reloading, waits for it. True when the ring may have changed
  // (look the name up again).
  struct Throttle {
    std::mutex mutex;
    std::atomic<std::chrono::steady_clock::rep> last{0};
    std::atomic<std::uint64_t> reloads{0};
  };
  bool throttled_reload(Throttle& throttle, std::chrono::milliseconds interval, const char* why) noexcept;
  std::chrono::milliseconds stale_handle_reload_interval() const noexcept;
  void refresher_loop();
  // Asks the refresher thread to restart the module (never blocks).
  void request_module_restart() noexcept;
  // On the refresher thread: restarts the module (rate-limited) and reloads the ring.
  void restart_module() noexcept;
  // Keeps the issue pool full for the encrypt generation (its own thread).
  void refiller_loop();
  void fill_issue_pool() noexcept;
  void request_refill() noexcept;

  Config config_;
  Clock clock_;
  std::unique_ptr<hsm::SessionPool> pool_;
  // Every ticket-path HSM operation runs through it (deadline + circuit breaker);
  // declared after pool_ so it stops (and waits out hung calls) before the pool goes.
  std::unique_ptr<HsmGuard> guard_;
  hsm::SharedSnapshot<const KeyRing> ring_;  // not std::atomic<shared_ptr>: see shared_snapshot.h
  std::unique_ptr<SessionKeyCache> session_copies_;  // null unless hsm.session_copies
  struct AtomicCounters {
    std::atomic<std::uint64_t> issued{0}, opened{0}, unknown_key{0}, hsm_errors{0}, hsm_calls{0}, retired_key{0},
        refreshes{0}, issued_from_pool{0};
  } counters_;

  UsageTable usage_;
  std::unique_ptr<audit::AuditTrail> audit_;  // null unless [audit] path; closed before pool_ goes

  Throttle unknown_name_rescans_;  // the negative cache for unknown key names
  Throttle stale_handle_reloads_;

  std::atomic<bool> stopping_{false};
  std::mutex refresher_mutex_;
  std::condition_variable refresher_wake_;
  bool restart_requested_ = false;  // under refresher_mutex_
  std::thread refresher_;
  // The refresher thread's own: when it last restarted the module, and how many
  // restarts in a row have not yet been followed by a ring reload (for the logs).
  std::chrono::steady_clock::time_point last_restart_{};
  unsigned restarts_without_reload_ = 0;
  std::atomic<std::uint64_t> module_restarts_{0};

  std::unique_ptr<IssueKeyPool> issue_pool_;  // null when tickets.issue_pool = 0
  std::mutex refill_mutex_;
  std::condition_variable refill_wake_;
  bool refill_requested_ = false;
  std::thread refiller_;
};

// Builds the session pool for `config` (module, token URI, PIN source) and logs in.
// Used by the service and by tools that manage the token. Throws ConfigError /
// hsm::Pkcs11Error.
std::unique_ptr<hsm::SessionPool> open_session_pool(const Config& config);

}  // namespace keysvc
