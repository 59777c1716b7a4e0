#include "keysvc/hsm/secret.h"

#include <openssl/crypto.h>

namespace keysvc::hsm {

void wipe(std::span<std::byte> bytes) noexcept {
  if (!bytes.empty()) OPENSSL_cleanse(bytes.data(), bytes.size());
}

void SecretString::clear() noexcept {
  // Wipe the whole capacity: a shrink or an earlier longer value may have left bytes.
  if (value_.capacity() > 0) {
    value_.resize(value_.capacity());
    wipe(value_.data(), value_.size());
  }
  value_.clear();
}

}  // namespace keysvc::hsm
