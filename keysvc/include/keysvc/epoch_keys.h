// The epoch key cache: this process's keys of the epoch tier (derivation.h), one per
// generation and epoch, derived in the token and held here for the ticket path.
//
// Custody: each key lives in secure memory (hsm/secure_memory.h: mlock()ed, left out of
// core dumps, zeros in a forked child); it is wiped when it leaves the cache (retain(),
// clear()) and the last handshake using it lets go. A process never holds more than the
// ticket rules allow (ticket_rules.h, "Epochs": at most about lifetime / epoch + 2 per
// generation), because the service retains only the epochs tickets may still come from,
// and drops every key of a generation that was revoked, expired or left the ring at the
// ring's next install. Keys never appear in logs, metrics or audit records (the audit
// trail records that an epoch key was derived: generation name and epoch number).
//
// Lookups take a short lock and return a shared reference: per-ticket derivation then
// runs without the lock. Thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include "keysvc/derivation.h"
#include "keysvc/key_name.h"

namespace keysvc {

class EpochKeyCache {
 public:
  using Key = std::shared_ptr<const EpochKey>;

  // The key of (`name`, `epoch`), or nullptr.
  Key find(const KeyName& name, std::int64_t epoch) const;
  // Adds (or replaces) the key of (`name`, `epoch`).
  void put(const KeyName& name, std::int64_t epoch, Key key);
  // Drops (wipes, once no handshake uses them) every key for which `keep` is false.
  void retain(const std::function<bool(const KeyName& name, std::int64_t epoch)>& keep);
  // Drops every key. In a forked child (fork_hooks.cc) the memory already reads as zeros.
  void clear() noexcept;
  std::size_t size() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<KeyName, std::int64_t>, Key> keys_;
};

}  // namespace keysvc
