#include "keysvc/rotation.h"

#include <algorithm>
#include <map>

#include "keysvc/token_store.h"

namespace keysvc {

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

RotationResult rotate(hsm::SessionPool& pool, std::int64_t now, const RotationPolicy& policy) {
  return pool.run([&](hsm::Session& session) {
    RotationPlan plan = plan_rotation(token_store::load(session), now, policy);
    RotationResult result;
    for (const Schedule& s : plan.create) result.created.push_back(token_store::create_generation(session, s, key_options(policy)));
    for (const KeyName& name : plan.destroy) {
      token_store::destroy_generation(session, name);
      result.destroyed.push_back(name);
    }
    for (const KeyName& name : plan.drop_revocations) token_store::drop_revocation(session, name);
    return result;
  });
}

bool revoke(hsm::SessionPool& pool, const KeyName& name, std::int64_t now, const RotationPolicy& policy) {
  return pool.run([&](hsm::Session& session) {
    KeyRing ring = token_store::load(session);
    const Generation* g = ring.find(name);
    if (g == nullptr) return false;
    bool was_encrypting = ring.encrypt_generation(now) == g;
    Schedule old = g->schedule;
    // Record first: a server that refreshes between the two steps already refuses it.
    if (!g->revoked) token_store::write_revocation(session, name, now, std::max(old.decrypt_until, now));
    token_store::destroy_generation(session, name);
    if (was_encrypting) {
      std::int64_t until = std::max(old.encrypt_until, now + 1);
      token_store::create_generation(session, Schedule{now, now, until, until + policy.decrypt_window.count()},
                                     key_options(policy));
    }
    return true;
  });
}

}  // namespace keysvc
