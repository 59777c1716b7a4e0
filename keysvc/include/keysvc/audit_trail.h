// The audit trail of one process: what keysvc writes to its audit log ([audit] in the
// config; the record format is audit_log.h, the whole story docs/AUDIT.md).
//
// Two kinds of writers, each with its own file and its own hash chain (two processes
// appending to one chain would break it):
//   kServer  a TicketKeyService (keysvc-tls-server, nginx, any integration): audit.path.
//            Holds an exclusive lock (on the file's lock file, kLockSuffix) while open;
//            a second server configured with the same file fails to start with one line
//            naming it. Processes that share one config (nginx workers, any prefork
//            server opening keysvc in each child) put {pid} in audit.path: it becomes the
//            writer's process ID, so each process writes its own file.
//   kTool    keysvcctl commands that change the token: audit.path with "-keysvcctl"
//            before the extension ("audit.jsonl" -> "audit-keysvcctl.jsonl"), or with
//            {pid} replaced by "keysvcctl" ("audit-{pid}.jsonl" -> the same name). Each
//            command takes the lock for its run (waiting up to 10 s for another keysvcctl).
// Verify each file (chain) on its own; report over all of them.
//
// What is written:
//   config_loaded        when the trail opens (the config file's path)
//   generation_created   generations created by this process or first seen by a server
//                        on a rescan (schedule and the token's custody attributes)
//   activated            a generation became the encrypt generation (seen on a rescan, or
//                        made by `keys generate` / a revocation's replacement)
//   epoch_key_derived    the token derived a generation's key for an epoch (epoch tier):
//                        generation name and epoch number
//   decrypt_only         the previous encrypt generation stopped encrypting
//   revoked, destroyed   revocation and destruction, by keysvcctl or observed on a rescan
//   generation_refused   a generation in the token that the custody check refused
//                        (key_custody.h), first seen by this process (its first ring too)
//   login_failed         the token refused the PIN (the URI without any pin-value)
//   hsm_error            failed PKCS#11 calls of this process (the module's CallStats,
//                        polled every second by the maintenance thread), at most one record
//                        per (function, return
//                        value) per kHsmErrorInterval; "count" is how many failed since the
//                        previous record of that pair. Return values that are answers
//                        rather than failures (CKR_ATTRIBUTE_SENSITIVE from a custody
//                        check, CKR_USER_ALREADY_LOGGED_IN, ...) are not recorded.
//   usage                per key name, the ticket outcomes since the last usage record
//                        (usage.h), every audit.summary_interval and at close
//   handshake            one per ticket outcome, only with audit.per_handshake
// The trail is a listener: of the ring store's installed rings (ring_changed; keysvcctl
// compares its scans before and after a command the same way) and of ticket outcomes
// (handshake). Its periodic work (seals, usage records, HSM error records) runs as tasks
// of a maintenance thread: schedule(). A seal that failed (the HSM away) is tried again
// after 1 s, 2 s, 4 s ... (at most 30 s apart), so what was written during an outage is
// sealed soon after the HSM is back.
// Each writer's chain is anchored in the token (audit_anchor.h, audit_log.h): reopening
// its file, a writer checks what follows the anchored seal before continuing. A writer
// whose login failed writes without sealing and names its records in the token's pending
// mark; the next writer with the token seals them (keysvcctl: any command that reaches
// the token, seal_pending_records()).
// Lifecycle events are written with append_durable(): on disk (fsync) before the call
// returns; a write failure throws, so a command never reports success without its record.
#pragma once

#include <p11-kit/pkcs11.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "keysvc/audit_log.h"
#include "keysvc/config.h"
#include "keysvc/hsm/call_stats.h"
#include "keysvc/key_ring.h"
#include "keysvc/maintenance.h"
#include "keysvc/token_gateway.h"
#include "keysvc/usage.h"

namespace keysvc::audit {

enum class Writer { kServer, kTool };

// What the audit trail compares between two loads of the ring.
struct RingState {
  std::map<KeyName, bool> revoked;  // every generation's name -> whether it is revoked
  std::set<KeyName> refused;        // generations the custody check refused
  std::optional<KeyName> encrypting;
  static RingState of(const KeyRing& ring, std::int64_t now);
};

// The writer's lock file is its log's path with this added (mode 0600, left in place).
inline constexpr std::string_view kLockSuffix = ".lock";

// In audit.path, replaced by the calling process's ID (decimal) wherever it appears.
inline constexpr std::string_view kPidPlaceholder = "{pid}";

// The file `writer` appends to under `config` (see above; {pid} is getpid() for kServer);
// empty when audit is off.
std::string log_path(const AuditConfig& config, Writer writer);

class AuditTrail {
 public:
  // How often one (operation, return value) pair of HSM errors is written at most.
  static constexpr std::chrono::seconds kHsmErrorInterval{60};

  // Opens the trail for `writer`, or returns nullptr if config.audit.path is empty.
  // `gateway` (may be null, e.g. after a failed login) gives the seal key: the audit key
  // is found or created in the token now (audit_key.h), and the file is checked against
  // its anchor (audit_log.h); without it nothing is sealed and the records are named in
  // the token's pending mark for the next writer with the token to seal. `usage` (servers)
  // is read by summarize() and at close for the usage records. Writes config_loaded.
  // Throws std::runtime_error (file, lock) or hsm::Error (token).
  static std::unique_ptr<AuditTrail> open(const Config& config, Writer writer, TokenGateway* gateway,
                                          std::function<UsageSnapshot()> usage = {});

