#include "keysvc/ticket_rules.h"

#include <algorithm>
#include <map>

namespace keysvc {

// ---------------------------------------------------------------- issuing

const Generation* KeyRing::encrypt_generation(std::int64_t now) const noexcept {
  const Generation* best = nullptr;
  for (const auto& g : generations_) {  // ascending (encrypt_from, name): ties keep the smaller name
    if (!g.usable() || g.schedule.encrypt_from > now || now >= g.schedule.decrypt_until) continue;
    if (best == nullptr || g.schedule.encrypt_from > best->schedule.encrypt_from) best = &g;
  }
  return best;
}

GenerationState KeyRing::state(const Generation& g, std::int64_t now) const noexcept {
  if (g.revoked) return GenerationState::kRevoked;
  if (!g.refused.empty()) return GenerationState::kRefused;
  if (now >= g.schedule.decrypt_until) return GenerationState::kExpired;
  if (&g == encrypt_generation(now)) return GenerationState::kActive;
  if (now < g.schedule.encrypt_from) return GenerationState::kPending;
  return GenerationState::kDecryptOnly;
}

// ---------------------------------------------------------------- opening

bool ticket_opens(const Generation& g, std::int64_t now, std::int64_t skew) noexcept {
  return g.usable() && now < g.schedule.decrypt_until + skew;
}

bool KeyRing::decrypts(const Generation& g, std::int64_t now, std::int64_t skew) noexcept {
  return ticket_opens(g, now, skew);
}

bool ticket_renews(const KeyRing& ring, const Generation& opened, std::int64_t now) noexcept {
  const Generation* current = ring.encrypt_generation(now);
  return current != nullptr && current->name != opened.name &&
         opened.schedule.encrypt_from <= current->schedule.encrypt_from;
}

bool session_young_enough(std::int64_t auth_time, std::int64_t now, std::int64_t max_session_age) noexcept {
  return now - auth_time <= max_session_age;
}

// ---------------------------------------------------------------- epochs

std::int64_t epoch_of(std::int64_t unix_seconds, std::int64_t epoch_seconds) noexcept {
  std::int64_t e = unix_seconds / epoch_seconds;
  if (unix_seconds % epoch_seconds < 0) --e;  // floor, also before 1970
  return e;
}

EpochRange ticket_epochs(const Generation& g, std::int64_t now, std::int64_t lifetime, std::int64_t skew) noexcept {
  if (!g.epoch_tier() || g.epoch_seconds <= 0) return {};
  const std::int64_t e = g.epoch_seconds;
  return {std::max(epoch_of(now - lifetime - skew, e), epoch_of(g.schedule.encrypt_from - skew, e)),
          std::min(epoch_of(now + skew, e), epoch_of(g.schedule.decrypt_until + skew, e))};
}

TicketEpoch check_ticket_epoch(const Generation& g, std::int64_t epoch, std::int64_t now, std::int64_t lifetime,
                               std::int64_t skew) noexcept {
  const EpochRange range = ticket_epochs(g, now, lifetime, skew);
  if (range.contains(epoch)) return TicketEpoch::kOpens;
  const bool after_encrypt_from = epoch >= epoch_of(g.schedule.encrypt_from - skew, g.epoch_seconds);
  return epoch < range.first && after_encrypt_from ? TicketEpoch::kTooOld : TicketEpoch::kImpossible;
}

EpochRange epochs_to_keep(const Generation& g, std::int64_t now, std::int64_t lifetime, std::int64_t skew) noexcept {
  if (!ticket_opens(g, now, skew)) return {};
  EpochRange keep = ticket_epochs(g, now, lifetime, skew);
  ++keep.last;  // the next epoch's key
  return keep;
}

std::vector<EpochToPrepare> epochs_to_prepare(const KeyRing& ring, std::int64_t now, std::int64_t skew) {
  std::vector<EpochToPrepare> out;
  auto add = [&](std::int64_t at) {
    const Generation* g = ring.encrypt_generation(at);
    if (g == nullptr || !g->epoch_tier() || g->epoch_seconds <= 0) return;
    const std::int64_t epoch = epoch_of(at, g->epoch_seconds);
    for (const auto& p : out)
      if (p.generation == g && p.epoch == epoch) return;
    out.push_back({g, epoch});
  };
  add(now);
  add(now + skew);
  if (const Generation* g = ring.encrypt_generation(now); g != nullptr && g->epoch_tier() && g->epoch_seconds > 0)
    add((epoch_of(now, g->epoch_seconds) + 1) * g->epoch_seconds);  // the next epoch's start
  return out;
}

// ---------------------------------------------------------------- rotation

RotationPlan plan_rotation(const KeyRing& ring, std::int64_t now, const RotationPolicy& policy) {
  const std::int64_t period = policy.encrypt_period.count();
  const std::int64_t lead = policy.publish_lead.count();
  const std::int64_t window = policy.decrypt_window.count();
  const std::int64_t skew = policy.clock_skew.count();
  RotationPlan plan;

  std::int64_t covered_until = 0;
  bool covers_now = false;
  for (const Generation& g : ring.generations()) {
    if (!g.usable()) continue;
    covered_until = std::max(covered_until, g.schedule.encrypt_until);
    covers_now = covers_now || (g.schedule.encrypt_from <= now && now < g.schedule.encrypt_until);
  }
  auto add = [&](std::int64_t from) {
    Schedule s{now, from, from + period, from + period + window};
    plan.create.push_back(s);
    covered_until = std::max(covered_until, s.encrypt_until);
  };
  if (!covers_now) add(now);
  while (covered_until - now < 2 * lead) add(covered_until);

  // Racing rotators: keep the generation every server picks for a window (the smallest
  // name), destroy the others while nobody can have used them yet.
  std::map<std::int64_t, std::vector<const Generation*>> pending_by_start;
  for (const Generation& g : ring.generations()) {
    if (g.usable() && g.schedule.encrypt_from > now + skew) pending_by_start[g.schedule.encrypt_from].push_back(&g);
  }
  for (auto& [start, same] : pending_by_start) {
    std::sort(same.begin(), same.end(), [](auto* a, auto* b) { return a->name < b->name; });
    for (std::size_t i = 1; i < same.size(); ++i) plan.destroy.push_back(same[i]->name);
  }

  for (const Generation& g : ring.generations()) {
    if (now < g.schedule.decrypt_until + skew) continue;
    if (g.has_keys()) plan.destroy.push_back(g.name);
    else if (g.revoked) plan.drop_revocations.push_back(g.name);
  }
  return plan;
}

Schedule schedule_encrypting_now(const KeyRing& ring, std::int64_t now, const RotationPolicy& policy) {
  std::int64_t from = now;
  if (const Generation* current = ring.encrypt_generation(now))
    from = std::max(now, current->schedule.encrypt_from + 1);
  const std::int64_t until = from + policy.encrypt_period.count();
  return Schedule{now, from, until, until + policy.decrypt_window.count()};
}

// ---------------------------------------------------------------- trusting a scan

bool scan_lost_every_generation(const KeyRing& before, const KeyRing& after, std::int64_t now) noexcept {
  // A ring with a usable generation was read from a token that answers: new generations
  // replacing every old one (an operator starting over) are a newer truth.
  for (const Generation& g : after.generations())
    if (g.usable()) return false;
  bool any_live = false;
  for (const Generation& g : before.generations()) {
    if (!g.usable() || now >= g.schedule.decrypt_until) continue;
    any_live = true;
    if (after.find(g.name) != nullptr) return false;
  }
  return any_live;
}

}  // namespace keysvc
