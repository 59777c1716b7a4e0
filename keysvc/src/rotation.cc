#include "keysvc/rotation.h"

#include <algorithm>
#include <string>

#include "keysvc/hsm/error.h"

#include "keysvc/token_store.h"

namespace keysvc {

RotationResult rotate(TokenGateway& gateway, std::int64_t now, const RotationPolicy& policy,
                      std::shared_ptr<const KeyRing> last_good) {
  return gateway.call([now, policy, last_good](hsm::Session& session) {
    KeyRing ring = token_store::load(session, {.copyable_allowed = policy.copyable_keys});
    if (last_good && scan_lost_every_generation(*last_good, ring, now))
      throw hsm::Error("the token shows none of the " + std::to_string(last_good->generations().size()) +
                       " generation(s) it held: taken for an outage, nothing rotated");
    RotationPlan plan = plan_rotation(ring, now, policy);
    RotationResult result;
    for (const Schedule& s : plan.create)
      result.created.push_back(token_store::create_generation(session, s, key_options(policy)));
    for (const KeyName& name : plan.destroy) {
      token_store::destroy_generation(session, name);
      result.destroyed.push_back(name);
    }
    for (const KeyName& name : plan.drop_revocations) token_store::drop_revocation(session, name);
    return result;
  });
}

bool revoke(TokenGateway& gateway, const KeyName& name, std::int64_t now, const RotationPolicy& policy) {
  return gateway.call([name, now, policy](hsm::Session& session) {
    KeyRing ring = token_store::load(session, {.copyable_allowed = policy.copyable_keys});
    const Generation* g = ring.find(name);
    if (g == nullptr) return false;
    const Schedule old = g->schedule;
    // The replacement first: if it cannot be made, the generation stays as it was.
    if (ring.encrypt_generation(now) == g) {
      std::int64_t until = std::max(old.encrypt_until, now + 1);
      token_store::create_generation(session, Schedule{now, now, until, until + policy.decrypt_window.count()},
                                     key_options(policy));
    }
    // Record before keys: a server that refreshes between the two steps already refuses it.
    if (!g->revoked) token_store::write_revocation(session, name, now, std::max(old.decrypt_until, now), old);
    token_store::destroy_generation(session, name);
    return true;
  });
}

}  // namespace keysvc