  ~AuditTrail();  // close()
  AuditTrail(const AuditTrail&) = delete;
  AuditTrail& operator=(const AuditTrail&) = delete;

  // Durable lifecycle record (append_durable). Throws if it could not be written.
  void lifecycle(const Event& event);
  // generation_created for `g`, its custody read from the token through the gateway.
  void generation_created(const Generation& g);

  // Durably writes what changed from `before` to `after` (at `now`): generation_created
  // for new names (custody read through the gateway), decrypt_only for the previous
  // encrypt generation if it is still there unrevoked, activated for the new one,
  // revoked, destroyed (gone from the ring). Throws if a record could not be written.
  void record_changes(const RingState& before, const KeyRing& after, std::int64_t now);

  // The ring store's listener (servers): record_changes() from `before` to `after`. The
  // first call only takes note (those generations predate this process). Never throws:
  // failures go to the operational log.
  void ring_changed(const KeyRing& before, const KeyRing& after, std::int64_t now) noexcept;

  // `count` failures of `operation` with `rv` (rate-limited, see above). The trail records
  // the module's failed calls by itself (poll_hsm_errors); this is for failures seen
  // elsewhere. Never throws.
  void hsm_errors(std::string_view operation, std::string_view rv, std::uint64_t count = 1) noexcept;

  // An epoch_key_derived record (not fsync'ed: the next flush or seal carries it). Never
  // throws: failures go to the operational log.
  void epoch_key_derived(const KeyName& name, std::int64_t epoch) noexcept;

  // A handshake record, if audit.per_handshake. Never throws. Called for every ticket
  // outcome: inline, so with per_handshake off (the default) it costs one load and branch.
  void handshake(const KeyName& name, TicketOutcome outcome) noexcept {
    if (per_handshake_) append_handshake(name, outcome);
  }
  bool per_handshake() const noexcept { return per_handshake_; }

  // The periodic work (schedule()). Never throw: failures go to the operational log.
  void seal() noexcept;             // a seal if records were added since the last one
  void retry_seal() noexcept;       // seal() again if the last one failed and its backoff is over
  void summarize() noexcept;        // a usage record with the counts since the last one
  void poll_hsm_errors() noexcept;  // hsm_error records for the module's new failures

  // Final usage record, seal, close; idempotent, never throws.
  void close() noexcept;

  AuditLog& log() noexcept { return *log_; }
  const std::string& path() const noexcept { return path_; }

 private:
  AuditTrail() = default;
  UsageSummary take_usage();
  void append_handshake(const KeyName& name, TicketOutcome outcome) noexcept;
  // Writes the pending counts whose window has passed (all of them if `all`).
  void flush_hsm_errors(bool all) noexcept;

  std::string path_;
  int lock_fd_ = -1;
  bool per_handshake_ = false;
  TokenGateway* gateway_ = nullptr;
  std::function<UsageSnapshot()> usage_;
  std::mutex usage_mutex_;
  UsageSnapshot last_usage_;

  struct SealRetry {
    int failures = 0;  // consecutive failed seals
    std::chrono::steady_clock::time_point at{};
  };
  std::mutex retry_mutex_;
  SealRetry retry_;
  std::int64_t last_usage_ms_ = 0;

  std::mutex ring_mutex_;
  bool ring_seen_ = false;  // ring_changed() took note of the first ring

  struct ErrorWindow {
    std::optional<std::chrono::steady_clock::time_point> last;  // of the last record
    std::uint64_t pending = 0;                                  // failures not yet recorded
  };
  std::mutex errors_mutex_;
  std::map<std::pair<std::string, std::string>, ErrorWindow> errors_;
  const hsm::CallStats* stats_ = nullptr;  // the module's, when there is a gateway
  std::mutex seen_mutex_;  // poll_hsm_errors() runs on the maintenance thread and at close()
  std::map<std::pair<int, CK_RV>, std::uint64_t> stats_seen_;

  std::unique_ptr<AuditLog> log_;  // last: closed first
};

// Runs the periodic work of whatever trail `trail()` returns (it may return nullptr: a
// forked child has none) on `maintenance`: seals every audit.seal_interval, usage records
// every audit.summary_interval, HSM error records every second (0 intervals: only at
// close).
void schedule(Maintenance& maintenance, const AuditConfig& config, std::function<AuditTrail*()> trail);

// For a failed login before any pool exists: appends a durable login_failed record for
// the token of `config`, without a seal, and names it in the token's pending mark (a
// public object: the token answered, it only refused the login) so that the next writer
// with the token seals it and a deleted record shows. Never throws (a failure to write
// goes to the operational log); does nothing when audit is off.
void record_login_failure(const Config& config, Writer writer, std::string_view rv) noexcept;

// For a process that reached the token (keysvcctl, any command): if the token's pending
// mark names records of `writer`'s file, opens the trail (which seals them) and closes it.
// One search in the token otherwise. Never throws (failures go to the operational log);
// does nothing when audit is off.
void seal_pending_records(const Config& config, Writer writer, TokenGateway& gateway) noexcept;

// Whether `rv` means the token refused the PIN or the login (CKR_PIN_*, CKR_USER_*).
bool is_login_failure(CK_RV rv) noexcept;

}  // namespace keysvc::audit
