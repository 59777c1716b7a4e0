// keysvc's one counter set: what happened to the tickets under each key name (UsageTable),
// plus the few process-wide events that belong to no key name (TicketCounters). Every
// metric family (keysvc_tickets_total, keysvc_service_*, keysvc_tls_tickets_total; the
// audit log's usage records; keysvc::openssl::counters()) is computed from it, so they
// cannot disagree (docs/METRICS.md).
//
// One TicketCounters per TicketKeyService (TicketKeyService::usage() / record()). Counters are
// cumulative since the service opened (monotonic: fit for Prometheus counters); the audit
// log's periodic "usage" records are the differences between two snapshots
// (usage_delta()).
//
// What is counted, per key name (the 16-byte name every ticket starts with):
//   kIssued          per-ticket keys handed out for a new ticket (derive_for_issue)
//   kResumed         a presented ticket was decrypted and accepted (the adapter reports it:
//                    only OpenSSL knows the MAC and decryption went through)
//   kRenewed         of kResumed: the ticket was replaced because its generation is older
//                    than the encrypt generation (TLS 1.3 resumptions always get a fresh
//                    ticket; that one is counted under kIssued, not here)
//   kUnknownKey      no generation has the name, even after a rescan
//   kExpired         the generation's decrypt window is over
//   kRevoked         the generation was revoked
//   kMacFailure      keysvc derived the keys, then OpenSSL rejected the ticket
//                    (SSL_TICKET_NO_DECRYPT): see adapters/openssl ticket_adapter.h
//   kDecryptFailure  the ticket decrypted, but keysvc's record inside it is missing or
//                    malformed, or the derived keys could not be set up in OpenSSL
//   kHsmError        the token failed while deriving the keys
//   kMaxSessionAge   the original full handshake is older than tickets.max_session_age
// A rejected ticket is counted under exactly one reason; kRenewed is part of kResumed.
//
// Memory is bounded whatever clients present:
//   - every generation the service loads is tracked (track()); up to kMaxTracked names
//     are kept, those no longer in the ring dropped oldest first;
//   - names nobody tracks (random or foreign key names, destroyed generations) get a slot
//     of their own for the first kMaxUnknownNames distinct names; every further one is
//     counted together under the all-zero name (KeyUsage::Kind::kOverflow).
//
// Cost on the hot path (record()): one atomic shared_ptr load, a binary search over the
// tracked names and one relaxed atomic add; untracked names scan kMaxUnknownNames slots.
// No lock, no allocation. Thread-safe throughout.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "keysvc/hsm/shared_snapshot.h"
#include "keysvc/key_name.h"

namespace keysvc {

// What happened to a ticket. kIssued/kResumed/kRenewed succeed; the rest are rejections.
enum class TicketOutcome {
  kIssued,
  kResumed,
  kRenewed,
  kUnknownKey,
  kExpired,
  kRevoked,
  kMacFailure,
  kDecryptFailure,
  kHsmError,
  kMaxSessionAge,
};
inline constexpr std::size_t kTicketOutcomeCount = 10;
// The first rejection reason: outcomes from here on are rejections.
inline constexpr std::size_t kFirstRejection = static_cast<std::size_t>(TicketOutcome::kUnknownKey);

// "issued", "resumed", "renewed", "unknown_key", "expired", "revoked", "mac_failure",
// "decrypt_failure", "hsm_error", "max_session_age" (the audit log's and metrics' names).
std::string_view outcome_name(TicketOutcome outcome);
std::optional<TicketOutcome> outcome_from_name(std::string_view name);

using UsageCounters = std::array<std::uint64_t, kTicketOutcomeCount>;  // indexed by TicketOutcome

struct KeyUsage {
  enum class Kind {
    kGeneration,  // a generation the service loaded from the token (now or earlier)
    kUnknown,     // a name no loaded generation had when it was presented
    kOverflow,    // every untracked name beyond the first kMaxUnknownNames (name 00..00)
  };
  KeyName name{};
  Kind kind = Kind::kGeneration;
  UsageCounters counters{};
  std::uint64_t rejected() const;  // sum of the rejection reasons
};

// Cumulative counters of every tracked and presented name, ordered by name (the overflow
// entry, if any, first: its name is all zeros).
struct UsageSnapshot {
  std::vector<KeyUsage> keys;
  // Counters of `name`, or nullptr if it has none.
  const KeyUsage* find(const KeyName& name) const;
  // Sum over every key name.
  UsageCounters total() const;
};

// `now` minus `before`, per name; names whose counters did not change are left out.
UsageSnapshot usage_delta(const UsageSnapshot& now, const UsageSnapshot& before);

class UsageTable {
 public:
  static constexpr std::size_t kMaxTracked = 256;
  static constexpr std::size_t kMaxUnknownNames = 16;

