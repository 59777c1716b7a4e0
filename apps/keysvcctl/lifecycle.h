// The audit records of keysvcctl's commands that change the token (keys generate,
// revoke, destroy, rotate): written to keysvcctl's audit file (keysvc/audit_trail.h)
// with append_durable, after the change and before the command reports success.
//
//   TokenChange change(config, *gateway, now);  // opens the trail, notes the ring: throws
//                                             // before anything changes if it cannot
//   ... change the token ...
//   change.commit(now);                       // records what changed; throws if the
//                                             // records could not be written
//
// With [audit] path unset, both do nothing.
#pragma once

#include <cstdint>
#include <memory>

#include "keysvc/audit_trail.h"
#include "keysvc/config.h"
#include "keysvc/key_custody.h"
#include "keysvc/token_gateway.h"

namespace keysvcctl {

class TokenChange {
 public:
  TokenChange(const keysvc::Config& config, keysvc::TokenGateway& gateway, std::int64_t now);
  ~TokenChange();
  TokenChange(const TokenChange&) = delete;
  TokenChange& operator=(const TokenChange&) = delete;

  // Reloads the ring and writes the lifecycle records of every difference from the ring
  // noted at construction, then seals and closes the trail.
  void commit(std::int64_t now);

 private:
  keysvc::TokenGateway& gateway_;
  keysvc::CustodyRule custody_;  // what keys found in the token must be (key_custody.h)
  std::unique_ptr<keysvc::audit::AuditTrail> trail_;
  keysvc::audit::RingState before_;
};

}  // namespace keysvcctl
