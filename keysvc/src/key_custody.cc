#include "keysvc/key_custody.h"

#include <string>

namespace keysvc {

std::string custody_refusal(const hsm::KeyCustody& k, const CustodyRule& rule) {
  if (!k.sensitive) return "not sensitive (CKA_SENSITIVE false)";
  if (k.extractable) return "extractable (CKA_EXTRACTABLE true)";
  // The two that say where the value has been: an imported or unwrapped key keeps them
  // false for life, whatever its other attributes say now.
  if (!k.always_sensitive) return "its value was once readable (CKA_ALWAYS_SENSITIVE false: imported or changed)";
  if (!k.never_extractable) return "its value was once extractable (CKA_NEVER_EXTRACTABLE false: imported or unwrapped)";
  if (k.enforced && k.local_known && !k.local) return "not generated in the token (CKA_LOCAL false)";
  if (!k.sign) return "cannot sign (CKA_SIGN false)";
  const std::pair<bool, const char*> extra[] = {{k.verify && k.enforced, "CKA_VERIFY"}, {k.encrypt, "CKA_ENCRYPT"},
                                                {k.decrypt, "CKA_DECRYPT"}, {k.wrap, "CKA_WRAP"},
                                                {k.unwrap, "CKA_UNWRAP"}, {k.derive, "CKA_DERIVE"}};
  for (const auto& [set, name] : extra)
    if (set) return std::string("usable beyond signing (") + name + " true)";
  if (!rule.copyable_allowed && k.copyable_known && k.copyable)
    return "copyable (CKA_COPYABLE true) without rotation.copyable_keys";
  if (!rule.copyable_allowed && k.modifiable && k.enforced)
    return "modifiable (CKA_MODIFIABLE true) without rotation.copyable_keys";
  return {};
}

namespace {
// Whether `to` lies more than `limit` seconds after `from`, for any two int64 values (a
// planted record may hold the extremes, whose difference overflows int64).
bool further_than(std::int64_t from, std::int64_t to, std::int64_t limit) {
  return to > from && static_cast<std::uint64_t>(to) - static_cast<std::uint64_t>(from) > static_cast<std::uint64_t>(limit);
}
}  // namespace

std::string schedule_refusal(const Schedule& s) {
  auto days = [](std::int64_t seconds) { return std::to_string(seconds / 86400) + " days"; };
  if (further_than(s.encrypt_from, s.encrypt_until, kMaxScheduleStep))
    return "its encrypt window is longer than " + days(kMaxScheduleStep);
  if (further_than(s.encrypt_until, s.decrypt_until, kMaxScheduleStep))
    return "its decrypt window is longer than " + days(kMaxScheduleStep);
  if (further_than(s.created, s.encrypt_from, 2 * kMaxScheduleStep))
    return "it starts encrypting more than " + days(2 * kMaxScheduleStep) + " after its creation";
  return {};
}

}  // namespace keysvc
