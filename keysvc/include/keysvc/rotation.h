// The rotator: creates the generations the schedule needs next and destroys what has
// expired. Run by `keysvcctl rotate` (one-shot or --every), or by a single-node server
// for itself (rotation.self_rotate).
//
// The plan is a pure function of the ring, the clock and the policy:
//   1. If no generation encrypts now (empty token, or the rotator was down for longer
//      than the ring covers), create one whose window starts now. This is the only
//      generation not published ahead of use; servers find it by their on-demand
//      rescan of unknown key names.
//   2. While the ring's coverage (the latest encrypt_until) ends less than
//      2 x publish_lead from now, create the next generation: encrypt window
//      [end, end + encrypt_period), decrypt until encrypt_until + decrypt_window.
//      Run the rotator at least every publish_lead and each new generation is in the
//      token for at least publish_lead before it encrypts.
//   3. Destroy generations and revocation records whose decrypt_until + clock_skew
//      has passed.
//   4. Two rotators racing may both create a generation for the same window. Every
//      server picks the same one (smallest name, see KeyRing::encrypt_generation);
//      the next run destroys the others while they are still pending. A duplicate
//      whose window has begun is left to expire: a server that loaded it before the
//      winner existed may have issued tickets under it.
// Creating is idempotent: running the rotator again at once creates nothing.
#pragma once

#include <cstdint>
#include <vector>

#include "keysvc/hsm/secret_key.h"
#include "keysvc/hsm/session_pool.h"
#include "keysvc/token_store.h"
#include "keysvc/key_ring.h"
#include "keysvc/schedule.h"

namespace keysvc {

struct RotationPlan {
  std::vector<Schedule> create;
  std::vector<KeyName> destroy;  // expired generations and losers of a race
  std::vector<KeyName> drop_revocations;  // revocation records no longer needed
  bool empty() const { return create.empty() && destroy.empty() && drop_revocations.empty(); }
};

RotationPlan plan_rotation(const KeyRing& ring, std::int64_t now, const RotationPolicy& policy);

// The schedule of a generation made by hand (`keysvcctl keys generate`,
// TicketKeyService::create_generation) that must encrypt at once: its window starts now,
// or one second after the current encrypt generation's began if that is later (a tie in
// encrypt_from would go to the smaller name, so the new one might not take over), and
// lasts one encrypt_period.
Schedule schedule_encrypting_now(const KeyRing& ring, std::int64_t now, const RotationPolicy& policy);

struct RotationResult {
  std::vector<Generation> created;
  std::vector<KeyName> destroyed;
};

// How keys are made under `policy` (rotation.copyable_keys, rotation.derivation).
inline token_store::KeyOptions key_options(const RotationPolicy& policy) {
  return {policy.copyable_keys ? hsm::Copyable::kYes : hsm::Copyable::kNo, policy.derivation};
}

// Loads the ring, plans at `now` and carries the plan out in the token.
RotationResult rotate(hsm::SessionPool& pool, std::int64_t now, const RotationPolicy& policy);

// Revokes `name`: writes its revocation record (servers stop using it at their next
// refresh), destroys its keys, and if it was the encrypt generation creates a
// replacement that encrypts from now. Returns false if no such generation exists.
bool revoke(hsm::SessionPool& pool, const KeyName& name, std::int64_t now, const RotationPolicy& policy);

}  // namespace keysvc