  UsageTable();
  ~UsageTable();
  UsageTable(const UsageTable&) = delete;
  UsageTable& operator=(const UsageTable&) = delete;

  // Makes sure each of `names` (the generations of a freshly loaded ring) has counters.
  // Names no longer in `names` keep theirs until kMaxTracked is reached. Takes a lock;
  // called on ring reloads, never per ticket.
  void track(std::span<const KeyName> names);

  // Counts `n` tickets with `outcome` under `name`. Never throws, never allocates.
  void record(const KeyName& name, TicketOutcome outcome, std::uint64_t n = 1) noexcept;

  UsageSnapshot snapshot() const;

 private:
  struct Counters {
    std::array<std::atomic<std::uint64_t>, kTicketOutcomeCount> n{};
  };
  struct Entry {
    KeyName name;
    std::shared_ptr<Counters> counters;
  };
  // Immutable once published; sorted by name.
  using Index = std::vector<Entry>;
  struct UnknownSlot {
    std::atomic<int> state{0};  // 0 free, 1 being claimed, 2 name set
    KeyName name{};
    Counters counters;
  };

  Counters& untracked(const KeyName& name) noexcept;

  std::mutex track_mutex_;
  std::vector<KeyName> order_;  // tracked names, oldest first (for dropping)
  hsm::SharedSnapshot<const Index> index_;  // not std::atomic<shared_ptr>: see shared_snapshot.h
  std::array<UnknownSlot, kMaxUnknownNames> unknown_;
  Counters overflow_;
};

// Events of the ticket path that belong to no key name.
enum class TicketEvent {
  kIssueFailed,       // a full handshake got no ticket (no generation, HSM failure)
  kIssuedFromPool,    // of the issued tickets: keys taken from the pre-derived pool
  kOpened,            // per-ticket keys derived for presented tickets
  kHsmErrors,         // issue, open and scan operations that failed in the token
  kHsmSignCalls,      // HMAC sign operations started in the token for tickets
  kRescans,           // token rescans asked for by unknown key names
  kRejectedUnopened,  // tickets OpenSSL refused before asking keysvc (too short)
  kEmptyTicket,       // TLS 1.2 clients asking for a ticket without presenting one
  kPushed,            // tickets pushed to long-lived connections after a rotation
  kOverCap,           // tickets beyond the per-connection cap, refused without HSM work
};
inline constexpr std::size_t kTicketEventCount = 10;

class TicketCounters {
 public:
  // Per key name (see UsageTable). Never throws, never allocates.
  void record(const KeyName& name, TicketOutcome outcome, std::uint64_t n = 1) noexcept {
    keys_.record(name, outcome, n);
  }
  void count(TicketEvent event, std::uint64_t n = 1) noexcept {
    events_[static_cast<std::size_t>(event)].fetch_add(n, std::memory_order_relaxed);
  }
  // Makes sure the generations of a freshly loaded ring have counters (UsageTable::track).
  void track(std::span<const KeyName> names) { keys_.track(names); }

  struct Snapshot {
    UsageSnapshot keys;
    std::array<std::uint64_t, kTicketEventCount> events{};
    std::uint64_t operator[](TicketEvent e) const { return events[static_cast<std::size_t>(e)]; }
    // Sum over every key name of `outcome`.
    std::uint64_t total(TicketOutcome outcome) const { return keys.total()[static_cast<std::size_t>(outcome)]; }
  };
  Snapshot snapshot() const;
  UsageSnapshot usage() const { return keys_.snapshot(); }

 private:
  UsageTable keys_;
  std::array<std::atomic<std::uint64_t>, kTicketEventCount> events_{};
};

}  // namespace keysvc
