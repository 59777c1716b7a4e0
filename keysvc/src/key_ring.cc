#include "keysvc/key_ring.h"

#include <algorithm>
#include <tuple>

namespace keysvc {

std::string_view to_string(GenerationState state) {
  switch (state) {
    case GenerationState::kPending:
      return "pending";
    case GenerationState::kActive:
      return "active";
    case GenerationState::kDecryptOnly:
      return "decrypt-only";
    case GenerationState::kExpired:
      return "expired";
    case GenerationState::kRevoked:
      return "revoked";
    case GenerationState::kRefused:
      return "refused";
  }
  return "?";
}

KeyRing::KeyRing(std::vector<Generation> generations) : generations_(std::move(generations)) {
  std::sort(generations_.begin(), generations_.end(), [](const Generation& a, const Generation& b) {
    return std::tie(a.schedule.encrypt_from, a.name) < std::tie(b.schedule.encrypt_from, b.name);
  });
}

const Generation* KeyRing::find(const KeyName& name) const noexcept {
  for (const auto& g : generations_)
    if (g.name == name) return &g;
  return nullptr;
}

// encrypt_generation(), decrypts() and state() are ticket rules: ticket_rules.cc.

}  // namespace keysvc
