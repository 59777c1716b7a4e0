// What keysvc requires of key material it finds in the token before it uses it for
// tickets or audit seals (docs/SECURITY.md, "Keys found in the token").
//
// Anyone who holds the user PIN for a moment can put objects into the token that look
// like keysvc's: a key imported with a value they know, under a generation record whose
// schedule reaches years ahead, or an audit key. Label and CKA_ID prove nothing. So every
// key is checked for the attributes hsm::generate_hmac_key gives keysvc's keys, and every
// generation record for a schedule keysvc could have written; anything else is refused:
// never used for a ticket or a seal, shown as "refused" by `keysvcctl keys list`, logged
// once per process and counted (keysvc_generations_refused).
#pragma once

#include <cstdint>
#include <string>

#include "keysvc/config.h"
#include "keysvc/hsm/secret_key.h"
#include "keysvc/schedule.h"

namespace keysvc {

struct CustodyRule {
  // CKA_COPYABLE / CKA_MODIFIABLE may be TRUE: the process opted into copies
  // (rotation.copyable_keys or hsm.session_copies). Neither lets the value out.
  bool copyable_allowed = false;
};

// The custody rule for keys this config's process finds in the token: copyable keys
// only where rotation.copyable_keys or hsm.session_copies opts into them.
inline CustodyRule custody_rule_of(const Config& config) {
  return {.copyable_allowed = config.rotation.copyable_keys || config.hsm.session_copies};
}

// Empty if `key` has every attribute keysvc gives its long-term keys (sensitive, always
// sensitive, not extractable, never extractable, generated in the token, sign only, not
// copyable unless `rule` allows it); otherwise why not, as one phrase for a log line. On
// a token that keeps these attributes as metadata only (KeyCustody::enforced false), the
// usage attributes the token sets itself (CKA_VERIFY, CKA_LOCAL) are not held against it.
std::string custody_refusal(const hsm::KeyCustody& key, const CustodyRule& rule);

// The farthest any one part of a schedule keysvc writes may reach: rotation.encrypt_period,
// rotation.decrypt_window and rotation.publish_lead are capped at this (config.h).
inline constexpr std::int64_t kMaxScheduleStep = 31 * 86400;

// Empty if keysvc could have written `s` (an encrypt window, a decrypt window and a lead
// from creation to encrypt_from within kMaxScheduleStep, twice that for the lead: the
// rotator publishes up to two publish leads ahead); otherwise why not. A record reaching
// further is refused, so a planted far-future generation cannot stop rotation.
std::string schedule_refusal(const Schedule& s);

}  // namespace keysvc
