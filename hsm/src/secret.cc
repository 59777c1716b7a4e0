#include "keysvc/hsm/secret.h"

#include <openssl/crypto.h>

namespace keysvc::hsm {

void wipe(std::span<std::byte> bytes) noexcept {
  if (!bytes.empty()) OPENSSL_cleanse(bytes.data(), bytes.size());
}

void wipe(std::string& s) noexcept {
  // The whole capacity: a shrink or an earlier longer value may have left bytes.
  s.resize(s.capacity());
  wipe(s.data(), s.size());
  s.clear();
}

void SecretString::clear() noexcept { wipe(value_); }

}  // namespace keysvc::hsm
