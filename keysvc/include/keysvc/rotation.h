// The rotator: carries out the rotation plan (ticket_rules.h: what to create and destroy,
// and when) in the token. Run by `keysvcctl rotate` (one-shot or --every), or by a
// single-node server for itself (rotation.self_rotate), and `keysvcctl keys revoke`.
#pragma once

#include <cstdint>
#include <vector>

#include "keysvc/hsm/secret_key.h"
#include <memory>

#include "keysvc/token_gateway.h"
#include "keysvc/token_store.h"
#include "keysvc/key_ring.h"
#include "keysvc/schedule.h"
#include "keysvc/ticket_rules.h"

namespace keysvc {

struct RotationResult {
  std::vector<Generation> created;
  std::vector<KeyName> destroyed;
};

// How keys are made under `policy` (rotation.copyable_keys, rotation.derivation).
inline token_store::KeyOptions key_options(const RotationPolicy& policy) {
  return {policy.copyable_keys ? hsm::Copyable::kYes : hsm::Copyable::kNo, policy.derivation};
}

// Loads the ring, plans at `now` and carries the plan out in the token, in one call on
// the gateway's maintenance lane. If `last_good` (the caller's previous scan) is given and
// the ring just loaded lost every live generation of it (ticket_rules.h, "Trusting a
// scan"), changes nothing and throws hsm::Error: an outage is not an empty token.
RotationResult rotate(TokenGateway& gateway, std::int64_t now, const RotationPolicy& policy,
                      std::shared_ptr<const KeyRing> last_good = {});

// Revokes `name`. If it is the encrypt generation, first creates a replacement that
// encrypts from now (if that fails nothing else is done: a token is never left without
// an encrypting generation); then writes the revocation record (servers stop using the
// generation at their next refresh) and destroys its keys. Returns false if no such
// generation exists.
bool revoke(TokenGateway& gateway, const KeyName& name, std::int64_t now, const RotationPolicy& policy);

}  // namespace keysvc
