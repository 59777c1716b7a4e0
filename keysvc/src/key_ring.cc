#include "keysvc/key_ring.h"

#include <algorithm>
#include <tuple>

namespace keysvc {

KeyRing::KeyRing(std::vector<Generation> generations) : generations_(std::move(generations)) {
  std::sort(generations_.begin(), generations_.end(), [](const Generation& a, const Generation& b) {
    return std::tie(a.created, a.name) < std::tie(b.created, b.name);
  });
}

const Generation* KeyRing::find(const KeyName& name) const noexcept {
  for (const auto& g : generations_)
    if (g.name == name) return &g;
  return nullptr;
}

const Generation* KeyRing::encrypt_generation() const noexcept {
  return generations_.empty() ? nullptr : &generations_.back();
}

}  // namespace keysvc
