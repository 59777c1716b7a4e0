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

const Generation* KeyRing::encrypt_generation(std::int64_t now) const noexcept {
  const Generation* best = nullptr;
  for (const auto& g : generations_) {  // ascending (encrypt_from, name)
    if (!g.usable() || g.schedule.encrypt_from > now || now >= g.schedule.decrypt_until) continue;
    if (best == nullptr || g.schedule.encrypt_from > best->schedule.encrypt_from) best = &g;
  }
  return best;
}

bool KeyRing::decrypts(const Generation& g, std::int64_t now, std::int64_t skew) noexcept {
  return g.usable() && now < g.schedule.decrypt_until + skew;
}

GenerationState KeyRing::state(const Generation& g, std::int64_t now) const noexcept {
  if (g.revoked) return GenerationState::kRevoked;
  if (now >= g.schedule.decrypt_until) return GenerationState::kExpired;
  if (&g == encrypt_generation(now)) return GenerationState::kActive;
  if (now < g.schedule.encrypt_from) return GenerationState::kPending;
  return GenerationState::kDecryptOnly;
}

}  // namespace keysvc
