// The ticket key service: the one object a TLS integration talks to.
//
// It answers the two questions of the ticket path with per-ticket keys:
//   issue: "which generation encrypts now, with what IV, and what are this ticket's keys?"
//   open:  "for this key name and IV, what are the ticket's keys, and should it be renewed?"
// Both are safe to call from any number of handshake threads at once, never throw, and
// never hand out long-term keys or object handles.
//
// It is a thin front over these parts, each in its own file:
//   TokenGateway  (token_gateway.h)  the one road to the HSM: deadlines, breaker, restarts
//   RingStore     (ring_store.h)     the key ring and the scans that replace it
//   KeyDeriver    (key_deriver.h)    a generation's keys through the gateway: per ticket
//                                    (strict tier) or per epoch, cached (epoch tier)
//   Maintenance   (maintenance.h)    the one background thread: refresh and rotation,
//                                    module restarts, issue pool refills, audit seals
//   TicketCounters (usage.h)         the one counter set every metric is computed from
// and the audit trail (audit_trail.h), which listens to ring changes and ticket outcomes.
// The rules it applies (which generation encrypts, what opens, what renews) are in
// ticket_rules.h.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

// Installed (packaging/CMakeLists.txt): this header and what it includes are the C++ API,
// so it includes none of the parts below; they are declared only.
#include "keysvc/config.h"
#include "keysvc/hsm/pin_source.h"
#include "keysvc/key_name.h"
#include "keysvc/key_ring.h"
#include "keysvc/ticket_keys.h"
#include "keysvc/usage.h"

namespace keysvc {

namespace audit {
class AuditTrail;
}
class TokenGateway;
class RingStore;
class Maintenance;
class IssueKeyPool;
class SessionKeyCache;
class KeyDeriver;
struct RescanThrottle;
struct ForkHooks;

// Wall-clock source; injectable so tests can move time.
using Clock = std::function<std::chrono::system_clock::time_point()>;

// How open() gets what the config does not give.
struct OpenOptions {
  Clock clock;  // empty: the system clock
  // The user PIN, read by someone else (a prefork server's privileged master reads it at
  // configuration time, so its unprivileged workers never read the PIN file). Replaces
  // the config's PIN source.
  std::optional<hsm::PinSource> pin;
};

// The keys for one new ticket.
struct IssueKeys {
  KeyName name{};
  Iv iv{};
  TicketKeys keys;
  void wipe() noexcept { keys.wipe(); }  // name and IV are sent in the ticket
};

enum class OpenStatus {
  kOk,          // keys derived; generation still encrypts
  kOkRenew,     // keys derived; the ticket is under an older generation: renew it
  kUnknownKey,  // no generation has this name, even after a rescan, or it is refused (key_custody.h)
  kRetired,     // the generation is expired or revoked
  kHsmError,    // the token failed; serve a full handshake
};

// The service's figures, computed from its one counter set and its parts (metrics.h).
struct ServiceCounters {
  std::uint64_t issued = 0;       // per-ticket keys handed out for new tickets
  std::uint64_t opened = 0;       // per-ticket keys handed out for presented tickets
  std::uint64_t unknown_key = 0;  // presented tickets whose key name is not in the ring
  std::uint64_t hsm_errors = 0;   // issue/open/scan operations that failed in the token
  std::uint64_t hsm_calls = 0;    // PKCS#11 sign operations made for tickets
  std::uint64_t retired_key = 0;  // presented tickets under expired or revoked generations
  std::uint64_t rescans = 0;      // on-demand token rescans triggered by unknown key names
  std::uint64_t refreshes = 0;    // token scans (periodic and on demand)
  std::uint64_t issued_from_pool = 0;  // of `issued`: taken from the pre-derived pool
  std::uint64_t module_restarts = 0;   // PKCS#11 module restarts after the HSM was gone
  std::uint64_t scans_not_used = 0;    // scans that failed or lost every generation
  std::uint64_t epoch_keys_derived = 0;  // epoch keys computed in the token (epoch tier)
  bool ring_stale = false;             // the last scan was not used (ring_store.h)
};

class TicketKeyService {
 public:
  // Loads the module, finds the token, logs in (the PIN is read from its source and
  // wiped) and loads the ring. If nothing encrypts and rotation.self_rotate or
  // tickets.create_if_empty is set, runs the rotator once. Then starts the maintenance
  // thread. Throws ConfigError / hsm::Pkcs11Error with one line.
  //
  // Fork safety (prefork servers, as nginx): the process may fork() while services are
  // open. pthread_atfork handlers stop each service's maintenance thread before the fork
  // and restart it in the parent; in the child they first re-initialise the module (in a
  // new module generation: the parent's handles are void), forget the parent's sessions
  // without closing them (a new session logs in again), read the ring again, and wipe
  // the pre-derived issue pool (two processes must never issue with the same
  // per-ticket keys). Fork only while no other thread of the process is using the
  // service (a prefork master forks before it serves). [audit] stays with the parent: a
  // child writes no audit records (open keysvc after fork, as the nginx module does, to
  // audit each worker).
  static std::shared_ptr<TicketKeyService> open(const Config& config, OpenOptions options);
  static std::shared_ptr<TicketKeyService> open(const Config& config, Clock clock = {}) {
    return open(config, OpenOptions{std::move(clock), std::nullopt});
  }

