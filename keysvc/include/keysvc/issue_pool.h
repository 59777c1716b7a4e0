// A small pool of per-ticket keys derived ahead of time for the encrypt generation, so
// that issuing a ticket makes no HSM call while the pool has entries.
//
// Each entry is one future ticket's key name, IV and derived keys (derived in the HSM
// like any other). An entry is handed out once and wiped as it leaves the pool; the
// pool only holds entries of one generation and is wiped whole when the encrypt
// generation changes. Exposure: up to `capacity` unused per-ticket keys sit in process
// memory until used (never long-term keys). tickets.issue_pool = 0 turns it off.
#pragma once

#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>

#include "keysvc/key_name.h"

namespace keysvc {

struct IssueKeys;

class IssueKeyPool {
 public:
  explicit IssueKeyPool(std::size_t capacity);
  ~IssueKeyPool();
  IssueKeyPool(const IssueKeyPool&) = delete;
  IssueKeyPool& operator=(const IssueKeyPool&) = delete;

  // Moves an entry for generation `name` into `out` (the pool's copy is wiped).
  // False if the pool has none for that generation.
  bool take(const KeyName& name, IssueKeys& out) noexcept;

  // Adds an entry. Entries of any other generation are wiped first: the pool follows
  // the encrypt generation. False (entry wiped) if the pool is full.
  bool put(std::unique_ptr<IssueKeys> entry) noexcept;

  // How many entries the pool lacks for generation `name`.
  std::size_t missing(const KeyName& name) const noexcept;

  // Wipes every entry.
  void clear() noexcept;

  std::size_t capacity() const noexcept { return capacity_; }
  std::size_t size() const noexcept;

 private:
  const std::size_t capacity_;
  mutable std::mutex mutex_;
  std::deque<std::unique_ptr<IssueKeys>> entries_;  // all of one generation
};

}  // namespace keysvc
