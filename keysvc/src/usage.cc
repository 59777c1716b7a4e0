#include "keysvc/usage.h"

#include <algorithm>
#include <map>
#include <set>

namespace keysvc {

namespace {

constexpr std::array<std::string_view, kTicketOutcomeCount> kOutcomeNames = {
    "issued", "resumed", "renewed", "unknown_key", "expired", "revoked", "mac_failure", "decrypt_failure",
    "hsm_error", "max_session_age", "bad_epoch"};

}  // namespace

std::string_view outcome_name(TicketOutcome outcome) { return kOutcomeNames[static_cast<std::size_t>(outcome)]; }

std::optional<TicketOutcome> outcome_from_name(std::string_view name) {
  for (std::size_t k = 0; k < kTicketOutcomeCount; ++k)
    if (kOutcomeNames[k] == name) return static_cast<TicketOutcome>(k);
  return std::nullopt;
}

std::uint64_t KeyUsage::rejected() const {
  std::uint64_t sum = 0;
  for (std::size_t k = kFirstRejection; k < kTicketOutcomeCount; ++k) sum += counters[k];
  return sum;
}

const KeyUsage* UsageSnapshot::find(const KeyName& name) const {
  auto it = std::lower_bound(keys.begin(), keys.end(), name, [](const KeyUsage& k, const KeyName& n) { return k.name < n; });
  return it != keys.end() && it->name == name ? &*it : nullptr;
}

UsageCounters UsageSnapshot::total() const {
  UsageCounters sum{};
  for (const auto& k : keys)
    for (std::size_t o = 0; o < kTicketOutcomeCount; ++o) sum[o] += k.counters[o];
  return sum;
}

UsageSnapshot usage_delta(const UsageSnapshot& now, const UsageSnapshot& before) {
  UsageSnapshot d;
  for (const auto& k : now.keys) {
    KeyUsage diff = k;
    bool changed = false;
    if (const KeyUsage* old = before.find(k.name)) {
      for (std::size_t o = 0; o < kTicketOutcomeCount; ++o)
        diff.counters[o] = k.counters[o] >= old->counters[o] ? k.counters[o] - old->counters[o] : k.counters[o];
    }
    for (auto n : diff.counters) changed = changed || n != 0;
    if (changed) d.keys.push_back(diff);
  }
  return d;
}

UsageTable::UsageTable() : index_(std::make_shared<const Index>()) {}

UsageTable::~UsageTable() = default;

void UsageTable::track(std::span<const KeyName> names) {
  std::lock_guard lock(track_mutex_);
  auto current = index_.load();
  std::set<KeyName> known;
  for (const auto& e : *current) known.insert(e.name);
  std::set<KeyName> wanted(names.begin(), names.end());
  bool missing = false;
  for (const auto& n : wanted) {
    if (known.count(n)) continue;
    missing = true;
    order_.push_back(n);
  }
  if (!missing) return;
  // Over the limit: forget the oldest names that are no longer in the ring.
  std::set<KeyName> dropped;
  for (auto it = order_.begin(); order_.size() - dropped.size() > kMaxTracked && it != order_.end(); ++it)
    if (!wanted.count(*it)) dropped.insert(*it);
  std::erase_if(order_, [&](const KeyName& n) { return dropped.count(n) > 0; });

  std::map<KeyName, std::shared_ptr<Counters>> entries;
  for (const auto& e : *current)
    if (!dropped.count(e.name)) entries.emplace(e.name, e.counters);
  for (const auto& n : wanted) entries.try_emplace(n, std::make_shared<Counters>());
  auto next = std::make_shared<Index>();
  next->reserve(entries.size());
  for (auto& [name, counters] : entries) next->push_back({name, std::move(counters)});
  index_.store(std::move(next));
}

UsageTable::Counters& UsageTable::untracked(const KeyName& name) noexcept {
  for (auto& slot : unknown_) {
    int state = slot.state.load(std::memory_order_acquire);
    if (state == 0) {
      int expected = 0;
      if (slot.state.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) {
        slot.name = name;
        slot.state.store(2, std::memory_order_release);
        return slot.counters;
      }
      state = expected;
    }
    while (state == 1) state = slot.state.load(std::memory_order_acquire);  // a claim takes nanoseconds
    if (slot.name == name) return slot.counters;
  }
  return overflow_;
}

void UsageTable::record(const KeyName& name, TicketOutcome outcome, std::uint64_t n) noexcept {
  auto index = index_.load();  // held while counting: a concurrent track() may drop the entry
  auto it = std::lower_bound(index->begin(), index->end(), name,
                             [](const Entry& e, const KeyName& k) { return e.name < k; });
  Counters& counters = it != index->end() && it->name == name ? *it->counters : untracked(name);
  counters.n[static_cast<std::size_t>(outcome)].fetch_add(n, std::memory_order_relaxed);
}

UsageSnapshot UsageTable::snapshot() const {
  auto read = [](const Counters& c) {
    UsageCounters out{};
    for (std::size_t o = 0; o < kTicketOutcomeCount; ++o) out[o] = c.n[o].load(std::memory_order_relaxed);
    return out;
  };
  auto add = [](UsageCounters& to, const UsageCounters& from) {
    for (std::size_t o = 0; o < kTicketOutcomeCount; ++o) to[o] += from[o];
  };
  std::map<KeyName, KeyUsage> merged;
  // Held in a local: in a range-for the temporary of `*index_.load()` would be released
  // before the loop, and a concurrent track() could free the entries being read.
  const auto index = index_.load();
  for (const auto& e : *index) merged[e.name] = KeyUsage{e.name, KeyUsage::Kind::kGeneration, read(*e.counters)};
  for (const auto& slot : unknown_) {
    if (slot.state.load(std::memory_order_acquire) != 2) continue;
    auto [it, fresh] = merged.try_emplace(slot.name, KeyUsage{slot.name, KeyUsage::Kind::kUnknown, {}});
    add(it->second.counters, read(slot.counters));  // a name seen unknown first, tracked later: one entry
  }
  UsageCounters overflow = read(overflow_);
  UsageSnapshot s;
  if (std::any_of(overflow.begin(), overflow.end(), [](auto n) { return n != 0; }))
    s.keys.push_back({KeyName{}, KeyUsage::Kind::kOverflow, overflow});
  for (auto& [name, usage] : merged) {
    if (!s.keys.empty() && s.keys.front().name == name) {  // the all-zero name also presented for real
      add(s.keys.front().counters, usage.counters);
      continue;
    }
    s.keys.push_back(usage);
  }
  return s;
}

TicketCounters::Snapshot TicketCounters::snapshot() const {
  Snapshot s;
  s.keys = keys_.snapshot();
  for (std::size_t k = 0; k < kTicketEventCount; ++k) s.events[k] = events_[k].load(std::memory_order_relaxed);
  return s;
}

}  // namespace keysvc