  ~TicketKeyService();  // stop_background()
  TicketKeyService(const TicketKeyService&) = delete;
  TicketKeyService& operator=(const TicketKeyService&) = delete;

  // Fills `out` for a new ticket: the encrypting generation's name, a fresh random IV
  // and the derived keys, taken from the pre-derived issue pool when it has an entry
  // for the encrypt generation (no HSM call), else derived now. Returns false (and
  // counts it) if there is no generation or the token fails.
  bool derive_for_issue(IssueKeys& out) noexcept;

  // Derives the keys of a presented ticket. An unknown name asks for a rescan of the
  // token, at most once per refresh_interval whatever the names presented, so a flood
  // of random names cannot multiply HSM calls.
  OpenStatus derive_for_open(const KeyName& name, const Iv& iv, TicketKeys& out) noexcept;

  // The name new tickets are issued under, if any.
  std::optional<KeyName> encrypt_key_name() const noexcept;

  // The current ring snapshot.
  std::shared_ptr<const KeyRing> ring() const noexcept;

  // Rotates (if rotation.self_rotate), then scans the token. Throws hsm::Error if the
  // scan was not used (failed, or lost every generation: ring_store.h).
  void refresh();
  // Scans the token and installs the ring; throws as refresh().
  void reload();

  // Stops the maintenance thread (rescans, rotation, epoch keys ahead, pool refills, audit
  // seals) and closes the audit trail (final usage record and seal). For a process about
  // to exit while something that is never freed still holds the service (a web server
  // worker's SSL_CTXs): keysvc's thread must not run on into the exit handlers that tear
  // down what it uses (OpenSSL's atexit cleanup, the PKCS#11 module's static objects).
  // Tickets are still issued and opened afterwards, on the callers' threads, from the
  // last ring. Idempotent; the destructor calls it.
  void stop_background() noexcept;

  // Creates a generation that encrypts from now (or a second after the current one
  // began, if that is later) for one encrypt_period, and reloads. For tests and manual
  // intervention; scheduled generations come from the rotator.
  Generation create_generation();

  std::chrono::system_clock::time_point now() const { return clock_(); }
  std::int64_t unix_now() const;
  const Config& config() const noexcept { return config_; }

  ServiceCounters counters() const noexcept;
  // The one counter set: per key name and process-wide ticket events (usage.h).
  TicketCounters::Snapshot ticket_counters() const { return counters_.snapshot(); }
  UsageSnapshot usage() const { return counters_.usage(); }
  // Counts an outcome only the TLS integration can see (resumed, renewed, MAC or decrypt
  // failure, max session age) for the ticket under `name`. Never throws.
  // With audit.per_handshake, also writes a handshake record.
  void record(const KeyName& name, TicketOutcome outcome) noexcept;
  // Counts a ticket event that belongs to no key name (usage.h). Never throws.
  void count(TicketEvent event) noexcept { counters_.count(event); }

  // The parts, for tools, metrics and tests (internal API: their headers are not
  // installed).
  TokenGateway& gateway() noexcept { return *gateway_; }
  RingStore& rings() noexcept { return *rings_; }
  KeyDeriver& deriver() noexcept { return *deriver_; }
  // The session-copy cache (hsm.session_copies), or nullptr.
  SessionKeyCache* session_copies() noexcept { return session_copies_.get(); }
  // The audit trail (audit_trail.h), or nullptr when [audit] path is not set.
  audit::AuditTrail* audit_trail() noexcept { return audit_.get(); }

 private:
  TicketKeyService(Config config, Clock clock, std::unique_ptr<TokenGateway> gateway);
  friend struct ForkHooks;  // fork_hooks.cc: pthread_atfork handlers
  void pause_for_fork() noexcept;
  void resume_after_fork(bool in_child) noexcept;

  // Registers the maintenance tasks and the ring listeners (open()).
  void wire();
  // What the ring store's listeners do with a newly installed ring.
  void ring_installed(const KeyRing& before, const KeyRing& after, std::int64_t now) noexcept;
  // Maintenance tasks.
  void refresh_task();
  void restart_task();
  void fill_issue_pool() noexcept;

  Config config_;
  Clock clock_;
  TicketCounters counters_;
  std::unique_ptr<SessionKeyCache> session_copies_;  // null unless hsm.session_copies; outlives the gateway's calls
  std::unique_ptr<TokenGateway> gateway_;
  std::unique_ptr<RingStore> rings_;
  std::unique_ptr<IssueKeyPool> issue_pool_;  // null when tickets.issue_pool = 0
  std::unique_ptr<audit::AuditTrail> audit_;  // null unless [audit] path
  std::unique_ptr<KeyDeriver> deriver_;       // holds the epoch keys
  std::unique_ptr<Maintenance> maintenance_;  // last: stopped first
  std::size_t scan_task_ = 0, restart_task_ = 0, refill_task_ = 0, epoch_task_ = 0;
  unsigned restarts_without_scan_ = 0;  // the maintenance thread's: for the log
  std::unique_ptr<RescanThrottle> unknown_name_rescans_;  // never null
};

}  // namespace keysvc
